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


def _surveys(kind: str) -> str:
    """Registered survey names for --help (entry points are read, nothing is imported)."""
    from pairspec.surveys import available, simulators

    return ", ".join(simulators() if kind == "simulate" else available())


@app.command()
def simulate(
    survey: Annotated[str, typer.Argument(help=f"Survey whose file format to write: {_surveys('simulate')}.")],
    out: Annotated[Path, typer.Argument(help="Output folder: the survey's file tree and truth.fits (true labels, "
                                             "noiseless spectra).")],
    stars: Annotated[int, typer.Option(help="Number of distinct stars to simulate (at least 1).")] = 500,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 1,
    workers: Annotated[int, typer.Option(help="Worker processes (output does not depend on it).")] = 1,
    store_only: Annotated[bool, typer.Option(
        "--store-only", help="Skip the survey files: write OUT/<survey>.zarr (the pair store `pairspec ingest` "
                             "would make of them, ~2x faster than simulate + ingest) and OUT/truth.fits.")] = False,
) -> None:
    """Write a synthetic survey in the survey's REAL file format, with true labels beside it."""
    from pairspec.surveys import get_simulator

    if stars < 1:
        _fail(f"--stars must be at least 1, got {stars}")
    if workers < 1:
        _fail(f"--workers must be at least 1, got {workers}")
    try:
        simulator = get_simulator(survey)
        result = simulator.simulate(out, n_stars=stars, seed=seed, workers=workers, store_only=store_only,
                                    progress=True)
    except (KeyError, ValueError, FileExistsError) as err:
        _fail(str(err.args[0] if isinstance(err, KeyError) else err))
    typer.echo(result["text"])


@app.command()
def ingest(
    survey: Annotated[str, typer.Argument(help=f"Survey adapter: {_surveys('ingest')}.")],
    source: Annotated[str, typer.Argument(help="Survey data root, laid out as on the survey's servers.")],
    store: Annotated[str, typer.Argument(help="Pair store to create or extend (path or fsspec URL).")],
    workers: Annotated[Optional[int], typer.Option(
        help="Processes that read and write (local store); default: all cores. 1: this process only.")] = None,
    batch_size: Annotated[int, typer.Option(help="Units (stars) per atomic batch appended to the store.")] = 256,
    option: Annotated[Optional[list[str]], typer.Option(
        "--option", help="Adapter option KEY=VALUE, repeatable (e.g. APOGEE: --option strict=true also treats "
                         "persistence and sky-line bits as bad; see docs/surveys.md).")] = None,
    strict: Annotated[bool, typer.Option(help="Shorthand for --option strict=true.")] = False,
    limit: Annotated[Optional[int], typer.Option(help="Ingest at most this many stars (for trials; >= 1).")] = None,
) -> None:
    """Read a survey's files into the pair store. Resumable: rerun after a crash to finish the job."""
    from pairspec.ingest import format_report
    from pairspec.ingest import ingest as run_ingest
    from pairspec.surveys import parse_options
    from pairspec.surveys.base import AdapterError

    if limit is not None and limit < 1:
        _fail(f"--limit must be at least 1, got {limit}")
    if batch_size < 1:
        _fail(f"--batch-size must be at least 1, got {batch_size}")
    try:
        options = parse_options(option)
        if strict:
            options["strict"] = True
        report = run_ingest(
            survey, source, store, workers=workers, batch_size=batch_size, progress=True,
            adapter_options=options or None, limit=limit,
        )
    except (AdapterError, KeyError, FileNotFoundError, ValueError) as err:
        _fail(str(err.args[0] if isinstance(err, KeyError) else err))
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
    inputs: Annotated[list[str], typer.Argument(
        help="A pair store, or spectrum files of the model's survey (e.g. apStar/asStar FITS; globs ok).")],
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

    if batch_size < 1:
        _fail(f"--batch-size must be at least 1, got {batch_size}")
    if len(inputs) == 1 and not inputs[0].lower().endswith((".fits", ".fits.gz", ".fit")):
        source: str | list[str] = inputs[0]
    else:
        files: list[str] = []
        for pattern in inputs:
            matched = sorted(glob.glob(pattern))
            if not matched:
                _fail(f"{pattern}: no such file" if not glob.has_magic(pattern) else f"{pattern}: no file matches")
            files.extend(matched)
        source = files
    try:
        result = run_predict(
            checkpoint, source, out, split=split, batch_size=batch_size, device=_device(device),
            denoised_path=denoised, progress=True, compile=compile,
        )
    except (FileNotFoundError, ValueError, KeyError) as err:
        _fail(str(err.args[0] if isinstance(err, KeyError) else err))
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
