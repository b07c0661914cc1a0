"""Other rules for the refit mix's weight (pairspec.refit.choose_mix), replayed on saved estimates.

    python benchmarks/decoder_refit.py CKPT STORE TRUTH --save-npz est.npz   # once per checkpoint
    python benchmarks/refit_mix_rules.py est.npz [est2.npz ...] > benchmarks/results/refit_mix_rules_cpu.json

The weight of the network's label per label and visit-S/N bin is chosen on the val visits against the
survey's labels over 30 bootstrap resamples of the val stars, and scored on the test visits against truth:
  network   a = 1 (the network's own labels)
  median    the median of the 30 choices (what training does)
  p0.8      the median, but a = 1 unless at least 80 % of the choices gave the refit a share (a < 1)
  p0.9      the same at 90 %
  mean      the mean of the 30 choices
Prints JSON: per file, rule, label, the robust sigma against truth per S/N bin (<20, 20-40, 40-60, >=60).
"""

from __future__ import annotations

import json
import sys

import numpy as np


def main(argv=None) -> dict:
    from pairspec.metrics import robust_sigma, snr_bin_index
    from pairspec.refit import apply_mix, bootstrap_choices

    report = {}
    for path in argv or sys.argv[1:]:
        d = np.load(path)
        names = [str(n) for n in d["names"]]
        vn, vr, vl, vs, vst = (d[k] for k in ("val_tsn", "val_refit_network", "val_ref", "val_snr", "val_star"))
        tn, tr, tt, ts = (d[k] for k in ("test_tsn", "test_refit_network", "ref", "snr"))
        draws = bootstrap_choices(vn, vr, vl, vs, vst)[0]
        med, share = np.median(draws, 0), (draws < 1).mean(0)
        rules = {"network": np.ones_like(med), "median": med, "p0.8": np.where(share >= 0.8, med, 1.0),
                 "p0.9": np.where(share >= 0.9, med, 1.0), "mean": draws.mean(0)}
        bt = snr_bin_index(ts)
        report[path] = {rule: {n: [robust_sigma((apply_mix(tn, tr, ts, w) - tt)[bt == j, k]) for j in range(4)]
                               for k, n in enumerate(names)} for rule, w in rules.items()}
    json.dump(report, sys.stdout, indent=1)
    print()
    return report


if __name__ == "__main__":
    main()
