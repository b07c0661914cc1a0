"""Throughput and memory: TSN training samples/s, prediction spectra/s, EmulatorFit spectra/s. Prints JSON.

    python benchmarks/speed.py [--preset tsn_tiny] [--n 256] [--device cpu|cuda] [--out speed.json]
    python benchmarks/speed.py --recipe recipes/precision_cpu.yaml --amp-compare --threads 1

Inputs are synthetic (emulator spectra with noise on the apStar grid), so no store is needed;
training speed is measured on the model's own train step with random twins (forward + backward +
AdamW); with --store, train.train is also timed end to end (loading, steps, validation). Prediction
is timed whole (continuum normalisation + network) and for the network alone. --amp-compare times the
recipe's own optimizer step (pairspec.train_steps.train_step, its loss and clipping) in float32 and
under bfloat16 autocast side by side, in alternating rounds, and says whether the CPU has native bf16
instructions (train.bf16: true on a CPU; without them torch emulates bf16, which can be slower than
float32: run this on the machine at hand). With --compile it also times both under torch.compile
(train.compile: true; the first step, which compiles, is reported apart).

"""

from __future__ import annotations

import argparse
import json
import platform
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


def _cpu_bf16_native() -> bool | None:
    import torch

    probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    probes = [f for f in probes if f is not None]
    return any(f() for f in probes) if probes else None


def bench_amp_compare(recipe: str, device: str, steps: int, batch_size: int, rounds: int = 3,
                      compile: bool = False) -> dict:
    """The recipe's model and optimizer step (train_step: its loss, clipping, AdamW) in float32 and
    under bfloat16 autocast, from the same initial weights on the same random twins, timed in
    alternating rounds of `steps` steps; the best round of each. The first step of each is a warm-up
    (its time is kept: for a compiled model it is the compilation). `compile` adds both precisions
    through torch.compile ("float32+compile", "bf16+compile")."""
    import contextlib
    import copy

    import torch

    from pairspec.config import load_recipe
    from pairspec.data import model_pixels
    from pairspec.models import TwinSpecNet
    from pairspec.surveys.apogee.layout import APOGEE_GRID
    from pairspec.train import model_kwargs_of
    from pairspec.train_steps import make_optimizer, train_step

    cfg = load_recipe(recipe, ["data.store=unused"])
    tc, K = cfg.train, len(cfg.data.labels or ["teff", "logg", "fe_h", "mg_fe"])
    L = len(model_pixels(APOGEE_GRID))
    torch.manual_seed(0)
    base = TwinSpecNet(**model_kwargs_of(cfg, L, K))
    g = torch.Generator().manual_seed(0)
    batch = {"x": torch.randn(batch_size, 2, L, generator=g).mul(0.05),
             "target": 1 + 0.05 * torch.randn(batch_size, L, generator=g),
             "target_w": torch.full((batch_size, L), 400.0),
             "labels": torch.randn(batch_size, K, generator=g),
             "label_mask": torch.ones(batch_size, K, dtype=torch.bool),
             "snr": torch.full((batch_size,), 30.0)}
    batch = {k: v.to(device) for k, v in batch.items()}
    dev = torch.device(device)
    amps = {"float32": contextlib.nullcontext,
            "bf16": lambda: torch.autocast(dev.type, dtype=torch.bfloat16)}
    if compile:
        amps.update({f"{name}+compile": amp for name, amp in list(amps.items())})
    runs, first = {}, {}
    for name, amp in amps.items():
        model = copy.deepcopy(base).to(device)
        opt = make_optimizer(model, tc.lr, tc.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        if name.endswith("+compile"):
            model = torch.compile(model)
        runs[name] = (model, opt, sched)
        t0 = time.perf_counter()
        train_step(model, batch, opt, sched, tc, amp)  # warm-up (and compilation)
        first[name] = time.perf_counter() - t0
    best = {name: float("inf") for name in amps}
    losses = {}
    for _ in range(rounds):
        for name, (model, opt, sched) in runs.items():
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(steps):
                parts = train_step(model, batch, opt, sched, tc, amps[name])
            if dev.type == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - t0)
            losses[name] = None if parts is None else parts["loss"]
    from pairspec.models import count_flops

    # what a step computes: models.count_flops' forward per spectrum (the transformer blocks, embedding and
    # heads; the readout MLP and the label decoder, ~2 % more for the precision recipe, are not counted),
    # x3 for forward + backward: the achieved rate says how close a step is to the core's arithmetic peak
    step_flop = 3.0 * count_flops(base, L) * batch_size
    out = {name: {"s_per_step": best[name] / steps, "samples_per_s": steps * batch_size / best[name],
                  "gflop_per_s": step_flop * steps / best[name] / 1e9,
                  "first_step_s": first[name], "loss_after": losses[name]} for name in amps}
    speedups = {"bf16_speedup": best["float32"] / best["bf16"]}
    if compile:
        speedups.update({"compile_speedup": best["float32"] / best["float32+compile"],
                         "bf16_compile_speedup": best["float32"] / best["bf16+compile"]})
    return {"recipe": recipe, "steps_per_round": steps, "rounds": rounds, "batch_size": batch_size,
            "gflop_per_step": step_flop / 1e9,
            "threads": torch.get_num_threads(), "cpu_native_bf16": _cpu_bf16_native() if dev.type == "cpu" else None,
            **out, **speedups}


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
    ap.add_argument("--recipe", default=None, help="with --amp-compare: the recipe whose model and step are timed")
    ap.add_argument("--amp-compare", action="store_true",
                    help="only time the recipe's optimizer step in float32 and bf16 autocast, side by side")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of --steps steps (--amp-compare)")
    ap.add_argument("--compile", action="store_true",
                    help="with --amp-compare: also time both precisions under torch.compile")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.amp_compare:
        if not args.recipe:
            ap.error("--amp-compare needs --recipe")
        result = {"device": args.device, "machine": platform.machine(),
                  "amp_compare": bench_amp_compare(args.recipe, args.device, args.steps, args.batch_size,
                                                   args.rounds, args.compile),
                  "peak_rss_mb": _peak_rss_mb()}
        return _emit(result, args.out)
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
    return _emit(result, args.out)


def _emit(result: dict, out) -> dict:
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        with open(out, "w") as fh:
            fh.write(text)
    return result


if __name__ == "__main__":
    main()
