"""How many Gauss-Newton steps the refit (pairspec.refit) needs: its time and the change of the labels with
8 against 5 steps, on the same 512 visits of a store, in one process, the two alternating three times
(one thread), beside the network's own forward pass.

    python benchmarks/refit_steps.py CHECKPOINT STORE > benchmarks/results/refit_steps_cpu.json

Prints JSON: median seconds per setting, and the largest / 99th-percentile change of the labels between
them, in the labels' standardised units and in physical units.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np


def main(argv=None) -> dict:
    import torch

    from pairspec import preprocess
    from pairspec.inference import LabelPredictor
    from pairspec.refit import refit_from_inputs
    from pairspec.store import open_store

    checkpoint, store_path = (argv or sys.argv[1:])[:2]
    torch.set_num_threads(1)
    predictor = LabelPredictor.from_checkpoint(checkpoint)
    store = open_store(store_path)
    rows = np.arange(0, store.n_visits, max(1, store.n_visits // 512))[:512]
    flux, ivar, _ = store.visit_spectra(rows)
    f, iv = preprocess.clean(flux, ivar)
    x = torch.from_numpy(preprocess.prepare_inputs(f, iv, predictor.grid))
    with torch.no_grad():
        out = predictor.model(x)
    times, z = {5: [], 8: []}, {}
    for _ in range(3):
        for n in (8, 5):
            t0 = time.perf_counter()
            zz, _ = refit_from_inputs(predictor.model.label_decoder, x, out["mean"], out["log_var"], n_iter=n)
            times[n].append(time.perf_counter() - t0)
            z[n] = zz.numpy()
    t_net = []
    for _ in range(3):
        t0 = time.perf_counter()
        with torch.no_grad():
            predictor.model(x)
        t_net.append(time.perf_counter() - t0)
    d = np.abs(z[5] - z[8])
    report = {"checkpoint": checkpoint, "n_spectra": int(rows.size), "threads": 1,
              "refit_s_median": {n: float(np.median(t)) for n, t in times.items()},
              "network_forward_s_median": float(np.median(t_net)), "labels": predictor.label_names,
              "max_abs_change_std_units": d.max(0).round(5).tolist(),
              "p99_abs_change_std_units": np.percentile(d, 99, axis=0).round(5).tolist(),
              "p99_abs_change_physical": (np.percentile(d, 99, axis=0) * predictor.label_std).round(5).tolist(),
              "median_abs_change_physical": (np.median(d, axis=0) * predictor.label_std).round(6).tolist()}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
