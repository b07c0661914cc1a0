"""Ingest throughput vs a bare astropy read loop over the same apStar files (prints JSON).

    python benchmarks/ingest.py --stars 2000 [--workers 2] [--sim-dir DIR] [--out benchmarks/results/ingest_2000.json]

(a) bare: open every apStar/asStar with astropy and read HDUs 1-3 as arrays, one process;
(a') the same bare read in a pool of --workers processes (the fair comparison "on N cores");
(b) pairspec ingest of the same tree into a fresh store, in a child process so that its peak RSS
    (writer = the child, readers = its pool workers) is measured apart from this script's.

--replicate K builds a K-times larger tree from --sim-dir by HARD LINKS under new star ids (no extra
disk, same bytes read), to show that ingest memory does not grow with the number of stars without
simulating (and storing) K times more files. The JSON says when this was done.
All files are read once before the timings, so every rate is for a warm page cache.
--repeat N runs (a), (a') and (b) N times, interleaved, because a shared 2-core machine drifts by
tens of percent within a minute: the rates are the medians over the rounds (each round's rates
and ratios are in "rounds"), and the ratios are of those medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = """
import json, resource, sys, time
from pairspec.ingest import ingest
t0 = time.perf_counter()
r = ingest("apogee", sys.argv[1], sys.argv[2], workers=int(sys.argv[3]), progress=False)
dt = time.perf_counter() - t0
print(json.dumps({"elapsed_s": dt, "stars": r.n_stars, "visits": r.n_visits, "skipped": len(r.skipped),
                  "writer_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "reader_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def apstar_files(root: Path) -> list[Path]:
    return sorted(p for tel in ("apo25m", "lco25m", "apo1m") for p in (root / tel).glob("*/a[ps]Star-*.fits"))


def bare_loop(files: list[Path]) -> dict:
    from astropy.io import fits

    t0, visits = time.perf_counter(), 0
    for path in files:
        with fits.open(path, memmap=False) as hdul:
            arrays = [hdul[k].data.copy() for k in (1, 2, 3)]
            visits += int(hdul[0].header.get("NVISITS", max(1, arrays[0].shape[0] - 2)))
    return {"elapsed_s": time.perf_counter() - t0, "visits": visits, "files": len(files)}


def _read_one(path) -> int:
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        arrays = [hdul[k].data.copy() for k in (1, 2, 3)]
        return int(hdul[0].header.get("NVISITS", max(1, arrays[0].shape[0] - 2)))


def warm_page_cache(files: list[Path]) -> None:
    for path in files:
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def bare_pool(files: list[Path], workers: int) -> dict:
    import multiprocessing as mp

    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(workers) as pool:
        visits = sum(pool.imap(_read_one, [str(f) for f in files], chunksize=4))
    return {"elapsed_s": time.perf_counter() - t0, "visits": visits, "files": len(files)}


def replicate_tree(src: Path, dst: Path, k: int) -> Path:
    """A k-times larger DR17 tree: copy i of star X is star X with its id's last digit block changed."""
    import numpy as np
    from astropy.table import Table, vstack

    allstar = Table.read(src / "allStar-dr17-synspec_rev1.fits", hdu=1)
    parts = []
    for i in range(k):
        t = allstar.copy()
        ids = [f"{str(a).strip()[:-1]}{chr(ord('A') + i)}" for a in t["APOGEE_ID"]]
        prefix = [str(f).strip().split("-dr17-")[0] for f in t["FILE"]]
        files = [f"{p}-dr17-{a}.fits" for p, a in zip(prefix, ids)]
        for row, new_file in zip(t, files):
            tel, field = str(row["TELESCOPE"]).strip(), str(row["FIELD"]).strip()
            old = src / tel / field / str(row["FILE"]).strip()
            new = dst / tel / field / new_file
            new.parent.mkdir(parents=True, exist_ok=True)
            if old.exists() and not new.exists():
                os.link(old, new)
        t["APOGEE_ID"] = np.array(ids)
        t["FILE"] = np.array(files)
        parts.append(t)
    big = vstack(parts)
    big.write(dst / "allStar-dr17-synspec_rev1.fits", overwrite=True)
    return dst


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stars", type=int, default=2000, help="stars to simulate (ignored with --sim-dir)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="ingest reader processes")
    ap.add_argument("--sim-dir", type=Path, default=None, help="an existing simulated (or real) DR17 tree")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("--replicate", type=int, default=1, help="hard-link --sim-dir K times under new ids")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds of all three timings")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="pairspec-bench-") as tmp:
        root = args.sim_dir
        if root is None:
            from pairspec.surveys.apogee.simulate import simulate_apogee

            root = Path(tmp) / "sim"
            simulate_apogee(root, n_stars=args.stars, seed=args.seed)
        if args.replicate > 1:
            if args.sim_dir is None:
                sys.exit("--replicate needs --sim-dir")
            root = replicate_tree(Path(root), Path(root).parent / f"{Path(root).name}_x{args.replicate}",
                                  args.replicate)
        files = apstar_files(Path(root))
        if not files:
            sys.exit(f"{root}: no apStar/asStar files under apo25m/, lco25m/ or apo1m/")
        warm_page_cache(files)  # every timing below reads from memory, whatever ran before
        rounds = []
        for r in range(max(1, args.repeat)):
            bare = bare_loop(files)
            bare_par = bare_pool(files, args.workers)
            store = str(Path(tmp) / f"bench{r}.zarr")
            child = subprocess.run([sys.executable, "-c", _CHILD, str(root), store, str(args.workers)],
                                   capture_output=True, text=True, check=False)
            if child.returncode != 0:
                sys.exit(f"ingest failed:\n{child.stderr[-3000:]}")
            ing = json.loads(child.stdout.strip().splitlines()[-1])
            shutil.rmtree(store, ignore_errors=True)
            rounds.append({"bare_visits_per_s": bare["visits"] / bare["elapsed_s"],
                           "bare_pool_visits_per_s": bare_par["visits"] / bare_par["elapsed_s"],
                           "ingest_visits_per_s": ing["visits"] / ing["elapsed_s"], "ingest": ing})

    def median(key):
        return statistics.median(r[key] for r in rounds)

    bare_rate, pool_rate, ingest_rate = (median(k) for k in ("bare_visits_per_s", "bare_pool_visits_per_s",
                                                             "ingest_visits_per_s"))
    ing = rounds[-1]["ingest"]
    result = {
        "stars": ing["stars"], "visits": ing["visits"], "files": bare["files"], "skipped": ing["skipped"],
        "bare_visits_per_s": round(bare_rate, 1), "ingest_visits_per_s": round(ingest_rate, 1),
        "ratio": round(ingest_rate / bare_rate, 3),
        "bare_pool_visits_per_s": round(pool_rate, 1),
        "ratio_vs_bare_pool": round(ingest_rate / pool_rate, 3),
        "replicated": args.replicate,
        "peak_rss_mb": round(max(max(r["ingest"]["writer_rss_mb"], r["ingest"]["reader_rss_mb"]) for r in rounds), 1),
        "peak_rss_mb_writer": round(max(r["ingest"]["writer_rss_mb"] for r in rounds), 1),
        "peak_rss_mb_reader": round(max(r["ingest"]["reader_rss_mb"] for r in rounds), 1),
        "workers": args.workers,
        "repeat": len(rounds),
        "rounds": [{k: round(r[k], 1) for k in ("bare_visits_per_s", "bare_pool_visits_per_s", "ingest_visits_per_s")}
                   | {"ratio": round(r["ingest_visits_per_s"] / r["bare_visits_per_s"], 3),
                      "ratio_vs_bare_pool": round(r["ingest_visits_per_s"] / r["bare_pool_visits_per_s"], 3)}
                   for r in rounds],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine()},
        "self_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
