"""The harness of the precision study's lever table (docs/recipes.md): cached twins of one standard
synthetic survey, nested star subsets, scoring against truth per visit-S/N bin. See README.md here."""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np

STORE = os.environ.get("EXP_STORE", "levers-work/std/apogee.zarr")
TRUTH = os.environ.get("EXP_TRUTH", "levers-work/std/truth.fits")
CACHE = Path(os.environ.get("EXP_CACHE", "levers-work/cache"))
RESULTS = Path(os.environ.get("EXP_RESULTS", "levers-work/results"))
LABELS = ("teff", "logg", "fe_h", "mg_fe")
EDGES = (0, 20, 40, 60, math.inf)
BINS = ("<20", "20-40", "40-60", ">=60")


def cached_twins(split, mode="loo", max_stars=None, min_visits=2, tag=None):
    from pairspec import data
    from pairspec.store import open_store

    CACHE.mkdir(parents=True, exist_ok=True)
    tag = tag or f"{split}_{mode}_{max_stars}_{min_visits}"
    path = CACHE / f"{tag}.npz"
    if not path.exists():
        store = open_store(STORE)
        t0 = time.time()
        tw = data.TwinData(store, split, mode=mode, min_visits=min_visits, max_stars=max_stars)
        d = {k: getattr(tw, k) for k in ("x", "target", "target_w", "labels", "snr", "star_index", "visit_index")}
        # the study's four labels only (the store's schema holds every label the survey has)
        d["labels"] = d["labels"][:, [list(tw.schema.names).index(n) for n in LABELS]]
        d["x"] = d["x"].astype(np.float16)
        d["target"] = d["target"].astype(np.float16)
        np.savez(path, **d)
        print(f"cached {tag}: {len(tw)} twins in {time.time() - t0:.0f}s", file=sys.stderr)
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def star_subset(star_index, n_stars, store_ids):
    """Nested, field-unbiased subsets: stars ranked by a hash of their id, the first n kept."""
    import zlib
    stars = np.unique(star_index)
    rank = np.argsort([zlib.crc32(store_ids[s].encode()) for s in stars], kind="stable")
    keep = np.zeros(star_index.max() + 1, dtype=bool)
    keep[stars[rank[:n_stars]]] = True
    return keep[star_index]


def star_ids():
    from pairspec.store import open_store
    return open_store(STORE).star_table()["id"]


def truth_labels():
    from astropy.table import Table

    from pairspec.store import open_store

    store = open_store(STORE)
    ids = store.star_table()["id"]
    t = Table.read(TRUTH, hdu=1)
    key = "star_id" if "star_id" in t.colnames else "APOGEE_ID"
    row = {s.strip(): i for i, s in enumerate(np.asarray(t[key]).astype(str))}
    idx = np.array([row[s] for s in ids])
    return np.stack([np.asarray(t[k], np.float64)[idx] for k in LABELS], 1)


def robust(x):
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def theil_sen(pred, ref, n=20000, seed=0):
    ok = np.isfinite(pred) & np.isfinite(ref)
    pred, ref = pred[ok], ref[ok]
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, pred.size, n), rng.integers(0, pred.size, n)
    dx = ref[j] - ref[i]
    k = np.abs(dx) > 1e-9
    return float(np.median((pred[j] - pred[i])[k] / dx[k]))


def score(pred, truth, snr, sigma=None):
    out = {}
    for k, name in enumerate(LABELS):
        r = pred[:, k] - truth[:, k]
        row = {}
        for b, lo, hi in zip(BINS, EDGES[:-1], EDGES[1:]):
            sel = (snr >= lo) & (snr < hi)
            row[b] = robust(r[sel])
        row["<60"] = robust(r[snr < 60])
        row["bias<60"] = float(np.nanmedian(r[snr < 60]))
        row["slope>=20"] = theil_sen(pred[snr >= 20, k], truth[snr >= 20, k])
        if sigma is not None:
            z = r / sigma[:, k]
            row["zstd"] = robust(z)
        out[name] = row
    return out


def fmt(s):
    lines = []
    for name, row in s.items():
        u = "{:.0f}" if name == "teff" else "{:.3f}"
        lines.append(f"{name:6s} " + " ".join(f"{b}:{u.format(row[b])}" for b in BINS + ("<60",))
                     + f" slope {row['slope>=20']:.2f}" + (f" z {row['zstd']:.2f}" if "zstd" in row else ""))
    return "\n".join(lines)
