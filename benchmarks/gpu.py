"""One prepared GPU run (issue 4): throughput, MFU, and a time-boxed tsn_base training on a >= 20k-star store.

    python benchmarks/gpu.py --out DIR                       # on the GPU machine (about 8 minutes)
    python benchmarks/gpu.py --out DIR --toy                 # CPU rehearsal: tiny sizes, every stage

Stages, each timed and guarded (a stage that fails is recorded and the others go on); DIR/gpu.json is
rewritten after every stage:

  sim       from t=0, in a background process: `simulate --store-only` of the survey (pairspec.simulate_store)
  env       card, torch, and two ceilings measured here: a bf16 8192^3 matmul and a device-to-device copy
  step      tsn_base optimizer steps (train.train_step: bf16 autocast, AdamW, grad clip, the loss) on random
            twins, eager and torch.compile: samples/s and MFU = 3 x forward FLOPs (models.count_flops) x
            samples/s over the bf16 dense peak (datasheet, and the matmul measured above)
  shapes    MFU against model shape: the compiled step and compiled inference of the preset with width,
            heads and patch overridden (--shapes WIDTH:HEADS:PATCH,...), one batch size
  predict   LabelPredictor.predict (continuum on the GPU + network, bf16) on emulator spectra, by batch size;
            the network alone, eager and compiled; a torch.profiler table of the input preparation; and
            predict end to end, eager and compile=True, at each of --predict-patches
  train     pairspec.train on the store: tsn_base, bf16, torch.compile, train.time_limit_min set to fit the
            budget; the twins are loaded first (continuum on the GPU) and handed to train
  evaluate  pairspec.evaluate of the trained checkpoint on the test split, against survey labels and truth

Every number is measured in this run; nothing is copied in. Prints a short table last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

T0 = time.perf_counter()
DATASHEET_BF16_DENSE = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}  # vendor figures, SXM parts


def elapsed() -> float:
    return time.perf_counter() - T0


def log(msg: str) -> None:
    print(f"[{elapsed():7.1f}s] {msg}", flush=True)


class Results:
    def __init__(self, out: Path):
        self.out, self.data = out, {"stages": {}}

    def stage(self, name: str, fn, *args, **kwargs):
        log(f"stage {name} ...")
        t = time.perf_counter()
        try:
            value = fn(*args, **kwargs)
            self.data["stages"][name] = {"ok": True, "wall_s": round(time.perf_counter() - t, 2), **(value or {})}
        except Exception as err:  # noqa: BLE001 - a benchmark stage must not stop the others
            self.data["stages"][name] = {"ok": False, "wall_s": round(time.perf_counter() - t, 2),
                                         "error": f"{type(err).__name__}: {err}",
                                         "traceback": traceback.format_exc()[-3000:]}
            log(f"stage {name} FAILED: {type(err).__name__}: {err}")
        self.save()
        log(f"stage {name} done in {time.perf_counter() - t:.1f}s")
        return self.data["stages"][name]

    def save(self):
        self.data["elapsed_s"] = round(elapsed(), 1)
        (self.out / "gpu.json").write_text(json.dumps(self.data, indent=1, default=_plain))


def _plain(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeat: int) -> float:
    """Median seconds of fn() over `repeat` calls (after the caller's warm-up), device synchronised."""
    times = []
    for _ in range(repeat):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


# ---- stages --------------------------------------------------------------------------------------

def stage_env(device, toy: bool) -> dict:
    import torch

    info = {"torch": torch.__version__, "python": sys.version.split()[0], "device": str(device),
            "cpu_count": os.cpu_count()}
    if device.type != "cuda":
        return info
    p = torch.cuda.get_device_properties(device)
    info |= {"card": p.name, "sm_count": p.multi_processor_count, "memory_gib": round(p.total_memory / 2**30, 1),
             "capability": f"{p.major}.{p.minor}"}
    n = 8192
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=g)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=g)
    for _ in range(3):
        a @ b
    dt = _timed(lambda: a @ b, device, 10)
    info["matmul_bf16_tflops"] = round(2 * n**3 / dt / 1e12, 1)
    x = torch.randn(2**28, device=device)  # 1 GiB float32
    y = torch.empty_like(x)
    y.copy_(x)
    dt = _timed(lambda: y.copy_(x), device, 10)
    info["copy_tb_s"] = round(2 * x.numel() * 4 / dt / 1e12, 2)  # bytes read + written
    info["bf16_peak_datasheet_tflops"] = next((v / 1e12 for k, v in DATASHEET_BF16_DENSE.items() if k in p.name), None)
    return info  # the tensors go with this frame; the caching allocator reuses their memory


def _peaks(env: dict) -> dict:
    return {"datasheet": (env.get("bf16_peak_datasheet_tflops") or 0) * 1e12 or None,
            "measured_matmul": (env.get("matmul_bf16_tflops") or 0) * 1e12 or None}


def _random_batch(batch: int, L: int, n_labels: int, device):
    import torch

    g = torch.Generator().manual_seed(1)
    flux = 1 + 0.05 * torch.randn(batch, L, generator=g)
    x = torch.stack([(flux - 1).clamp(-1, 1), torch.rand(batch, L, generator=g)], dim=1)
    return {"x": x.to(device), "target": (1 + 0.02 * torch.randn(batch, L, generator=g)).to(device),
            "target_w": torch.ones(batch, L).to(device), "labels": torch.randn(batch, n_labels, generator=g).to(device),
            "label_mask": torch.ones(batch, n_labels, dtype=torch.bool).to(device)}


def stage_step(device, preset: str, batches: list[int], steps: int, env: dict, deadline: float,
               modes=(False, True), patch_size=None) -> dict:
    """Samples/s of the real optimizer step for eager and compiled tsn_base at the given batch sizes."""
    import contextlib

    import torch

    from pairspec.config import TrainSection
    from pairspec.data import model_pixels
    from pairspec.surveys.apogee.layout import APOGEE_GRID

    L = int(model_pixels(APOGEE_GRID).size)
    cuda = device.type == "cuda"
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    tcfg = TrainSection(device=str(device))
    out = {"preset": preset, "patch_size_override": patch_size, "n_model_pix": L, "runs": []}
    peaks = _peaks(env)
    for compiled in modes:
        for batch in batches:
            if elapsed() > deadline:
                out["runs"].append({"compiled": compiled, "batch": batch, "skipped": "time budget"})
                continue
            try:
                out["runs"].append(_one_step_run(preset, L, batch, compiled, steps, device, amp, tcfg, peaks, out,
                                                 patch_size))
            except Exception as err:  # noqa: BLE001 - e.g. out of memory at the larger batch: keep the others
                out["runs"].append({"compiled": compiled, "batch": batch, "error": f"{type(err).__name__}: {err}"[:500]})
                log(f"  step {'compiled' if compiled else 'eager'} batch {batch} failed: {err}")
            if cuda:
                torch.cuda.empty_cache()
    return out


def _one_step_run(preset, L, batch, compiled, steps, device, amp, tcfg, peaks, out, patch_size=None,
                  overrides=None) -> dict:
    import torch

    from pairspec.models import count_flops, count_parameters, create_model
    from pairspec.train import make_optimizer, train_step

    torch.manual_seed(0)
    model = create_model(preset, L, 4, **{"patch_size": patch_size, **(overrides or {})}).to(device)
    out["parameters"], flops = count_parameters(model), count_flops(model)
    out["forward_gflop_per_spectrum"] = flops / 1e9
    runner = torch.compile(model) if compiled else model
    opt = make_optimizer(model, 1e-4, 0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    b = _random_batch(batch, L, 4, device)
    t = time.perf_counter()
    for _ in range(3):  # warm-up (and compilation)
        train_step(runner, b, opt, sched, tcfg, amp)
    _sync(device)
    warm_s = time.perf_counter() - t
    dt = _timed(lambda: train_step(runner, b, opt, sched, tcfg, amp), device, steps)
    sps = batch / dt
    run = {"compiled": compiled, "batch": batch, "step_ms": round(dt * 1e3, 2), "samples_per_s": round(sps, 1),
           "warmup_s": round(warm_s, 1), "train_tflops": round(3 * flops * sps / 1e12, 1)}
    for name, peak in peaks.items():
        if peak:
            run[f"mfu_vs_{name}"] = round(3 * flops * sps / peak, 3)
    if device.type == "cuda":
        run["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        torch.cuda.reset_peak_memory_stats(device)
    # the network's inference speed at this batch (bf16 autocast, as predict), eager or compiled as the step
    with torch.inference_mode(), amp():
        runner(b["x"])
        fwd = _timed(lambda: runner(b["x"]), device, 5)
    run[f"forward_{'compiled' if compiled else 'eager'}_spectra_per_s"] = round(batch / fwd, 1)
    run["forward_tflops"] = round(flops * batch / fwd / 1e12, 1)
    log(f"  step {'compiled' if compiled else 'eager'} batch {batch}: {sps:.0f} samples/s {run}")
    return run


def parse_shape(text: str) -> dict:
    """'384:6:32' -> {'embed_dim': 384, 'num_heads': 6, 'patch_size': 32} (width : heads : patch)."""
    try:
        d, h, p = (int(v) for v in text.split(":"))
    except ValueError:
        raise SystemExit(f"--shapes: expected WIDTH:HEADS:PATCH, e.g. 384:6:32, got {text!r}") from None
    return {"embed_dim": d, "num_heads": h, "patch_size": p}


def stage_shapes(device, preset: str, shapes: list[dict], batch: int, steps: int, env: dict, deadline: float) -> dict:
    """MFU against model shape: the compiled optimizer step and compiled inference of `preset` with
    width / heads / patch overridden (depth kept). The non-matmul work per token (norms, GELU, residuals)
    scales with the width D and the matmul work with D^2, so MFU should rise with D; the head dimension
    D / heads sets how well the fused attention kernel runs; the patch sets tokens per spectrum."""
    import contextlib

    import torch

    from pairspec.config import TrainSection
    from pairspec.data import model_pixels
    from pairspec.surveys.apogee.layout import APOGEE_GRID

    L = int(model_pixels(APOGEE_GRID).size)
    cuda = device.type == "cuda"
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    tcfg = TrainSection(device=str(device))
    out = {"preset": preset, "batch": batch, "n_model_pix": L, "runs": []}
    for shape in shapes:
        if elapsed() > deadline:
            out["runs"].append({**shape, "skipped": "time budget"})
            continue
        info = {}
        try:
            run = _one_step_run(preset, L, batch, cuda, steps, device, amp, tcfg, _peaks(env), info, overrides=shape)
            out["runs"].append({**shape, "parameters": info["parameters"],
                                "forward_gflop_per_spectrum": round(info["forward_gflop_per_spectrum"], 2), **run})
        except Exception as err:  # noqa: BLE001 - e.g. out of memory for a wide shape: keep the others
            out["runs"].append({**shape, "error": f"{type(err).__name__}: {err}"[:500]})
            log(f"  shape {shape} failed: {err}")
        if cuda:
            torch.cuda.empty_cache()
            torch._dynamo.reset()
    return out


def _emulator_spectra(n: int, n_distinct: int, seed: int = 0):
    """(flux, ivar) float32 (n, npix): emulator spectra of random giants/dwarfs on the apStar grid, times
    a smooth continuum, with Gaussian noise at S/N 5-100 and a few bad pixels (the prediction workload)."""
    import torch

    from pairspec.surveys.apogee.emulator import KuruczEmulator
    from pairspec.surveys.apogee.layout import APOGEE_GRID

    emu = KuruczEmulator.load()
    rng = np.random.default_rng(seed)
    lab = np.stack([rng.uniform(4000, 6500, n_distinct), rng.uniform(1.0, 4.8, n_distinct),
                    rng.uniform(-0.9, 0.4, n_distinct), rng.uniform(-0.1, 0.3, n_distinct)], axis=1)
    norm = emu.torch_normalized(torch.as_tensor(lab, dtype=torch.float64)).numpy()
    base = np.ones((n_distinct, APOGEE_GRID.npix))
    base[:, emu.apstar_index] = norm
    x = np.linspace(-1, 1, APOGEE_GRID.npix)
    flux = np.empty((n, APOGEE_GRID.npix), np.float32)
    ivar = np.empty_like(flux)
    for s in range(0, n, 4096):
        k = np.arange(s, min(s + 4096, n))
        cont = 800 * (1 + 0.2 * x[None] * rng.uniform(-1, 1, (k.size, 1)) - 0.1 * x[None] ** 2)
        snr = rng.uniform(5, 100, (k.size, 1))
        sig = cont / snr
        f = base[k % n_distinct] * cont + rng.standard_normal((k.size, APOGEE_GRID.npix)) * sig
        iv = 1 / sig**2 * (rng.random((k.size, APOGEE_GRID.npix)) > 0.01)
        flux[k], ivar[k] = f, iv
    return flux, ivar


def _untrained_predictor(preset: str, device, patch_size=None, compile=False):
    """A LabelPredictor around an untrained model with a checkpoint-like meta (speed only)."""
    from pairspec.data import LabelStats, model_pixels
    from pairspec.inference import LabelPredictor
    from pairspec.models import create_model
    from pairspec.surveys.apogee.layout import APOGEE_DR17_SCHEMA, APOGEE_GRID

    L = int(model_pixels(APOGEE_GRID).size)
    K = len(APOGEE_DR17_SCHEMA)
    stats = LabelStats(np.zeros(K, np.float32), np.ones(K, np.float32), -np.ones(K, np.float32), np.ones(K, np.float32))
    meta = {"schema": APOGEE_DR17_SCHEMA.to_dict(), "grid": APOGEE_GRID.to_dict(), "label_stats": stats.to_dict(),
            "label_lo": [-1.0] * K, "label_hi": [1.0] * K, "n_model_pix": L, "calibration": None}
    return LabelPredictor(create_model(preset, L, K, patch_size=patch_size), meta, device=str(device), compile=compile)


def stage_predict(device, preset: str, n: int, batches: list[int], deadline: float, patch_size=None,
                  predict_patches=None) -> dict:
    import torch

    from pairspec.models import count_flops

    t = time.perf_counter()
    flux, ivar = _emulator_spectra(n, min(n, 4096))
    out = {"preset": preset, "n_spectra": n, "make_spectra_s": round(time.perf_counter() - t, 1), "predict": []}
    pred = _untrained_predictor(preset, device, patch_size)
    flops = count_flops(pred.model)
    pred.predict(flux[:512], ivar[:512], batch_size=256)  # warm-up
    for bs in batches:
        if elapsed() > deadline:
            out["predict"].append({"batch": bs, "skipped": "time budget"})
            continue
        try:
            dt = _timed(lambda: pred.predict(flux, ivar, batch_size=bs), device, 2)
        except Exception as err:  # noqa: BLE001 - e.g. out of memory at the larger batch
            out["predict"].append({"batch": bs, "error": f"{type(err).__name__}: {err}"[:500]})
            continue
        out["predict"].append({"batch": bs, "spectra_per_s": round(n / dt, 1)})
        log(f"  predict batch {bs}: {n / dt:.0f} spectra/s")
    # the network alone on prepared inputs (bf16 autocast as in predict), eager then compiled
    bs = min(batches)
    if device.type == "cuda":
        x = pred._inputs_torch(flux[:bs], ivar[:bs])
        pre = _timed(lambda: pred._inputs_torch(flux[:bs], ivar[:bs]), device, 3)
        out["inputs_on_device_spectra_per_s"] = round(bs / pre, 1)
    else:
        import pairspec.data as D

        x = torch.from_numpy(D.prepare_inputs(flux[:bs], ivar[:bs], pred.grid))
    amp_dtype = torch.bfloat16
    for compiled in (False, True):
        if elapsed() > deadline:
            break
        net = torch.compile(pred.model) if compiled else pred.model
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype, enabled=device.type == "cuda"):
            t = time.perf_counter()
            net(x)
            _sync(device)
            warm = time.perf_counter() - t
            dt = _timed(lambda: net(x), device, 5)
        key = "network_compiled" if compiled else "network_eager"
        out[key] = {"batch": bs, "spectra_per_s": round(bs / dt, 1), "warmup_s": round(warm, 1),
                    "tflops": round(flops * bs / dt / 1e12, 1)}
        log(f"  {key}: {bs / dt:.0f} spectra/s")

    # where the input preparation (cleaning, S/N, continuum fit, input tensor) spends its time
    bs = max(batches)
    if elapsed() < deadline:
        out["inputs_profile"] = _profile(lambda: pred._inputs_torch(flux[:bs], ivar[:bs]), device)
    # LabelPredictor.predict end to end, eager and compile=True, at each patch size, the largest batch
    out["end_to_end"] = []
    for patch in predict_patches or [patch_size]:
        for compiled in (False, True):
            if elapsed() > deadline:
                out["end_to_end"].append({"patch_size": patch, "compiled": compiled, "skipped": "time budget"})
                continue
            try:
                p = _untrained_predictor(preset, device, patch, compile=compiled)
                t = time.perf_counter()
                p.predict(flux[:bs], ivar[:bs], batch_size=bs)  # warm-up (and compilation)
                _sync(device)
                warm = time.perf_counter() - t
                dt = _timed(lambda: p.predict(flux, ivar, batch_size=bs), device, 2)
                row = {"patch_size": patch or p.model.patch_size, "compiled": compiled, "batch": bs,
                       "spectra_per_s": round(n / dt, 1), "warmup_s": round(warm, 1),
                       "forward_gflop_per_spectrum": round(count_flops(p.model) / 1e9, 2)}
            except Exception as err:  # noqa: BLE001 - keep the other measurements
                row = {"patch_size": patch, "compiled": compiled, "error": f"{type(err).__name__}: {err}"[:500]}
            out["end_to_end"].append(row)
            log(f"  end to end: {row}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return out


def _profile(fn, device, rows: int = 15) -> str:
    """torch.profiler table of one call of fn (after one warm-up call): the top ops by self device time
    (self CPU time on a CPU)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    fn()
    _sync(device)
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        fn()
        _sync(device)
    return prof.key_averages().table(sort_by="self_device_time_total" if cuda else "self_cpu_time_total",
                                     row_limit=rows)


def _simulate_cmd(args, store_dir: Path) -> list[str]:
    return [sys.executable, __file__, "--simulate-only", str(store_dir), "--stars", str(args.stars),
            "--seed", str(args.seed), "--workers", str(args.workers)]


def stage_wait_sim(proc, store_dir: Path, deadline: float) -> dict:
    while proc.poll() is None and elapsed() < deadline:
        time.sleep(2)
    if proc.poll() is None:
        proc.kill()
        raise TimeoutError("the simulation did not finish inside its budget")
    if proc.returncode != 0:
        raise RuntimeError(f"simulation exited with {proc.returncode} (see sim.log)")
    return json.loads((store_dir / "sim.json").read_text())


def stage_train(device, args, store_path: str, run_dir: Path, deadline: float, step_sps: float | None) -> dict:
    from pairspec import train as T
    from pairspec.config import (
        DataSection,
        ModelSection,
        RunConfig,
        RunSection,
        TrainSection,
    )
    from pairspec.data import TwinData
    from pairspec.store import open_store

    store = open_store(store_path)
    prep = device if device.type == "cuda" else None
    t = time.perf_counter()
    tr = TwinData(store, "train", mode="loo", device=prep)
    va = TwinData(store, "val", mode="loo", device=prep)
    load_s = time.perf_counter() - t
    log(f"  twins loaded: train {len(tr)}, val {len(va)} in {load_s:.1f}s")
    T._load_data = lambda cfg: (tr, va, store.schema, store.grid)

    reserve = 30.0 if not args.toy else 5.0  # calibration, last validation, checkpoint writing
    budget_s = max(deadline - elapsed() - reserve, 10.0)
    steps_per_epoch = max(1, len(tr) // args.batch_size)
    # epochs so the cosine schedule ends near the time limit (the limit is the guard: a data-bound run is slower)
    rate = (step_sps or 1000.0) * 0.6 / args.batch_size
    epochs = int(max(1, min(args.max_epochs, budget_s * rate // steps_per_epoch)))
    cfg = RunConfig(run=RunSection(name="gpu", out_dir=str(run_dir), seed=0),
                    data=DataSection(store=store_path, mode="loo"),
                    model=ModelSection(preset=args.preset, drop_path=0.1),
                    train=TrainSection(epochs=epochs, batch_size=args.batch_size, lr=args.lr, warmup_frac=0.05,
                                       device=str(device), bf16=device.type == "cuda", compile=device.type == "cuda",
                                       num_workers=args.loader_workers, resume=False,
                                       time_limit_min=budget_s / 60.0))
    t = time.perf_counter()
    best = T.train(cfg, progress=False)
    wall = time.perf_counter() - t
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = lines[-1]["step"] if lines else 0
    epoch_s = [r["time_s"] for r in lines]
    return {"checkpoint": str(best), "train_twins": len(tr), "val_twins": len(va), "load_twins_s": round(load_s, 1),
            "load_twins_per_s": round((len(tr) + len(va)) / load_s, 1), "planned_epochs": epochs,
            "epochs_done": len(lines), "steps": steps, "batch_size": args.batch_size, "train_wall_s": round(wall, 1),
            "time_limit_min": round(budget_s / 60, 2),
            "samples_per_s_end_to_end": round(steps * args.batch_size / max(sum(epoch_s), 1e-9), 1),
            "epoch_s": epoch_s, "last_epoch": lines[-1] if lines else None}


def stage_evaluate(checkpoint: str, store_path: str, truth: str, out: Path, work: Path, device) -> dict:
    from pairspec.evaluate import evaluate, format_table

    t = time.perf_counter()
    metrics = evaluate(checkpoint, store_path, split="test", truth=truth, out_dir=str(work / "report"),
                       emulator_fit=False, progress=False, device=str(device), batch_size=1024)
    table = format_table(metrics)
    (out / "table.txt").write_text(table + "\n")
    print(table, flush=True)
    return {"evaluate_s": round(time.perf_counter() - t, 1), "table": table}


def simulate_only(store_dir: Path, stars: int, seed: int, workers: int) -> None:
    from pairspec.surveys.apogee.store_sim import simulate_apogee_store

    store_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    s = simulate_apogee_store(str(store_dir / "apogee.zarr"), n_stars=stars, seed=seed, workers=workers,
                              progress=False, truth=str(store_dir / "truth.fits"))
    dt = time.perf_counter() - t
    (store_dir / "sim.json").write_text(json.dumps({
        "stars": s.n_stars, "visits": s.n_visits, "files": s.n_files, "rows_left_out": len(s.skipped),
        "wall_s": round(dt, 1), "workers": workers, "stars_per_s": round(s.n_stars / dt, 1)}))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/work/gpu_out", help="folder for gpu.json, logs, report")
    ap.add_argument("--work", default=None, help="scratch folder for the store and run (default: OUT/work)")
    ap.add_argument("--toy", action="store_true", help="CPU rehearsal: tiny sizes and presets")
    ap.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget of the whole run")
    ap.add_argument("--stars", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=20261128)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 4), help="simulation processes")
    ap.add_argument("--preset", default="tsn_base")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--loader-workers", type=int, default=6)
    ap.add_argument("--stages", default="env,step,predict,sim,train,evaluate",
                    help="stages to run, in this order (the simulation starts at t=0 when sim is listed)")
    ap.add_argument("--patch-size", type=int, default=None, help="override the preset's patch size (step, predict)")
    ap.add_argument("--step-batches", default="256,512")
    ap.add_argument("--shapes", default="384:8:16,384:6:16,384:6:32,512:8:32,768:12:32,768:12:64",
                    help="shapes stage: WIDTH:HEADS:PATCH of the preset (depth kept), comma-separated")
    ap.add_argument("--shape-batch", type=int, default=256, help="shapes stage: batch of the optimizer step")
    ap.add_argument("--predict-patches", default="16,32",
                    help="predict stage: patch sizes for the end-to-end eager/compiled comparison")
    ap.add_argument("--step-modes", default="eager,compiled")
    ap.add_argument("--expect-sps", type=float, default=2500.0,
                    help="training samples/s assumed to plan epochs when the step stage did not run")
    ap.add_argument("--train-until", type=float, default=0.88, help="fraction of the budget training may use up to")
    ap.add_argument("--simulate-only", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.simulate_only:
        simulate_only(Path(args.simulate_only), args.stars, args.seed, args.workers)
        return {}

    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    if args.toy:
        args.stars, args.preset, args.batch_size, args.loader_workers = min(args.stars, 60), "tsn_tiny", 16, 0
    device = torch.device("cuda" if torch.cuda.is_available() and not args.toy else "cpu")
    res = Results(out)
    res.data["args"] = vars(args)
    budget = args.budget_s

    stages = [x.strip() for x in args.stages.split(",") if x.strip()]
    unknown = set(stages) - {"env", "step", "shapes", "predict", "sim", "train", "evaluate"}
    if unknown:
        raise SystemExit(f"--stages: unknown stage(s) {sorted(unknown)}")

    def stage_deadline(name: str, share: float) -> float:
        """A stage may run until `share` of the budget when training follows it, else to 95 %."""
        later = stages[stages.index(name) + 1:]
        return (share if "train" in later else 0.95) * budget
    store_dir, proc = work / "sim", None
    if "sim" in stages:
        with open(out / "sim.log", "w") as simlog:
            proc = subprocess.Popen(_simulate_cmd(args, store_dir), stdout=simlog, stderr=subprocess.STDOUT)
        log(f"simulation of {args.stars} stars started (pid {proc.pid}, {args.workers} workers)")
    env, step, trained = {}, {}, {}
    modes = [m == "compiled" for m in args.step_modes.split(",")]
    for name in stages:
        if name == "env":
            env = res.stage("env", stage_env, device, args.toy)
        elif name == "step":
            step = res.stage("step", stage_step, device, args.preset,
                             [args.batch_size] if args.toy else [int(b) for b in args.step_batches.split(",")],
                             2 if args.toy else 10, env,
                             (0.35 if "train" not in stages[:stages.index("step")] else 0.95) * budget,
                             modes, args.patch_size)
        elif name == "predict":
            res.stage("predict", stage_predict, device, args.preset, 256 if args.toy else 32768,
                      [64, 128] if args.toy else [1024, 4096], stage_deadline("predict", 0.45), args.patch_size,
                      [int(p) for p in args.predict_patches.split(",") if p])
        elif name == "shapes":
            shapes = [parse_shape(x) for x in args.shapes.split(",") if x]
            if args.toy:
                shapes = [{**sh, "embed_dim": sh["embed_dim"] // 8, "num_heads": max(1, sh["num_heads"] // 4)}
                          for sh in shapes[:3]]
            res.stage("shapes", stage_shapes, device, args.preset, shapes, 16 if args.toy else args.shape_batch,
                      2 if args.toy else 8, env, stage_deadline("shapes", 0.55))
        elif name == "sim":
            res.stage("sim", stage_wait_sim, proc, store_dir, 0.65 * budget)
        elif name == "train" and res.data["stages"].get("sim", {}).get("ok"):
            compiled = [r for r in step.get("runs", []) if r.get("compiled") and r.get("batch") == args.batch_size
                        and "samples_per_s" in r]
            sps = compiled[0]["samples_per_s"] if compiled else args.expect_sps
            trained = res.stage("train", stage_train, device, args, str(store_dir / "apogee.zarr"), work / "run",
                                args.train_until * budget, sps)
            src = work / "run" / "metrics.jsonl"
            if src.exists():
                (out / "metrics.jsonl").write_text(src.read_text())
        elif name == "evaluate" and trained.get("ok"):
            res.stage("evaluate", stage_evaluate, trained["checkpoint"], str(store_dir / "apogee.zarr"),
                      str(store_dir / "truth.fits"), out, work, device)
            rep = work / "report" / "report.md"
            if rep.exists():
                (out / "report.md").write_text(rep.read_text())
    res.save()
    _summary(res.data)
    return res.data


def _summary(data: dict) -> None:
    st = data["stages"]
    env = st.get("env", {})
    print("\n== summary ==", flush=True)
    print(f"card {env.get('card', env.get('device'))}  torch {env.get('torch')}  matmul bf16 "
          f"{env.get('matmul_bf16_tflops')} TFLOP/s  copy {env.get('copy_tb_s')} TB/s")
    for r in st.get("step", {}).get("runs", []):
        print(f"train step {'compiled' if r.get('compiled') else 'eager   '} b{r.get('batch')}: "
              f"{r.get('samples_per_s')} samples/s  MFU {r.get('mfu_vs_datasheet')} (datasheet) "
              f"{r.get('mfu_vs_measured_matmul')} (measured matmul)")
    for r in st.get("shapes", {}).get("runs", []):
        print(f"shape D{r.get('embed_dim')} h{r.get('num_heads')} p{r.get('patch_size')}: "
              f"{r.get('samples_per_s')} samples/s  MFU {r.get('mfu_vs_datasheet')}  inference "
              f"{r.get('forward_compiled_spectra_per_s', r.get('forward_eager_spectra_per_s'))} spectra/s"
              + (f"  {r['error'][:80]}" if "error" in r else ""))
    p = st.get("predict", {})
    for r in p.get("predict", []):
        print(f"predict b{r.get('batch')}: {r.get('spectra_per_s')} spectra/s")
    for r in p.get("end_to_end", []):
        print(f"predict end to end p{r.get('patch_size')} {'compiled' if r.get('compiled') else 'eager'}: "
              f"{r.get('spectra_per_s')} spectra/s")
    for k in ("network_eager", "network_compiled"):
        if k in p:
            print(f"{k}: {p[k]}")
    for k in ("sim", "train", "evaluate"):
        s = st.get(k, {})
        keep = {x: s[x] for x in s if x not in ("table", "traceback", "epoch_s", "last_epoch")}
        print(f"{k}: {keep}")
    print(f"total {data.get('elapsed_s')} s", flush=True)


if __name__ == "__main__":
    main()
