"""`pairspec info`: a summary of a pair store or a checkpoint, as a dict plus readable text."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SPLIT_NAMES = {0: "train", 1: "val", 2: "test"}


def describe(path: str) -> dict:
    """Summarise a store (directory / URL) or a checkpoint (.pt file)."""
    if str(path).endswith(".pt"):
        return describe_checkpoint(path)
    from pairspec.store.spectra import describe_spectra, open_spectra

    spectra = open_spectra(str(path))  # the denoised spectra of `pairspec predict --denoised`
    if spectra is not None:
        return describe_spectra(str(path), spectra)
    return describe_store(path)


def describe_store(path: str) -> dict:
    from pairspec.store import open_store

    store = open_store(path, check=False)  # an inconsistent store is described, its problems listed
    problems = store.validate()
    unreadable = [p for p in problems if ("committed" in p and "interrupted" not in p and "rows" in p)
                  or "is missing" in p or "row shape" in p or "dtype" in p]
    if unreadable:
        # the committed rows cannot be read as tables: say what is wrong and stop there
        lines = [f"pair store {path}", f"  survey {store.survey} {store.release}: {store.n_stars} stars, "
                 f"{store.n_visits} visits committed", "  PROBLEMS:\n    " + "\n    ".join(problems)]
        return {"kind": "pair store", "path": str(path), "survey": store.survey, "release": store.release,
                "n_stars": store.n_stars, "n_visits": store.n_visits, "problems": problems, "text": "\n".join(lines)}
    stars = store.star_table()
    labels = store.labels()
    splits = {SPLIT_NAMES[int(k)]: int((stars["split"] == k).sum()) for k in SPLIT_NAMES}
    coverage = {
        name: float(np.isfinite(labels[:, i]).mean()) if len(labels) else 0.0
        for i, name in enumerate(store.schema.names)
    }
    visits = store.visit_table()
    snr = np.asarray(visits["snr"], dtype=float)
    has_snr = bool(np.isfinite(snr).any())
    summary = {
        "kind": "pair store",
        "path": str(path),
        "survey": store.survey,
        "release": store.release,
        "n_stars": store.n_stars,
        "n_visits": store.n_visits,
        "n_sources": len(store.sources),
        "splits": splits,
        "labels": store.schema.names,
        "label_coverage": coverage,
        "visit_snr_median": float(np.nanmedian(snr)) if has_snr else None,
        "visit_frac_snr_below_60": float(np.mean(snr[np.isfinite(snr)] < 60)) if has_snr else None,
        "grid": store.grid.to_dict(),
        "provenance": dict(getattr(store, "provenance", {}) or {}),
        "problems": problems,
    }
    prov = summary["provenance"]
    options = prov.get("adapter_options") or {}
    lines = [
        f"pair store {path}",
        f"  survey {store.survey} {store.release}: {store.n_stars} stars, {store.n_visits} visits "
        f"from {len(store.sources)} sources",
        "  splits: " + ", ".join(f"{k} {v}" for k, v in splits.items()),
        _coverage_line(coverage),
        (f"  visit S/N: median {summary['visit_snr_median']:.1f}, {summary['visit_frac_snr_below_60']:.0%} below 60"
         if has_snr else "  visit S/N: no visits"),
        f"  grid: {store.grid.describe()}",
        f"  provenance: {prov.get('source', 'not recorded')}; adapter "
        + (prov.get("adapter", "?").rsplit(".", 1)[-1]) + " with "
        + (", ".join(f"{k}={v!r}" for k, v in sorted(options.items())) if options else "its default options"),
        "  valid: yes" if not problems else "  PROBLEMS:\n    " + "\n    ".join(problems),
    ]
    summary["text"] = "\n".join(lines)
    return summary


def describe_checkpoint(path: str) -> dict:
    from pairspec.checkpoint import read_meta

    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    meta = read_meta(path)
    schema = meta.get("schema", {})
    names = [lab["name"] for lab in schema.get("labels", [])]
    cal = meta.get("calibration", {})
    summary = {
        "kind": "checkpoint",
        "path": str(path),
        "preset": meta.get("preset"),
        "labels": names,
        "epoch": meta.get("epoch"),
        "step": meta.get("step"),
        "calibration": cal,
        "pairspec_version": meta.get("pairspec_version"),
        "n_parameters": meta.get("n_parameters"),
        "refit": bool((meta.get("refit") or {}).get("weight_of_network")),
        "denoised": _denoised_source(meta),
    }
    lines = [
        f"checkpoint {path}",
        f"  model {summary['preset']} ({summary['n_parameters']} parameters), epoch {summary['epoch']}, "
        f"step {summary['step']}",
        f"  labels: {', '.join(names)}",
        f"  calibration: {cal}",
        f"  labels returned: {'the mix of the network and its refit (pairspec.refit)' if summary['refit'] else 'the network'}",
        f"  denoised spectrum: {summary['denoised']}",
        f"  written by pairspec {summary['pairspec_version']}",
    ]
    summary["text"] = "\n".join(lines)
    return summary


def _denoised_source(meta: dict) -> str:
    """What makes the checkpoint's denoised spectrum (pairspec predict --denoised), in words."""
    kwargs = meta.get("model_kwargs") or {}
    if kwargs.get("product_decoder"):
        info = meta.get("product_decoder") or {}
        return (f"a product decoder learned from the network's own star labels ({info.get('epochs')} epochs, "
                f"{info.get('n_stars')} stars)")
    if kwargs.get("label_decoder"):
        return "the label decoder (learned from the survey's labels)"
    return "the token reconstruction"


def _coverage_line(coverage: dict) -> str:
    """The labels with values and their fraction present; the schema's labels no star has are named once
    at the end (a store of a survey that measures few of them: a simulation, or a label catalogue
    with some columns)."""
    present = {k: v for k, v in coverage.items() if v > 0}
    line = "  labels (fraction present): " + (", ".join(f"{k} {v:.0%}" for k, v in present.items()) or "none")
    empty = [k for k, v in coverage.items() if not v > 0]
    if empty:
        line += f"; no star has {', '.join(empty)}" if len(empty) <= 3 else (
            f"; {len(empty)} labels of the schema no star has ({', '.join(empty[:2])} ... {empty[-1]})")
    return line

