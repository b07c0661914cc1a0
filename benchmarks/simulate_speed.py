"""Simulator throughput (prints JSON): the line-list spectrum generator (pairspec/surveys/linegen.py) batched
against the same spectra one star at a time (the baseline, same run), and the LAMOST simulator end to end.

    python benchmarks/simulate_speed.py [--stars 1000] [--lamost-stars 12] [--out result.json]

These replace the timed asserts the tests used to carry (a test checks what is computed; how fast is
measured here, beside a baseline, because machines differ and are noisy).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import numpy as np


def bench_linegen(n: int) -> dict:
    from pairspec.surveys.linegen import normalized_spectrum

    rng = np.random.default_rng(1)
    lab = np.stack([rng.uniform(3500, 8000, n), rng.uniform(0.5, 5, n), rng.uniform(-2, 0.5, n),
                    rng.uniform(-0.1, 0.4, n)], 1)
    wave = 10 ** (3.5682 + 1e-4 * np.arange(4000))
    normalized_spectrum(wave, lab[:4], 1800.0)  # caches (line forest, tables)
    t = time.perf_counter()
    batched = normalized_spectrum(wave, lab, 1800.0)
    t_batch = time.perf_counter() - t
    k = min(n, 100)  # the baseline: one call per star, on the first k stars
    t = time.perf_counter()
    single = np.concatenate([normalized_spectrum(wave, lab[i:i + 1], 1800.0) for i in range(k)])
    t_single = (time.perf_counter() - t) * n / k
    return {"stars": n, "pixels": wave.size, "batched_s": round(t_batch, 3),
            "one_star_at_a_time_s": round(t_single, 3), "speedup": round(t_single / t_batch, 2),
            "same_spectra_max_abs_diff": float(np.abs(batched[:k] - single).max())}


def bench_lamost(n: int) -> dict:
    from pairspec.surveys import get_simulator

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        get_simulator("lamost").simulate(f"{tmp}/src", n_stars=n, seed=3, workers=1, progress=False)
        return {"stars": n, "seconds": round(time.perf_counter() - t, 2)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stars", type=int, default=1000, help="spectra for the line-list generator timing")
    ap.add_argument("--lamost-stars", type=int, default=12, help="stars the LAMOST simulator makes")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    out = {"linegen": bench_linegen(args.stars), "lamost_simulate": bench_lamost(args.lamost_stars),
           "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores"}
    print(json.dumps(out, indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
