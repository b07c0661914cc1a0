"""The `pairspec` command line. Thin: parse options, call one library function, print.

Every command is a plain function in the package first (the same function is the Python API).
"""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="pairspec",
    help=(
        "TwinSpecNet for multi-visit spectroscopic surveys: learn from low/high-S/N twins of the "
        "same star, then give every noisy visit labels with calibrated errors and a denoised spectrum."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command()
def simulate(
    survey: Annotated[str, typer.Argument(help="Survey whose file format to write (apogee).")],
    out: Annotated[Path, typer.Argument(help="Output folder; gets an allStar file, apStar tree and truth.fits.")],
    stars: Annotated[int, typer.Option(help="Number of distinct stars to simulate.")] = 500,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 1,
    workers: Annotated[int, typer.Option(help="Worker processes (output does not depend on it).")] = 1,
    store_only: Annotated[bool, typer.Option(
        "--store-only", help="Skip the FITS files: write OUT/apogee.zarr (the pair store `pairspec ingest` would "
                             "make of them, ~2x faster than simulate + ingest) and OUT/truth.fits.")] = False,
) -> None:
    """Write a synthetic survey in the survey's REAL file format, with true labels beside it."""
    if survey.lower() != "apogee":
        _fail(f"no simulator for survey {survey!r}; available: apogee")
    if store_only:
        from pairspec.simulate_store import simulate_apogee_store

        out.mkdir(parents=True, exist_ok=True)
        try:
            res = simulate_apogee_store(str(out / "apogee.zarr"), n_stars=stars, seed=seed, workers=workers,
                                        progress=True, truth=str(out / "truth.fits"))
        except ValueError as err:
            _fail(str(err))
        typer.echo(f"wrote {res.n_stars} stars, {res.n_visits} visits to {res.store} ({len(res.skipped)} allStar "
                   f"row(s) left out, as ingest would) and {res.truth}")
        return
    from pairspec.simulate import simulate_apogee

    summary = simulate_apogee(out, n_stars=stars, seed=seed, workers=workers, progress=True)
    typer.echo(
        f"wrote {summary.n_stars} stars, {summary.n_visits} visits in {summary.n_files} files under {out}"
    )


@app.command()
def ingest(
    survey: Annotated[str, typer.Argument(help="Survey adapter name (see `pairspec info --surveys`).")],
    source: Annotated[str, typer.Argument(help="Survey data root, laid out as on the survey's servers.")],
    store: Annotated[str, typer.Argument(help="Pair store to create or extend (path or fsspec URL).")],
    workers: Annotated[Optional[int], typer.Option(
        help="Processes that read and write (local store); default: all cores. 1: this process only.")] = None,
    batch_size: Annotated[int, typer.Option(help="Units (stars) per atomic batch appended to the store.")] = 256,
    strict: Annotated[bool, typer.Option(help="APOGEE: also treat persistence and sky-line bits as bad.")] = False,
    limit: Annotated[Optional[int], typer.Option(help="Ingest at most this many stars (for trials).")] = None,
) -> None:
    """Read a survey's files into the pair store. Resumable: rerun after a crash to finish the job."""
    from pairspec.ingest import format_report
    from pairspec.ingest import ingest as run_ingest
    from pairspec.surveys.base import AdapterError

    try:
        report = run_ingest(
            survey, source, store, workers=workers, batch_size=batch_size, progress=True,
            adapter_options={"strict": strict} if strict else None, limit=limit,
        )
    except (AdapterError, KeyError, FileNotFoundError, ValueError) as err:
        _fail(str(err))
    typer.echo(format_report(report))


@app.command()
def train(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (see docs/recipes.md).")],
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Override a recipe field, e.g. --set train.epochs=3 (repeatable)."),
    ] = None,
) -> None:
    """Train TwinSpecNet from a recipe. Resumes from the run's last.pt when present."""
    from pairspec.config import ConfigError, load_recipe
    from pairspec.train import train as run_train

    try:
        config = load_recipe(recipe, overrides=set_ or ())
    except (ConfigError, FileNotFoundError) as err:
        _fail(str(err))
    best = run_train(config, progress=True)
    typer.echo(f"best checkpoint: {best}")


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint written by `pairspec train` (best.pt).")],
    inputs: Annotated[list[str], typer.Argument(help="A pair store, or apStar/asStar FITS files (globs ok).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Catalogue: .fits, .parquet or .ecsv.")] = Path(
        "labels.fits"
    ),
    split: Annotated[Optional[str], typer.Option(help="Only this split of a store: train, val, test.")] = None,
    batch_size: Annotated[int, typer.Option(help="Spectra per forward pass.")] = 256,
    device: Annotated[str, typer.Option(help="cpu, cuda, or auto.")] = "auto",
    denoised: Annotated[Optional[str], typer.Option(help="Also write denoised spectra to this Zarr store.")] = None,
    compile: Annotated[
        bool, typer.Option("--compile", help="torch.compile the network: worth it on a GPU for large inputs.")
    ] = False,
) -> None:
    """Labels, calibrated errors and flags for every visit, and per-star combinations."""
    from pairspec.predict import predict as run_predict

    if len(inputs) == 1 and not inputs[0].lower().endswith((".fits", ".fits.gz", ".fit")):
        source: str | list[str] = inputs[0]
    else:
        files: list[str] = []
        for pattern in inputs:
            matched = sorted(glob.glob(pattern))
            files.extend(matched if matched else [pattern])
        source = files
    result = run_predict(
        checkpoint, source, out, split=split, batch_size=batch_size, device=_device(device),
        denoised_path=denoised, progress=True, compile=compile,
    )
    typer.echo(
        f"{result.n_visits} visits, {result.n_stars} stars -> {result.visit_path}"
        + (f" and {result.star_path}" if result.star_path != result.visit_path else "")
    )


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="TSN checkpoint to evaluate.")],
    store: Annotated[str, typer.Argument(help="Pair store holding the evaluation split.")],
    split: Annotated[str, typer.Option(help="Split to evaluate on (test unless you know why).")] = "test",
    truth: Annotated[Optional[Path], typer.Option(help="truth.fits of a synthetic survey.")] = None,
    out: Annotated[Path, typer.Option("-o", "--out", help="Report folder (metrics.json, report.md, PNGs).")] = Path(
        "report"
    ),
    compare: Annotated[
        Optional[list[str]],
        typer.Option(help="Another method as NAME=CHECKPOINT, e.g. direct=runs/direct/best.pt (repeatable)."),
    ] = None,
    emulator_fit: Annotated[bool, typer.Option(help="Also run the visit-level emulator chi-square fit baseline.")] = False,
    max_fit: Annotated[int, typer.Option(help="At most this many visits for the emulator fit.")] = 2000,
    device: Annotated[str, typer.Option(help="Where the networks run: cpu, cuda, or auto.")] = "auto",
) -> None:
    """Scatter and bias per label in S/N bins, calibration, cluster spreads, plots: the paper's comparison."""
    from pairspec.evaluate import evaluate as run_evaluate
    from pairspec.evaluate import format_table

    others = {}
    for item in compare or []:
        name, sep, path = item.partition("=")
        if not sep:
            _fail(f"--compare expects NAME=CHECKPOINT, got {item!r}")
        others[name] = path
    metrics = run_evaluate(
        checkpoint, store, split=split, truth=truth, out_dir=out, compare=others,
        emulator_fit=emulator_fit, max_fit=max_fit, progress=True, device=_device(device),
    )
    typer.echo(format_table(metrics))
    typer.echo(f"report written to {out}/")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Working folder for the demo's files.")] = Path("pairspec-demo"),
    stars: Annotated[int, typer.Option(help="Stars in the synthetic survey.")] = 600,
    epochs: Annotated[Optional[int], typer.Option(help="Override the demo recipe's epochs.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic survey and of training.")] = 1,
) -> None:
    """Simulate -> ingest -> train TSN and a direct-regression baseline -> predict -> report."""
    from pairspec.demo import run_demo

    run_demo(out, n_stars=stars, epochs=epochs, seed=seed)


@app.command()
def info(
    path: Annotated[Optional[str], typer.Argument(help="A pair store or a checkpoint.")] = None,
    surveys: Annotated[bool, typer.Option(help="List the registered survey adapters.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """What a store or checkpoint holds (counts, labels, splits, grid, provenance, problems)."""
    from pairspec.info import describe

    if surveys:
        from pairspec.surveys import available

        typer.echo("\n".join(available()))
        return
    if path is None:
        _fail("give a store or checkpoint path, or --surveys")
    try:
        summary = describe(path)
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
    typer.echo(json.dumps(summary, indent=2, default=str) if as_json else summary["text"])


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    app()
