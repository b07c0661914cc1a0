"""Continuum normalisation throughput: the numpy and the torch backend of `pairspec.preprocess.normalize`
on CPU (and CUDA when present). Prints JSON.

    python benchmarks/continuum.py [--n 256] [--threads 1] [--repeat 3] [--cont-pixels]

Inputs: synthetic APOGEE-grid spectra (Gaussian lines x smooth continuum, S/N 5-100). Both sides get
--threads CPU threads: numpy's BLAS through OPENBLAS/OMP/MKL_NUM_THREADS (set before numpy loads, unless
already set), torch through torch.set_num_threads. The best of --repeat timings is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def _spectra(n: int, seed: int = 0):
    import numpy as np

    from pairspec.surveys.apogee.layout import APOGEE_GRID

    rng = np.random.default_rng(seed)
    npix = APOGEE_GRID.npix
    x = np.arange(npix, dtype=np.float64)
    lines = np.ones((n, npix))
    for i in range(n):  # ~20 % of the pixels in Gaussian lines of depth 0.02-0.4
        c, d, w = rng.uniform(0, npix, 200), rng.uniform(0.02, 0.4, 200), rng.uniform(1.5, 3.0, 200)
        for lo in range(0, 200, 50):
            sl = slice(lo, lo + 50)
            lines[i] -= (d[sl, None] * np.exp(-0.5 * ((x - c[sl, None]) / w[sl, None]) ** 2)).sum(0)
    t = np.linspace(-1, 1, npix)[None, :]
    cont = 1000 * rng.uniform(0.5, 2, (n, 1)) * (1 + rng.uniform(-0.2, 0.2, (n, 1)) * t)
    snr = rng.choice([5.0, 10.0, 30.0, 100.0], (n, 1))
    sigma = cont / snr
    flux = np.clip(lines, 0.3, 1) * cont + rng.normal(size=cont.shape) * sigma
    return flux.astype(np.float32), (1 / sigma**2).astype(np.float32)


def _best(fn, repeat: int) -> float:
    fn()  # warm-up: imports, caches, CUDA context
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cont-pixels", action="store_true", help="fit only the Cannon continuum pixels")
    args = p.parse_args(argv)
    # BLAS pools size themselves when numpy is first imported, so the limit must be in place before that.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))

    import torch

    from pairspec.preprocess import normalize
    from pairspec.preprocess.torch_backend import normalize as normalize_torch
    from pairspec.surveys.apogee.layout import APOGEE_GRID, apogee_continuum_pixels

    torch.set_num_threads(args.threads)
    flux, ivar = _spectra(args.n)
    cp = apogee_continuum_pixels() if args.cont_pixels else None
    t_np = _best(lambda: normalize(flux, ivar, APOGEE_GRID, cont_pixels=cp), args.repeat)
    tf, ti = torch.from_numpy(flux), torch.from_numpy(ivar)
    t_cpu = _best(lambda: normalize_torch(tf, ti, APOGEE_GRID, cont_pixels=cp), args.repeat)
    t_cuda = None
    if torch.cuda.is_available():
        gf, gi = tf.cuda(), ti.cuda()

        def run_cuda():
            normalize_torch(gf, gi, APOGEE_GRID, cont_pixels=cp)
            torch.cuda.synchronize()

        t_cuda = _best(run_cuda, args.repeat)
    result = {
        "n": args.n, "threads": args.threads, "cont_pixels": bool(args.cont_pixels),
        "numpy_spectra_per_s": round(args.n / t_np, 1),
        "torch_cpu_spectra_per_s": round(args.n / t_cpu, 1),
        "torch_cuda_spectra_per_s": None if t_cuda is None else round(args.n / t_cuda, 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
