"""Learning curve: label precision against the number of training stars, TSN beside its baselines.

    python benchmarks/learning_curve.py                    # CPU: 16k-star survey, 4 sizes x 2 seeds
    python benchmarks/learning_curve.py --toy              # minutes; checks the script end to end
    # a 2-core machine: one process per seed, one thread each, then the table from both
    OMP_NUM_THREADS=1 python benchmarks/learning_curve.py --only-seeds 0 &
    OMP_NUM_THREADS=1 python benchmarks/learning_curve.py --only-seeds 1 ; wait
    python benchmarks/learning_curve.py --report-only

One standard synthetic survey (`pairspec simulate apogee --store-only`, seed 1; 16k stars give ~10.5k
training stars with >= 2 visits) and ONE fixed test split (the store's hash split: the same test stars at
every size); each size trains on N train stars ranked by a hash of the star id (data.max_stars: nested,
not biased to some fields; the cap applies to the validation split too). Per size and training seed: TSN
(recipes/precision_cpu.yaml: the demo's model with a hidden layer in its readout; both have the label
decoder), the direct-regression network (same backbone, combined spectra only) and the ridge baseline (a linear map of the normalised pixels); the emulator fit (the
visit-level pipeline) once, on a fixed random subset of the test visits (it does not learn from the
training stars). Per visit-S/N bin (<20, 20-40, 40-60, >=60) and label: robust sigma and bias against
the truth, and the Theil-Sen slope (S/N >= 20), each with its spread over the seeds.

Equal compute by default: every TSN run takes about the same number of optimizer steps (one epoch of the
largest size; the whole number of epochs closest to it at the smaller sizes, so each lr schedule runs to
its end). A 2-core CPU cannot train every size to convergence (10k stars x 10 epochs is ~2 core-hours per
run), so this curve answers "what do more stars buy at a fixed CPU budget"; `--epochs` fixes the epochs
instead (the GPU issue's budget). Each finished (size, seed) writes <work>/records/n<N>_s<k>.json; a rerun
skips those, so an interrupted curve resumes, and several processes can share one work folder.

Writes <results>/learning_curve-<tag>.json, .md and .png (sigma against training stars). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

SEED = 1
LABELS = ("teff", "logg", "fe_h", "mg_fe")
BINS = ("<20", "20-40", "40-60", ">=60")
SIZES = {
    # max_fit 2000: a bin of the fit needs several hundred visits from as many stars (600 visits put 115 in
    # S/N < 20, whose [Fe/H] sigma read 0.024 where all 1116 such test visits give 0.040: fit_same_visits.py)
    "cpu": dict(stars=16000, sizes=[1500, 2600, 5200, 10400], seeds=2, max_fit=2000, epochs=None),
    "toy": dict(stars=150, sizes=[40, 80], seeds=2, max_fit=20, epochs=1),
}


def tsn_recipe(store: str, out: Path, n_train: int, seed: int, epochs: int | None, extra=()):
    """The TSN recipe the precision study chose (docs/recipes.md, 'Precision levers'); CPU-sized.
    `extra`: more `section.field=value` overrides (a lever run: --set)."""
    from pairspec.config import load_recipe

    here = Path(__file__).resolve().parents[1]
    cfg = load_recipe(here / "recipes" / "precision_cpu.yaml", overrides=[
        f"data.store={store}", f"data.max_stars={n_train}", f"run.out_dir={out}", f"run.seed={seed}",
        "run.name=tsn", "train.device=cpu"] + ([f"train.epochs={epochs}"] if epochs else []) + list(extra))
    return cfg


def variants(base, epochs_direct: int | None = None):
    """{"tsn": base, "direct": ..., "ridge": ...} from the baseline recipes of pairspec.baselines."""
    from pairspec.baselines import baseline_recipes

    rec = baseline_recipes(base)
    return {"tsn": base, "direct": rec["direct"], "ridge": rec["ridge"]}


def summary(metrics: dict, method: str) -> dict:
    """Per label: sigma and bias per S/N bin and <60 against truth, slope at S/N >= 20 against truth."""
    sc = metrics["scatter"].get(method, {}).get("truth")
    if sc is None:
        return {}
    out = {}
    for name in LABELS:
        row = {b: {"sigma": sc[name][b]["sigma"], "bias": sc[name][b]["bias"], "n": sc[name][b]["n"]}
               for b in BINS + ("<60",)}
        row["slope"] = metrics.get("slope_snr20", {}).get(method, {}).get(name)
        out[name] = row
    return out


def extras(metrics: dict, method: str) -> dict:
    """What the issue asks beside sigma, from the same evaluation: the calibration (z-score std and 68 %
    coverage against truth and from repeat pairs), the [Mg/Fe]-[Fe/H] plane (detrended slope, separation of
    the two discs), sigma at S/N >= 60 over the survey labels' own scatter there, and (TSN) the denoised
    spectra's RMS and deepest-line depth against the truth per S/N bin."""
    out = {}
    cal = metrics.get("calibration", {}).get(method, {})
    out["calibration"] = {ref: {n: {k: cal[ref][n].get(k) for k in ("z_std", "cov68")} for n in cal[ref]}
                          for ref in ("truth", "repeat_pairs") if ref in cal}
    plane = metrics.get("chemical_plane", {}).get(method)
    if plane:
        out["chemical_plane"] = {k: plane.get(k) for k in ("detrended_slope", "separation", "separation_truth")}
    sc, noise = metrics["scatter"].get(method, {}).get("truth", {}), metrics.get("survey_noise", {})
    out["over_survey_ge60"] = {n: sc[n][">=60"]["sigma"] / noise[n][">=60"]["sigma"]
                               for n in LABELS if n in sc and n in noise and noise[n][">=60"]["sigma"]}
    spectra = metrics.get("spectra") if method == "tsn" else None
    if spectra:
        out["spectra"] = {kind: {m: {b: v["median"] for b, v in spectra[kind][m].items()}
                                 for m in ("input", "denoised", "loo") if m in spectra[kind]}
                          for kind in ("rms", "depth") if kind in spectra}
    return out


def spread(values) -> dict:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def aggregate(runs: list[dict]) -> dict:
    """{size: {method: {label: {bin: {"sigma": spread, "bias": spread}, "slope": spread}}}}."""
    out: dict = {}
    for r in runs:
        out.setdefault(str(r["n_train"]), {}).setdefault(r["method"], []).append(r["summary"])
    agg: dict = {}
    for size, methods in out.items():
        agg[size] = {}
        for method, sums in methods.items():
            agg[size][method] = {}
            for name in LABELS:
                if not all(name in s for s in sums):
                    continue
                entry = {b: {k: spread([s[name][b][k] for s in sums]) for k in ("sigma", "bias")}
                         for b in BINS + ("<60",)}
                entry["slope"] = spread([s[name]["slope"] for s in sums])
                agg[size][method][name] = entry
    return agg


def markdown(result: dict) -> str:
    agg, fit, epochs = result["aggregate"], result.get("emulator_fit", {}), result.get("epochs", {})
    if result.get("fixed_epochs"):
        budget = "Fixed epochs (--epochs): " + ", ".join(
            f"{n} stars {e} epochs ({e * result['steps_per_epoch'][n]} optimizer steps)" for n, e in epochs.items())
    else:
        budget = (f"Equal compute: {result.get('budget_steps')} optimizer steps per TSN run (whole epochs closest "
                  "to it: " + ", ".join(f"{n} stars {e} epochs" for n, e in epochs.items()) + ")")
    lines = [f"# Learning curve ({result['tag']}): {result['stars']}-star survey, seed {SEED}", "",
             f"Test split: {result['n_test_visits']} visits of {result['n_test_stars']} stars, the same at every size. "
             "Robust sigma against the truth, mean over training seeds [min-max]; slope at S/N >= 20.",
             f"{budget}. Training took {result.get('train_core_s', 0) / 60:.0f} core-minutes ({result['machine']}).", ""]
    for name in LABELS:
        unit = "K" if name == "teff" else "dex"
        lines += [f"## {name} [{unit}]", "", "| train stars | method | " + " | ".join(BINS) + " | <60 | slope |",
                  "|---|---|" + "---|" * (len(BINS) + 2)]
        for size in sorted(agg, key=int):
            for method, per in agg[size].items():
                if name not in per:
                    continue
                cells = [_cell(per[name][b]["sigma"], unit) for b in BINS + ("<60",)]
                lines.append(f"| {size} | {method} | " + " | ".join(cells) + f" | {_cell(per[name]['slope'], '')} |")
        if name in fit:
            cells = [_num(fit[name][b]["sigma"], unit) for b in BINS + ("<60",)]
            lines.append("| (any) | emulator fit | " + " | ".join(cells) + f" | {_num(fit[name].get('slope'), '')} |")
        same = (result.get("emulator_fit_same_visits") or {}).get(name)
        if same:  # the ratio on the fit's own visits, 16-84 % over the stars
            cells = [f"{_num(same[b]['ratio'], '')} [{_num(same[b]['lo'], '')}-{_num(same[b]['hi'], '')}]"
                     if b in same else "-" for b in BINS + ("<60",)]
            lines.append(f"| {result.get('emulator_fit_n_train')} | TSN / fit, same visits | " + " | ".join(cells) + " | |")
        lines.append("")
    return "\n".join(lines + extras_markdown(result.get("runs", [])))


def extras_markdown(runs: list[dict]) -> list[str]:
    """One row per TSN run: calibration, chemical plane, S/N >= 60 over the survey's scatter, denoiser."""
    rows = [r for r in runs if r["method"] == "tsn" and r.get("extras")]
    if not rows:
        return []
    def f2(v) -> str:
        return "-" if v is None else f"{v:.2f}"

    lines = ["## TSN beside sigma (each run)", "",
             ("z-std and 68 % coverage ranges over the four labels, against truth and from repeat pairs; "
              "[Mg/Fe] detrended slope and disc separation (truth's in brackets) at S/N < 40; TSN sigma at S/N >= 60 "
              "over the survey labels' own scatter there (Teff / log g / [Fe/H] / [Mg/Fe]); the denoised spectrum's "
              "RMS over the input visit's and its deepest lines' depth error at S/N < 20 / 20-40."), "",
             ("| train stars | seed | z-std truth | cov68 truth | z-std pairs | cov68 pairs | detrended | separation "
              "| >=60 / survey | denoised RMS / input | depth |"), "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["n_train"], r["seed"])):
        e, cells = r["extras"], []
        for ref in ("truth", "repeat_pairs"):
            cal = e.get("calibration", {}).get(ref, {})
            for key in ("z_std", "cov68"):
                v = [c[key] for c in cal.values() if c.get(key) is not None]
                cells.append(f"{min(v):.2f}-{max(v):.2f}" if v else "-")
        plane = e.get("chemical_plane", {})
        cells += [f2(plane.get("detrended_slope")),
                  f"{f2(plane.get('separation'))} ({f2(plane.get('separation_truth'))})" if plane else "-"]
        cells.append(" / ".join(f2(e.get("over_survey_ge60", {}).get(n)) for n in LABELS))
        sp = e.get("spectra", {})
        if sp:
            rms, depth = sp["rms"], sp["depth"]["denoised"]
            cells.append(" / ".join(f"{rms['denoised'][b] / rms['input'][b]:.2f}" for b in BINS))
            cells.append(" / ".join(f"{100 * depth[b]:+.1f} %" for b in BINS[:2]))
        else:
            cells += ["-", "-"]
        lines.append(f"| {r['n_train']} | {r['seed']} | " + " | ".join(cells) + " |")
    return lines + [""]


def _num(v, unit) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    return f"{v:.0f}" if unit == "K" else f"{v:.3f}"


def _cell(s: dict, unit) -> str:
    if not s or s.get("mean") is None:
        return "-"
    if s["n"] == 1:
        return _num(s["mean"], unit)
    return f"{_num(s['mean'], unit)} [{_num(s['min'], unit)}-{_num(s['max'], unit)}]"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    agg, fit = result["aggregate"], result.get("emulator_fit", {})
    sizes = sorted(agg, key=int)
    fig, axes = plt.subplots(3, len(LABELS), figsize=(4 * len(LABELS), 9), squeeze=False)
    colors = {"tsn": "tab:red", "tsn_network": "tab:orange", "direct": "tab:blue", "ridge": "tab:green"}
    for r, b in enumerate(BINS[:3]):
        for c, name in enumerate(LABELS):
            ax = axes[r, c]
            for method, color in colors.items():
                pts = [(int(s), agg[s][method][name][b]["sigma"]) for s in sizes
                       if method in agg[s] and name in agg[s][method]]
                pts = [(x, v) for x, v in pts if v["mean"] is not None]
                if pts:
                    x = [p[0] for p in pts]
                    ax.errorbar(x, [p[1]["mean"] for p in pts],
                                yerr=[[p[1]["mean"] - p[1]["min"] for p in pts], [p[1]["max"] - p[1]["mean"] for p in pts]],
                                color=color, marker="o", ms=3, label=method, capsize=2)
            if name in fit and fit[name][b]["sigma"] is not None:
                ax.axhline(fit[name][b]["sigma"], color="k", ls="--", lw=0.8, label="emulator fit")
            ax.set_xscale("log")
            # the sizes themselves as ticks: log-axis minor labels (3x10^3, 4x10^3, ...) overlap at this width
            ax.set_xticks([int(s) for s in sizes], [str(int(s)) for s in sizes], fontsize=8)
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_title(f"{name}, S/N {b}", fontsize=9)
            if r == 2:
                ax.set_xlabel("training stars")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def steps_per_epoch(store_path: str, n_train: int, batch_size: int, min_visits: int = 2) -> int:
    """Optimizer steps of one TSN epoch at `n_train` training stars: one twin per visit of a selected star."""
    from pairspec.data import select_stars, table_columns
    from pairspec.store import open_store

    store = open_store(store_path)
    stars = select_stars(store, "train", "loo", min_visits, n_train)
    n_twins = int(np.asarray(table_columns(store, "stars", ("n_visits",))["n_visits"])[stars].sum())
    return max(1, -(-n_twins // batch_size))


def epochs_for_budget(budget_steps: int, spe: int) -> int:
    """Whole epochs closest to a step budget (>= 1): the lr schedule then runs to its end in every run."""
    return max(1, round(budget_steps / spe))


def record_path(work: Path, n_train: int, k: int, methods=("tsn",)) -> Path:
    """One record per (size, seed); a run without TSN (e.g. --methods direct, a baseline added to a finished
    curve) gets its own name, so it never hides or replaces the TSN record of the same point."""
    suffix = "" if "tsn" in methods else "-" + "-".join(sorted(methods))
    return work / "records" / f"n{n_train}_s{k}{suffix}.json"


def collect(work: Path, sizes) -> list[dict]:
    """Every finished run record under work/records for these sizes (written by any process)."""
    runs = []
    for path in sorted((work / "records").glob("n*_s*.json")):
        rec = json.loads(path.read_text())
        if rec["n_train"] in sizes:
            report = work / "reports" / path.stem / "metrics.json"
            for run in rec["runs"]:
                if "extras" not in run and report.exists():  # a record written before extras existed
                    run["extras"] = extras(json.loads(report.read_text()), run["method"])
            runs.extend(rec["runs"])
    return runs


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toy", action="store_true", help="tiny run that only checks the script")
    ap.add_argument("--stars", type=int, help="stars in the simulated survey")
    ap.add_argument("--sizes", type=int, nargs="+", help="training stars per point")
    ap.add_argument("--seeds", type=int, help="training seeds per point")
    ap.add_argument("--only-seeds", type=int, nargs="+",
                    help="run only these seed indices (0-based; e.g. one process per seed on a 2-core machine)")
    ap.add_argument("--points", nargs="+", metavar="N:K",
                    help="run exactly these (training stars, seed index) points, in this order (to balance "
                         "processes; default: every size x seed)")
    ap.add_argument("--max-fit", type=int, help="test visits the emulator fit runs on")
    ap.add_argument("--epochs", type=int, help="fixed epochs at every size (default: equal compute, see --steps)")
    ap.add_argument("--steps", type=int,
                    help="optimizer-step budget per TSN run; epochs = the whole number closest to it at each size "
                         "(default: one epoch of the largest size)")
    ap.add_argument("--methods", nargs="+", default=["tsn", "direct", "ridge"])
    ap.add_argument("--direct-seeds", type=int, default=None,
                    help="train the direct network for the first K seeds only (default: all)")
    ap.add_argument("--direct-sizes", type=int, nargs="+",
                    help="train the direct network at these sizes only (default: every size)")
    ap.add_argument("--report-only", action="store_true",
                    help="no training: aggregate the run records already under --work into the result files")
    ap.add_argument("--work", default="benchmarks/work/learning_curve")
    ap.add_argument("--store", help="an existing standard store (default: simulate one under --work)")
    ap.add_argument("--results", default="benchmarks/results")
    ap.add_argument("--tag", help="result file suffix (default: cpu or toy)")
    ap.add_argument("--workers", type=int, default=2, help="simulator processes")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="override a field of the TSN recipe (repeatable; a lever run: use with --tag)")
    args = ap.parse_args(argv)
    kind = "toy" if args.toy else "cpu"
    for key, value in SIZES[kind].items():
        if getattr(args, key.replace("-", "_"), None) is None:
            setattr(args, key.replace("-", "_"), value)
    tag = args.tag or kind
    work = Path(args.work) / tag
    (work / "records").mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    from pairspec.evaluate import evaluate
    from pairspec.train import train

    store, truth = args.store, None
    if store is None:
        from pairspec.surveys import get_simulator

        if not (work / "survey" / "truth.fits").exists():
            get_simulator("apogee").simulate(work / "survey", n_stars=args.stars, seed=SEED, workers=args.workers,
                                             store_only=True, progress=False)
        store, truth = str(work / "survey" / "apogee.zarr"), str(work / "survey" / "truth.fits")
    else:
        truth = str(Path(store).parent / "truth.fits")
    batch = tsn_recipe(store, work, 1, 0, None, args.overrides).train.batch_size
    spe = {n: steps_per_epoch(store, n, batch) for n in args.sizes}
    budget = args.steps or spe[max(args.sizes)]
    epochs = {n: args.epochs or epochs_for_budget(budget, spe[n]) for n in args.sizes}
    fit_path = work / "records" / "emulator_fit.json"
    seeds = args.only_seeds if args.only_seeds is not None else list(range(args.seeds))
    points = ([tuple(int(v) for v in p.split(":")) for p in args.points] if args.points
              else [(n, k) for n in args.sizes for k in seeds])
    for n_train, k in [] if args.report_only else points:
        if n_train not in spe:
            raise SystemExit(f"--points {n_train}:{k}: {n_train} is not one of --sizes {args.sizes}")
        rec_path = record_path(work, n_train, k, args.methods)
        if rec_path.exists():
            continue  # finished earlier (the script resumes where it stopped)
        base = tsn_recipe(store, work / "runs" / f"n{n_train}_s{k}" / "tsn", n_train, 100 + k, epochs[n_train],
                          args.overrides)
        ckpts, times = {}, {}
        for method, cfg in variants(base).items():
            if method not in args.methods or (method == "direct" and (
                    (args.direct_seeds is not None and k >= args.direct_seeds)
                    or (args.direct_sizes is not None and n_train not in args.direct_sizes))):
                continue
            t0 = time.perf_counter()
            ckpts[method] = train(cfg, progress=False)
            times[method] = time.perf_counter() - t0
        # once, by one process; --max-fit 0 skips it (lever runs compare with the curve's fit)
        with_fit = args.max_fit > 0 and k == 0 and n_train == max(args.sizes) and not fit_path.exists()
        # evaluate's main model is reported as "tsn" (and "tsn_network" for a checkpoint with a refit); a run
        # without TSN evaluates its first method as the main model and files it under its own name
        main_method = "tsn" if "tsn" in ckpts else next(iter(ckpts))
        key = {main_method: "tsn"}
        t0 = time.perf_counter()
        metrics = evaluate(str(ckpts[main_method]), store, split="test", truth=truth,
                           out_dir=str(work / "reports" / rec_path.stem),
                           compare={m: str(c) for m, c in ckpts.items() if m != main_method},
                           emulator_fit=with_fit, max_fit=args.max_fit, progress=False, plots=with_fit)
        times["evaluate"] = time.perf_counter() - t0
        if with_fit and "emulator_fit" in metrics["scatter"]:
            # TSN over the fit on the fit's own visits (evaluate's fit_same_visits), with the interval over stars:
            # the fit's subset has its own stars, so only this ratio compares like with like
            fit_path.write_text(json.dumps({"summary": summary(metrics, "emulator_fit"),
                                            "n_visits": int(min(args.max_fit, metrics["n_visits"])),
                                            "n_train": n_train,
                                            # evaluate's "tsn" is the main model: TSN's ratio only when it is TSN
                                            "same_visits": (metrics.get("fit_same_visits", {}).get("tsn")
                                                            if main_method == "tsn" else None)},
                                           default=float))
        methods = list(ckpts)
        if main_method == "tsn" and "tsn_network" in metrics["scatter"]:
            # a checkpoint with a label decoder: "tsn" is the mix prediction returns, "tsn_network" the
            # network's own labels (the same training run, so no time of its own)
            methods.append("tsn_network")
            times["tsn_network"] = 0.0
        runs = [{"n_train": n_train, "seed": 100 + k, "method": method,
                 "summary": summary(metrics, key.get(method, method)), "extras": extras(metrics, key.get(method, method)),
                 "epochs": epochs[n_train],
                 "steps": epochs[n_train] * spe[n_train] if method.startswith("tsn") else None,
                 "train_s": times[method]} for method in methods]
        tmp = rec_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"n_train": n_train, "seed_index": k, "n_test_stars": metrics["n_stars"],
                                   "n_test_visits": metrics["n_visits"], "times_s": times, "runs": runs}))
        tmp.replace(rec_path)
        print(json.dumps({"n_train": n_train, "seed": k, "epochs": epochs[n_train],
                          "times_s": {m: round(t) for m, t in times.items()},
                          f"{main_method}_teff_lt60": summary(metrics, "tsn").get("teff", {}).get("<60")}),
              file=sys.stderr,
              flush=True)
    import platform

    runs = collect(work, args.sizes)
    recs = [json.loads(p.read_text()) for p in sorted((work / "records").glob("n*_s*.json"))]
    fit_record = json.loads(fit_path.read_text()) if fit_path.exists() else {}
    fit_summary = fit_record.get("summary", {})
    result = {"tag": tag, "stars": args.stars, "sizes": args.sizes, "seeds": args.seeds,
              "n_test_stars": recs[0]["n_test_stars"] if recs else 0,
              "n_test_visits": recs[0]["n_test_visits"] if recs else 0,
              "budget_steps": None if args.epochs else budget, "fixed_epochs": bool(args.epochs),
              "steps_per_epoch": {str(n): spe[n] for n in args.sizes},
              "epochs": {str(n): epochs[n] for n in args.sizes}, "runs": runs, "aggregate": aggregate(runs),
              "emulator_fit": fit_summary, "emulator_fit_same_visits": fit_record.get("same_visits"),
              "emulator_fit_n_train": fit_record.get("n_train"), "overrides": args.overrides, "wall_s": time.perf_counter() - t_start,
              "train_core_s": float(sum(r["train_s"] for r in runs)),
              "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores"}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"learning_curve-{tag}.json").write_text(json.dumps(result, indent=1))
    (out / f"learning_curve-{tag}.md").write_text(markdown(result))
    plot(result, out / f"learning_curve-{tag}.png")
    print(json.dumps(result["aggregate"], indent=1))
    return result


if __name__ == "__main__":
    main()
