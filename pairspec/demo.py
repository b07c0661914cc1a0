"""`pairspec demo`: the whole chain on a small synthetic survey (the default: pairspec.surveys.DEMO_SURVEY), on the CPU.

simulate (real DR17 file format) -> ingest -> train TSN -> train a direct-regression baseline
(same backbone, combined spectra only) -> evaluate both against the survey labels and the truth
on held-out stars -> write a catalogue and plots.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from rich.console import Console

DEMO_STARS = 900  # 900 stars x 11 epochs beat 600 x 16 at the same steps (benchmarks/results/demo_cpu.md)
DEMO_MIN_STARS = 60  # the recipe's batch of 32 twins: 40 stars gave 30 train twins, 60 ~45
DEMO_FIT_VISITS = 100  # test visits (of ~380) the emulator fit runs on: ~1.9 visits/s on 2 cores, ~1 minute
# recipes/demo.yaml, through the link pairspec/demo.yaml that the package ships (a copy in a wheel)
DEMO_RECIPE = Path(__file__).with_name("demo.yaml")


def demo_config(store: Path, runs: Path, epochs: int | None, seed: int, name: str = "tsn"):
    """The demo recipe (recipes/demo.yaml in a checkout), pointed at the demo's own folders (run `name`)."""
    from pairspec.config import load_recipe

    config = load_recipe(DEMO_RECIPE)  # a missing file is its FileNotFoundError, naming the path
    config = dataclasses.replace(
        config,
        run=dataclasses.replace(config.run, name=name, out_dir=str(runs / name), seed=seed),
        data=dataclasses.replace(config.data, store=str(store)),
    )
    if epochs is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))
    return config


def run_demo(out: Path, n_stars: int = DEMO_STARS, epochs: int | None = None, seed: int = 1,
             survey: str | None = None, train_seed: int | None = None) -> dict:
    from pairspec.baselines import baseline_recipes
    from pairspec.evaluate import evaluate, format_table
    from pairspec.ingest import format_report, ingest
    from pairspec.predict import predict
    from pairspec.surveys import DEMO_SURVEY, get_simulator
    from pairspec.train import train

    survey = survey or DEMO_SURVEY
    if epochs is not None and epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {epochs}")
    if n_stars < DEMO_MIN_STARS:
        raise ValueError(f"--stars must be at least {DEMO_MIN_STARS} (the demo recipe trains on batches of 32 "
                         f"twins), got {n_stars}")
    console = Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sim, store, runs = out / "sim", out / "store.zarr", out / "runs"
    t0 = time.perf_counter()
    _same_survey_as_before(out, {"survey": survey, "stars": int(n_stars), "seed": int(seed)})

    console.rule(f"1/5 simulate the {survey} survey in its real file format")
    if not (sim / "truth.fits").exists():  # the simulators write truth.fits last
        get_simulator(survey).simulate(sim, n_stars=n_stars, seed=seed, workers=2, progress=True)
    console.print(f"synthetic survey in {sim} (truth in {sim / 'truth.fits'})")

    console.rule("2/5 ingest into the pair store")
    report = ingest(survey, str(sim), str(store), workers=2, progress=True)
    console.print(format_report(report), markup=False, highlight=False)

    console.rule("3/5 train TwinSpecNet and its baselines (direct regression, ridge)")
    # a training seed of its own gets run folders of its own: resuming another seed's run would mix them
    name = "tsn" if train_seed is None else f"tsn-seed{train_seed}"
    config = demo_config(store, runs, epochs, seed if train_seed is None else train_seed, name=name)
    tsn_ckpt = train(config, progress=True)
    variants = baseline_recipes(config)
    direct_ckpt = train(variants["direct"], progress=True)
    ridge_ckpt = train(variants["ridge"], progress=True)

    console.rule("4/5 predict a label catalogue for every visit and star")
    result = predict(tsn_ckpt, str(store), out / "labels.fits", progress=True)
    console.print(f"catalogue: {result.visit_path} ({result.n_visits} visits, {result.n_stars} stars)")

    console.rule("5/5 evaluate on held-out stars")
    # the visit-level emulator fit (the honest reference: the very model that made the spectra) on a
    # random subset of the test visits, to keep the demo short
    from pairspec.surveys import visit_fitter

    fit = visit_fitter(survey) is not None
    metrics = evaluate(
        tsn_ckpt, str(store), split="test", truth=sim / "truth.fits", out_dir=out / "report",
        compare={"direct": direct_ckpt, "ridge": ridge_ckpt}, emulator_fit=fit, max_fit=DEMO_FIT_VISITS,
        progress=True,
    )
    # soft_wrap: the table's lines stay whole (rich would fold them at the console's width, 80 in a log file)
    console.print(format_table(metrics), markup=False, highlight=False, soft_wrap=True)
    verdict = quality_bar(metrics, baseline="direct")
    console.print(verdict["text"], markup=False, highlight=False, soft_wrap=True)
    metrics["quality_bar"] = verdict
    console.print(
        f"report and plots in {out / 'report'}; demo took {time.perf_counter() - t0:.0f} s"
    )
    return metrics


def _same_survey_as_before(out: Path, wanted: dict) -> None:
    """A demo folder is resumed, not remade: a rerun with another --stars or --seed would silently reuse the
    survey already there (and its results). Records what the folder's survey is (demo.json) and refuses a
    rerun that asks for another."""
    import json

    record, truth = out / "demo.json", out / "sim" / "truth.fits"
    if record.exists():
        before = json.loads(record.read_text())
    elif truth.exists():  # a demo folder from before demo.json: its truth table says how many stars
        from astropy.io import fits

        n = int(fits.getheader(truth, 1).get("NAXIS2", -1))
        before = dict(wanted, stars=n)  # the seed is not recorded there; the star count is checked
        if n == wanted["stars"]:
            record.write_text(json.dumps(wanted))
    else:
        record.write_text(json.dumps(wanted))
        return
    if before != wanted:
        raise ValueError(f"{out} holds the demo of {before['survey']} survey ({before['stars']} stars, seed "
                         f"{before['seed']}); this run asks for {wanted['stars']} stars, seed {wanted['seed']}: "
                         "remove the folder or give another --out")


def quality_bar(metrics: dict, baseline: str = "direct", bin_name: str = "<60") -> dict:
    """The demo's bar: TSN scatter against truth (survey labels if no truth) below the baseline's
    in the S/N < 60 bin, for every label."""
    scatter = metrics["scatter"]
    ref = "truth" if "truth" in scatter["tsn"] else "survey"
    rows, passed = [], True
    for name in metrics["labels"]:
        tsn = scatter["tsn"][ref][name][bin_name]["sigma"]
        base = scatter[baseline][ref][name][bin_name]["sigma"]
        ok = tsn is not None and base is not None and tsn < base
        passed &= ok
        rows.append(f"  {name:6s} TSN {tsn:.4g}  {baseline} {base:.4g}  {'better' if ok else 'NOT better'}")
    head = f"quality bar (visits S/N < 60, against {ref}): TSN below {baseline} for every label: " + (
        "PASSED" if passed else "NOT MET"
    )
    return {"passed": bool(passed), "reference": ref, "text": "\n".join([head] + rows)}
