"""simulate_apogee_store writes the store that simulate_apogee + ingest give for the same seed."""

import json

import numpy as np
import pytest

from pairspec.ingest import ingest
from pairspec.store import open_store
from pairspec.surveys.apogee.simulate import simulate_apogee
from pairspec.surveys.apogee.store_sim import simulate_apogee_store


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("simstore")
    n, seed = 40, 11  # 40 stars: one has a second allStar row (EXTRATARG duplicate), some are STAR_BAD
    simulate_apogee(tmp / "tree", n_stars=n, seed=seed, workers=1, progress=False)
    report = ingest("apogee", str(tmp / "tree"), str(tmp / "ingested.zarr"), workers=1, progress=False)
    summary = simulate_apogee_store(str(tmp / "direct.zarr"), n_stars=n, seed=seed, workers=2, progress=False,
                                    chunk=16, batch_size=16)
    return open_store(str(tmp / "ingested.zarr")), open_store(str(tmp / "direct.zarr")), report, summary


def test_same_stars_and_tables(pair):
    ing, direct, report, summary = pair
    assert summary.n_stars == report.n_stars == ing.n_stars == direct.n_stars
    assert summary.n_visits == ing.n_visits == direct.n_visits
    # the same rows are left out, for the same reasons
    assert sorted(p for p, _ in summary.skipped) == sorted(s.path.split("tree/")[-1] for s in report.skipped)
    a, b = ing.star_table(), direct.star_table()
    pos = {s: i for i, s in enumerate(a["id"])}
    order = np.array([pos[s] for s in b["id"]])
    for name in a:
        if name == "first_visit":
            continue
        if name == "meta_json":
            assert [json.loads(v) for v in a[name][order]] == [json.loads(v) for v in b[name]]
        else:
            np.testing.assert_array_equal(a[name][order], b[name], err_msg=name)
    np.testing.assert_array_equal(ing.labels()[order], direct.labels())
    np.testing.assert_array_equal(ing.label_err()[order], direct.label_err())
    np.testing.assert_array_equal(ing.label_flags()[order], direct.label_flags())


def test_same_spectra(pair):
    ing, direct, _, _ = pair
    a, b = ing.star_table(), direct.star_table()
    va, vb = ing.visit_table(), direct.visit_table()
    pos = {s: i for i, s in enumerate(a["id"])}
    for j, star in enumerate(b["id"]):
        i = pos[star]
        for x, y in zip(ing.star_spectra([i]), direct.star_spectra([j])):
            np.testing.assert_array_equal(x, y)
        sa = slice(int(a["first_visit"][i]), int(a["first_visit"][i] + a["n_visits"][i]))
        sb = slice(int(b["first_visit"][j]), int(b["first_visit"][j] + b["n_visits"][j]))
        for x, y in zip(ing.visit_spectra(sa), direct.visit_spectra(sb)):
            np.testing.assert_array_equal(x, y)
        for name in ("visit_id", "mjd", "snr", "snr_survey", "fiber"):
            np.testing.assert_array_equal(va[name][sa], vb[name][sb], err_msg=name)


def test_truth_written_and_store_not_overwritten(pair, tmp_path):
    _, direct, _, summary = pair
    from astropy.table import Table

    truth = Table.read(summary.truth)
    assert len(truth) == 40 and set(direct.star_table()["id"]) <= set(truth["star_id"])
    with pytest.raises(ValueError, match="already exists"):
        simulate_apogee_store(direct.path, n_stars=5, seed=1, progress=False)
