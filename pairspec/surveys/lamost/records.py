"""One star's LAMOST files -> one StarRecord (LamostAdapter.read): visits, the star-level coadd, labels.

Visits: MRS - every exposure (B-<LMJM> and R-<LMJM> of one exposure make one visit: the B arm fills the B
block, the R arm the R block), across all of the star's files (nights); LRS - every file (one night's
plate spectrum, `obsid`). Coadd: MRS - the nights' COADD_B/COADD_R combined (resample.combine: each
scaled to a common level per block, then ivar-weighted); with no COADD HDU at all, the exposures
combined; LRS - the epochs combined (LAMOST publishes no multi-night LRS coadd).
Times: LMJM is a local (Beijing, UTC+8) modified Julian *minute*: MJD(UTC, mid-exposure) = LMJM/1440 - 8/24
+ EXPTIME/2/86400 (checked on the real files: LMJM 83906016 <-> DATE-BEG 2018-05-30T01:36 local, DATE-OBS
17:41 UTC the day before). LRS: DATE-OBS (the observation's median UTC), else the header MJD.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pairspec.surveys.base import AdapterError, StarRecord, WorkUnit, recompute_snr
from pairspec.surveys.lamost.files import as_float, read_lrs, read_mrs, text
from pairspec.surveys.lamost.layout import BADVALUE, NOCOVER
from pairspec.surveys.lamost.resample import combine, rest_shift, to_grid

_MJD0 = datetime(1858, 11, 17, tzinfo=timezone.utc)


def _stem(path: str) -> str:
    return Path(path).name.split(".fits")[0]


def _bad(arm, kind: str, strict: bool) -> tuple[np.ndarray, np.ndarray]:
    """(bad pixels, bits with BADVALUE added) of one Arm. kind "exposure": any PIXMASK bit is bad;
    "coadd"/"lrs": nonzero ANDMASK is bad, and nonzero ORMASK when strict."""
    nonfinite = ~np.isfinite(arm.flux) | ~np.isfinite(arm.ivar) | ~(arm.ivar > 0)
    bits = np.where(nonfinite, arm.bits | BADVALUE, arm.bits)
    if kind == "exposure":
        flagged = arm.own_mask != 0
    else:
        flagged = np.zeros(arm.flux.size, dtype=bool) if arm.and_mask is None else arm.and_mask != 0
        if strict or arm.and_mask is None:
            flagged = flagged | (arm.own_mask != 0)
    return nonfinite | flagged, bits


def _on_grid(arms: list, kind: str, adapter, shift: float):
    """One spectrum on the grid from the arms of one exposure (or coadd, or LRS file)."""
    grid = adapter.grid
    flux = np.zeros(grid.npix, np.float32)
    ivar = np.zeros(grid.npix, np.float32)
    bits = np.full(grid.npix, NOCOVER, np.int64)
    for arm in arms:
        bad, b = _bad(arm, kind, adapter.strict)
        f, iv, bb = to_grid(arm.loglam, arm.flux, arm.ivar, b, bad, grid, shift)
        covered = (bb & NOCOVER) == 0
        flux = np.where(covered, f, flux)
        ivar = np.where(covered, iv, ivar)
        bits = np.where(covered, bb, bits)
    ivar[~adapter.usable] = 0.0
    return flux, ivar, bits


def _mjd_from_date(value) -> float:
    s = text(value)
    if not s:
        return math.nan
    try:
        dt = datetime.fromisoformat(s.replace("Z", ""))
    except ValueError:
        return math.nan
    return (dt.replace(tzinfo=timezone.utc) - _MJD0).total_seconds() / 86400.0


def _fiber(h: dict) -> int:
    """LAMOST's focal-plane fibre number 1-4000: (SPID - 1) * 250 + FIBERID; -1 if unknown."""
    spid, fib = as_float(h.get("SPID")), as_float(h.get("FIBERID"))
    return int((spid - 1) * 250 + fib) if math.isfinite(spid) and math.isfinite(fib) else -1


def _fibermask(parsed) -> int:
    """OR of the files' FIBERMAS (LAMOST's fibre warning bits; 0 = all well): the star-level flags."""
    out = 0
    for _, _, f in parsed:
        v = as_float(f.header.get("FIBERMAS"))
        out |= int(v) if math.isfinite(v) and v >= 0 else 0
    return out


def _read_files(adapter, unit: WorkUnit):
    """(path, rv, parsed file) per readable file; a broken file raises (skip_star) or is dropped (drop)."""
    reader = read_mrs if adapter.resolution == "mrs" else read_lrs
    out, dropped = [], []
    files = unit.row.get("files") or [unit.path]
    rvs = unit.row.get("rv") or [math.nan] * len(files)
    for path, rv in zip(files, rvs):
        try:
            out.append((path, float(rv), reader(path)))
        except AdapterError as err:
            if adapter.bad_files == "drop":
                dropped.append(f"{err.path}: {err.problem}")
                continue
            others = len(files) - 1
            tail = (f" (star {unit.star_id}: its {others} other file(s) were left out with it; --option "
                    f"bad_files=drop keeps them)") if others else ""
            raise AdapterError(err.path, err.problem + tail) from err
    if not out:
        raise AdapterError(unit.path, "no readable file for this star: " + "; ".join(dropped))
    return out, dropped


def _visits_mrs(adapter, parsed):
    visits, coadds, dropped, seen, star_snr = [], [], [], {}, []
    for path, rv, f in parsed:
        shift = rest_shift(rv) if adapter.frame == "rest" else 0.0
        for lmjm in sorted(f.exposures):
            arms = f.exposures[lmjm]
            vid = f"{_stem(path)}#{lmjm}"
            if lmjm in seen:
                dropped.append(f"{vid}: duplicate exposure (LMJM {lmjm} also in {seen[lmjm]})")
                continue
            seen[lmjm] = _stem(path)
            flux, ivar, bits = _on_grid([arms[a] for a in ("B", "R") if a in arms], "exposure", adapter, shift)
            exptime = next((arms[a].exptime for a in ("B", "R") if a in arms and math.isfinite(arms[a].exptime)), 0.0)
            snr = next((arms[a].snr for a in ("B", "R") if a in arms and math.isfinite(arms[a].snr)), math.nan)
            mjd = lmjm / 1440.0 - 8.0 / 24.0 + exptime / 2.0 / 86400.0
            visits.append(dict(id=vid, flux=flux, ivar=ivar, bits=bits, mjd=mjd, snr=snr, fiber=_fiber(f.header)))
        if f.coadds:
            coadds.append(_on_grid([f.coadds[a] for a in ("B", "R") if a in f.coadds], "coadd", adapter, shift))
            if "B" in f.coadds and math.isfinite(f.coadds["B"].snr):
                star_snr.append(f.coadds["B"].snr)
    return visits, coadds, dropped, star_snr


def _visits_lrs(adapter, parsed):
    visits, star_snr = [], []
    for path, rv, f in parsed:
        shift = rest_shift(rv) if adapter.frame == "rest" else 0.0
        flux, ivar, bits = _on_grid([f.spectrum], "lrs", adapter, shift)
        mjd = _mjd_from_date(f.header.get("DATE-OBS"))
        mjd = mjd if math.isfinite(mjd) else as_float(f.header.get("MJD"))
        visits.append(dict(id=_stem(path), flux=flux, ivar=ivar, bits=bits, mjd=mjd, snr=f.spectrum.snr,
                           fiber=_fiber(f.header)))
        if math.isfinite(f.spectrum.snr):
            star_snr.append(f.spectrum.snr)
    return visits, [], [], star_snr


def build_record(adapter, unit: WorkUnit) -> StarRecord:
    parsed, dropped_files = _read_files(adapter, unit)
    make = _visits_mrs if adapter.resolution == "mrs" else _visits_lrs
    visits, coadds, dropped, star_snr = make(adapter, parsed)
    kept = []
    for v in visits:
        if not (v["ivar"] > 0).any():
            dropped.append(f"{v['id']}: every pixel is bad")
            continue
        v["snr_rec"] = float(recompute_snr(v["flux"], v["ivar"])[0])
        if adapter.min_snr is not None and not v["snr_rec"] >= adapter.min_snr:
            dropped.append(f"{v['id']}: S/N {v['snr_rec']:.1f} below min_snr {adapter.min_snr}")
            continue
        kept.append(v)
    if not kept:
        raise AdapterError(parsed[0][0], f"no usable exposure in {len(parsed)} file(s): " + "; ".join(dropped[:5]))
    kept.sort(key=lambda v: (v["mjd"] if math.isfinite(v["mjd"]) else math.inf, v["id"]))
    vflux = np.stack([v["flux"] for v in kept])
    vivar = np.stack([v["ivar"] for v in kept])
    vbits = np.stack([v["bits"] for v in kept])
    source = coadds if coadds else [(v["flux"], v["ivar"], v["bits"]) for v in kept]
    cflux, civar, cbits = combine(np.stack([c[0] for c in source]), np.stack([c[1] for c in source]),
                                  np.stack([c[2] for c in source]), adapter.grid.blocks)
    civar[~adapter.usable] = 0.0
    row = unit.row
    k = len(adapter.schema)
    labels = np.asarray(row.get("labels", [math.nan] * k), dtype=np.float32)
    label_err = np.asarray(row.get("label_err", [math.nan] * k), dtype=np.float32)
    first = parsed[0][2].header
    meta = {
        "ra": float(row.get("ra", as_float(first.get("RA")))), "dec": float(row.get("dec", as_float(first.get("DEC")))),
        "telescope": "LAMOST", "field": text(row.get("planid", first.get("PLANID"))),
        "designations": list(row.get("designations", [])), "obsids": list(row.get("keys", [])),
        "files": [Path(p).name for p, _, _ in parsed], "gaia_source_id": int(row.get("gaia", 0)),
        "rv_kms": [float(rv) for _, rv, _ in parsed], "frame": adapter.frame, "resolution": adapter.resolution,
        "data_v": sorted({text(f.header.get("DATA_V")) for _, _, f in parsed} - {""}),
        "layouts": sorted({f.layout for _, _, f in parsed}), "label_source": row.get("label_source", ""),
        "dropped_visits": dropped, "dropped_files": dropped_files,
    }
    return StarRecord(
        star_id=unit.star_id, source=unit.unit_id, labels=labels, label_err=label_err,
        label_flags=np.zeros(k, dtype=np.int64), star_flags=_fibermask(parsed),
        coadd_flux=cflux, coadd_ivar=civar, coadd_pixmask=cbits,
        visit_flux=vflux, visit_ivar=vivar, visit_pixmask=vbits,
        visit_snr=np.array([v["snr_rec"] for v in kept], dtype=np.float32),
        visit_snr_survey=np.array([v["snr"] for v in kept], dtype=np.float32),
        visit_mjd=np.array([v["mjd"] for v in kept], dtype=np.float64),
        visit_id=[v["id"] for v in kept],
        visit_fiber=np.array([v["fiber"] for v in kept], dtype=np.int32),
        snr=float(max(star_snr)) if star_snr else math.nan,
        meta=meta,
    )
