"""Does a larger patch cost label quality? The same model trained at several patch sizes on one survey.

    python benchmarks/patch_size.py                      # CPU size: tsn_mini, 1500 stars, patches 16/32/64
    python benchmarks/patch_size.py --toy                # minutes; checks the script end to end
    python benchmarks/patch_size.py --preset tsn_base --stars 20000 --device cuda --patches 16 32

Why: the prediction cost per spectrum is ~linear in the number of tokens (pixels / patch), so patch 32
halves it (benchmarks/results/gpu_h100.md: 17.6k against 8.6k spectra/s for tsn_base, eager). The
patch embedding is a linear map of patch x 2 input values into embed_dim; while patch x 2 <= embed_dim
it can keep everything the pixels say, so the question is what the coarser token grid does to the
attention and the reconstruction head. This measures it: same survey, seed, epochs, schedule and
model but for patch_size; scatter against truth and against the survey labels on the test split.

Writes <results>/patch_size-<tag>.json and .md (tag: cpu, toy or what --tag says). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

SEED = 20261128
SIZES = {
    "cpu": dict(stars=1500, epochs=10, preset="tsn_mini", batch_size=32, lr=2e-3, patches=[16, 32, 64]),
    "toy": dict(stars=60, epochs=1, preset="tsn_tiny", batch_size=16, lr=2e-3, patches=[16, 32], max_steps=10),
}


def recipe(store: str, out_dir: Path, patch: int, k: int, args):
    """Run k of a patch size: the training seed (weights, batch order) is SEED % 1000 + k; same survey."""
    from pairspec.config import (
        DataSection,
        ModelSection,
        RunConfig,
        RunSection,
        TrainSection,
    )

    return RunConfig(
        run=RunSection(name=f"p{patch}_s{k}", out_dir=str(out_dir / f"p{patch}_s{k}"), seed=SEED % 1000 + k),
        data=DataSection(store=store, mode="loo", labels=("teff", "logg", "fe_h", "mg_fe")),
        model=ModelSection(preset=args.preset, patch_size=patch),
        train=TrainSection(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, max_steps=args.max_steps,
                           device=args.device, bf16="auto", compile=args.compile),
    )


def summary(metrics: dict, labels) -> dict:
    """Robust sigma at S/N < 60 and over all visits, against truth and survey labels, per label."""
    out = {}
    for ref in ("truth", "survey"):
        per = metrics["scatter"]["tsn"].get(ref)
        if per is None:
            continue
        out[ref] = {n: {b: per[n][b]["sigma"] for b in ("<60", "all")} for n in labels}
        out[ref]["n_visits"] = {b: per[labels[0]][b]["n"] for b in ("<60", "all")}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toy", action="store_true", help="tiny run that only checks the script")
    ap.add_argument("--stars", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--preset")
    ap.add_argument("--patches", type=int, nargs="+")
    ap.add_argument("--seeds", type=int, default=1, help="training seeds per patch size (same survey)")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--workers", type=int, default=2, help="simulator processes")
    ap.add_argument("--work", default="benchmarks/work/patch_size")
    ap.add_argument("--results", default="benchmarks/results")
    ap.add_argument("--tag", help="result file suffix (default: cpu or toy)")
    args = ap.parse_args(argv)
    kind = "toy" if args.toy else "cpu"
    for key, value in SIZES[kind].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    tag = args.tag or kind

    from pairspec.evaluate import _jsonable, evaluate, format_table
    from pairspec.models import create_model
    from pairspec.models.tsn import count_flops, count_parameters
    from pairspec.surveys.apogee.store_sim import simulate_apogee_store
    from pairspec.train import train

    work = Path(args.work) / tag
    work.mkdir(parents=True, exist_ok=True)
    store, truth = work / "apogee.zarr", work / "truth.fits"
    t0 = time.perf_counter()
    if not store.exists():
        simulate_apogee_store(str(store), n_stars=args.stars, seed=SEED, workers=args.workers, progress=False,
                              truth=str(truth))
    timings = {"simulate_s": time.perf_counter() - t0}

    labels = ("teff", "logg", "fe_h", "mg_fe")
    runs = {}
    for patch in args.patches:
        for k in range(args.seeds):
            cfg = recipe(str(store), work / "runs", patch, k, args)
            ckpt, train_s = finished(cfg)
            if ckpt is None:  # train (a finished run of the same recipe is reused: reruns add seeds)
                t0 = time.perf_counter()
                ckpt = train(cfg, progress=False)
                train_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            metrics = evaluate(str(ckpt), str(store), split="test", truth=str(truth), progress=False, plots=False,
                               out_dir=str(work / f"report_p{patch}_s{k}"), device=args.device)
            model = create_model(args.preset, metrics_npix(ckpt), len(labels), patch_size=patch)
            runs[f"p{patch}_s{k}"] = {
                "patch_size": patch, "seed": cfg.run.seed,
                "params": count_parameters(model),
                "gflop_forward": count_flops(model) / 1e9,
                "train_s": train_s,
                "evaluate_s": time.perf_counter() - t0,
                "scatter": summary(metrics, labels),
            }
            print(f"patch {patch} seed {cfg.run.seed}: trained in {train_s:.0f} s", file=sys.stderr)
            print(format_table(metrics), file=sys.stderr)

    result = {"benchmark": "patch_size", "tag": tag, "seed": SEED, "stars": args.stars, "epochs": args.epochs,
              "preset": args.preset, "batch_size": args.batch_size, "lr": args.lr, "max_steps": args.max_steps,
              "device": args.device, "timings": timings, "runs": runs}
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"patch_size-{tag}.json").write_text(json.dumps(_jsonable(result), indent=1))
    (results / f"patch_size-{tag}.md").write_text(markdown(result, labels))
    print(json.dumps(_jsonable(result), indent=1))
    return result


def finished(cfg):
    """(best.pt, training seconds) of a run of this recipe that already finished all its epochs, else
    (None, None). Its config.yaml must be the recipe's (name and folder aside), so a changed recipe is
    never reused."""
    import yaml

    from pairspec.config import from_dict, to_dict

    run = Path(cfg.run.out_dir)
    best, log, saved = run / "best.pt", run / "metrics.jsonl", run / "config.yaml"
    if not (best.exists() and log.exists() and saved.exists()):
        return None, None
    old = from_dict(yaml.safe_load(saved.read_text()), str(saved))
    cfg = from_dict(to_dict(cfg))  # paths resolved as in the saved one
    if (old.data, old.model, old.train, old.run.seed) != (cfg.data, cfg.model, cfg.train, cfg.run.seed):
        return None, None
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    if not lines or lines[-1]["epoch"] != cfg.train.epochs:
        return None, None
    return best, sum(r["time_s"] for r in lines)


def metrics_npix(ckpt) -> int:
    from pairspec.checkpoint import load_checkpoint

    _, meta = load_checkpoint(ckpt, map_location="cpu")
    return int(meta["n_model_pix"])


def markdown(result: dict, labels) -> str:
    import numpy as np

    units = {"teff": "K", "logg": "dex", "fe_h": "dex", "mg_fe": "dex"}
    fmt = lambda n, v: f"{v:.0f}" if n == "teff" else f"{v:.3f}"
    runs = list(result["runs"].values())
    lines = [f"# Patch size ({result['tag']}): {result['preset']}, {result['stars']} simulated stars, "
             f"{result['epochs']} epochs, survey seed {result['seed']}", "",
             "Robust sigma of visit labels (test split) against truth and against the simulated survey labels; "
             "`benchmarks/patch_size.py`, raw figures in the JSON beside this file. Each patch size is trained "
             "with one or more training seeds (weights and batch order) on the same survey.", ""]
    first = runs[0]["scatter"]["truth"]["n_visits"]
    lines += [f"Test visits: {first['<60']} at S/N < 60, {first['all']} in all.", ""]
    patches = sorted({r["patch_size"] for r in runs})
    head = ["patch", "seeds"] + [f"{n} <60 ({units[n]})" for n in labels]
    for ref in ("truth", "survey"):
        lines += [f"## S/N < 60 against {ref}: mean over seeds (each seed in brackets)", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for p in patches:
            rs = [r for r in runs if r["patch_size"] == p and ref in r["scatter"]]
            cells = [str(p), str(len(rs))]
            for n in labels:
                v = [r["scatter"][ref][n]["<60"] for r in rs]
                cells.append(f"{fmt(n, float(np.mean(v)))} ({', '.join(fmt(n, x) for x in v)})")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Each run, all visits against truth", "",
              "| patch | seed | GFLOP fwd | train s | " + " | ".join(f"{n} all" for n in labels) + " |",
              "|" + "---|" * (4 + len(labels))]
    for r in runs:
        sc = r["scatter"]["truth"]
        lines.append(f"| {r['patch_size']} | {r['seed']} | {r['gflop_forward']:.3f} | {r['train_s']:.0f} | "
                     + " | ".join(fmt(n, sc[n]["all"]) for n in labels) + " |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
