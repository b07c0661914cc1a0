"""Peak memory of `pairspec predict` over a store, for several store sizes (prints JSON).

    python benchmarks/memory.py [--sizes 10000 100000] [--workdir DIR] [--out benchmarks/results/memory_cpu.json]

The point is memory, not labels: the stores are cheap synthetic ones (random spectra on the 300-pixel grid of
tests/fake_survey.MODEL_GRID, 1-4 visits per star, written straight through PairStore.append) and the model
is the tiny random-weight TSN of tests/tinymodel.py. Each predict runs in a child process, so that its peak
RSS (getrusage ru_maxrss) is its own; the store is built before and outside it. Predict streams a store in
chunks of batch_size x 8 visits and keeps only the per-visit label columns, so the peak should be flat in the
number of visits: the JSON gives each peak, the growth per 100k visits and the issue's bound (< 3 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

_CHILD = """
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[4]))
from pairspec.predict import predict
t0 = time.perf_counter()
r = predict(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=256, progress=False, device="cpu")
print(json.dumps({"elapsed_s": time.perf_counter() - t0, "visits": r.n_visits, "stars": r.n_stars,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def build_store(path: Path, n_visits: int, seed: int = 0) -> dict:
    """A store of about `n_visits` visits (stars of 1-4 visits) written in batches of 512 stars."""
    import numpy as np
    from fake_survey import MODEL_GRID

    from pairspec.store import create_store
    from pairspec.surveys.apogee.layout import APOGEE_DR17_SCHEMA
    from pairspec.surveys.base import StarRecord

    rng = np.random.default_rng(seed)
    npix = MODEL_GRID.npix
    store = create_store(str(path), "fake", "mem", MODEL_GRID, APOGEE_DR17_SCHEMA, {"source": "benchmarks/memory.py"})
    t0, made, k = time.perf_counter(), 0, 0
    while made < n_visits:
        batch = []
        for _ in range(512):
            nv = min(int(rng.integers(1, 5)), n_visits - made)
            if nv <= 0:
                break
            snr = rng.uniform(5, 120, nv).astype(np.float32)
            flux = (1 + rng.standard_normal((nv, npix)).astype(np.float32) / snr[:, None]).astype(np.float32)
            ivar = np.repeat((snr ** 2)[:, None], npix, axis=1).astype(np.float32)
            batch.append(StarRecord(
                star_id=f"M{k:08d}", source=f"mem/{k:08d}", labels=rng.uniform(0, 1, 4).astype(np.float32),
                label_err=np.full(4, 0.1, np.float32), label_flags=np.zeros(4, np.int64), star_flags=0,
                coadd_flux=flux.mean(0), coadd_ivar=ivar.sum(0), coadd_pixmask=np.zeros(npix, np.int64),
                visit_flux=flux, visit_ivar=ivar, visit_pixmask=np.zeros((nv, npix), np.int64), visit_snr=snr,
                visit_snr_survey=snr, visit_mjd=58000.0 + np.arange(nv), visit_id=[f"v{k}-{j}" for j in range(nv)],
                visit_fiber=np.zeros(nv, np.int32), snr=float(snr.max()), meta={}))
            made, k = made + nv, k + 1
        store.append(batch, contents_checked=True)
    return {"visits": store.n_visits, "stars": store.n_stars, "build_s": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--workdir", type=Path, default=None, help="where the stores go (default: a temp folder)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the predict child")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    from tinymodel import make_checkpoint

    work = args.workdir or Path(tempfile.mkdtemp(prefix="pairspec-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = make_checkpoint(work / "tiny.pt")
    runs = []
    for n in args.sizes:
        store = work / f"store-{n}.zarr"
        if store.exists():
            shutil.rmtree(store)
        built = build_store(store, n)
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        out = subprocess.run([sys.executable, "-c", _CHILD, str(ckpt), str(store), str(work / f"cat-{n}.parquet"),
                              str(args.threads)], capture_output=True, text=True, env=env, check=True)
        run = {"n_visits": built["visits"], "n_stars": built["stars"], "store_build_s": built["build_s"],
               **json.loads(out.stdout.strip().splitlines()[-1])}
        run["visits_per_s"] = round(run["visits"] / run["elapsed_s"], 1)
        runs.append(run)
        shutil.rmtree(store)
    lo, hi = runs[0], runs[-1]
    growth = (hi["peak_rss_mb"] - lo["peak_rss_mb"]) / max(1, hi["n_visits"] - lo["n_visits"]) * 1e5
    result = {
        "what": "peak RSS of `pairspec predict` (child process) over synthetic stores; tiny random-weight TSN, "
                "300-pixel grid, batch_size 256 (chunks of 2048 visits)",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "runs": runs,
        "peak_rss_growth_mb_per_100k_visits": round(growth, 1),
        "bound_mb": 3072,
        "all_below_bound": all(r["peak_rss_mb"] < 3072 for r in runs),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
