"""The plain-text table and the markdown report of `pairspec evaluate` (the metrics dict of evaluate.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _fmt(v, unit) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    return f"{v:.0f}" if unit == "K" else f"{v:.3f}"


def _fmt_bias(v, unit) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    return f"{v:+.0f}" if unit == "K" else f"{v:+.3f}"


def _table_rows(metrics) -> tuple[list[str], list[tuple[str, list[list[str]]]]]:
    """Header and, per label, rows (S/N bin, sigma of each method vs each reference, survey noise)."""
    sc = metrics["scatter"]
    refs = list(next(iter(sc.values())))
    cols = [("tsn", r) for r in refs] + [(m, refs[-1]) for m in sc if m != "tsn"]
    header = ["S/N"] + [f"{m} vs {r}" for m, r in cols]
    has_noise = "survey_noise" in metrics
    if has_noise:
        header.append("survey vs truth")
    out = []
    for name, unit in zip(metrics["labels"], metrics["units"]):
        rows = []
        for b in metrics["snr_bins"] + ["<60", "all"]:
            row = [b]
            for m, r in cols:
                cell = sc[m][r][name].get(b, {})
                # the bias beside the spread: a model that predicts one value everywhere has a small sigma
                row.append(f"{_fmt(cell.get('sigma'), unit)} {_fmt_bias(cell.get('bias'), unit)} ({cell.get('n', 0)})")
            if has_noise:
                row.append(_fmt(metrics["survey_noise"][name].get(b, {}).get("sigma"), unit))
            rows.append(row)
        out.append((f"{name} [{unit}]", rows))
    return header, out


def format_table(metrics) -> str:
    """Plain-text table: robust sigma, bias (signed) and n per label and S/N bin, every method side by side."""
    header, blocks = _table_rows(metrics)
    widths = [max(len(h), 12) for h in header]
    for _, rows in blocks:
        for row in rows:
            widths = [max(w, len(c)) for w, c in zip(widths, row)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))
    parts = ["robust sigma, bias (prediction - reference) and (number of visits) per S/N bin", ""]
    for title, rows in blocks:
        parts += [title, line(header)] + [line(r) for r in rows] + [""]
    return "\n".join(parts)


def _ratio_cell(r) -> str:
    """"ratio [lo-hi]" of a metrics ratio dict (sigma_ratio, separation_ratio); "-" where there is none."""
    if not r:
        return "-"
    return f"{_fmt(r.get('ratio'), '')} [{_fmt(r.get('lo'), '')}-{_fmt(r.get('hi'), '')}]"


def _md_table(header, rows) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def _spectra_section(sp: dict) -> list[str]:
    """Report lines for the denoised spectra (evaluate_spectra): median RMS and line-depth error per bin."""
    if not sp.get("n"):
        return []
    bins = list(sp["rms"]["input"])
    against = "the noiseless truth" if sp["against"] == "truth" else "the leave-one-out coadd (its noise removed)"
    rows = [[f"RMS {m}"] + [_fmt(sp["rms"][m][b]["median"], "") for b in bins] for m in ("input", "denoised", "loo")]
    rows.append(["denoised / input"] + [_fmt(sp["denoised_over_input"][b]["median"], "") for b in bins])
    rows.append(["denoised / LOO coadd"] + [_fmt(sp["denoised_over_loo"][b]["median"], "") for b in bins])
    if sp["against"] == "truth":
        rows += [[f"depth error {m}"] + [_fmt(sp["depth"][m][b]["median"], "") for b in bins]
                 for m in ("input", "denoised", "loo")]
    rows.append(["visits"] + [str(sp["rms"]["input"][b]["n"]) for b in bins])
    return ["## Denoised spectra", "", f"Per visit-S/N bin, medians over visits, against {against}; depth error = "
            "mean fractional error of the 10 deepest lines' depth (negative: too shallow). See docs/evaluation.md.",
            "", _md_table(["quantity"] + bins, rows), ""]


def _fit_same_visits_section(metrics) -> list[str]:
    """Report lines: every method's sigma over the emulator fit's, on the visits the fit ran on."""
    same = metrics.get("fit_same_visits")
    if not same:
        return []
    ref = metrics.get("fit_same_visits_reference", "truth")
    first = next(iter(next(iter(same.values())).values()))
    bins = list(first)
    rows = []
    for meth, per in same.items():
        for n, row in per.items():
            unit = "K" if n == "teff" else ""
            rows.append([meth, n] + [f"{_fmt(c['sigma'], unit)} / {_fmt(c['sigma_fit'], unit)} = {_ratio_cell(c)}"
                                     for c in row.values()])
    counts = ", ".join(f"{b}: {c['n']} ({c['n_stars']} stars)" for b, c in first.items())
    return ["## Against the emulator fit, on the fit's own visits", "",
            (f"Robust sigma against {ref} of each method / of the emulator fit, on the same visits, and the ratio with "
             f"its 16-84 % interval from resampling the stars. Visits: {counts}."), "",
            _md_table(["method", "label"] + bins, rows), ""]


def write_report(path, metrics, figures=()) -> None:
    """Markdown report: scatter tables, paper targets, calibration, slopes, clusters, timings, figures."""
    header, blocks = _table_rows(metrics)
    L = [f"# pairspec evaluation ({metrics.get('split')} split)", "",
         f"{metrics.get('n_stars')} stars, {metrics.get('n_visits')} visits. Robust sigma (1.4826 MAD) of "
         "visit label minus reference; n in brackets. See docs/evaluation.md.", ""]
    targets = metrics.get("paper_targets_lt60") or {}
    ref = "survey"
    rows = [[n, f"{v:g}", _fmt(metrics["scatter"]["tsn"][ref][n]["<60"]["sigma"], "K" if n == "teff" else "")]
            for n, v in targets.items() if n in metrics["labels"]]
    L += ["## Paper targets (S/N < 60, TSN vs survey labels)", ""]
    L += [_md_table(["label", "paper", "this run"], rows) if rows else
          "The survey's adapter publishes no visit-level targets for these labels.", ""]
    for title, rows in blocks:
        L += [f"## {title}", "", _md_table(header, rows), ""]
    L += _fit_same_visits_section(metrics)
    L += ["## Calibration (z = residual / predicted sigma; ideal std 1, cov68 0.683, cov95 0.95)", ""]
    cal_rows = []
    for meth, cal in metrics["calibration"].items():
        for ref_name, per in cal.items():
            for n, s in per.items():
                cal_rows.append([meth, ref_name, n, _fmt(s["z_std"], ""), _fmt(s["z_std_robust"], ""),
                                 _fmt(s["cov68"], ""), _fmt(s["cov95"], ""), str(s["n"])])
    for ref_name, per in metrics.get("emulator_fit_errors", {}).get("raw", {}).items():
        for n, s in per.items():  # the fit's own errors, before the calibration above
            cal_rows.append(["emulator_fit (raw errors)", ref_name, n, _fmt(s["z_std"], ""),
                             _fmt(s["z_std_robust"], ""), _fmt(s["cov68"], ""), _fmt(s["cov95"], ""), str(s["n"])])
    L += [_md_table(["method", "against", "label", "z std", "z std robust", "cov68", "cov95", "n"], cal_rows), ""]
    L += ["## Slope of prediction vs reference (1 = no shrinkage to the mean)", ""]
    L += [_md_table(["method", "against"] + metrics["labels"],
                    [[m, r] + [_fmt(v, "") for v in per.values()]
                     for m, d in metrics["slope"].items() for r, per in d.items()]), ""]
    if metrics.get("slope_snr20"):
        L += [f"Slope at visit S/N >= 20 against {metrics.get('slope_reference', 'survey')}:", "",
              _md_table(["method"] + metrics["labels"], [[m] + [_fmt(v, "") for v in per.values()]
                                                         for m, per in metrics["slope_snr20"].items()]), ""]
    if metrics.get("chemical_plane"):
        L += ["## [Mg/Fe]-[Fe/H] plane (visits S/N < 40, against truth)", "",
              "Spread of [Mg/Fe] at fixed [Fe/H] per [Fe/H] bin, the two disc sequences' separation (two-Gaussian "
              "fit of [Mg/Fe] minus its mean trend, -0.7 < [Fe/H] < -0.1; truth in brackets) and the slope of the "
              "detrended [Mg/Fe] against the truth's (1 = measured, 0 = only the mean trend).", ""]
        cp = metrics["chemical_plane"]
        edges = next(iter(cp.values()))["bins"]
        head = ["method"] + [f"{a:g}..{b:g}" for a, b in zip(edges[:-1], edges[1:])] + ["separation", "detrended slope"]
        rows = []
        for m, c in cp.items():
            rows.append([m] + [f"{_fmt(v, '')} ({_fmt(t, '')})" for v, t in zip(c["spread"], c["spread_truth"])]
                        + [f"{_fmt(c['separation'], '')} ({_fmt(c['separation_truth'], '')})",
                           _fmt(c["detrended_slope"], "")])
        L += [_md_table(head, rows), ""]
        on_fit = metrics.get("chemical_plane_fit_visits")
        if on_fit:
            n = next(iter(on_fit.values()))["n"]
            L += [f"The same on the {n} visits the emulator fit ran on (S/N < 40), for every method, with its "
                  "separation over the fit's (16-84 % interval from resampling the stars):", "",
                  _md_table(["method", "separation (truth)", "over the fit's", "detrended slope"],
                            [[m, f"{_fmt(c['separation'], '')} ({_fmt(c['separation_truth'], '')})",
                              _ratio_cell(c.get("separation_over_fit")), _fmt(c["detrended_slope"], "")]
                             for m, c in on_fit.items()]), ""]
    if metrics.get("cn_ages"):
        cn = metrics["cn_ages"]
        L += ["## C/N ages of giants (against the ages of the seismic masses)", "",
              f"Mass([C/N], [Fe/H]) calibrated on {cn['n_calibration']} giants with the survey labels, scored on "
              f"{cn['n_test']} others: robust scatter in Gyr (survey labels: {_fmt(cn['survey'], '')}).", "",
              _md_table(["method", "per star", "single visits S/N < 60"],
                        [[m, _fmt(v["star"], ""), _fmt(v["visit_lt60"], "")] for m, v in cn.items()
                         if isinstance(v, dict)]), ""]
    L += ["## Mean intra-cluster dispersion (stars, clusters with >= 3 members)", ""]
    L += [_md_table(["source"] + metrics["labels"],
                    [[src] + [f"{_fmt(c['mean_sigma'], '')} ({c['n_clusters']})" for c in per.values()]
                     for src, per in metrics["clusters"].items()]), ""]
    rc = metrics["recon_chi2"]
    L += ["## Reconstruction", "", f"chi^2 per pixel of the denoised visit against the leave-one-out coadd: "
          f"median {_fmt(rc['median'], '')}, mean {_fmt(rc['mean'], '')} over {rc['n']} visits.", ""]
    L += _spectra_section(metrics.get("spectra") or {})
    L += ["## Speed (spectra/s, this machine)", "",
          _md_table(["method", "spectra/s"], [[m, f"{t['spectra_per_s']:.1f}"] for m, t in metrics["timings"].items()]), ""]
    if figures:
        L += ["## Figures", ""] + [f"![{Path(f).stem}]({Path(f).name})" for f in figures] + [""]
    Path(path).write_text("\n".join(L))
