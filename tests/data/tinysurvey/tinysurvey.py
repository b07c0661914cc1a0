"""tinysurvey: a minimal third-party pairspec survey package (adapter + simulator), the worked example of
docs/adding-a-survey.md. It lives outside pairspec and registers itself only through its entry points
(tinysurvey-0.1.dist-info/entry_points.txt here; `[project.entry-points."pairspec.surveys"]` in a real
package's pyproject.toml).

The TINY format (invented for this example; README.md beside this file):

    ROOT/tiny_stars.csv          one row per star: star_id,n_visits,teff,teff_err,logg,logg_err,fe_h,fe_h_err
                                 (an empty cell is a missing value)
    ROOT/spectra/<star_id>.tiny  text: a "# TINY 1" line, "# key = value" header lines (star_id, npix,
                                 mjd = one float per visit), then npix rows
                                 "wavelength_aa flux_1 sigma_1 flux_2 sigma_2 ..." (vacuum, rest frame,
                                 continuum-normalised); sigma <= 0, nan or inf marks a bad pixel
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from pairspec.grid import LogLinearGrid
from pairspec.schema import Label, LabelSchema
from pairspec.surveys.base import (
    AdapterError,
    Discovery,
    Skip,
    StarRecord,
    WorkUnit,
    recompute_snr,
)

GRID = LogLinearGrid(crval1=math.log10(5000.0), cdelt1=1e-4 / 3.0, npix=300)  # 5000-5236 A, R ~ 5000
RESOLUTION = 5000.0
SCHEMA = LabelSchema("tiny", (
    Label("teff", "K", 3000.0, 9000.0, "teff", "teff_err"),
    Label("logg", "dex", -0.5, 5.5, "logg", "logg_err"),
    Label("fe_h", "dex", -4.0, 1.0, "fe_h", "fe_h_err"),
))
BAD_PIXEL = 1  # pixmask bit: sigma not positive and finite
SUMMARY = "tiny_stars.csv"


def _float(text: str) -> float:
    text = (text or "").strip()
    return float(text) if text else float("nan")


def read_tiny(path: str) -> dict:
    """Parse one .tiny file -> {"star_id", "mjd" (n_visit,), "wave" (npix,), "flux", "sigma" (n_visit, npix)};
    any problem is an AdapterError that names the file."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise AdapterError(path, f"cannot read the file ({err})") from None
    if not lines or lines[0].strip() != "# TINY 1":
        raise AdapterError(path, "not a TINY file (first line is not '# TINY 1')")
    head = {}
    for line in lines[1:]:
        if not line.startswith("#"):
            break
        key, sep, value = line[1:].partition("=")
        if sep:
            head[key.strip()] = value.strip()
    for key in ("star_id", "npix", "mjd"):
        if key not in head:
            raise AdapterError(path, f"header keyword {key!r} missing")
    try:
        npix, mjd = int(head["npix"]), np.array([float(v) for v in head["mjd"].split()])
        rows = np.array([[float(v) for v in line.split()] for line in lines[1:] if line and not line.startswith("#")])
    except ValueError as err:
        raise AdapterError(path, f"unreadable numbers or ragged rows ({err})") from None
    if rows.ndim != 2 or rows.shape[0] != npix or rows.shape[1] != 1 + 2 * mjd.size:
        raise AdapterError(path, f"data block is {rows.shape}, header says {npix} rows x {1 + 2 * mjd.size} columns "
                                 "(truncated or corrupt)")
    return {"star_id": head["star_id"], "mjd": mjd, "wave": rows[:, 0], "flux": rows[:, 1::2].T,
            "sigma": rows[:, 2::2].T}


class TinyAdapter:
    """Reads a TINY tree into StarRecords (no coadd in this survey: coadd arrays are zeros, ivar 0)."""

    name = "tiny"
    release = "tiny1"
    schema = SCHEMA
    grid = GRID

    def discover(self, source: str) -> Discovery:
        summary = Path(source) / SUMMARY
        if not summary.is_file():
            raise FileNotFoundError(f"{summary}: the TINY summary table is missing")
        units, skipped, seen = [], [], set()
        with open(summary, newline="") as fh:
            for row in csv.DictReader(fh):
                star = (row.get("star_id") or "").strip()
                path = str(Path(source) / "spectra" / f"{star}.tiny")
                if not star or star in seen:
                    skipped.append(Skip(str(summary), f"row with empty or repeated star_id {star!r}", star))
                elif not Path(path).is_file():
                    skipped.append(Skip(path, "spectrum file listed in tiny_stars.csv is missing", star))
                else:
                    seen.add(star)
                    units.append(WorkUnit(f"spectra/{star}.tiny", path, star, dict(row)))
        return Discovery(sorted(units, key=lambda u: u.unit_id), skipped)

    def read(self, unit: WorkUnit) -> StarRecord:
        d = read_tiny(unit.path)
        if d["star_id"] != unit.star_id:
            raise AdapterError(unit.path, f"file holds star {d['star_id']!r}, tiny_stars.csv says {unit.star_id!r}")
        if not np.allclose(d["wave"], GRID.wavelength(), rtol=1e-8, atol=1e-4):  # written to 1e-5 A
            raise AdapterError(unit.path, "wavelength column is not the TINY grid (5000 A, 1e-4/3 dex, 300 px)")
        good = np.isfinite(d["sigma"]) & (d["sigma"] > 0) & np.isfinite(d["flux"])
        keep = good.any(axis=1)  # a visit with no good pixel is dropped
        if not keep.any():
            raise AdapterError(unit.path, "no visit has a good pixel")
        good, sigma = good[keep], d["sigma"][keep]
        flux = np.where(good, d["flux"][keep], 0.0).astype(np.float32)  # bad pixels: finite flux, ivar 0
        ivar = np.where(good, 1.0 / np.where(good, sigma, 1.0) ** 2, 0.0).astype(np.float32)
        mask = np.where(good, 0, BAD_PIXEL).astype(np.int64)
        row = unit.row
        labels = SCHEMA.clean([_float(row.get(lab.column)) for lab in SCHEMA.labels])
        errors = np.array([_float(row.get(lab.err_column)) for lab in SCHEMA.labels], np.float32)
        nv, npix = flux.shape
        return StarRecord(
            star_id=unit.star_id, source=unit.unit_id, labels=labels, label_err=errors,
            label_flags=np.zeros(len(SCHEMA), np.int64), star_flags=0,
            coadd_flux=np.zeros(npix, np.float32), coadd_ivar=np.zeros(npix, np.float32),
            coadd_pixmask=np.zeros(npix, np.int64), visit_flux=flux, visit_ivar=ivar, visit_pixmask=mask,
            visit_snr=recompute_snr(flux, ivar), visit_snr_survey=np.full(nv, np.nan, np.float32),
            visit_mjd=d["mjd"][keep].astype(np.float64), visit_id=[f"{unit.star_id}-{k}" for k in np.flatnonzero(keep)],
            visit_fiber=np.full(nv, -1, np.int32), snr=float(np.nanmedian(recompute_snr(flux, ivar))), meta={},
        )

    # optional hooks: `pairspec predict` on .tiny files
    @classmethod
    def can_read(cls, path) -> bool:
        return str(path).endswith(".tiny")

    def read_file(self, path) -> StarRecord:
        star = read_tiny(str(path))["star_id"]
        return self.read(WorkUnit(Path(path).name, str(path), star, {}))

    # optional hook: the visit-level baseline of `pairspec evaluate --emulator-fit`
    @staticmethod
    def visit_fitter():
        return TinyFit()


class TinyFit:
    """pairspec's line generator fitted to each visit by least squares (3 labels, [alpha/Fe] = 0)."""

    label_names = ("teff", "logg", "fe_h")

    def fit(self, flux, ivar, pixmask=None) -> dict:
        from scipy.optimize import least_squares

        from pairspec.surveys.linegen import normalized_spectrum

        wave, scale = GRID.wavelength(), np.array([1000.0, 1.0, 1.0])
        out = {"labels": [], "sigma": [], "chi2": []}
        for f, w in zip(np.atleast_2d(flux), np.atleast_2d(ivar)):
            sw = np.sqrt(np.where(np.isfinite(w) & (w > 0), w, 0.0))

            def resid(p, f=f, sw=sw):
                return (normalized_spectrum(wave, [[*(p * scale), 0.0]], RESOLUTION)[0] - f) * sw

            r = least_squares(resid, np.array([5.5, 3.0, -0.5]), diff_step=1e-4,
                              bounds=([3.0, -0.5, -4.0], [9.0, 5.5, 1.0]))
            dof = max(int((sw > 0).sum()) - 3, 1)
            cov = np.linalg.pinv(r.jac.T @ r.jac) * max(2 * r.cost / dof, 1.0)
            out["labels"].append(r.x * scale)
            out["sigma"].append(np.sqrt(np.diag(cov)) * scale)
            out["chi2"].append(2 * r.cost / dof)
        return {k: np.array(v) for k, v in out.items()}


class TinySimulator:
    """`pairspec simulate tiny OUT`: a TINY tree from pairspec's optical line generator, truth.fits beside it."""

    name = "tiny"
    description = "a TINY tree: tiny_stars.csv + spectra/<star_id>.tiny, truth.fits beside it"

    def simulate(self, out, n_stars: int = 500, seed: int = 1, workers: int = 1, store_only: bool = False,
                 progress: bool = True) -> dict:
        from astropy.io import fits

        from pairspec.surveys.linegen import normalized_spectrum

        if store_only:
            raise ValueError("the tiny simulator writes files only (no --store-only)")
        if n_stars < 1:
            raise ValueError(f"--stars must be at least 1, got {n_stars}")
        out = Path(out)
        (out / "spectra").mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)  # one stream, drawn in star order: `workers` cannot change the survey
        labels = np.stack([rng.uniform(4000, 7000, n_stars), rng.uniform(1.0, 4.8, n_stars),
                           rng.uniform(-1.5, 0.4, n_stars), np.zeros(n_stars)], 1)
        wave = GRID.wavelength()
        clean = normalized_spectrum(wave, labels, RESOLUTION)
        ids = [f"T{i:05d}" for i in range(n_stars)]
        n_visits = rng.integers(1, 5, n_stars)
        with open(out / SUMMARY, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["star_id", "n_visits", "teff", "teff_err", "logg", "logg_err", "fe_h", "fe_h_err"])
            for star, nv, (teff, logg, feh, _), spec in zip(ids, n_visits, labels, clean):
                snr = rng.uniform(10, 80, nv)
                flux = spec[None, :] + rng.normal(0, 1, (nv, wave.size)) / snr[:, None]
                sigma = np.repeat(1.0 / snr[:, None], wave.size, axis=1)
                sigma[rng.random((nv, wave.size)) < 0.02] = np.inf  # bad pixels
                cols = np.column_stack([a for k in range(nv) for a in (flux[k], sigma[k])])
                mjd = " ".join(f"{m:.4f}" for m in 59000 + np.sort(rng.uniform(0, 900, nv)))
                head = f"# TINY 1\n# star_id = {star}\n# npix = {wave.size}\n# mjd = {mjd}\n"
                body = "\n".join(f"{lam:.5f} " + " ".join(f"{v:.6g}" for v in r) for lam, r in zip(wave, cols))
                (out / "spectra" / f"{star}.tiny").write_text(head + body + "\n")
                w.writerow([star, nv, f"{teff + rng.normal(0, 50):.1f}", "50", f"{logg + rng.normal(0, 0.1):.3f}",
                            "0.1", f"{feh + rng.normal(0, 0.05):.3f}", "0.05"])
        table = fits.BinTableHDU.from_columns([
            fits.Column("star_id", "10A", array=np.array(ids)), fits.Column("teff", "E", array=labels[:, 0]),
            fits.Column("logg", "E", array=labels[:, 1]), fits.Column("fe_h", "E", array=labels[:, 2])])
        fits.HDUList([fits.PrimaryHDU(), table, fits.ImageHDU(clean.astype(np.float32), name="SPECTRA")]).writeto(
            out / "truth.fits", overwrite=True)
        return {"text": f"wrote {n_stars} stars, {int(n_visits.sum())} visits under {out}", "source": str(out),
                "truth": str(out / "truth.fits")}


SIMULATOR = TinySimulator()
