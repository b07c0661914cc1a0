"""The `pairspec` command line. Thin: parse options, call one library function, print.

Every command is a plain function in the package first (the same function is the Python API).
"""

from __future__ import annotations

import glob
import json
import os
import warnings
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="pairspec",
    help=(
        "TwinSpecNet for multi-visit spectroscopic surveys: learn from low/high-S/N twins of the "
        "same star, then give every noisy visit labels with calibrated errors and a denoised spectrum. "
        "An error is one line; PAIRSPEC_TRACEBACK=1 shows the full Python traceback (for a bug report)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


# What a user's input can raise (a wrong path, a damaged file, a value the code refuses): one line, not a
# traceback. PAIRSPEC_TRACEBACK=1 re-raises it, for a bug report.
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
               PermissionError)


def _user_error(err: BaseException) -> None:
    if os.environ.get("PAIRSPEC_TRACEBACK"):
        raise err
    _fail(str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err))


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one yellow line on stderr ("warning: ..."), not Python's file:line: Category form. A
    library's notice of its own deprecations (torch's internals at import) says nothing to a user: dropped."""
    if issubclass(category, (DeprecationWarning, FutureWarning)) and "pairspec" not in str(filename):
        return
    typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)


@app.callback()
def _main() -> None:
    warnings.showwarning = _show_warning


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
    if out.is_file():
        _fail(f"{out}: a file is here; simulate writes a folder")
    if out.is_dir() and any(out.iterdir()):
        # a survey written over another would mix the two (old spectrum files beside a new label table and truth)
        _fail(f"{out}: the folder is not empty; simulate writes a whole survey: give a new or empty folder")
    try:
        simulator = get_simulator(survey)
        result = simulator.simulate(out, n_stars=stars, seed=seed, workers=workers, store_only=store_only,
                                    progress=True)
    except (KeyError, ValueError, FileExistsError) as err:
        _fail(str(err.args[0] if isinstance(err, KeyError) else err))
    typer.echo(result["text"])


_DASK_HELP = ("Run on a Dask cluster: 'local' (a LocalCluster on this machine: ingest's --workers processes, "
              "or one per core), "
              "'local:N', 'local-threads:N' (in-process workers), or a scheduler address (as --scheduler).")
_SCHEDULER_HELP = "Address of a running Dask scheduler (tcp://host:8786) or its scheduler file (.json)."


def _dask_spec(dask: str | None, scheduler: str | None) -> str | None:
    if dask and scheduler:
        _fail("give --dask or --scheduler, not both")
    if dask is not None and not dask.strip():
        _fail("--dask needs a value: local, local:N, local-threads:N or a scheduler address")
    return scheduler or dask


@app.command()
def ingest(
    survey: Annotated[str, typer.Argument(help=f"Survey adapter: {_surveys('ingest')}.")],
    source: Annotated[str, typer.Argument(help="Survey data root, laid out as on the survey's servers.")],
    store: Annotated[str, typer.Argument(help="Pair store to create or extend (path or fsspec URL: s3://..., "
                                              "memory://...).")],
    workers: Annotated[int | None, typer.Option(
        help="Processes that read and write (local store); default: all cores. 1: this process only.")] = None,
    batch_size: Annotated[int, typer.Option(
        help="Units (stars) per atomic batch appended to the store; rounded up to a whole number of the "
             "store's chunks (256 stars), so that each chunk is written by one batch.")] = 256,
    option: Annotated[list[str] | None, typer.Option(
        "--option", help="Adapter option KEY=VALUE, repeatable: what each survey's adapter takes "
                         "is listed in docs/surveys.md.")] = None,
    strict: Annotated[bool, typer.Option(help="Shorthand for --option strict=true.")] = False,
    limit: Annotated[int | None, typer.Option(help="Ingest at most this many stars (for trials; >= 1).")] = None,
    dask: Annotated[str | None, typer.Option(help=_DASK_HELP)] = None,
    scheduler: Annotated[str | None, typer.Option(help=_SCHEDULER_HELP)] = None,
    wait: Annotated[bool, typer.Option(
        help="If another ingest is writing the store, wait for it (--no-wait: fail at once).")] = True,
    lock_timeout: Annotated[float | None, typer.Option(
        help="Wait at most this many seconds for another ingest of the same store.")] = None,
) -> None:
    """Read a survey's files into the pair store. Resumable: rerun after a crash to finish the job."""
    from pairspec.ingest import format_report
    from pairspec.ingest import ingest as run_ingest
    from pairspec.locks import StoreLocked
    from pairspec.surveys import parse_options
    from pairspec.surveys.base import AdapterError

    if limit is not None and limit < 1:
        _fail(f"--limit must be at least 1, got {limit}")
    if batch_size < 1:
        _fail(f"--batch-size must be at least 1, got {batch_size}")
    if workers is not None and workers < 1:
        _fail(f"--workers must be at least 1, got {workers}")
    if lock_timeout is not None and lock_timeout < 0:
        _fail(f"--lock-timeout must be >= 0 seconds, got {lock_timeout}")
    cluster = _dask_spec(dask, scheduler)
    try:
        options = parse_options(option)
        if strict:
            options["strict"] = True
        report = run_ingest(
            survey, source, store, workers=workers, batch_size=batch_size, progress=True,
            adapter_options=options or None, limit=limit, dask=cluster, wait=wait, lock_timeout=lock_timeout,
        )
    except (AdapterError, KeyError, FileNotFoundError, ValueError, StoreLocked, PermissionError) as err:
        _fail(str(err.args[0] if isinstance(err, KeyError) else err))
    except RuntimeError as err:  # a worker died or a Dask task failed: the message says how to resume
        _fail(str(err))
    typer.echo(format_report(report))
    if report.n_stars == 0 and report.already_present == 0 and report.skipped:
        first = report.skipped[0]
        _fail(f"nothing was ingested: all {len(report.skipped)} unit(s) were skipped (first: {first.path}: "
              f"{first.problem})")


@app.command()
def train(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (see docs/recipes.md).")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a recipe field, e.g. --set train.epochs=3 (repeatable)."),
    ] = None,
) -> None:
    """Train TwinSpecNet from a recipe. Resumes from the run's last.pt when present (and refuses to when
    the run folder holds a run of another recipe: set train.resume=false to start over)."""
    from pairspec.config import ConfigError, load_recipe
    from pairspec.train import train as run_train

    try:
        config = load_recipe(recipe, overrides=set_ or ())
    except (ConfigError, *USER_ERRORS) as err:
        _user_error(err)
    try:
        best = run_train(config, progress=True)
    except USER_ERRORS as err:  # ConfigError is a ValueError: e.g. a run folder that holds another recipe's run
        _user_error(err)
    except KeyboardInterrupt:
        typer.secho(f"interrupted: rerun the same command to resume {config.run_dir} from its last.pt (the last "
                    "finished epoch); until then best.pt, if any, has no sigma calibration", fg=typer.colors.YELLOW,
                    err=True)
        raise typer.Exit(130) from None
    typer.echo(f"best checkpoint: {best}")


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint written by `pairspec train` (best.pt).")],
    inputs: Annotated[list[str], typer.Argument(
        help="A pair store (path or fsspec URL), or spectrum files of the model's survey (the "
             "files its adapter reads: docs/surveys.md; globs ok).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Catalogue: .fits, .parquet or .ecsv.")] = Path(
        "labels.fits"
    ),
    split: Annotated[str | None, typer.Option(help="Only this split of a store: train, val, test.")] = None,
    batch_size: Annotated[int, typer.Option(help="Spectra per forward pass.")] = 256,
    device: Annotated[str, typer.Option(help="cpu, cuda, or auto.")] = "auto",
    denoised: Annotated[str | None, typer.Option(help="Also write denoised spectra to this Zarr store.")] = None,
    compile: Annotated[
        bool, typer.Option("--compile", help="torch.compile the network: worth it on a GPU for large inputs.")
    ] = False,
    dask: Annotated[str | None, typer.Option(help=_DASK_HELP + " Store input only.")] = None,
    scheduler: Annotated[str | None, typer.Option(help=_SCHEDULER_HELP)] = None,
    refit: Annotated[bool, typer.Option(
        "--refit/--no-refit",
        help="For a checkpoint trained with a label decoder: labels mixed from the network's and a fit of each "
             "visit through the decoder, as chosen on the val split at training (docs/recipes.md). "
             "--no-refit writes the network's own labels.")] = True,
) -> None:
    """Labels, calibrated errors and flags for every visit, and per-star combinations."""
    from pairspec.predict import SPLIT_CODES
    from pairspec.predict import predict as run_predict

    if batch_size < 1:
        _fail(f"--batch-size must be at least 1, got {batch_size}")
    if split is not None and split not in SPLIT_CODES:
        _fail(f"--split must be one of {', '.join(SPLIT_CODES)}, got {split!r}")
    if device not in ("cpu", "cuda", "auto") and not device.startswith("cuda:"):
        _fail(f"--device must be cpu, cuda, cuda:N or auto, got {device!r}")
    cluster = _dask_spec(dask, scheduler)
    if len(inputs) == 1 and not inputs[0].lower().endswith((".fits", ".fits.gz", ".fit")):
        source: str | list[str] = inputs[0]
        if "://" not in source and not Path(source).exists() and not glob.has_magic(source):
            _fail(f"{source}: no such store or file")
    else:
        files: list[str] = []
        for pattern in inputs:
            matched = sorted(glob.glob(pattern))
            if not matched:
                _fail(f"{pattern}: no such file" if not glob.has_magic(pattern) else f"{pattern}: no file matches")
            files.extend(matched)
        source = files
    if not checkpoint.is_file():
        _fail(f"{checkpoint}: no such checkpoint" if not checkpoint.exists() else f"{checkpoint}: not a file")
    try:
        with warnings.catch_warnings():
            # the files left out are said once, below, in one line (the library's warning lists every one)
            warnings.filterwarnings("ignore", message=r".*could not be read and were left out")
            result = run_predict(
                checkpoint, source, out, split=split, batch_size=batch_size, device=_device(device),
                denoised_path=denoised, progress=True, compile=compile, dask=cluster, refit=refit,
            )
    except USER_ERRORS as err:
        _user_error(err)
    if result.skipped:
        typer.secho(f"warning: {len(result.skipped)} input file(s) could not be read and were left out "
                    f"(first: {result.skipped[0][0]}: {result.skipped[0][1]})", fg=typer.colors.YELLOW, err=True)
    typer.echo(
        f"{result.n_visits} visits, {result.n_stars} stars -> {result.visit_path}"
        + (f" and {result.star_path}" if result.star_path != result.visit_path else "")
    )


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="TSN checkpoint to evaluate.")],
    store: Annotated[str, typer.Argument(help="Pair store holding the evaluation split.")],
    split: Annotated[str, typer.Option(help="Split to evaluate on (test unless you know why).")] = "test",
    truth: Annotated[Path | None, typer.Option(help="truth.fits of a synthetic survey.")] = None,
    out: Annotated[Path, typer.Option("-o", "--out", help="Report folder (metrics.json, report.md, PNGs).")] = Path(
        "report"
    ),
    compare: Annotated[
        list[str] | None,
        typer.Option(help="Another method as NAME=CHECKPOINT, e.g. direct=runs/direct/best.pt (repeatable)."),
    ] = None,
    emulator_fit: Annotated[bool, typer.Option(help="Also run the visit-level emulator chi-square fit baseline.")] = False,
    max_fit: Annotated[int, typer.Option(
        help="About this many visits for the emulator fit: whole stars drawn at random until the next one would "
             "pass it (at least one star, so the fitted visits hold repeat pairs).")] = 2000,
    device: Annotated[str, typer.Option(help="Where the networks run: cpu, cuda, or auto.")] = "auto",
    masses: Annotated[Path | None, typer.Option(
        help="Table of asteroseismic masses (a column of the store's star ids, and mass) for C/N ages of giants; "
             "the model must predict c_fe, n_fe, fe_h and logg.")] = None,
) -> None:
    """Scatter and bias per label in S/N bins, calibration, cluster spreads, plots: the paper's comparison."""
    from pairspec.evaluate import evaluate as run_evaluate
    from pairspec.evaluate import format_table

    others = {}
    reserved = ("tsn", "tsn_network", "emulator_fit", "survey", "truth")  # evaluate's own rows
    for item in compare or []:
        name, sep, path = item.partition("=")
        if not sep:
            _fail(f"--compare expects NAME=CHECKPOINT, got {item!r}")
        if name in reserved:
            _fail(f"--compare {item}: {name!r} names one of evaluate's own rows ({', '.join(reserved)}); pick "
                  "another name")
        if name in others:
            _fail(f"--compare {item}: the name {name!r} is given twice (the first was {others[name]})")
        others[name] = path
    try:
        metrics = run_evaluate(
            checkpoint, store, split=split, truth=truth, out_dir=out, compare=others,
            emulator_fit=emulator_fit, max_fit=max_fit, progress=True, device=_device(device), masses=masses,
        )
    except USER_ERRORS as err:
        _user_error(err)
    typer.echo(format_table(metrics))
    if "cn_ages" in metrics:
        cn = metrics["cn_ages"]
        typer.echo(f"C/N ages of {cn['n_test']} giants (calibrated on {cn['n_calibration']}): scatter against the "
                   f"seismic ages {cn['survey']:.2f} Gyr with the survey labels, "
                   + ", ".join(f"{m} {v['star']:.2f} (visits S/N < 60: {v['visit_lt60']:.2f})"
                               for m, v in cn.items() if isinstance(v, dict)) + " Gyr")
    typer.echo(f"report written to {out}/")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Working folder for the demo's files.")] = Path("pairspec-demo"),
    stars: Annotated[int, typer.Option(
        help="Stars in the synthetic survey (at least 60: the recipe trains on batches of 32 twins).")] = 900,
    epochs: Annotated[int | None, typer.Option(help="Override the demo recipe's epochs.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic survey (and of training, unless --train-seed).")] = 1,
    train_seed: Annotated[int | None, typer.Option(help="Seed of training alone (the same survey).")] = None,
) -> None:
    """Simulate -> ingest -> train TSN, a direct-regression network and a ridge baseline -> predict -> report
    (with the visit-level emulator fit on a subset of the test visits), and check the quality bar."""
    from pairspec.demo import run_demo

    earlier = out.is_dir() and any(out.iterdir())
    try:
        run_demo(out, n_stars=stars, epochs=epochs, seed=seed, train_seed=train_seed)
    except (ValueError, FileNotFoundError, PermissionError) as err:
        if os.environ.get("PAIRSPEC_TRACEBACK"):
            raise
        _fail(f"{err}" + (f" (if {out} holds files of an earlier demo, remove it or pick another --out)"
                          if earlier and "give another --out" not in str(err) else ""))


@app.command()
def info(
    path: Annotated[str | None, typer.Argument(help="A pair store or a checkpoint.")] = None,
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
    except USER_ERRORS as err:
        _user_error(err)
    except Exception as err:  # read-only: e.g. an object store without credentials
        if os.environ.get("PAIRSPEC_TRACEBACK"):
            raise
        _fail(f"{path}: cannot be read ({type(err).__name__}: {err})")
    typer.echo(json.dumps(summary, indent=2, default=str) if as_json else summary["text"])


@app.command()
def validate(
    store: Annotated[str, typer.Argument(help="A pair store (path or fsspec URL).")],
    spectra: Annotated[bool, typer.Option(
        help="Also scan every flux and ivar value for NaN/inf and ivar < 0 (--no-spectra: tables only).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the problems as a JSON list.")] = False,
) -> None:
    """Check a pair store's invariants (shapes, counts, visit bookkeeping, duplicates, splits, NaN, ivar >= 0,
    version). Exit code 0 when the store is valid, 1 when there are problems (each one printed)."""
    from pairspec.validate import validate_path

    problems = validate_path(store, spectra=spectra)
    if len(problems) == 1 and problems[0].startswith("cannot open: ") and not as_json:
        _fail(problems[0].removeprefix("cannot open: "))  # nothing there to validate: an ordinary mistake
    if as_json:
        typer.echo(json.dumps({"store": store, "valid": not problems, "problems": problems}, indent=2))
    elif problems:
        typer.echo(f"{store}: {len(problems)} problem(s)")
        for p in problems:
            typer.echo(f"  - {p}")
    else:
        typer.echo(f"{store}: valid")
    if problems:
        raise typer.Exit(1)


def _device(name: str) -> str:
    """'auto' resolved; a CUDA device where there is none is LabelPredictor.from_checkpoint's error."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    app()
