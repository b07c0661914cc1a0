"""Evaluation figures (matplotlib, Agg backend, imported lazily). docs/evaluation.md explains each one."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return str(path)


def sigma_vs_snr(metrics: dict, ref: str, path) -> str:
    """Robust sigma per S/N bin, one panel per label, one line per method (reference `ref`)."""
    plt = _plt()
    names, bins = metrics["labels"], metrics["snr_bins"]
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False)
    x = np.arange(len(bins))
    for ax, name, unit in zip(axes[0], names, metrics["units"]):
        plotted = []
        for meth, per_ref in metrics["scatter"].items():
            if ref in per_ref:
                y = [per_ref[ref][name][b]["sigma"] for b in bins]
                ax.plot(x, np.asarray(y, dtype=float), "o-", label=meth)
                plotted += y
        if "survey_noise" in metrics and ref == "truth":
            y = [metrics["survey_noise"][name][b]["sigma"] for b in bins]
            ax.plot(x, np.asarray(y, dtype=float), "k--", label="survey labels")
            plotted += y
        target = metrics.get("paper_targets_lt60", {}).get(name)
        if target and ref == "survey":
            ax.axhline(target, color="grey", lw=0.8, ls=":", label="paper, S/N<60")
        ax.set_xticks(x, bins)
        ax.set_xlabel("visit S/N")
        ax.set_ylabel(f"sigma {name} [{unit}]")
        values = np.asarray(plotted, dtype=float)
        if (values > 0).any():  # NaN (None) where the reference has no such label, e.g. a truth without it
            ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, f"no {ref} values\nfor {name}", ha="center", va="center", transform=ax.transAxes)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"residual scatter vs {ref}")
    return _save(fig, path)


def pred_vs_ref(pred: np.ndarray, ref: np.ndarray, snr, names, path, title="") -> str:
    """Predicted against reference label per visit, coloured by visit S/N, with the 1:1 line."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.2), squeeze=False)
    for k, (ax, name) in enumerate(zip(axes[0], names)):
        ok = np.isfinite(pred[:, k]) & np.isfinite(ref[:, k])
        sc = ax.scatter(ref[ok, k], pred[ok, k], c=np.asarray(snr)[ok], s=3, cmap="viridis", vmin=0, vmax=100)
        if ok.any():
            lo, hi = np.percentile(ref[ok, k], [0.5, 99.5])
            ax.plot([lo, hi], [lo, hi], "r-", lw=0.8)
        ax.set_xlabel(f"reference {name}")
        ax.set_ylabel(f"predicted {name}")
    fig.colorbar(sc, ax=axes[0, -1], label="visit S/N")
    fig.suptitle(title)
    return _save(fig, path)


def kiel(panels: dict, names, path) -> str:
    """Teff vs log g coloured by [Fe/H], one panel per {title: labels (N, K)}."""
    plt = _plt()
    it, ig, im = names.index("teff"), names.index("logg"), names.index("fe_h")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.6), squeeze=False)
    for ax, (title, lab) in zip(axes[0], panels.items()):
        sc = ax.scatter(lab[:, it], lab[:, ig], c=lab[:, im], s=3, cmap="plasma", vmin=-1.0, vmax=0.4)
        ax.invert_xaxis()
        ax.invert_yaxis()
        ax.set_xlabel("Teff [K]")
        ax.set_ylabel("log g")
        ax.set_title(title, fontsize=9)
    fig.colorbar(sc, ax=axes[0, -1], label="[Fe/H]")
    return _save(fig, path)


def mgfe_feh(panels: dict, names, path) -> str:
    """[Mg/Fe] vs [Fe/H] (the thin/thick disc sequences), one panel per {title: labels}."""
    plt = _plt()
    im, ia = names.index("fe_h"), names.index("mg_fe")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.2), squeeze=False, sharey=True)
    for ax, (title, lab) in zip(axes[0], panels.items()):
        ax.scatter(lab[:, im], lab[:, ia], s=2, alpha=0.6)
        ax.set_xlabel("[Fe/H]")
        ax.set_title(title, fontsize=9)
    axes[0, 0].set_ylabel("[Mg/Fe]")
    return _save(fig, path)


def examples(examples: list, grid, path) -> str:
    """Example visits: continuum-normalised input, denoised output, LOO high-S/N target, residuals."""
    from pairspec.preprocess import normalize

    plt = _plt()
    wavelength = grid.wavelength()
    fig, axes = plt.subplots(2 * len(examples), 1, figsize=(10, 2.6 * len(examples)), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1] * len(examples)})
    for i, ex in enumerate(examples):
        ax, rax = axes[2 * i, 0], axes[2 * i + 1, 0]
        win = _line_window(ex["target"], ex["target_ivar"] > 0, wavelength)
        vis, vivar, _ = normalize(ex["visit"][None], ex["visit_ivar"][None], grid)
        good = win & (vivar[0] > 0)
        ax.plot(wavelength[good], vis[0][good], color="0.6", lw=0.7, label=f"visit (S/N {ex['snr']:.0f})")
        ok = win & (ex["target_ivar"] > 0)
        # pixels without data are fill values (1.0 after normalisation): break the lines there, not draw them
        ax.plot(wavelength[win], np.where(ok, ex["target"], np.nan)[win], "k-", lw=0.8, label="LOO coadd")
        ax.plot(wavelength[win], np.where(ok | good, ex["denoised"], np.nan)[win], "r-", lw=0.8, label="denoised")
        rax.plot(wavelength[ok], (ex["denoised"] - ex["target"])[ok], "r-", lw=0.6)
        rax.axhline(0, color="k", lw=0.5)
        rax.set_ylabel("resid")
        ax.legend(fontsize=7, ncol=3)
    axes[-1, 0].set_xlabel("wavelength [A, vacuum]")
    return _save(fig, path)


def _line_window(spectrum, good, wavelength, half: int = 150) -> np.ndarray:
    """Bool mask of +-`half` pixels around the deepest good pixel of a spectrum (its strongest line)."""
    depth = np.where(good & np.isfinite(spectrum), spectrum, np.inf)
    c = int(np.argmin(depth)) if np.isfinite(depth).any() else len(spectrum) // 2
    win = np.zeros(len(spectrum), dtype=bool)
    win[max(c - half, 0):c + half] = True
    return win & np.isfinite(wavelength)


def denoised_examples(examples_by_bin: dict, grid, path, half: int = 60) -> str:
    """A few visits per S/N bin around their star's strongest line: the input visit, the denoised visit, the
    leave-one-out coadd of the other visits and the noiseless truth (evaluate_spectra keeps them)."""
    plt = _plt()
    bins = [b for b in examples_by_bin if examples_by_bin[b]]
    ncol = max(len(v) for v in examples_by_bin.values())
    fig, axes = plt.subplots(len(bins), ncol, figsize=(5 * ncol, 2.4 * len(bins)), squeeze=False)
    wavelength = grid.wavelength()
    for r, name in enumerate(bins):
        for c, ex in enumerate(examples_by_bin[name]):
            ax = axes[r, c]
            w = wavelength[ex["pixels"]]
            k = int(np.nanargmin(ex["truth"]))
            sl = slice(max(k - half, 0), k + half)
            ax.plot(w[sl], ex["input"][sl], color="0.65", lw=0.7, label=f"visit S/N {ex['snr']:.0f}")
            ax.plot(w[sl], ex["loo"][sl], color="tab:blue", lw=0.8, label="leave-one-out coadd")
            ax.plot(w[sl], ex["denoised"][sl], color="tab:red", lw=0.9, label="denoised")
            ax.plot(w[sl], ex["truth"][sl], "k--", lw=0.8, label="truth")
            ax.set_title(f"S/N bin {name}", fontsize=8)
            if r == 0 and c == 0:
                ax.legend(fontsize=6, ncol=2)
        for c in range(len(examples_by_bin[name]), ncol):
            axes[r, c].axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("wavelength [A]")
    return _save(fig, path)


def zscores(z: dict, path) -> str:
    """Histograms of z-scores with the unit Gaussian over them, one panel per {title: z}."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(z), figsize=(3.2 * len(z), 3.0), squeeze=False)
    grid = np.linspace(-5, 5, 200)
    for ax, (title, values) in zip(axes[0], z.items()):
        v = np.asarray(values)[np.isfinite(values)]
        ax.hist(np.clip(v, -5, 5), bins=40, range=(-5, 5), density=True, alpha=0.6)
        ax.plot(grid, np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi), "k-", lw=0.8)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("z")
    return _save(fig, path)


def all_figures(out_dir, metrics, methods, refs, snr, star, names, examples_list, grid,
                spectra_examples=None) -> list[str]:
    """Every evaluation figure into out_dir; returns the file paths."""
    from pairspec import metrics as M

    out = Path(out_dir)
    paths = [sigma_vs_snr(metrics, r, out / f"sigma_vs_snr_{r}.png") for r in refs]
    best_ref = "truth" if "truth" in refs else "survey"
    tsn = methods["tsn"]
    paths.append(pred_vs_ref(tsn["labels"], refs[best_ref], snr, names, out / "tsn_vs_reference.png",
                             f"TSN vs {best_ref}"))
    low = np.asarray(snr) < 40
    if {"teff", "logg", "fe_h"} <= set(names):
        paths.append(kiel({f"{best_ref} labels": refs[best_ref][low], "TSN, visits S/N<40": tsn["labels"][low],
                           **({"emulator fit, S/N<40": methods["emulator_fit"]["labels"][low]}
                              if "emulator_fit" in methods else {})}, names, out / "kiel.png"))
    if {"fe_h", "mg_fe"} <= set(names):
        paths.append(mgfe_feh({f"{best_ref} labels": refs[best_ref][low], "TSN, visits S/N<40": tsn["labels"][low]},
                              names, out / "mgfe_feh.png"))
    if spectra_examples:
        paths.append(denoised_examples(spectra_examples, grid, out / "denoised.png"))
    if examples_list:
        paths.append(examples(examples_list, grid, out / "examples.png"))
    z = {}
    for k, n in enumerate(names):
        z[f"{n} vs {best_ref}"] = (tsn["labels"][:, k] - refs[best_ref][:, k]) / tsn["sigma"][:, k]
    a, b = M.repeat_pairs(star)
    if a.size:
        k = 0
        z[f"{names[k]} repeat pairs"] = M.pair_zscores(tsn["labels"][a, k], tsn["sigma"][a, k],
                                                       tsn["labels"][b, k], tsn["sigma"][b, k])
    paths.append(zscores(z, out / "zscores.png"))
    return paths
