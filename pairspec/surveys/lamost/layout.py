"""LAMOST's fixed layout in pairspec: the MRS and LRS grids the adapter resamples to, the label schema, and
the pixel-mask bits a store keeps.

Grids (log-linear, vacuum; the blocks are the model pixels, pairspec.preprocess.model_pixels):
- MRS: log10(lambda) = 3.6946 + 1e-5 i, 13791 px (4949.9-6799.9 A), on the 1e-5 lattice of LAMOST's
  own coadds (one pixel ~6.9 km/s); blocks = the published arm ranges, B [4950, 5350) and
  R [6300, 6800) A: (0, 3375) and (10474, 13791), 6692 model pixels. The 5350-6300 A gap is stored
  (ivar 0) because a store has one grid.
- LRS: log10(lambda) = 3.5911 + 1e-4 i, 3534 px (3900.3-8798.3 A), on the lattice of the files'
  COEFF0 = 3.5682, step 1e-4 (~69 km/s); blocks [3900, 5700) and [5900, 8800) A: (0, 1648) and
  (1798, 3534). The cut-offs drop the ends where S/N collapses and the blue/red-arm junction near
  5800 A (formats.md 5.3; the exact thresholds are a choice, not a LAMOST rule).
Frame: "rest" by default (the adapter shifts each file by its RV); "heliocentric" on request.

Pixel mask (int64 per pixel, `pixmask` in the store):
- bits 0-15: the spectrum's own mask as published: an MRS exposure's PIXMASK, an MRS coadd's ORMASK,
  an LRS file's ORMASK;
- bits 16-31: ANDMASK << 16 (MRS coadds, LRS files);
- bit 32 NOCOVER: no file pixel there (outside the arm's wavelength range after the RV shift, or the
  arm/exposure is missing) - set by pairspec;
- bit 33 BADVALUE: the file's flux or ivar is NaN/inf, or ivar <= 0 - set by pairspec.
The LAMOST bit meanings themselves are unverified (formats.md 3.1): any nonzero PIXMASK, or nonzero
ANDMASK (default) / ORMASK (strict) makes a pixel bad (ivar 0), its bits kept.
"""

from __future__ import annotations

from pairspec.grid import LogLinearGrid
from pairspec.schema import Label, LabelSchema

C_KMS = 299792.458
RESOLUTIONS = ("mrs", "lrs")
FRAMES = ("rest", "heliocentric")
# resolving power of each survey (used by the simulator's spectra)
RESOLVING_POWER = {"mrs": 7500.0, "lrs": 1800.0}

MRS_BLOCKS = ((0, 3375), (10474, 13791))
LRS_BLOCKS = ((0, 1648), (1798, 3534))
_GRIDS = {
    "mrs": dict(crval1=3.6946, cdelt1=1e-5, npix=13791, blocks=MRS_BLOCKS),
    "lrs": dict(crval1=3.5911, cdelt1=1e-4, npix=3534, blocks=LRS_BLOCKS),
}
MRS_ARMS = ("B", "R")
# published wavelength range of each MRS arm (Angstrom, LAMOST MRS docs)
MRS_ARM_RANGE = {"B": (4950.0, 5350.0), "R": (6300.0, 6800.0)}

OWN_MASK_BITS = 0xFFFF
ANDMASK_SHIFT = 16
NOCOVER = 1 << 32
BADVALUE = 1 << 33


def lamost_grid(resolution: str = "mrs", frame: str = "rest") -> LogLinearGrid:
    """The store grid of one LAMOST resolution ("mrs" or "lrs") in one frame ("rest" or "heliocentric")."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution={resolution!r}; choose one of {RESOLUTIONS}")
    if frame not in FRAMES:
        raise ValueError(f"frame={frame!r}; choose one of {FRAMES}")
    return LogLinearGrid(medium="vacuum", frame=frame, **_GRIDS[resolution])


MRS_GRID = lamost_grid("mrs")
LRS_GRID = lamost_grid("lrs")

# Labels: LAMOST publishes them per spectrum (obsid) in its catalogues (LASP: teff, logg, feh and, in
# later releases, alpha_m; MRS catalogues also carry CNN/other pipelines' values). [alpha/M] from LASP is
# taken as [alpha/Fe] (M ~ Fe for these stars); LAMOST publishes no [Mg/Fe] in the catalogues checked.
# `column` / `err_column` are the LASP names; catalogue.py lists the other names it accepts.
LAMOST_SCHEMA = LabelSchema(
    survey="lamost",
    labels=(
        Label("teff", "K", 2500.0, 15000.0, "teff", "teff_err"),
        Label("logg", "dex", -1.0, 6.0, "logg", "logg_err"),
        Label("fe_h", "dex", -5.0, 1.5, "feh", "feh_err"),
        Label("alpha_fe", "dex", -1.0, 1.5, "alpha_m", "alpha_m_err"),
    ),
)
