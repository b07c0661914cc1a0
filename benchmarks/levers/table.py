"""The lever table of docs/recipes.md from the harness's result files:

    python benchmarks/levers/table.py [RESULTS_DIR] NAME[=LABEL] ...

One row per run: robust sigma against truth at visit S/N < 60 (Teff, log g, [Fe/H], [Mg/Fe]), the
Theil-Sen slope of [Mg/Fe] at S/N >= 20, the z-score std range, and the denoised RMS against the
noiseless truth at S/N 20-40 (input visit RMS in the header)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

LABELS = ("teff", "logg", "fe_h", "mg_fe")


def row(res: dict, label: str) -> str:
    s = res["score"]
    cells = [f"{s['teff']['<60']:.0f}"] + [f"{s[k]['<60']:.3f}" for k in LABELS[1:]]
    slope = " / ".join(f"{s[k]['slope>=20']:.2f}" for k in LABELS)
    z = [s[k].get("zstd") for k in LABELS if s[k].get("zstd") is not None]
    zr = f"{min(z):.2f}-{max(z):.2f}" if z else "-"
    rec = (res.get("recon_rms") or {}).get("20-40")
    return f"| {label} | " + " | ".join(cells) + f" | {slope} | {zr} | {rec[1]:.4f} |" if rec else f"| {label} | " + \
        " | ".join(cells) + f" | {slope} | {zr} | - |"


def main(argv):
    root = Path(argv[0]) if argv and Path(argv[0]).is_dir() else Path("levers-work/results")
    names = argv[1:] if argv and Path(argv[0]).is_dir() else argv
    print("| run | Teff [K] | log g | [Fe/H] | [Mg/Fe] | slope (S/N >= 20) | z std | denoised RMS 20-40 |")
    print("|---|---|---|---|---|---|---|---|")
    for item in names:
        name, _, label = item.partition("=")
        file, _, key = name.partition(":")  # refs_ridge:ridge_1200 = one entry of a reference file
        path = root / f"{file}.json"
        res = json.loads(path.read_text()) if path.exists() else None
        if res is not None and key:
            res = res.get(key)
        if not res or "score" not in res:
            print(f"| {label or name} | (no result) | | | | | | |")
            continue
        print(row(res, label or name))


if __name__ == "__main__":
    main(sys.argv[1:])
