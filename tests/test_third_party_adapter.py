"""A survey package pairspec has never heard of, "installed" without pip: tests/data/tinysurvey holds its
module and a tinysurvey-0.1.dist-info/ (METADATA + entry_points.txt), which is all importlib.metadata needs
once the folder is on PYTHONPATH. The pairspec command line then lists, simulates and ingests it."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent / "data" / "tinysurvey"


def run_pairspec(*args, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE)] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_not_registered_without_the_package_on_the_path():
    from pairspec.surveys import available, simulators

    assert "tiny" not in available() and "tiny" not in simulators()  # nothing leaks into this process


def test_cli_lists_simulates_and_ingests_a_third_party_survey(tmp_path):
    from pairspec.store import open_store

    listed = run_pairspec("-m", "pairspec.cli", "info", "--surveys").stdout.split()
    assert "tiny" in listed and "apogee" in listed
    out = run_pairspec("-m", "pairspec.cli", "simulate", "tiny", str(tmp_path / "src"), "--stars", "12",
                       "--seed", "5").stdout
    with open(tmp_path / "src" / "tiny_stars.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    n_visits = sum(int(r["n_visits"]) for r in rows)
    assert len(rows) == 12 and f"wrote 12 stars, {n_visits} visits" in out
    assert (tmp_path / "src" / "truth.fits").is_file()
    report = run_pairspec("-m", "pairspec.cli", "ingest", "tiny", str(tmp_path / "src"), str(tmp_path / "tiny.zarr"),
                          "--workers", "1").stdout
    assert "skipped 0 units" in report
    store = open_store(str(tmp_path / "tiny.zarr"))
    assert store.survey == "tiny" and store.validate() == []
    assert store.n_stars == 12 and store.n_visits == n_visits
    assert sorted(store.star_table()["id"]) == sorted(r["star_id"] for r in rows)
    assert store.schema.names == ["teff", "logg", "fe_h"] and store.grid.npix == 300
    # the optional hooks, found by name through the registry: a lone file, and the visit-level fit
    check = ("import sys, numpy as np; from astropy.io import fits; from pairspec.surveys import file_reader, "
             "visit_fitter; r = file_reader('tiny').read_file(sys.argv[1]); f = visit_fitter('tiny').fit("
             "r.visit_flux[:1], r.visit_ivar[:1]); t = fits.getdata(sys.argv[2], 1); i = list(t['star_id']).index("
             "r.star_id); print(r.star_id, r.n_visits, *(f['labels'][0] - [t['teff'][i], t['logg'][i], t['fe_h'][i]]))")
    star = rows[0]["star_id"]
    words = run_pairspec("-c", check, str(tmp_path / "src" / "spectra" / f"{star}.tiny"),
                         str(tmp_path / "src" / "truth.fits")).stdout.split()
    assert words[0] == star and int(words[1]) == int(rows[0]["n_visits"])
    d_teff, d_logg, d_feh = map(float, words[2:5])
    assert abs(d_teff) < 300 and abs(d_logg) < 0.6 and abs(d_feh) < 0.3, words  # one visit, S/N 10-80


@pytest.mark.slow
def test_contract_suite_passes_for_the_third_party_adapter():
    """The same contract suite the built-in surveys run, on the installed third-party adapter."""
    proc = run_pairspec("-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__).parent /
                        "test_adapter_contract.py"), "-k", "tiny", cwd=Path(__file__).parent.parent)
    assert " passed" in proc.stdout and "failed" not in proc.stdout
