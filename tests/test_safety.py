"""Safety: a crafted pickle checkpoint never runs code, YAML never builds objects, no eval/exec of user text,
catalogue paths never lead outside the source root."""

import ast
import pickle
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from fake_survey import FakeAdapter, write_units

from pairspec.surveys.base import WorkUnit

PACKAGE = HERE.parent / "pairspec"


class Evil:
    """Unpickling this creates the file `marker` (any code could run there instead)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _crafted(tmp_path):
    """Checkpoints that would run code when unpickled: a torch zip with the payload inside a real-looking
    checkpoint, and a bare legacy pickle."""
    import torch

    marker = tmp_path / "PWNED"
    zipped, bare = tmp_path / "zipped.pt", tmp_path / "bare.pt"
    torch.save({"format": "pairspec-tsn", "format_version": 1, "model_state": {}, "meta": {"x": Evil(marker)}},
               zipped)
    bare.write_bytes(pickle.dumps(Evil(marker)))
    return marker, (zipped, bare)


def test_crafted_pickle_checkpoint_never_executes(tmp_path):
    from typer.testing import CliRunner

    from pairspec.checkpoint import load_checkpoint, read_meta
    from pairspec.cli import app
    from pairspec.inference import LabelPredictor

    marker, paths = _crafted(tmp_path)
    pickle.loads(pickle.dumps(Evil(tmp_path / "control")))  # the payload works when unpickled for real
    assert (tmp_path / "control").exists()
    for path in paths:
        for load in (read_meta, load_checkpoint, LabelPredictor.from_checkpoint):
            with pytest.raises(ValueError, match=f"{path.name}: not a readable pairspec checkpoint"):
                load(path)
        for args in (["info", str(path)], ["predict", str(path), str(tmp_path), "-o", str(tmp_path / "c.fits")]):
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 1 and "error:" in result.output and path.name in result.output, result.output
    assert not marker.exists()


def test_yaml_never_builds_objects(tmp_path):
    from pairspec.config import ConfigError, load_recipe
    from pairspec.surveys import parse_options

    marker = tmp_path / "PWNED"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"run:\n  name: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path "
                      f"['{marker}']]\n")
    with pytest.raises(ConfigError, match="evil.yaml"):
        load_recipe(recipe)
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do; what matters is below
        parse_options([f"strict=!!python/object/apply:os.system ['touch {marker}']"])
    assert not marker.exists()


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else (f"{getattr(f.value, 'id', '?')}.{f.attr}"
                                                        if isinstance(f, ast.Attribute) else "")
            yield name, node


def test_no_eval_exec_or_unsafe_loaders_in_the_package():
    """Scanned statically: no eval/exec, pickle.load(s) only nowhere, yaml only through safe_load/safe_dump,
    every torch.load with weights_only=True."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for name, node in _calls(tree):
            where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
            if name in ("eval", "exec", "pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load",
                        "yaml.full_load", "marshal.loads"):
                found.append(f"{where} {name}")
            if name == "torch.load":
                kw = {k.arg: k.value for k in node.keywords}
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    found.append(f"{where} torch.load without weights_only=True")
    assert found == []


class EscapingAdapter(FakeAdapter):
    """Units whose files a summary table placed outside the source root."""

    def discover(self, source):
        found = super().discover(source)
        ok = {"kind": "OK"}
        outside = [WorkUnit("u/dotdot", str(Path(source) / ".." / "elsewhere" / "apStar-x.fits"), "ESC1", ok),
                   WorkUnit("u/absolute", "/etc/passwd", "ESC2", ok),
                   WorkUnit("u/inside", str(Path(source) / "sub" / ".." / "apStar-y.fits"), "IN1", ok)]
        found.units.extend(outside)
        return found


def test_catalogue_paths_never_leave_the_source_root(tmp_path):
    from pairspec.ingest import ingest

    src = write_units(tmp_path / "src", ["2M00001", "2M00002"])
    report = ingest(EscapingAdapter(), str(src), str(tmp_path / "s.zarr"), workers=1, progress=False, chunk=4)
    refused = {s.star_id: s.problem for s in report.skipped}
    assert set(refused) == {"ESC1", "ESC2"} and all("outside the source root" in p for p in refused.values())
    assert report.n_stars == 3  # the two stars and the unit whose '..' stays inside


def test_apogee_allstar_field_with_dotdot_reads_nothing_outside(tmp_path):
    """A real allStar row whose FIELD climbs out of the tree, with a file waiting there."""
    realdata = pytest.importorskip("realdata")
    if not (realdata.REAL / realdata.MULTI).exists():
        pytest.skip("real APOGEE fixtures not present")
    from test_apogee_bad_input import make_tree, write_allstar

    from pairspec.ingest import ingest

    root = make_tree(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(realdata.REAL / realdata.MULTI, outside / realdata.MULTI)
    write_allstar(root / "allStar-dr17-synspec_rev1.fits",
                  [(realdata.MULTI_ID, "../../outside", 150.0, 0), (realdata.SINGLE_ID, "K04_083+13", 137.5, 0)])
    report = ingest("apogee", str(root), str(tmp_path / "s.zarr"), workers=1, progress=False)
    assert report.n_stars == 1
    (skip,) = [s for s in report.skipped if s.star_id == realdata.MULTI_ID and "outside" in s.path]
    assert ("no file on disk" in skip.problem or "outside the source root" in skip.problem)
