"""`pairspec demo` end to end at a toy size, and its quality-bar verdict on constructed metrics."""

import torch

from pairspec.demo import quality_bar, run_demo


def _metrics(tsn, direct):
    scatter = lambda vals: {"truth": {n: {"<60": {"sigma": v}} for n, v in zip(("teff", "logg"), vals)}}
    return {"labels": ["teff", "logg"], "scatter": {"tsn": scatter(tsn), "direct": scatter(direct)}}


def test_quality_bar_verdicts():
    assert quality_bar(_metrics([50.0, 0.1], [80.0, 0.2]))["passed"]
    verdict = quality_bar(_metrics([50.0, 0.3], [80.0, 0.2]))
    assert not verdict["passed"] and "logg" in verdict["text"] and "NOT better" in verdict["text"]
    assert verdict["reference"] == "truth"


def test_demo_runs_end_to_end_at_toy_size(tmp_path):
    torch.set_num_threads(1)
    metrics = run_demo(tmp_path / "demo", n_stars=60, epochs=1, seed=3)  # >= 32 train coadds for the baseline
    out = tmp_path / "demo"
    assert (out / "labels.fits").exists() and (out / "report" / "metrics.json").exists()
    assert all((out / "runs" / r / "best.pt").exists() for r in ("tsn", "tsn-direct", "tsn-ridge"))
    # the demo recipe has a label decoder, so TSN is the refit's mix and the network's own stands beside it
    assert set(metrics["scatter"]) == {"tsn", "tsn_network", "direct", "ridge", "emulator_fit"}
    assert isinstance(metrics["quality_bar"]["passed"], bool)
    assert list((out / "report").glob("*.png"))


def test_the_package_ships_the_demo_recipe(tmp_path):
    """The demo reads recipes/demo.yaml through the package's link to it (a copy in a wheel), so an
    installed demo trains what the checkout's recipe says, not the built-in defaults."""
    from pathlib import Path

    from pairspec.config import load_recipe
    from pairspec.demo import DEMO_RECIPE, demo_config

    checkout = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"
    assert DEMO_RECIPE.read_text() == checkout.read_text()
    config = demo_config(tmp_path / "store.zarr", tmp_path / "runs", epochs=None, seed=5)
    assert config.model == load_recipe(checkout).model and config.run.seed == 5
    assert config.data.store == str(tmp_path / "store.zarr")


def test_cli_demo_default_size_is_the_demos():
    """`pairspec demo` and run_demo default to the same survey size (the one the recipe was sized for)."""
    import inspect

    from pairspec import cli, demo

    assert inspect.signature(cli.demo).parameters["stars"].default == demo.DEMO_STARS
    assert inspect.signature(demo.run_demo).parameters["n_stars"].default == demo.DEMO_STARS


def test_demo_refuses_what_would_fail_late_or_reuse_another_survey(tmp_path):
    """Too few stars (training then failed after simulate, ingest and an epoch), epochs < 1 (an untrained
    model went through predict and evaluate, exit 0), and a rerun asking for another survey than the one the
    folder holds (it silently reused the old survey and repeated its results) are errors before any work."""
    import pytest

    from pairspec.demo import DEMO_MIN_STARS, _same_survey_as_before

    with pytest.raises(ValueError, match=f"--stars must be at least {DEMO_MIN_STARS}"):
        run_demo(tmp_path / "few", n_stars=DEMO_MIN_STARS - 1, epochs=1)
    with pytest.raises(ValueError, match="--epochs must be at least 1"):
        run_demo(tmp_path / "none", n_stars=DEMO_MIN_STARS, epochs=0)
    assert not (tmp_path / "few").exists() and not (tmp_path / "none").exists()
    folder = tmp_path / "demo"
    folder.mkdir()
    _same_survey_as_before(folder, {"survey": "apogee", "stars": 60, "seed": 1})  # records the folder's survey
    _same_survey_as_before(folder, {"survey": "apogee", "stars": 60, "seed": 1})  # the same: resumed
    with pytest.raises(ValueError, match="holds the demo of apogee survey \\(60 stars, seed 1\\)"):
        _same_survey_as_before(folder, {"survey": "apogee", "stars": 40, "seed": 1})
    with pytest.raises(ValueError, match="seed 7"):
        _same_survey_as_before(folder, {"survey": "apogee", "stars": 60, "seed": 7})
