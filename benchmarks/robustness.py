"""The crash and bad-input figures (prints JSON): cases tried, cases that ended well, data lost.

    python benchmarks/robustness.py [--trials 6] [--property-scale 3] [--out benchmarks/results/robustness_cpu.json]

What it runs (the same machinery as the tests, more times):
- ingest SIGKILLed at random moments (tests/crashkit.py), one writer and parallel writers: each trial kills
  the ingest, kills the resumed one again, then finishes it; it ends well when the store is the
  uninterrupted one checksum for checksum. Data lost = reference stars missing or different after the rerun.
- predict SIGKILLed at random moments over an existing catalogue (FITS and two-file Parquet): ends well when
  the catalogue read afterwards is whole and equal to the reference (the old or the new one).
- three ingests at once into one store (new, and existing): ends well when all succeed and the store holds
  every star each reported, valid. Data lost = stars reported but absent.
- the bad-input corpus of tests/test_bad_input.py and the property tests of tests/test_properties.py
  (hypothesis; --property-scale multiplies their examples), run through pytest: a case ends well when it
  gave a correct result or a clear error naming the input.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
sys.path.insert(0, str(TESTS))

LINES = ([f"A{i:04d}" for i in range(40)] + ["BAD B0001", "BOOM B0002"] + [f"C{i:04d}" for i in range(40)]
         + ["DUP A0003"])


def _store_ids(path) -> set:
    from pairspec.store import open_store

    try:
        return set(open_store(str(path)).star_table()["id"].tolist())
    except (FileNotFoundError, ValueError):
        return set()


def ingest_kills(work: Path, trials: int, rng: random.Random) -> dict:
    import crashkit
    from fake_survey import SlowFakeAdapter, write_units

    from pairspec.ingest import ingest

    src = write_units(work / "src", LINES)
    ref = work / "ref.zarr"
    quick = SlowFakeAdapter()
    quick.delay = 0.0
    ingest(quick, str(src), str(ref), workers=1, batch_size=16, chunk=16, progress=False)
    reference, ref_ids = crashkit.store_digest(ref), _store_ids(ref)
    out = {"trials": 0, "kills": 0, "kills_that_left_a_partial_store": 0, "ended_well": 0, "data_lost_stars": 0}
    for workers in (1, 2):
        span = crashkit.timed_run(crashkit.ingest_script(src, work / f"timed{workers}.zarr", workers, delay=0.01))
        for t in range(trials):
            path = work / f"w{workers}-t{t}.zarr"
            script = crashkit.ingest_script(src, path, workers, delay=0.01)
            for _ in range(2):
                out["kills"] += crashkit.kill_at(script, rng.uniform(0.05, 1.0) * span)
                out["kills_that_left_a_partial_store"] += 0 < len(_store_ids(path)) < len(ref_ids)
            ingest(SlowFakeAdapter(), str(src), str(path), workers=workers, batch_size=16, chunk=16, progress=False)
            out["trials"] += 1
            same = crashkit.store_digest(path) == reference
            out["ended_well"] += same
            out["data_lost_stars"] += len(ref_ids - _store_ids(path)) + (0 if same else 1)
            shutil.rmtree(path)
    return out


def predict_kills(work: Path, trials: int, rng: random.Random) -> dict:
    import crashkit
    import torch
    from fake_survey import ModelFakeAdapter, write_units
    from tinymodel import make_checkpoint

    from pairspec import catalog
    from pairspec.ingest import ingest
    from pairspec.predict import predict

    torch.set_num_threads(1)
    src = write_units(work / "psrc", [f"S{i:04d}" for i in range(60)])
    store = work / "p.zarr"
    ingest(ModelFakeAdapter(), str(src), str(store), workers=1, batch_size=16, chunk=16, progress=False)
    ckpt = make_checkpoint(work / "tiny.pt")
    out = {"trials": 0, "kills": 0, "ended_well": 0, "truncated_or_mixed_catalogues": 0}
    for ext in (".fits", ".parquet"):
        predict(ckpt, str(store), work / f"ref{ext}", batch_size=8, progress=False, device="cpu")
        ref = catalog.read_catalogue(work / f"ref{ext}")
        target = work / f"cat{ext}"
        script = crashkit.predict_script(ckpt, store, target)
        span = crashkit.timed_run(script)
        for _ in range(trials):
            out["trials"] += 1
            out["kills"] += crashkit.kill_at(script, rng.uniform(0.05, 1.0) * span)
            try:
                got = catalog.read_catalogue(target)
                ok = all(a.colnames == b.colnames and all(
                    str(a[c].tolist()) == str(b[c].tolist()) for c in a.colnames) for a, b in zip(got, ref))
            except (OSError, ValueError) as err:
                print(f"predict {ext}: {err}", file=sys.stderr)
                ok = False
            out["ended_well"] += ok
            out["truncated_or_mixed_catalogues"] += not ok
    return out


def concurrent_ingests(work: Path, rounds: int) -> dict:
    from fake_survey import SlowFakeAdapter, write_units

    from pairspec.ingest import ingest
    from pairspec.store import open_store

    sys.path.insert(0, str(TESTS))
    from test_concurrency import _start

    out = {"rounds": 0, "ingests": 0, "ended_well": 0, "data_lost_stars": 0}
    for r in range(rounds):
        for existing in (False, True):
            root = work / f"c{r}-{int(existing)}"
            srcs = [write_units(root / p, [f"{p}{i:04d}" for i in range(24)]) for p in ("P", "A", "B", "C")]
            store = root / "m.zarr"
            if existing:
                ingest(SlowFakeAdapter(), str(srcs[0]), str(store), workers=1, batch_size=8, chunk=8, progress=False)
            procs = [_start(s, store, w) for s, w in zip(srcs[1:], (1, 2, 1))]
            outs = [p.communicate(timeout=600) for p in procs]
            reported = sum(int(o.split()[1]) for o, _ in outs if o.startswith("DONE"))
            final = open_store(str(store))
            want = 24 * (3 + existing)
            ok = (all(p.returncode == 0 for p in procs) and reported == 72 and final.n_stars == want
                  and final.validate() == [])
            out["rounds"] += 1
            out["ingests"] += 3
            out["ended_well"] += ok
            out["data_lost_stars"] += max(0, want - final.n_stars)
    return out


class _Collect:
    """pytest plugin: outcome of every test call."""

    def __init__(self):
        self.outcomes = {}

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            self.outcomes[report.nodeid] = report.outcome


def bad_inputs(scale: int) -> dict:
    import pytest

    os.environ["PAIRSPEC_PROPERTY_SCALE"] = str(scale)
    plugin = _Collect()
    code = pytest.main(["-q", "-p", "no:cacheprovider", "-x", str(TESTS / "test_bad_input.py"),
                        str(TESTS / "test_properties.py")], plugins=[plugin])
    corpus = {k: v for k, v in plugin.outcomes.items() if "test_corpus_case" in k}
    checked = sys.modules["test_properties"].CHECKED
    props = {name: {"cases_tried": tried, "ended_well": well} for name, (tried, well) in checked.items()}
    known = [k for k, v in plugin.outcomes.items() if v == "skipped" or "xfail" in k]
    return {"pytest_exit_code": int(code),
            "corpus": {"cases_tried": len(corpus), "ended_well": sum(v == "passed" for v in corpus.values())},
            "properties": props,
            "other_tests": {k.split("::")[-1]: v for k, v in plugin.outcomes.items() if "test_corpus_case" not in k},
            "known_gaps_outside_these_files": known}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=6, help="kill trials per engine / format")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of three concurrent ingests (new + existing)")
    ap.add_argument("--property-scale", type=int, default=3)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pairspec-robustness-"))
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    try:
        result = {
            "ingest_sigkill": ingest_kills(work / "ingest", args.trials, rng),
            "predict_sigkill": predict_kills(work / "predict", args.trials, rng),
            "concurrent_ingests": concurrent_ingests(work / "concurrent", args.rounds),
            "bad_input": bad_inputs(args.property_scale),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    b = result["bad_input"]
    tried = (result["ingest_sigkill"]["trials"] + result["predict_sigkill"]["trials"]
             + result["concurrent_ingests"]["rounds"] + b["corpus"]["cases_tried"]
             + sum(p["cases_tried"] for p in b["properties"].values()))
    well = (result["ingest_sigkill"]["ended_well"] + result["predict_sigkill"]["ended_well"]
            + result["concurrent_ingests"]["ended_well"] + b["corpus"]["ended_well"]
            + sum(p["ended_well"] for p in b["properties"].values()))
    result["totals"] = {"cases_tried": tried, "ended_well": well,
                        "data_lost": result["ingest_sigkill"]["data_lost_stars"]
                        + result["concurrent_ingests"]["data_lost_stars"]
                        + result["predict_sigkill"]["truncated_or_mixed_catalogues"]}
    result["settings"] = {"trials": args.trials, "rounds": args.rounds, "property_scale": args.property_scale,
                          "seed": args.seed, "elapsed_s": round(time.perf_counter() - t0, 1),
                          "python": platform.python_version(), "cpus": os.cpu_count()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
