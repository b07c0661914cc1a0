"""Throughput and memory: TSN training samples/s, prediction spectra/s, EmulatorFit spectra/s. Prints JSON.

    python benchmarks/speed.py [--preset tsn_tiny] [--n 256] [--device cpu|cuda] [--out speed.json]

Inputs are synthetic (emulator spectra with noise on the apStar grid), so no store is needed;
training speed is measured on the model's own train step with random twins (forward + backward +
AdamW); with --store, train.train is also timed end to end (loading, steps, validation). Prediction
is timed whole (continuum normalisation + network) and for the network alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _spectra(n: int, seed: int = 0):
    import torch

    from pairspec.surveys.apogee.emulator import KuruczEmulator
    from pairspec.surveys.apogee.layout import APOGEE_GRID

    emu = KuruczEmulator.load()
    rng = np.random.default_rng(seed)
    labels = np.stack([rng.uniform(4200, 5800, n), rng.uniform(1.5, 4.5, n), rng.uniform(-0.8, 0.3, n),
                       rng.uniform(-0.1, 0.3, n)], axis=1)
    norm = emu.torch_normalized(torch.as_tensor(labels, dtype=torch.float64)).numpy()
    flux = np.ones((n, APOGEE_GRID.npix))
    flux[:, emu.apstar_index] = norm
    snr = rng.uniform(10, 80, n)[:, None]
    flux = flux + rng.normal(size=flux.shape) / snr
    return emu, (1000 * flux).astype(np.float32), np.broadcast_to((snr / 1000) ** 2, flux.shape).astype(np.float32)


def bench_emulator_fit(emu, flux, ivar) -> dict:
    from pairspec.surveys.apogee.fit import EmulatorFit

    fitter = EmulatorFit(emu)
    t0 = time.perf_counter()
    fitter.fit(flux, ivar)
    dt = time.perf_counter() - t0
    return {"spectra_per_s": len(flux) / dt, "n": len(flux)}


def bench_predict(checkpoint, flux, ivar, device) -> dict:
    from pairspec.inference import LabelPredictor

    pred = LabelPredictor.from_checkpoint(checkpoint, device=device)
    pred.predict(flux[:8], ivar[:8])  # warm-up (allocations, lazy init)
    # the network's labels (no refit), and where the checkpoint has a label decoder, the same with the
    # refit through it computed as well (pairspec.refit: what prediction adds for a checkpoint trained with it)
    runs = {"labels": {"refit": False}, "denoise": {"refit": False, "denoise": True}}
    if getattr(pred.model, "label_decoder_width", 0):
        runs["labels_with_refit"] = {"refit": False, "return_refit": True}
    out = {}
    for name, kw in runs.items():
        t0 = time.perf_counter()
        pred.predict(flux, ivar, **kw)
        out[name] = len(flux) / (time.perf_counter() - t0)
    return {"spectra_per_s": out, "n": len(flux)}


def bench_train_step(preset: str, device: str, steps: int, batch_size: int, n_labels: int = 4) -> dict:
    """Samples/s of the bare optimizer step (forward + loss + backward + AdamW) on random twins of
    the APOGEE model-pixel length: the model's own cost, without data loading."""
    import torch

    from pairspec.data import model_pixels
    from pairspec.models import create_model
    from pairspec.surveys.apogee.layout import APOGEE_GRID

    L = len(model_pixels(APOGEE_GRID))
    model = create_model(preset, L, n_labels).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    batch = {"x": torch.randn(batch_size, 2, L, generator=g).mul(0.05).to(device),
             "target": (1 + 0.05 * torch.randn(batch_size, L, generator=g)).to(device),
             "target_w": torch.ones(batch_size, L, device=device),
             "labels": torch.randn(batch_size, n_labels, generator=g).to(device),
             "label_mask": torch.ones(batch_size, n_labels, dtype=torch.bool, device=device)}

    def step():
        loss = model.forward_loss(model(batch["x"]), batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"samples_per_s": steps * batch_size / dt, "steps": steps, "batch_size": batch_size}


def bench_forward(checkpoint, flux, ivar, device) -> dict:
    """Spectra/s of the network alone on prepared inputs (what prediction costs beyond normalisation)."""
    import torch

    from pairspec.checkpoint import load_checkpoint
    from pairspec.preprocess import prepare_inputs
    from pairspec.surveys.apogee.layout import APOGEE_GRID

    model, _ = load_checkpoint(checkpoint, map_location=device)
    model.eval()
    t0 = time.perf_counter()
    x = torch.as_tensor(prepare_inputs(flux, ivar, APOGEE_GRID)).to(device)
    t_prep = time.perf_counter() - t0
    with torch.inference_mode():
        model(x[:8])
        t0 = time.perf_counter()
        model(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t_fwd = time.perf_counter() - t0
    return {"network_spectra_per_s": len(flux) / t_fwd, "prepare_inputs_spectra_per_s": len(flux) / t_prep}


def bench_train(store, preset, device, steps: int, batch_size: int, workdir) -> dict:
    """train.train on a store for a fixed number of steps, end to end: loading and normalising the
    twins, the steps, validation and calibration. Wall time, not a throughput of the model."""
    from pairspec.config import (
        DataSection,
        ModelSection,
        RunConfig,
        RunSection,
        TrainSection,
    )
    from pairspec.train import train

    cfg = RunConfig(run=RunSection(name="speed", out_dir=str(workdir)), data=DataSection(store=store),
                    model=ModelSection(preset=preset),
                    train=TrainSection(epochs=1000, max_steps=steps, batch_size=batch_size, device=device,
                                       resume=False, eval_every=1000))
    t0 = time.perf_counter()
    ckpt = train(cfg, progress=False)
    dt = time.perf_counter() - t0
    return {"steps": steps, "batch_size": batch_size, "wall_s": dt, "checkpoint": str(ckpt)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128, help="spectra for the prediction/fit timings")
    ap.add_argument("--store", default=None, help="a pair store: also time training (train.train)")
    ap.add_argument("--checkpoint", default=None, help="time this checkpoint (default: the one trained here)")
    ap.add_argument("--preset", default="tsn_tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workdir", default="benchmarks/work/speed")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    result = {"device": args.device, "preset": args.preset}
    emu, flux, ivar = _spectra(args.n)
    result["emulator_fit"] = bench_emulator_fit(emu, flux[: min(args.n, 64)], ivar[: min(args.n, 64)])
    ckpt = args.checkpoint
    result["train_step"] = bench_train_step(args.preset, args.device, args.steps, args.batch_size)
    if args.store:
        result["train_end_to_end"] = bench_train(args.store, args.preset, args.device, args.steps,
                                                 args.batch_size, args.workdir)
        ckpt = ckpt or result["train_end_to_end"]["checkpoint"]
    if ckpt:
        result["tsn_predict"] = bench_predict(ckpt, flux, ivar, args.device)
        result["tsn_predict"].update(bench_forward(ckpt, flux, ivar, args.device))
        result["predict_vs_emulator_fit_speedup"] = (result["tsn_predict"]["spectra_per_s"]["labels"]
                                                     / result["emulator_fit"]["spectra_per_s"])
    result["peak_rss_mb"] = _peak_rss_mb()
    if args.device.startswith("cuda"):
        import torch

        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    return result


if __name__ == "__main__":
    main()
