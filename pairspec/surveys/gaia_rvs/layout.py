"""Gaia RVS's fixed layout: the published wavelength grid, the label schema, and the bits this adapter sets.

The published grid is LINEAR in wavelength (formats.md 4.1: 846-870 nm in 0.01 nm steps, 2401 samples,
both ends inclusive, rest frame, vacuum per ESA as quoted by third parties). pairspec.grid only knows
log-linear grids, and the pair store rebuilds its grid with `LogLinearGrid.from_dict` (and `pairspec
validate` compares the store's wavelength array with that grid), so by default the adapter resamples onto
GAIA_RVS_GRID, the log-linear grid through the same end points with the same 2401 pixels. The exact grid is
available as GAIA_RVS_NATIVE_GRID (adapter option grid="native"): `LinearGrid` is a LogLinearGrid subclass
that (a) returns the exact linear wavelengths from `wavelength()` (what `create_store` writes into
the store's `wavelength` array), (b) records `type: linear`, `start_aa`, `step_aa` in its dict, and
(c) keeps in `crval1`/`cdelt1` the log-linear grid through the same end points, for code that reads the
dict as a LogLinearGrid (off by at most 0.84 A = 8.4 px mid-range; nothing in pairspec resamples with it:
the network sees pixel indices). A LinearGrid equals the LogLinearGrid rebuilt from its dict, so
re-ingesting into an existing store works. grid.py should learn linear grids itself (the adapter's README
says how); this class then becomes an import.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from pairspec.grid import LogLinearGrid
from pairspec.schema import Label, LabelSchema

NPIX = 2401
START_NM, STEP_NM = 846.0, 0.01  # lambda_i = 846 + 0.01 i nm, i = 0..2400 (never np.arange on floats)
RESOLVING_POWER = 11500.0  # formats.md 4.1 (unverified)
NATIVE_PIXEL_NM = 0.0245  # RVS native pixel; the 0.01 nm grid oversamples it ~2.5x (unverified)


@dataclass(frozen=True, eq=False)
class LinearGrid(LogLinearGrid):
    """lambda_i = start_aa + step_aa * i (Angstrom), i = 0..npix-1; see the module docstring."""

    start_aa: float = 10 * START_NM
    step_aa: float = 10 * STEP_NM

    @classmethod
    def linear(cls, start_aa: float, step_aa: float, npix: int, **kw) -> LinearGrid:
        end = start_aa + step_aa * (npix - 1)
        crval1 = math.log10(start_aa)
        cdelt1 = (math.log10(end) - crval1) / max(npix - 1, 1)
        return cls(crval1=crval1, cdelt1=cdelt1, npix=int(npix), start_aa=float(start_aa), step_aa=float(step_aa), **kw)

    def wavelength(self) -> np.ndarray:
        return self.start_aa + self.step_aa * np.arange(self.npix, dtype=np.float64)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["blocks"] = [list(b) for b in self.blocks]
        d["type"] = "linear"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LinearGrid:
        base = LogLinearGrid.from_dict(d)
        return cls(crval1=base.crval1, cdelt1=base.cdelt1, npix=base.npix, medium=base.medium, frame=base.frame,
                   blocks=base.blocks, start_aa=float(d.get("start_aa", 10 * START_NM)),
                   step_aa=float(d.get("step_aa", 10 * STEP_NM)))

    def _base(self) -> tuple:
        return (self.crval1, self.cdelt1, self.npix, self.medium, self.frame, tuple(self.blocks))

    def __eq__(self, other):
        if not isinstance(other, LogLinearGrid):
            return NotImplemented
        base = (other.crval1, other.cdelt1, other.npix, other.medium, other.frame, tuple(other.blocks))
        if base != self._base():
            return False
        if isinstance(other, LinearGrid):
            return (other.start_aa, other.step_aa) == (self.start_aa, self.step_aa)
        return True  # the LogLinearGrid a store rebuilds from this grid's dict

    def __hash__(self):
        return hash(self._base())


# The published grid, exactly (adapter option grid="native"; needs linear-grid support in pairspec.grid for
# `pairspec validate` and for a store's grid attribute to read back exactly: see the module docstring).
# Its blocks ((0, 2401),) (usable everywhere, as the default's empty blocks) keep the two grids unequal once a
# store has rebuilt either as a LogLinearGrid, so an ingest cannot mix resampled and native spectra.
GAIA_RVS_NATIVE_GRID = LinearGrid.linear(10 * START_NM, 10 * STEP_NM, NPIX, medium="vacuum", frame="rest",
                                         blocks=((0, NPIX),))
# The default store grid: log-linear through the same end points with the same 2401 pixels (pixel size
# 0.0986-0.1014 A, at most 0.84 A = 8.4 px from the published sample of the same index); the adapter
# resamples the published spectra onto it (linear interpolation, variance propagated).
GAIA_RVS_GRID = LogLinearGrid(crval1=GAIA_RVS_NATIVE_GRID.crval1, cdelt1=GAIA_RVS_NATIVE_GRID.cdelt1, npix=NPIX,
                              medium="vacuum", frame="rest")


def wavelength_nm() -> np.ndarray:
    """The 2401 published wavelengths in nm, from the integer index."""
    return START_NM + STEP_NM * np.arange(NPIX, dtype=np.float64)


# Labels: Gaia's own GSP-Spec (astrophysical_parameters) by default; other catalogues map onto these names
# (labels.py). fe_h is GSP-Spec's [M/H] unless the catalogue has a true [Fe/H] column.
GAIA_RVS_SCHEMA = LabelSchema(
    survey="gaia_rvs",
    labels=(
        Label("teff", "K", 2500.0, 10000.0, "teff_gspspec", "", "flags_gspspec"),
        Label("logg", "dex", -1.0, 6.0, "logg_gspspec", "", "flags_gspspec"),
        Label("fe_h", "dex", -5.0, 1.5, "mh_gspspec", "", "flags_gspspec"),
        Label("alpha_fe", "dex", -1.5, 2.0, "alphafe_gspspec", "", "flags_gspspec"),
    ),
)

# ---- pixel-mask bits (stars/pixmask and visits/pixmask of the store); ivar = 0 is what makes a pixel bad
PIX_NULL_FLUX = 1 << 0  # flux null / NaN / inf in the file
PIX_BAD_ERROR = 1 << 1  # flux_error null, NaN, <= 0 (the file gives no usable weight)
PIX_EDGE = 1 << 2  # within `edge_nm` of either grid end (fewer CCD spectra, noisier; bad only with trim_edges)
PIX_NO_COVERAGE = 1 << 3  # epoch visit: no epoch pixel maps here after the Doppler shift to the rest frame
PIX_SYNTHETIC = 1 << 8  # every pixel of a synthetic (degraded-copy) visit carries it
PIXMASK_BITS = {0: "NULL_FLUX", 1: "BAD_ERROR", 2: "EDGE", 3: "NO_COVERAGE", 8: "SYNTHETIC"}

# ---- star_flags bits (stars/star_flags)
STAR_SYNTHETIC_TWINS = 1 << 0  # the visits are synthetic degraded copies of the mean spectrum (DR3)
STAR_EPOCH_VISITS = 1 << 1  # the visits are published epoch spectra (DR4 layout, unverified)
STAR_LABELS_TRANSFERRED = 1 << 2  # labels from another survey's catalogue (labels_from), matched by source id
STAR_NO_LABEL_ROW = 1 << 3  # the labels table has no row for this source (labels NaN)
STAR_SNR_RECOMPUTED = 1 << 4  # no published rvs_spec_sig_to_noise: snr is the recomputed median of the mean
STAR_FLAG_BITS = {0: "SYNTHETIC_TWINS", 1: "EPOCH_VISITS", 2: "LABELS_TRANSFERRED", 3: "NO_LABEL_ROW",
                  4: "SNR_RECOMPUTED"}
