"""Property-based bad input (hypothesis): mutated apStar headers, arrays and bytes; mutated store metadata and
chunks; mutated truth files. Every case ends in a correct result or a clear error naming the input -- never
an exception from deep inside numpy, zarr or astropy, never a silent wrong number."""

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from fake_survey import ModelFakeAdapter, write_units
from realdata import MULTI, MULTI_ID, REAL

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])
CHECKED = {"fits": [0, 0], "store": [0, 0], "truth": [0, 0]}  # cases tried, cases that ended well (robustness.py)
SCALE = max(1, int(os.environ.get("PAIRSPEC_PROPERTY_SCALE", "1")))  # benchmarks/robustness.py tries more

# ---------------------------------------------------------------- apStar files

KEYS = ["NVISITS", "CRVAL1", "CDELT1", "NWAVE", "SNR", "SNRVIS1", "SFILE1", "JD1", "FIBER1", "OBJID", "NAXIS1",
        "BITPIX", "STARFLAG", "RA"]
VALUES = st.one_of(st.none(), st.integers(-10, 10**7), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=12), st.booleans())
MUTATION = st.one_of(
    st.tuples(st.just("del"), st.integers(0, 3), st.sampled_from(KEYS)),
    st.tuples(st.just("set"), st.integers(0, 3), st.sampled_from(KEYS), VALUES),
    st.tuples(st.just("nan"), st.integers(1, 3), st.floats(0, 1)),
    st.tuples(st.just("inf"), st.integers(1, 3), st.floats(0, 1)),
    st.tuples(st.just("negate"), st.integers(1, 3), st.floats(0, 1)),
    st.tuples(st.just("rows"), st.integers(1, 3), st.integers(0, 6)),
    st.tuples(st.just("cols"), st.integers(1, 3), st.integers(0, 9000)),
    st.tuples(st.just("dtype"), st.integers(1, 3), st.sampled_from(["i2", "f4", "u1", "f8", "i8"])),
    st.tuples(st.just("drop"), st.integers(1, 10)),
    st.tuples(st.just("zeros"), st.integers(1, 3)),
)


def _apply(hdul, m):
    from astropy.io import fits

    kind = m[0]
    if kind == "del":
        hdul[m[1]].header.pop(m[2], None)
    elif kind == "set":
        try:
            hdul[m[1]].header[m[2]] = m[3]
        except (ValueError, TypeError):  # astropy refuses some values (a bad input we cannot even write)
            pass
    elif kind == "drop":
        del hdul[m[1]]
    else:
        hdu = hdul[m[1]]
        data = np.array(hdu.data)
        if kind in ("nan", "inf", "negate"):
            data = data.astype(np.float64)
            n = int(m[2] * data.size)
            flat = data.reshape(-1)
            flat[:n] = {"nan": np.nan, "inf": np.inf, "negate": -1.0}[kind] * (1 if kind != "negate" else np.abs(flat[:n]))
        elif kind == "rows":
            data = data[: m[2]]
        elif kind == "cols":
            data = data[:, : m[2]]
        elif kind == "dtype":
            with np.errstate(all="ignore"):
                data = np.nan_to_num(data).astype(m[2])
        elif kind == "zeros":
            data = np.zeros_like(data)
        hdul[m[1]] = fits.ImageHDU(data, header=hdu.header)


@pytest.fixture(scope="module")
def apstar_tree(tmp_path_factory):
    if not (REAL / MULTI).exists():
        pytest.fail(f"real fixture {REAL / MULTI} missing")
    from test_apogee_bad_input import make_tree

    return make_tree(tmp_path_factory.mktemp("props"))


def _check_unit(adapter, unit, path):
    """The ingest's reader (rules.read_unit) on one unit: a record that keeps the store's invariants, or a
    Skip naming the file with the adapter's own reason (AdapterError), never a wrapped numpy/astropy error."""
    from pairspec.ingest.rules import read_unit
    from pairspec.store import record_problem

    unit_, record, skip, _ = read_unit(unit, adapter)
    if record is not None:
        assert record_problem(record, adapter.grid.npix, len(adapter.schema)) is None
        assert np.isfinite(record.visit_flux).all() and (record.visit_ivar >= 0).all()
        return "read"
    assert skip.path == str(path), skip
    generic = skip.problem.split(":")[0] in {"TypeError", "IndexError", "KeyError", "ValueError", "AttributeError",
                                             "RuntimeError", "ZeroDivisionError", "OverflowError"}
    assert not generic, f"unclear reason for {path}: {skip.problem}"
    return "skipped"


@settings(max_examples=40 * SCALE, **SETTINGS)
@given(mutations=st.lists(MUTATION, min_size=1, max_size=3))
def test_mutated_apstar_gives_a_record_or_a_clear_skip(apstar_tree, mutations):
    from astropy.io import fits

    from pairspec.surveys.apogee.adapter import ApogeeDR17Adapter

    CHECKED["fits"][0] += 1
    path = apstar_tree / "apo25m" / "000+02" / MULTI
    with fits.open(REAL / MULTI, memmap=False) as src:
        hdul = fits.HDUList([h.copy() for h in src])
    for m in mutations:
        if m[0] == "drop" and m[1] >= len(hdul):
            continue
        _apply(hdul, m)
    try:
        hdul.writeto(path, overwrite=True, output_verify="silentfix")
    except (fits.VerifyError, ValueError, TypeError, OSError):
        CHECKED["fits"][1] += 1
        return  # astropy would not even write it
    adapter = ApogeeDR17Adapter()
    (unit,) = [u for u in adapter.discover(apstar_tree).units if u.star_id == MULTI_ID]
    _check_unit(adapter, unit, path)
    CHECKED["fits"][1] += 1


@settings(max_examples=25 * SCALE, **SETTINGS)
@given(cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=4))
def test_cut_or_corrupted_apstar_bytes_give_a_clear_skip(apstar_tree, cut, flips):
    from pairspec.surveys.apogee.adapter import ApogeeDR17Adapter

    CHECKED["fits"][0] += 1
    path = apstar_tree / "apo25m" / "000+02" / MULTI
    data = bytearray((REAL / MULTI).read_bytes())
    for where, value in flips:
        data[int(where * (len(data) - 1))] = value
    path.write_bytes(bytes(data[: max(1, int(cut * len(data)))]))
    adapter = ApogeeDR17Adapter()
    (unit,) = [u for u in adapter.discover(apstar_tree).units if u.star_id == MULTI_ID]
    _check_unit(adapter, unit, path)
    CHECKED["fits"][1] += 1


# ---------------------------------------------------------------- store metadata and chunks


@pytest.fixture(scope="module")
def pristine_store(tmp_path_factory):
    from pairspec.ingest import ingest

    root = tmp_path_factory.mktemp("store-props")
    src = write_units(root / "src", [f"S{i:04d}" for i in range(10)])
    ingest(ModelFakeAdapter(), str(src), str(root / "s.zarr"), workers=1, batch_size=8, chunk=8, progress=False)
    return root / "s.zarr"


ROOT_KEYS = ["pairspec_store_version", "survey", "release", "grid", "schema", "chunk", "n_stars", "n_visits",
             "provenance"]
JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=False),
                                 st.text(max_size=8)),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                       max_leaves=6)
STORE_MUTATION = st.one_of(
    st.tuples(st.just("attr-del"), st.sampled_from(ROOT_KEYS)),
    st.tuples(st.just("attr-set"), st.sampled_from(ROOT_KEYS), JSONISH),
    st.tuples(st.just("grid-field"), st.sampled_from(["crval1", "cdelt1", "npix", "blocks", "medium"]), JSONISH),
    st.tuples(st.just("array-meta"), st.sampled_from(["stars/id", "stars/n_visits", "visits/flux", "stars/labels",
                                                      "visits/star"]),
              st.sampled_from(["shape", "data_type", "chunk_grid", "codecs", "delete", "garbage"]), JSONISH),
    st.tuples(st.just("chunk"), st.sampled_from(["visits/flux", "stars/id", "visits/star", "stars/split"]),
              st.sampled_from(["garbage", "truncate", "delete"])),
    st.tuples(st.just("root-garbage")),
)


def _mutate_store(path: Path, m) -> None:
    root = path / "zarr.json"
    if m[0] == "root-garbage":
        root.write_bytes(b"{not json")
        return
    if m[0].startswith("attr") or m[0] == "grid-field":
        try:
            meta = json.loads(root.read_text())
        except ValueError:  # already garbage
            return
        attrs = meta.setdefault("attributes", {})
        if m[0] == "attr-del":
            attrs.pop(m[1], None)
        elif m[0] == "attr-set":
            attrs[m[1]] = m[2]
        elif isinstance(attrs.get("grid"), dict):
            attrs["grid"][m[1]] = m[2]
        root.write_text(json.dumps(meta))
        return
    arr = path / m[1]
    if m[0] == "array-meta":
        f = arr / "zarr.json"
        if m[2] == "delete":
            f.unlink()
        elif m[2] == "garbage":
            f.write_bytes(b"\x00\x01garbage")
        elif f.exists():
            try:
                meta = json.loads(f.read_text())
            except ValueError:
                return
            meta[m[2]] = m[3]
            f.write_text(json.dumps(meta))
        return
    chunks = sorted(p for p in (arr / "c").rglob("*") if p.is_file())
    if not chunks:
        return
    c = chunks[0]
    if m[2] == "delete":
        c.unlink()
    elif m[2] == "truncate":
        c.write_bytes(c.read_bytes()[: len(c.read_bytes()) // 2])
    else:
        c.write_bytes(b"garbage" * 20)


CLEAR = (ValueError, FileNotFoundError)


@settings(max_examples=30 * SCALE, **SETTINGS)
@given(mutations=st.lists(STORE_MUTATION, min_size=1, max_size=2))
def test_mutated_store_opens_validates_and_predicts_or_says_why(pristine_store, tmp_path, mutations):
    from pairspec.store import open_store
    from pairspec.validate import validate_path

    CHECKED["store"][0] += 1
    path = tmp_path / f"m{CHECKED['store'][0]}.zarr"
    shutil.copytree(pristine_store, path)
    for m in mutations:
        _mutate_store(path, m)
    problems = validate_path(str(path))  # never raises: a report
    assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)
    try:
        store = open_store(str(path))
    except CLEAR as err:
        assert str(path) in str(err), err
        CHECKED["store"][1] += 1
        return
    # it opened: what a reader (predict, train) does next either works or names the store
    try:
        stars, visits = store.star_table(), store.visit_table()
        flux, ivar, _ = store.visit_spectra(slice(0, store.n_visits), pixmask=False)
        labels = store.labels()
    except CLEAR as err:
        assert str(path) in str(err), err
        CHECKED["store"][1] += 1
        return
    if not problems:  # validate said healthy: then the numbers are those of the pristine store
        ref = open_store(str(pristine_store))
        assert store.n_stars == ref.n_stars and store.n_visits == ref.n_visits
        assert stars["id"].tolist() == ref.star_table()["id"].tolist()
        np.testing.assert_array_equal(flux, ref.visit_spectra(slice(0, ref.n_visits), pixmask=False)[0])
        np.testing.assert_array_equal(labels, ref.labels())
    else:
        assert np.isfinite(flux).all() or any("NaN" in p or "unreadable" in p for p in problems)
    del visits, ivar
    CHECKED["store"][1] += 1


# ---------------------------------------------------------------- truth files (pairspec.evaluate.read_truth)

NAMES = ["teff", "logg", "fe_h"]
IDS = [f"S{i:04d}" for i in range(8)]
TRUTH_MUTATION = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(["star_id", "teff", "logg", "fe_h"])),
    st.tuples(st.just("rename"), st.sampled_from(["star_id", "teff"]), st.sampled_from(["APOGEE_ID", "TEFF", "x"])),
    st.tuples(st.just("ids"), st.sampled_from(["other-survey", "padded", "ints"])),
    st.tuples(st.just("rows"), st.integers(0, 8)),
    st.tuples(st.just("nan"), st.sampled_from(["teff", "fe_h"])),
)


def _truth_table(mutations):
    from astropy.table import Table

    rng = np.random.default_rng(0)
    t = Table({"star_id": np.array(IDS), "teff": rng.uniform(4000, 6000, 8), "logg": rng.uniform(1, 4, 8),
               "fe_h": rng.uniform(-1, 0.3, 8)})
    for m in mutations:
        if m[0] == "drop" and m[1] in t.colnames:
            t.remove_column(m[1])
        elif m[0] == "rename" and m[1] in t.colnames and m[2] not in t.colnames:
            t.rename_column(m[1], m[2])
        elif m[0] == "ids" and "star_id" in t.colnames:
            t["star_id"] = {"other-survey": np.array([f"Gaia DR3 {i}" for i in range(len(t))]),
                            "padded": np.array([f"  {s}  " for s in t["star_id"]]),
                            "ints": np.arange(len(t))}[m[1]]
        elif m[0] == "rows":
            t = t[: m[1]]
        elif m[0] == "nan" and m[1] in t.colnames:
            t[m[1]][::2] = np.nan
    return t


@settings(max_examples=60 * SCALE, **SETTINGS)
@given(mutations=st.lists(TRUTH_MUTATION, max_size=3), fmt=st.sampled_from([".fits", ".ecsv", ".parquet"]))
def test_truth_file_gives_the_file_values_or_a_clear_error(tmp_path, mutations, fmt):
    from pairspec.evaluate import read_truth

    CHECKED["truth"][0] += 1
    t = _truth_table(mutations)
    path = tmp_path / f"truth{CHECKED['truth'][0]}{fmt}"
    t.write(path, overwrite=True)
    try:
        out, _ = read_truth(path, IDS, NAMES)
    except ValueError as err:
        assert str(path) in str(err), err
        CHECKED["truth"][1] += 1
        return
    assert out.shape == (len(IDS), len(NAMES))
    cols = {c.lower(): c for c in t.colnames}
    ids = [str(s).strip() for s in t[cols["star_id"]]]
    present = [k for k, n in enumerate(NAMES) if n in cols]
    assert present, "a truth file with none of the labels must be refused, not read as NaN"
    for i, sid in enumerate(IDS):
        if sid not in ids:
            assert np.isnan(out[i]).all()
            continue
        j = ids.index(sid)
        for k in present:
            want = float(t[cols[NAMES[k]]][j])
            assert out[i, k] == pytest.approx(want, nan_ok=True, rel=1e-12)  # the file's number, never another
    CHECKED["truth"][1] += 1


def test_truth_file_with_a_text_label_column_names_the_file(tmp_path):
    from astropy.table import Table

    from pairspec.evaluate import read_truth

    path = tmp_path / "truth.fits"
    Table({"star_id": np.array(IDS), "teff": np.array([f"v{i}" for i in range(8)])}).write(path)
    with pytest.raises(ValueError, match="truth.fits"):
        read_truth(path, IDS, NAMES)


def test_truth_file_with_duplicate_star_ids_is_refused(tmp_path):
    from astropy.table import Table

    from pairspec.evaluate import read_truth

    path = tmp_path / "truth.ecsv"
    Table({"star_id": np.array([IDS[0], IDS[0]]), "teff": np.array([4000.0, 6000.0])}).write(path)
    with pytest.raises(ValueError, match="truth.ecsv"):
        read_truth(path, IDS[:1], NAMES)
