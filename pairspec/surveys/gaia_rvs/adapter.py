"""Gaia RVS adapter: DR3 mean spectra (datalink FITS / VOTable / ECSV / CSV, RAW or INDIVIDUAL, and the
bulk RvsMeanSpectrum_*.csv.gz files) -> StarRecords; DR4 epoch spectra through the same path (unverified).

`pairspec ingest gaia_rvs SRC STORE`: SRC is a folder (searched recursively) or one file. Spectrum files are
those whose name contains "rvs" (RVS-Gaia DR3 <id>.fits, RVS_RAW.xml, RvsMeanSpectrum_*.csv.gz ...);
AstrophysicalParameters_* files in SRC give GSP-Spec labels unless `labels_from` names a catalogue, and
GaiaSource_* files (or `gaia_source=`) give rvs_spec_sig_to_noise, radial_velocity, rv_nb_transits.
One unit per source_id: the first file (by path) that has its mean spectrum; later copies are skipped as
duplicates. DR3 visits are synthetic degraded copies of the mean (twins.py says what that does and does
not test); a source with epoch spectra gets them as its visits instead. The package README has the rest.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from pairspec.surveys.base import (
    AdapterError,
    Discovery,
    Skip,
    StarRecord,
    WorkUnit,
    recompute_snr,
)
from pairspec.surveys.gaia_rvs import products
from pairspec.surveys.gaia_rvs.bulk import as_int
from pairspec.surveys.gaia_rvs.labels import read_label_table, read_source_table
from pairspec.surveys.gaia_rvs.layout import (
    GAIA_RVS_GRID,
    GAIA_RVS_NATIVE_GRID,
    GAIA_RVS_SCHEMA,
    NPIX,
    STAR_EPOCH_VISITS,
    STAR_FLAG_BITS,
    STAR_LABELS_TRANSFERRED,
    STAR_NO_LABEL_ROW,
    STAR_SNR_RECOMPUTED,
    STAR_SYNTHETIC_TWINS,
    STEP_NM,
    wavelength_nm,
)
from pairspec.surveys.gaia_rvs.twins import (
    GAIA_TIME_TO_MJD,
    clean,
    max_transits,
    resample,
    synthetic_pixmask,
    synthetic_visits,
    to_rest_frame,
)

GRIDS = ("log", "native")

_CATALOGUE_PREFIXES = ("astrophysicalparameters", "gaiasource", "gaia_source", "allstar", "truth")
_RV_KEYS = ("radial_velocity", "rv", "rv_epoch", "radial_velocity_epoch")


def _is_product(name: str) -> bool:
    low = name.lower()
    return products.product_kind(low) is not None and "rvs" in low and not low.startswith(_CATALOGUE_PREFIXES)


def _walk(root: Path) -> list[Path]:
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith(".") and not x.endswith(".zarr"))
        out.extend(Path(d) / f for f in sorted(files) if not f.startswith("."))
    return out


def _paths(value) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def _float(value) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return math.nan
    return f


class GaiaRvsAdapter:
    """SurveyAdapter for Gaia RVS spectra (README.md beside this file lists every option).

    labels: subset of the schema (teff, logg, fe_h, alpha_fe); labels_from: a catalogue (or list) keyed by
    Gaia source id that replaces the AstrophysicalParameters files (e.g. APOGEE DR17 allStar, label
    transfer); label_columns: {label: column} overrides; gaia_source: gaia_source-like table(s);
    twins: synthetic copies per star (0: the mean itself is the one visit, for labelling the published
    spectra with `pairspec predict STORE`); min_gain: each copy has <= 1/min_gain of the mean's S/N;
    twin_seed: seed mixed with the source id; correlated_noise: smooth the added noise over the ~2.5
    bins of a native pixel; edge_nm / trim_edges: width of the PIX_EDGE bands, and whether they are bad;
    require_labels: skip sources with any label missing; release: the store's release name;
    grid: "log" (default: resampled onto the log-linear GAIA_RVS_GRID) or "native" (the published linear
    grid, not resampled; see layout.py for what that still needs from pairspec.grid).
    """

    name = "gaia_rvs"
    location_options = ("labels_from", "gaia_source")  # where inputs are: may differ between ingests
    star_flag_bits = STAR_FLAG_BITS  # SYNTHETIC_TWINS: the visits are degraded copies of the mean

    def __init__(self, labels=None, labels_from=None, label_columns=None, gaia_source=None, twins: int = 4,
                 min_gain: float = 3.0, twin_seed: int = 0, correlated_noise: bool = True, edge_nm: float = 0.5,
                 trim_edges: bool = False, require_labels: bool = False, release: str = "dr3", grid: str = "log"):
        if int(twins) < 0:
            raise ValueError(f"twins={twins}: the number of synthetic visits per star cannot be negative")
        if not float(min_gain) >= 1.0:
            raise ValueError(f"min_gain={min_gain}: must be >= 1 (a copy cannot be less noisy than the mean)")
        if not 0.0 <= float(edge_nm) < 12.0:
            raise ValueError(f"edge_nm={edge_nm}: must be in [0, 12) nm")
        if label_columns is not None and not isinstance(label_columns, dict):
            raise ValueError(f"label_columns must be a mapping label -> column, got {label_columns!r}")
        self.schema = GAIA_RVS_SCHEMA.subset(list(labels)) if labels else GAIA_RVS_SCHEMA
        if grid not in GRIDS:
            raise ValueError(f"grid={grid!r}; choose one of {GRIDS}")
        self.grid = GAIA_RVS_NATIVE_GRID if grid == "native" else GAIA_RVS_GRID
        self._grid_nm = self.grid.wavelength() / 10.0
        self.release = str(release)
        self.labels_from, self.gaia_source = _paths(labels_from), _paths(gaia_source)
        self.label_columns = dict(label_columns or {})
        self.twins, self.min_gain, self.twin_seed = int(twins), float(min_gain), int(twin_seed)
        self.correlated_noise, self.trim_edges = bool(correlated_noise), bool(trim_edges)
        self.edge_px = round(float(edge_nm) / STEP_NM)
        self.require_labels = bool(require_labels)

    # ---- discovery -------------------------------------------------------------------------
    def discover(self, source) -> Discovery:
        root = Path(str(source))
        if root.is_file():
            base, files, spectra = root.parent, [root], [root]
        elif root.is_dir():
            base, files = root, _walk(root)
            spectra = [p for p in files if _is_product(p.name)]
        else:
            raise AdapterError(str(root), "no such directory or file")
        if not spectra:
            raise AdapterError(str(root), "no Gaia RVS spectrum files here (names containing 'rvs' ending in "
                                          ".csv[.gz], .ecsv[.gz], .fits[.gz], .xml or .vot)")
        skipped: list[Skip] = []
        means: dict[int, list] = {}
        epochs: dict[int, list] = {}
        for path in spectra:
            rel = os.path.relpath(path, base).replace(os.sep, "/")
            try:
                entries, problems = products.scan(str(path))
            except AdapterError as err:
                skipped.append(Skip(err.path, err.problem))
                continue
            for where, why in problems:
                skipped.append(Skip(str(path), why if where == "file" or why.startswith(("row", "hdu", "table"))
                                    else f"{where}: {why}"))
            for e in entries:
                target = epochs if e.epoch else means
                target.setdefault(e.source_id, []).append((f"{rel}#{e.locator}", str(path), e))
        tables = self._label_tables(files)
        gaia = read_source_table(self.gaia_source or [str(p) for p in files if p.name.lower().startswith(("gaiasource", "gaia_source"))])
        units = []
        for sid in sorted(set(means) | set(epochs)):
            mean = sorted(means.get(sid, []))
            for uid, path, _ in mean[1:]:
                skipped.append(Skip(path, f"duplicate: source_id {sid} again ({uid}); kept {mean[0][0]}", str(sid)))
            eps, seen = [], set()
            for uid, path, e in sorted(epochs.get(sid, []), key=lambda x: (x[2].time, x[0])):
                if round(e.time, 6) in seen:
                    skipped.append(Skip(path, f"duplicate: epoch at {e.time} of source_id {sid} again ({uid})", str(sid)))
                    continue
                seen.add(round(e.time, 6))
                eps.append([path, e.locator])
            if mean:
                uid, path, entry = mean[0]
                locator = entry.locator
            else:
                uid, path, locator = f"{epochs[sid][0][0].split('#')[0]}#source_id={sid}", eps[0][0], ""
            row = {"source_id": sid, "locator": locator, "epochs": eps, "gaia": gaia.get(sid, {})}
            if not eps and self.twins > 0:
                problem = self._twin_problem(entry.n_transits, row["gaia"])
                if problem:
                    skipped.append(Skip(path, f"{entry.locator} (source_id {sid}): no synthetic twin: {problem}", str(sid)))
                    continue
            row.update(self._label_row(tables, sid))
            if self.require_labels and (row["labels"] is None or any(math.isnan(v) for v in row["labels"])):
                skipped.append(Skip(path, "missing labels: " + ("no row in the labels table" if row["labels"] is None
                                    else ", ".join(n for n, v in zip(self.schema.names, row["labels"]) if math.isnan(v))), str(sid)))
                continue
            units.append(WorkUnit(uid, path, str(sid), row))
        products.drop_caches()  # discovery read every file; the readers re-open what they need
        return Discovery(units=sorted(units, key=lambda u: u.unit_id), skipped=skipped)

    def _twin_problem(self, n_transits, gaia: dict) -> str | None:
        """Why a mean spectrum with `n_transits` combined transits gives no synthetic twin (None if it does)."""
        n = n_transits if n_transits is not None else as_int(_float(gaia.get("rv_nb_transits")))
        if n is None:
            return "combined_transits is unknown (give gaia_source= a table with rv_nb_transits)"
        if max_transits(n, self.min_gain) < 1:
            return (f"combined_transits={n}: a 1-transit copy keeps 1/{math.sqrt(max(n, 1)):.2f} of the mean's S/N, "
                    f"not the 1/{self.min_gain:g} that min_gain asks")
        return None

    def _label_tables(self, files) -> list:
        paths = self.labels_from or [str(p) for p in files if p.name.lower().startswith("astrophysicalparameters")]
        if not paths:
            warnings.warn("gaia_rvs: no labels table (no AstrophysicalParameters_* file in the source and no "
                          "labels_from=...): every label is NaN", stacklevel=3)
        tables = []
        for p in paths:
            t = read_label_table(p, self.schema.names, self.label_columns)
            for name in t.missing:
                if name in self.label_columns:  # a column the user named is a mistake, not a gap (as for LAMOST)
                    raise AdapterError(p, f"label_columns names {self.label_columns[name]!r} for {name}, which is "
                                          "not a column of this table")
                looked = _candidates(name)
                warnings.warn(f"{p}: no column for label {name!r} (looked for {', '.join(looked)}): {name} is NaN "
                              "for every star from this table", stacklevel=3)
            for note in t.notes:
                warnings.warn(f"{p}: {note}", stacklevel=3)
            tables.append(t)
        return tables

    def _label_row(self, tables, sid: int) -> dict:
        for t in tables:
            hit = t.lookup(sid)
            if hit is not None:
                labels, err, flags, text = hit
                return {"labels": labels, "label_err": err, "label_flags": flags, "flags_gspspec": text,
                        "label_source": t.path, "label_kind": t.kind, "transferred": bool(self.labels_from) and t.kind != "gspspec"}
        return {"labels": None, "label_source": tables[0].path if tables else "", "label_kind": "", "transferred": False}

    # ---- hooks of the survey registry --------------------------------------------------------
    @classmethod
    def can_read(cls, path) -> bool:
        return products.product_kind(str(path)) is not None

    def read_file(self, path) -> StarRecord:
        """A lone one-spectrum file for `pairspec predict`: its published spectrum is the one visit (no
        synthetic twins: predict labels the spectrum as it is); labels NaN."""
        path = str(path)
        entries, _ = products.scan(path)
        if len(entries) != 1:
            raise AdapterError(path, f"holds {len(entries)} spectra; predict reads one-spectrum files "
                                     "(ingest this file into a store and predict on the store)")
        spec = products.load(path, entries[0].locator)
        flux, ivar, mask = self._coadd(spec)
        rec = self._record(spec.source_id, path, path, flux, ivar, mask, flux[None], ivar[None], mask[None],
                           [f"{spec.source_id}:mean"], np.array([_time_to_mjd(spec.time)]), 0,
                           {"gaia": {}, "labels": None}, spec.scalars)
        return rec

    # ---- reading ---------------------------------------------------------------------------
    def read(self, unit: WorkUnit) -> StarRecord:
        row, sid = unit.row, int(unit.row["source_id"])
        mean = None
        if row.get("locator"):
            mean = products.load(unit.path, row["locator"])
            if mean.source_id != sid:
                raise AdapterError(unit.path, f"{row['locator']}: holds source_id {mean.source_id}, discovery saw "
                                              f"{sid} (file changed since?)")
        eps = [products.load(p, loc) for p, loc in row.get("epochs", [])]
        scalars = dict(mean.scalars if mean is not None else eps[0].scalars)
        if eps:
            vflux, vivar, vmask, ids, mjd, dropped = self._epoch_visits(unit.path, sid, eps, scalars, row)
            if mean is not None:
                flux, ivar, mask = self._coadd(mean)
            else:
                from pairspec.pairs import coadd

                flux, ivar = coadd(vflux, vivar)
                mask = np.bitwise_and.reduce(vmask, axis=0)
            star_flags, extra = STAR_EPOCH_VISITS, {"twins": "epochs", "dropped_visits": dropped}
        elif self.twins == 0:  # the published mean is the one visit: a store to label the spectra themselves
            flux, ivar, mask = self._coadd(mean)
            vflux, vivar, vmask, ids, mjd = flux[None], ivar[None], mask[None], [f"{sid}:mean"], np.array([np.nan])
            star_flags, extra = 0, {"twins": "none: the visit is the mean spectrum"}
        else:
            flux, ivar, mask = self._coadd(mean)
            n = as_int(scalars.get("combined_transits"))
            if n is None:
                n = as_int(_float(row.get("gaia", {}).get("rv_nb_transits")))
            if n is None:
                raise AdapterError(unit.path, f"{mean.where}: combined_transits is missing, and the twins' noise "
                                              "scales with it (give gaia_source= a table with rv_nb_transits)")
            try:
                vflux, vivar, ks = synthetic_visits(flux, ivar, n, sid, self.twins, self.min_gain, self.twin_seed,
                                                    self.correlated_noise)
            except ValueError as exc:
                raise AdapterError(unit.path, f"{mean.where}: no synthetic twin: {exc}") from exc
            vmask = synthetic_pixmask(mask, len(ks))
            ids = [f"{sid}:synthetic:k{int(k)}:{j}" for j, k in enumerate(ks)]
            mjd = np.full(len(ks), np.nan)
            star_flags = STAR_SYNTHETIC_TWINS
            extra = {"twins": "synthetic", "twin_transits": [int(k) for k in ks], "combined_transits": n,
                     "twin_gain": [round(math.sqrt(n / int(k)), 4) for k in ks], "twin_min_gain": self.min_gain,
                     "twin_seed": self.twin_seed, "twin_noise": "sigma_in = sigma_mean * sqrt(N/k), mean's noise shared"}
        rec = self._record(sid, unit.unit_id, unit.path, flux, ivar, mask, vflux, vivar, vmask, ids, mjd,
                           star_flags, row, scalars)
        rec.meta.update(extra)
        return rec

    def _coadd(self, spec: products.RvsSpectrum):
        """The mean spectrum on the grid (flux, ivar, pixmask); AdapterError for a wrong grid or no good pixel."""
        if spec.flux.size != NPIX:
            raise AdapterError(spec.path, f"{spec.where}: wrong grid length: flux has {spec.flux.size} values, "
                                          f"expected {NPIX} (846-870 nm in 0.01 nm steps)")
        if spec.wavelength_nm is not None:
            off = np.nanmax(np.abs(spec.wavelength_nm - wavelength_nm()))
            if not off <= 5e-4:
                raise AdapterError(spec.path, f"{spec.where}: wrong wavelength grid: {spec.wavelength_nm[0]:.4f}-"
                                              f"{spec.wavelength_nm[-1]:.4f} nm, off the 846 + 0.01 i nm grid by {off:.4g} nm")
        flux, ivar, mask = clean(spec.flux, spec.flux_error, self.edge_px, self.trim_edges)
        if self.grid is not GAIA_RVS_NATIVE_GRID:
            flux, ivar, mask = resample(wavelength_nm(), flux, ivar, mask, self._grid_nm)
        if not (ivar > 0).any():
            raise AdapterError(spec.path, f"{spec.where}: no usable pixel: flux or flux_error is null, NaN or <= 0 "
                                          "everywhere")
        return flux, ivar, mask

    def _epoch_visits(self, path, sid, eps, scalars, row):
        star_rv = next((v for v in (_float(scalars.get(k)) for k in _RV_KEYS) if math.isfinite(v)),
                       _float(row.get("gaia", {}).get("radial_velocity")))
        grid_nm, kept, dropped = self._grid_nm, [], []
        for e in eps:
            rv = next((v for v in (_float(e.scalars.get(k)) for k in _RV_KEYS) if math.isfinite(v)), star_rv)
            if not math.isfinite(rv):
                raise AdapterError(e.path, f"{e.where}: epoch spectra are barycentric and no radial_velocity is "
                                           "known to shift them to the rest frame (give gaia_source=...)")
            wave = e.wavelength_nm if e.wavelength_nm is not None else (wavelength_nm() if e.flux.size == NPIX else None)
            if wave is None:
                raise AdapterError(e.path, f"{e.where}: {e.flux.size} flux values and no wavelength column")
            f, iv, m = to_rest_frame(wave, e.flux, e.flux_error, rv, grid_nm)
            tid = e.scalars.get("transit_id")
            vid = f"{sid}:transit:{tid}" if tid is not None else f"{sid}:epoch:{e.time:.6f}"
            if not (iv > 0).any():
                dropped.append(f"{vid}: every pixel is bad")
                continue
            kept.append((f, iv, m, vid, _time_to_mjd(e.time)))
        if not kept:
            raise AdapterError(path, f"source_id {sid}: every pixel is bad in all {len(eps)} epoch spectra")
        return (np.stack([k[0] for k in kept]), np.stack([k[1] for k in kept]), np.stack([k[2] for k in kept]),
                [k[3] for k in kept], np.array([k[4] for k in kept]), dropped)

    def _record(self, sid, source, path, flux, ivar, mask, vflux, vivar, vmask, ids, mjd, star_flags, row,
                scalars) -> StarRecord:
        k = len(self.schema)
        gaia = row.get("gaia", {}) or {}
        if row.get("labels") is not None:
            labels = self.schema.clean(row["labels"])
            err = np.array(row["label_err"], dtype=np.float32)
            flags = np.array(row["label_flags"], dtype=np.int64)
            err[np.isnan(labels)] = np.nan
            if row.get("transferred"):
                star_flags |= STAR_LABELS_TRANSFERRED
        else:
            labels, err, flags = np.full(k, np.nan, np.float32), np.full(k, np.nan, np.float32), np.zeros(k, np.int64)
            if row.get("label_source"):
                star_flags |= STAR_NO_LABEL_ROW
        snr = _float(gaia.get("rvs_spec_sig_to_noise"))
        if not math.isfinite(snr):
            snr = float(recompute_snr(flux, ivar)[0])
            star_flags |= STAR_SNR_RECOMPUTED
        meta = {
            "ra": _float(scalars.get("ra", gaia.get("ra"))), "dec": _float(scalars.get("dec", gaia.get("dec"))),
            "telescope": "gaia", "field": "", "source_id": int(sid),
            "designation": f"Gaia {self.release.upper()} {sid}",
            "solution_id": as_int(scalars.get("solution_id")),
            "combined_ccds": as_int(scalars.get("combined_ccds")), "deblended_ccds": as_int(scalars.get("deblended_ccds")),
            "label_source": row.get("label_source", ""), "label_kind": row.get("label_kind", ""),
            "flags_gspspec": row.get("flags_gspspec", ""),
        }
        meta.update({f"gaia_{c}": v for c, v in gaia.items() if c not in ("ra", "dec")})
        return StarRecord(
            star_id=str(sid), source=str(source), labels=labels, label_err=err, label_flags=flags,
            star_flags=int(star_flags), coadd_flux=flux, coadd_ivar=ivar, coadd_pixmask=mask,
            visit_flux=np.ascontiguousarray(vflux, dtype=np.float32), visit_ivar=np.ascontiguousarray(vivar, dtype=np.float32),
            visit_pixmask=np.asarray(vmask, dtype=np.int64), visit_snr=recompute_snr(vflux, vivar),
            visit_snr_survey=np.full(len(ids), np.nan, dtype=np.float32), visit_mjd=np.asarray(mjd, dtype=np.float64),
            visit_id=list(ids), visit_fiber=np.full(len(ids), -1, dtype=np.int32), snr=snr, meta=meta)


def _candidates(name: str) -> tuple[str, ...]:
    from pairspec.surveys.gaia_rvs.labels import LABEL_CANDIDATES

    return LABEL_CANDIDATES.get(name, (name,))


def _time_to_mjd(t: float) -> float:
    return float(t) + GAIA_TIME_TO_MJD if math.isfinite(t) else math.nan
