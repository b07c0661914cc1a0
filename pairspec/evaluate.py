"""`pairspec evaluate`: TSN and baselines on a store split, against survey labels and (optionally) truth.

Writes out_dir/metrics.json, out_dir/report.md and PNG figures (docs/evaluation.md explains them).
Residuals are per visit; the reference of a visit is its star's label (the survey pipeline's, as the
paper compares to them, or the simulation's truth).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from pairspec import metrics as M

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
N_EXAMPLES = 3  # example visits kept for the reconstruction figure


def _load_predictor(checkpoint, device="auto"):
    if hasattr(checkpoint, "predict"):  # an already loaded predictor (tests, notebooks)
        return checkpoint
    from pairspec.inference import LabelPredictor

    return LabelPredictor.from_checkpoint(checkpoint, device=device)


TRUTH_ID = "star_id"


def read_truth(path, star_ids, names) -> tuple[np.ndarray, np.ndarray | None]:
    """True labels (n_star, K) of `star_ids` (the store's star ids) from a truth file: a FITS/ECSV/Parquet
    table with a `star_id` column and one column per label name (lower-case catalogue names), as the
    simulators write it. Also returns its `cluster` column (str) if it has one.

    A truth file that cannot serve is a ValueError naming the file: unreadable, no `star_id`, none of the
    labels, or no star of the store in it. A label the file lacks, or a star it lacks, is NaN (and the
    report says how many stars matched)."""
    from astropy.table import Table

    path = str(path)
    try:
        tab = Table.read(path, hdu=1) if path.lower().endswith((".fits", ".fit", ".fits.gz")) else Table.read(path)
    except FileNotFoundError as err:
        raise ValueError(f"{path}: no such truth file") from err
    except Exception as err:  # astropy's message may go on with its whole table of formats: the first line
        first = (str(err).strip().splitlines() or [""])[0]
        raise ValueError(f"{path}: not a readable truth table ({type(err).__name__}: {first})") from err
    cols = {c.lower(): c for c in tab.colnames}
    if TRUTH_ID not in cols:
        raise ValueError(f"{path}: truth table has no {TRUTH_ID!r} column (columns: {', '.join(tab.colnames[:12])})")
    have = [n for n in names if n in cols]
    if not have:
        raise ValueError(f"{path}: truth table has none of the model's labels {list(names)} "
                         f"(columns: {', '.join(tab.colnames[:12])}); is it the truth of another survey?")
    ids = np.char.strip(np.asarray(tab[cols[TRUTH_ID]]).astype(str))
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        raise ValueError(f"{path}: {dup.size} star id(s) appear more than once in the truth table "
                         f"(e.g. {dup[0]!r}): which row is the truth is ambiguous")
    row = {sid: i for i, sid in enumerate(ids)}
    idx = np.array([row.get(str(s).strip(), -1) for s in star_ids])
    if not (idx >= 0).any():
        raise ValueError(f"{path}: no star of the store is in this truth table (e.g. store star "
                         f"{str(star_ids[0]) if len(star_ids) else '?'!r}, truth star {str(ids[0]) if ids.size else '?'!r})")
    out = np.full((len(star_ids), len(names)), np.nan)
    for k, name in enumerate(names):
        if name in cols:
            try:
                col = np.ma.filled(np.ma.asarray(tab[cols[name]], dtype=np.float64), np.nan)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{path}: truth column {cols[name]!r} is not numeric ({err})") from err
            out[idx >= 0, k] = col[idx[idx >= 0]]
    cluster = None
    if "cluster" in cols:
        col = np.asarray(tab[cols["cluster"]]).astype(str)
        cluster = np.where(idx >= 0, col[np.maximum(idx, 0)], "")
    return out, cluster


def _select_stars(stars: dict, split) -> np.ndarray:
    if split in (None, "all"):
        return np.arange(len(stars["id"]))
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; use one of {list(SPLIT_CODES)} or 'all'")
    return np.flatnonzero(np.asarray(stars["split"]) == SPLIT_CODES[split])


def sample_visits(store, split: str, max_visits: int, seed: int = 0, max_snr: float | None = None) -> np.ndarray:
    """Sorted row indices of a fixed random subset (at most `max_visits`, drawn with `seed`) of the visits
    of the split's stars, those with the survey's S/N below `max_snr` only when it is given (how the
    benchmarks pick their val and test visits)."""
    stars, visits = store.star_table(), store.visit_table()
    in_split = np.zeros(len(stars["id"]), dtype=bool)
    in_split[_select_stars(stars, split)] = True
    keep = in_split[np.asarray(visits["star"])]
    if max_snr is not None:
        keep &= np.asarray(visits["snr"]) < max_snr
    rows = np.flatnonzero(keep)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=min(max_visits, rows.size), replace=False))


def _loo_targets(flux, ivar, star, grid):
    """Continuum-normalised leave-one-out coadds: for each visit, the ivar-weighted mean of the
    star's OTHER visits (ivar 0 where the star has a single visit), as training builds them."""
    from pairspec.pairs import leave_one_out, visit_groups
    from pairspec.preprocess import normalize

    nf, ni, _ = normalize(flux, ivar, grid)
    tf, ti = np.ones(nf.shape), np.zeros(ni.shape)
    for rows in visit_groups(star):
        loo_f, loo_i = leave_one_out(nf[rows], ni[rows])
        tf[rows] = np.where(loo_i > 0, loo_f, 1.0)  # 1 (continuum) where nothing was measured, for plots
        ti[rows] = loo_i
    return tf, ti, nf, ni


def _visit_chunks(stars, star_sel, chunk: int):
    """Visit index arrays grouped by whole stars (all visits of a star in one chunk, for LOO)."""
    first, nvis = np.asarray(stars["first_visit"]), np.asarray(stars["n_visits"])
    rows = []
    for s in star_sel:
        rows.extend(range(int(first[s]), int(first[s] + nvis[s])))
        if len(rows) >= chunk:
            yield np.asarray(rows)
            rows = []
    if rows:
        yield np.asarray(rows)


def _run_methods(store, predictor, others, fitter, star_sel, fit_rows, chunk, batch_size, progress, spectra):
    """Predictions of every method on the split's visits, plus recon chi2 and a few examples; the denoised
    spectra are scored into `spectra` (an evaluate_spectra.SpectrumScores)."""
    stars, visits = store.star_table(), store.visit_table()
    names = list(predictor.schema.names)
    preds = {"tsn": {"labels": [], "sigma": [], "sigma_visit": [], "time": 0.0}}
    # a checkpoint with a refit (pairspec.refit): "tsn" is the mix prediction returns, "tsn_network" the
    # network's own labels beside it
    with_network = bool(getattr(predictor, "has_refit", False) and getattr(predictor, "refit", False))
    if with_network:
        preds["tsn_network"] = {"labels": [], "sigma": [], "sigma_visit": [], "time": 0.0}
    preds.update({n: {"labels": [], "sigma": [], "sigma_visit": [], "time": 0.0} for n in others})
    fit_parts = {"rows": [], "labels": [], "sigma": [], "time": 0.0}
    rows_all, chi2, examples = [], [], []
    chunks = list(_visit_chunks(stars, star_sel, chunk))
    bar = None
    if progress:
        from pairspec.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("evaluate", total=len(chunks))
    for rows in chunks:
        flux, ivar, pixmask = store.visit_spectra(rows, pixmask=fitter is not None)
        t0 = time.perf_counter()
        out = predictor.predict(flux, ivar, batch_size=batch_size, denoise=True,
                                **({"return_refit": True} if with_network else {}))
        preds["tsn"]["time"] += time.perf_counter() - t0
        preds["tsn"]["labels"].append(out["labels"])
        preds["tsn"]["sigma"].append(out["sigma"])
        preds["tsn"]["sigma_visit"].append(out.get("sigma_visit", out["sigma"]))
        if with_network:
            preds["tsn_network"]["labels"].append(out["labels_network"])
            preds["tsn_network"]["sigma"].append(out["sigma_network"])
            preds["tsn_network"]["sigma_visit"].append(out["sigma_visit_network"])
        for name, other in others.items():
            t0 = time.perf_counter()
            o = other.predict(flux, ivar, batch_size=batch_size)
            preds[name]["time"] += time.perf_counter() - t0
            preds[name]["labels"].append(_reorder(o["labels"], other.schema.names, names))
            preds[name]["sigma"].append(_reorder(o["sigma"], other.schema.names, names))
            preds[name]["sigma_visit"].append(_reorder(o.get("sigma_visit", o["sigma"]), other.schema.names, names))
        if "denoised" in out:
            star_rows = np.asarray(visits["star"])[rows]
            tf, ti, nf, ni = _loo_targets(flux, ivar, star_rows, store.grid)
            chi2.append(M.recon_chi2(out["denoised"], tf, ti))
            spectra.add(nf, ni, tf, ti, out["denoised"], star_rows, np.asarray(visits["snr"])[rows])
            for j in np.flatnonzero(ti.sum(1) > 0)[: N_EXAMPLES - len(examples)]:
                examples.append({"visit": flux[j], "visit_ivar": ivar[j], "denoised": out["denoised"][j],
                                 "target": tf[j], "target_ivar": ti[j], "snr": float(visits["snr"][rows[j]])})
        if fitter is not None:
            sel = np.isin(rows, fit_rows)
            if sel.any():
                t0 = time.perf_counter()
                f = fitter.fit(flux[sel], ivar[sel], pixmask=pixmask[sel])  # the survey's bits: a strict fit mask
                fit_parts["time"] += time.perf_counter() - t0
                fit_parts["rows"].append(rows[sel])
                fit_names = list(getattr(fitter, "catalogue_names", fitter.label_names))
                fit_parts["labels"].append(_reorder(f["labels"], fit_names, names))
                fit_parts["sigma"].append(_reorder(f["sigma"], fit_names, names))
        rows_all.append(rows)
        if bar is not None:
            bar.advance(task)
    if bar is not None:
        bar.stop()
    rows_all = np.concatenate(rows_all)
    result = {}
    for name, p in preds.items():
        result[name] = {"labels": np.concatenate(p["labels"]), "sigma": np.concatenate(p["sigma"]),
                        "sigma_visit": np.concatenate(p["sigma_visit"]),
                        "rate": len(rows_all) / max(p["time"], 1e-9)}
    if fitter is not None and fit_parts["rows"]:
        fr = np.concatenate(fit_parts["rows"])
        full = {k: np.full((len(rows_all), len(names)), np.nan) for k in ("labels", "sigma")}
        pos = np.searchsorted(rows_all, fr) if np.all(np.diff(rows_all) > 0) else \
            np.array([np.flatnonzero(rows_all == r)[0] for r in fr])
        for k in full:
            full[k][pos] = np.concatenate(fit_parts[k])
        result["emulator_fit"] = {**full, "rate": len(fr) / max(fit_parts["time"], 1e-9)}
    recon = np.concatenate(chi2) if chi2 else np.array([])
    return rows_all, result, recon, examples


def _reorder(arr, have, want) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    out = np.full((arr.shape[0], len(want)), np.nan)
    for k, n in enumerate(want):
        if n in have:
            out[:, k] = arr[:, list(have).index(n)]
    return out


def _star_mean(values, star, n_star):
    """Per-star median of visit predictions (stars without visits stay NaN)."""
    import warnings

    out = np.full((n_star, values.shape[1]), np.nan)
    with warnings.catch_warnings():  # a label no visit of the star has stays NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        for s in np.unique(star):
            out[s] = np.nanmedian(values[star == s], axis=0)
    return out


def evaluate(checkpoint, store_path, split="test", truth=None, out_dir="report", compare=None,
             emulator_fit=False, max_fit=2000, snr_edges=M.DEFAULT_SNR_EDGES, progress=True,
             batch_size=256, chunk=512, plots=True, device="auto", masses=None) -> dict:
    """Evaluate a TSN checkpoint (and `compare` checkpoints, and optionally the EmulatorFit baseline)
    on the visits of `split` ("train", "val", "test" or "all"). Returns the metrics dict. `device`:
    where the networks run ("auto": CUDA when there is one). `masses`: a table of asteroseismic masses by
    star id; with it, C/N ages of the giants (pairspec.evaluate_cn) go into metrics["cn_ages"]."""
    from pairspec.store import open_store

    if Path(out_dir).exists() and not Path(out_dir).is_dir():  # said now, not after the whole evaluation
        raise ValueError(f"{out_dir}: a file is here; the report is a folder (give another -o)")
    store = open_store(str(store_path)) if isinstance(store_path, (str, Path)) else store_path
    predictor = _load_predictor(checkpoint, device)
    others = {name: _load_predictor(c, device) for name, c in (compare or {}).items()}
    for source, p in [(checkpoint, predictor), *((c, others[n]) for n, c in (compare or {}).items())]:
        if getattr(p, "grid", None) is not None and p.grid != store.grid:
            raise ValueError(f"{source}: the model reads {p.grid.npix}-pixel spectra "
                             f"({getattr(getattr(p, 'schema', None), 'survey', '?')}); "
                             f"{store_path} holds {store.grid.npix}-pixel spectra ({store.survey}) on another grid")
    names = list(predictor.schema.names)
    if masses is not None:
        from pairspec.evaluate_cn import NEEDED

        lacking = [n for n in NEEDED if n not in names]
        if lacking:
            raise ValueError(f"--masses: C/N ages need the labels {', '.join(NEEDED)}; {checkpoint} does not "
                             f"predict {', '.join(lacking)}")
    stars, visits = store.star_table(), store.visit_table()
    star_sel = _select_stars(stars, split)
    if star_sel.size == 0:
        raise ValueError(f"{store_path}: no stars in split {split!r}")
    first, nvis = np.asarray(stars["first_visit"]), np.asarray(stars["n_visits"])
    fitter, fit_rows = None, np.array([], dtype=np.int64)
    if emulator_fit and max_fit > 0:
        from pairspec.surveys import store_visit_fitter

        fitter = store_visit_fitter(store)
        if fitter is None:
            raise ValueError(f"{store_path}: survey {store.survey!r} has no visit-level fit baseline")
        fit_rows = _fit_subset(star_sel, first, nvis, max_fit)
    true_star, cluster, truth_spectra = None, None, None
    if truth is not None:  # read (and refuse) the truth before the long part and before writing anything
        from pairspec.evaluate_spectra import read_truth_spectra

        true_star, cluster = read_truth(truth, stars["id"], names)
        truth_spectra = read_truth_spectra(truth, stars["id"], star_sel, npix=store.grid.npix)
    mass = None
    if masses is not None:  # also read before the long part
        from pairspec.evaluate_cn import read_masses

        mass = read_masses(masses, stars["id"])
    from pairspec.evaluate_spectra import SpectrumScores

    spectra = SpectrumScores(store.grid, truth_spectra)
    rows, methods, recon, examples = _run_methods(store, predictor, others, fitter, star_sel, fit_rows,
                                                  chunk, batch_size, progress, spectra)
    star = np.asarray(visits["star"])[rows]
    snr = np.asarray(visits["snr"])[rows].astype(np.float64)
    survey = _reorder(store.labels(), store.schema.names, names)
    refs = {"survey": survey[star]}
    # the survey's own label errors: z-scores against its labels use sqrt(sigma^2 + label_err^2), as the
    # calibration (pairspec.calibration) takes them out of the predicted sigma
    ref_err = {"survey": np.nan_to_num(_reorder(store.label_err(), store.schema.names, names)[star], nan=0.0)}
    if true_star is not None:
        refs["truth"] = true_star[star]
    if cluster is None:
        cluster = np.array([json.loads(m or "{}").get("cluster", "") for m in stars["meta_json"]]).astype(str)
    fit_errors = _calibrate_fit(methods, refs, ref_err, star, snr, names) if "emulator_fit" in methods else None
    metrics = _metrics(names, predictor.schema.units, methods, refs, star, snr, snr_edges, cluster, survey, recon,
                       store.n_stars, ref_err)
    if fit_errors is not None:
        metrics["emulator_fit_errors"] = fit_errors
    from pairspec.surveys import paper_targets

    metrics["paper_targets_lt60"] = paper_targets(store.survey)  # the survey's published bar, if any
    metrics.update({"split": split, "n_stars": int(star_sel.size), "n_visits": int(rows.size),
                    "store": str(store_path), "checkpoint": str(checkpoint), "spectra": spectra.result(snr_edges)})
    if mass is not None:
        from pairspec.evaluate_cn import cn_age_metrics

        metrics["cn_ages"] = cn_age_metrics(mass, stars["id"], names, methods, survey, star, snr)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(_jsonable(metrics), indent=1, allow_nan=True))
    figures = []
    if plots:
        from pairspec import plots as P

        figures = P.all_figures(out, metrics, methods, refs, snr, star, names, examples, store.grid,
                                spectra_examples=spectra.examples)
    write_report(out / "report.md", metrics, figures)
    return metrics


def _fit_subset(star_sel, first, nvis, max_fit: int) -> np.ndarray:
    """The visits the emulator fit runs on: every visit of stars drawn at random from the split until
    `max_fit` visits (at least one star), so that the fitted visits hold repeat pairs for its calibration."""
    order = np.random.default_rng(0).permutation(star_sel)
    keep = np.cumsum(nvis[order]) <= max_fit
    keep[0] = True
    return np.sort(np.concatenate([np.arange(first[s], first[s] + nvis[s]) for s in order[keep]]))


def _calibrate_fit(methods, refs, ref_err, star, snr, names) -> dict:
    """The emulator fit's errors calibrated the same way as TSN's (pairspec.calibration, against the survey
    labels with their label_err). The fit has no validation predictions, so its stars are split in two and
    each half is calibrated on the other (calibration.cross_calibrate). Replaces methods["emulator_fit"]'s
    sigma and sigma_visit; returns the raw errors' z-scores, which the calibration table no longer shows."""
    from pairspec.calibration import cross_calibrate

    fit = methods["emulator_fit"]
    raw = {}
    for ref_name, ref in refs.items():
        err = ref_err.get(ref_name)
        sig = fit["sigma"] if err is None else np.sqrt(fit["sigma"] ** 2 + err**2)
        raw[ref_name] = {n: M.zscore_stats(fit["labels"][:, k], sig[:, k], ref[:, k]) for k, n in enumerate(names)}
    a, b = M.repeat_pairs(star)
    lab, sig = fit["labels"], fit["sigma"]
    raw["repeat_pairs"] = {n: M.pair_zscore_stats(lab[a, k], sig[a, k], lab[b, k], sig[b, k]) for k, n in enumerate(names)}
    total, visit, cals = cross_calibrate(fit["labels"], fit["sigma"], refs["survey"], snr, star, names,
                                         label_err=ref_err.get("survey"))
    fit["sigma"], fit["sigma_visit"] = total, visit
    return {"calibrated": "two halves of the fitted stars, each calibrated on the other (survey labels)",
            "raw": raw, "scale": [c["scale"] for c in cals], "visit_snr_slope": [c["visit_snr_slope"] for c in cals],
            "star_sigma": [c["star_sigma"] for c in cals]}


def _summary(resid) -> dict:
    (r,) = M._finite(resid)
    return {"n": int(r.size), "sigma": M.robust_sigma(r), "bias": M.bias(r)}


def _metrics(names, units, methods, refs, star, snr, edges, cluster, survey_star, recon, n_star,
             ref_err=None) -> dict:
    """The nested metrics dict (see docs/evaluation.md for its layout)."""
    m = {"labels": names, "units": list(units), "snr_edges": [float(e) for e in edges],
         "snr_bins": M.snr_bin_labels(edges), "paper_targets_lt60": {},
         "scatter": {}, "slope": {}, "slope_snr20": {}, "chemical_plane": {}, "calibration": {}, "clusters": {},
         "timings": {}}
    a, b = M.repeat_pairs(star)
    low = snr < 60
    best = refs.get("truth", refs["survey"])
    m["slope_reference"] = "truth" if "truth" in refs else "survey"
    hi20, lo40 = snr >= 20, snr < 40
    for meth, p in methods.items():
        lab, sig = p["labels"], p["sigma"]
        sig_v = p.get("sigma_visit", sig)  # repeat pairs test the visit part of the error only
        if meth != "tsn_network":  # the same predict call as "tsn": no time of its own
            m["timings"][meth] = {"spectra_per_s": float(p["rate"])}
        m["scatter"][meth], m["slope"][meth], cal = {}, {}, {}
        for ref_name, ref in refs.items():
            m["scatter"][meth][ref_name] = {
                n: {**M.binned_scatter(lab[:, k], ref[:, k], snr, edges),
                    "<60": _summary((lab[:, k] - ref[:, k])[low]), "all": _summary(lab[:, k] - ref[:, k])}
                for k, n in enumerate(names)}
            m["slope"][meth][ref_name] = {n: M.slope(lab[:, k], ref[:, k]) for k, n in enumerate(names)}
            err = (ref_err or {}).get(ref_name)
            sig_ref = sig if err is None else np.sqrt(sig**2 + err**2)
            cal[ref_name] = {n: M.zscore_stats(lab[:, k], sig_ref[:, k], ref[:, k]) for k, n in enumerate(names)}
        # precision bought by shrinking to the mean shows as a slope below 1 (against the truth when there is one)
        m["slope_snr20"][meth] = {n: M.slope(lab[hi20, k], best[hi20, k]) for k, n in enumerate(names)}
        if "truth" in refs and {"fe_h", "mg_fe"} <= set(names):
            i, j = names.index("fe_h"), names.index("mg_fe")
            m["chemical_plane"][meth] = M.chemical_plane(lab[lo40, i], lab[lo40, j], best[lo40, i], best[lo40, j])
        cal["repeat_pairs"] = {n: M.pair_zscore_stats(lab[a, k], sig_v[a, k], lab[b, k], sig_v[b, k])
                               for k, n in enumerate(names)}
        m["calibration"][meth] = cal
        m["clusters"][meth] = _cluster_block(_star_mean(lab, star, n_star), cluster, names)
    if "truth" in refs and {"fe_h", "mg_fe"} <= set(names) and "emulator_fit" in methods:
        # the fit runs on a subset: the plane of every method on the very visits the fit has, so that the
        # separations compare on the same stars (each subset's truth has its own)
        i, j = names.index("fe_h"), names.index("mg_fe")
        on_fit = lo40 & np.isfinite(methods["emulator_fit"]["labels"][:, [i, j]]).all(axis=1)
        m["chemical_plane_fit_visits"] = {
            meth: M.chemical_plane(p["labels"][on_fit, i], p["labels"][on_fit, j], best[on_fit, i], best[on_fit, j])
            for meth, p in methods.items()}
        fit_lab = methods["emulator_fit"]["labels"]
        over_fit = M.separation_ratios(  # each separation over the fit's, with its interval over the stars
            {meth: (p["labels"][on_fit, i], p["labels"][on_fit, j]) for meth, p in methods.items()
             if meth != "emulator_fit"}, fit_lab[on_fit, i], fit_lab[on_fit, j], star[on_fit])
        for meth, r in over_fit.items():
            m["chemical_plane_fit_visits"][meth]["separation_over_fit"] = r
    if "emulator_fit" in methods:
        m["fit_same_visits"] = _fit_same_visits(names, methods, best, star, snr, edges)
        m["fit_same_visits_reference"] = m["slope_reference"]
    for ref_name, ref in refs.items():
        m["clusters"][f"reference:{ref_name}"] = _cluster_block(_star_mean(ref, star, n_star), cluster, names)
    if "truth" in refs:
        m["survey_noise"] = {n: {**M.binned_scatter(refs["survey"][:, k], refs["truth"][:, k], snr, edges),
                                 "<60": _summary((refs["survey"][:, k] - refs["truth"][:, k])[low]),
                                 "all": _summary(refs["survey"][:, k] - refs["truth"][:, k])}
                             for k, n in enumerate(names)}
    m["recon_chi2"] = {"n": int(np.isfinite(recon).sum()),
                       "median": float(np.nanmedian(recon)) if np.isfinite(recon).any() else math.nan,
                       "mean": float(np.nanmean(recon)) if np.isfinite(recon).any() else math.nan}
    return m


def _fit_same_visits(names, methods, ref, star, snr, edges) -> dict:
    """Every method against the emulator fit on the visits the fit has (a subset of the split), per label and
    S/N bin (and < 60): {method: {label: {bin: {n, n_stars, sigma, sigma_fit, ratio, lo, hi}}}}, sigma the
    robust sigma against `ref`, ratio = sigma / sigma_fit with its 16-84 % interval over the stars
    (metrics.sigma_ratio). A method's sigma over the whole split and the fit's over its subset are not
    comparable: each subset has its own stars."""
    fit = methods["emulator_fit"]["labels"]
    bins = list(zip(M.snr_bin_labels(edges), edges[:-1], edges[1:])) + [("<60", 0.0, 60.0)]
    out = {}
    for meth, p in methods.items():
        if meth == "emulator_fit":
            continue
        out[meth] = {}
        for k, n in enumerate(names):
            ra, rb = p["labels"][:, k] - ref[:, k], fit[:, k] - ref[:, k]
            row = {}
            for name, lo, hi in bins:
                sel = (snr >= lo) & (snr < hi) & np.isfinite(ra) & np.isfinite(rb)
                r = M.sigma_ratio(ra[sel], rb[sel], star[sel])
                row[name] = {**r, "sigma": M.robust_sigma(ra[sel]), "sigma_fit": M.robust_sigma(rb[sel])}
            out[meth][n] = row
    return out


def _cluster_block(star_values, cluster, names) -> dict:
    out = {}
    for k, n in enumerate(names):
        d = M.cluster_dispersion(star_values[:, k], cluster)
        out[n] = {"mean_sigma": d["mean_sigma"], "n_clusters": d["n_clusters"]}
    return out


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None  # JSON has no NaN/inf: null = not measurable
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


from pairspec.report import format_table, write_report  # noqa: F401 - the report lives in report.py
