"""SDSS-V Milky Way Mapper's fixed layout (formats.md section 2): the two instrument grids, the mwmVisit /
mwmStar HDU names, the astra summary-file layout, the label schemas and where each label comes from, the
pixel and flag bits, and the file-naming rules.

The APOGEE side reuses APOGEE DR17's grid and label names on purpose: the same 8575-px apStar grid, chip
blocks, teff/logg/fe_h/mg_fe and bad-bit policy, so a DR17-trained checkpoint reads an SDSS-V store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pairspec.grid import LogLinearGrid
from pairspec.schema import Label, LabelSchema
from pairspec.surveys.apogee.bits import PIXMASK_BAD_BITS, PIXMASK_STRICT_BITS
from pairspec.surveys.apogee.layout import APOGEE_GRID

INSTRUMENTS = ("apogee", "boss")
SITES = ("apo", "lco")
# mwmVisit / mwmStar HDUs 1-4 (HDU0 is the source summary); every one exists even when it has no rows.
HDU_NAMES = ("BOSS/APO", "BOSS/LCO", "APOGEE/APO", "APOGEE/LCO")

# BOSS: log10 lambda = 3.5523 + 1e-4 i, 4648 px, 3567.0-10399.2 A (vacuum, rest frame). Below 3650 A astra
# sets the coadd to NaN / ivar 0, so the usable blocks start at pixel 100 (3650.3 A); the second block starts
# at 6000 A, near the dichroic, so the pseudo-continuum is fitted per camera rather than over a factor 3 in
# wavelength with one cubic.
BOSS_BLUE_LIMIT_PIX = 100
BOSS_SPLIT_PIX = 2259
BOSS_GRID = LogLinearGrid(crval1=3.5523, cdelt1=1e-4, npix=4648,
                          blocks=((BOSS_BLUE_LIMIT_PIX, BOSS_SPLIT_PIX), (BOSS_SPLIT_PIX, 4648)))
GRIDS = {"apogee": APOGEE_GRID, "boss": BOSS_GRID}

# SDSS SPPIXMASK (formats.md 2.4): FULLREJECT 18, NOSKY 22 and NODATA 24 already carry ivar = 0 in the
# pipeline; strict adds BRIGHTSKY 23 and the partial / scattered-light / cross-talk bits 19-21.
SPPIXMASK_BAD_BITS = frozenset({18, 22, 24})
SPPIXMASK_STRICT_BITS = SPPIXMASK_BAD_BITS | {19, 20, 21, 23}
BAD_BITS = {"apogee": PIXMASK_BAD_BITS, "boss": SPPIXMASK_BAD_BITS}
STRICT_BITS = {"apogee": PIXMASK_STRICT_BITS, "boss": SPPIXMASK_STRICT_BITS}

# APOGEE visit `spectrum_flags` (STARFLAG bits): a visit whose RV failed cannot be in the rest frame.
VISIT_BAD_RV_BITS = (18, 22)  # BAD_RV_COMBINATION, RV_FAIL

# StarRecord.star_flags of this adapter (the astra summary's booleans; result_flags goes to meta)
STAR_FLAG_WARN, STAR_FLAG_BAD, STAR_NO_SUMMARY_ROW = 1, 2, 4
STAR_FLAG_NAMES = {0: "FLAG_WARN", 1: "FLAG_BAD", 2: "NO_SUMMARY_ROW"}
# StarRecord.label_flags: bits 0-11 are astra's per-label `<x>_flags` (FERRE/abundance bits); bit 32 is the
# star's flag_warn, set on every label (flag_bad makes the labels NaN instead).
LABEL_FLAG_WARN = 1 << 32


@dataclass(frozen=True)
class LabelSource:
    """Where a schema label comes from in an astra summary row: `column` (x_h scale, as astra publishes),
    minus `minus` when the label is on the X/Fe scale (X/Fe = X/H - Fe/H, errors added in quadrature,
    flags OR-ed: an approximation that ignores the correlation of the two -- unverified for every element)."""

    column: str
    minus: str = ""
    flags: bool = False  # the column has a `<column>_flags` companion


def _label(name, unit, lo, hi, src: LabelSource) -> Label:
    col = f"{src.column} - {src.minus}" if src.minus else src.column
    err = f"e_{src.column} (+) e_{src.minus}" if src.minus else f"e_{src.column}"
    flag = " | ".join(f"{c}_flags" for c in (src.column, src.minus) if c and src.flags)
    return Label(name, unit, lo, hi, col, err, flag)


# APOGEE labels from astraAllStarASPCAP (or AstroNN / ApogeeNet where they publish the column); the first
# four are DR17's names and valid ranges (pairspec.surveys.apogee.layout.APOGEE_DR17_SCHEMA).
APOGEE_SOURCES = {
    "teff": LabelSource("teff"), "logg": LabelSource("logg"), "fe_h": LabelSource("fe_h", flags=True),
    "mg_fe": LabelSource("mg_h", "fe_h", flags=True), "m_h": LabelSource("m_h_atm"),
    "alpha_m": LabelSource("alpha_m_atm"), "c_fe": LabelSource("c_h", "fe_h", flags=True),
    "n_fe": LabelSource("n_h", "fe_h", flags=True), "si_fe": LabelSource("si_h", "fe_h", flags=True),
    "ca_fe": LabelSource("ca_h", "fe_h", flags=True),
}
_APOGEE_RANGES = {"teff": ("K", 2500.0, 10000.0), "logg": ("dex", -1.0, 6.0), "fe_h": ("dex", -5.0, 1.5),
                  "mg_fe": ("dex", -1.5, 2.0), "m_h": ("dex", -5.0, 1.5), "alpha_m": ("dex", -1.5, 2.0),
                  "c_fe": ("dex", -3.0, 3.0), "n_fe": ("dex", -3.0, 3.0), "si_fe": ("dex", -1.5, 2.0),
                  "ca_fe": ("dex", -1.5, 2.0)}
# BOSS labels from astraAllStarBossNet: BOSS targets run from white dwarfs to OB stars, hence the ranges.
BOSS_SOURCES = {"teff": LabelSource("teff"), "logg": LabelSource("logg"), "fe_h": LabelSource("fe_h", flags=True)}
_BOSS_RANGES = {"teff": ("K", 2000.0, 100000.0), "logg": ("dex", -1.0, 10.0), "fe_h": ("dex", -5.0, 1.5)}

SOURCES = {"apogee": APOGEE_SOURCES, "boss": BOSS_SOURCES}
FULL_SCHEMAS = {
    "apogee": LabelSchema("sdssv", tuple(_label(n, *_APOGEE_RANGES[n], s) for n, s in APOGEE_SOURCES.items())),
    "boss": LabelSchema("sdssv", tuple(_label(n, *_BOSS_RANGES[n], s) for n, s in BOSS_SOURCES.items())),
}
DEFAULT_LABELS = {"apogee": ("teff", "logg", "fe_h", "mg_fe"), "boss": ("teff", "logg", "fe_h")}
DEFAULT_PIPELINES = {"apogee": "ASPCAP", "boss": "BossNet"}
# summary HDU of each instrument when a file lacks the INSTRMNT card: HDU1 BOSS, HDU2 APOGEE (positional)
SUMMARY_HDU = {"boss": 1, "apogee": 2}

_MWM_NAME = re.compile(r"^(mwmVisit|mwmStar)-(?P<v>[^-]+)-(?P<id>\d+)\.fits(\.gz)?$")


def parse_mwm_name(name: str) -> tuple[str, str, int] | None:
    """(kind 'mwmVisit'|'mwmStar', v_astra, sdss_id) of an astra file name, or None if it is not one."""
    m = _MWM_NAME.match(name)
    return (m.group(1), m.group("v"), int(m.group("id"))) if m else None


def sdss_id_groups(sdss_id: int) -> tuple[str, str]:
    """astra's two folder levels of an sdss_id: zero-padded to >= 4 digits, digits [-4:-2] and [-2:]."""
    digits = f"{int(sdss_id):04d}"
    return digits[-4:-2], digits[-2:]


def mwm_relpath(kind: str, v_astra: str, sdss_id: int) -> str:
    """spectra/{visit|star}/{g1}/{g2}/{kind}-{v_astra}-{sdss_id}.fits, relative to $MWM_ASTRA/{v_astra}."""
    g1, g2 = sdss_id_groups(sdss_id)
    folder = "visit" if kind == "mwmVisit" else "star"
    return f"spectra/{folder}/{g1}/{g2}/{kind}-{v_astra}-{int(sdss_id)}.fits"


def version_key(v_astra: str) -> tuple:
    """Sort key of a v_astra string ("0.8.1" > "0.6.0"); non-numeric parts sort as text after numbers."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[._]", str(v_astra)))


def site_of_telescope(telescope: str) -> str:
    """'apo' for apo25m / apo1m, 'lco' for lco25m, '' when unknown."""
    t = str(telescope).strip().lower()
    return t[:3] if t[:3] in SITES else ""
