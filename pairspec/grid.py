"""Wavelength grids built from an integer pixel index (never np.arange on floats): log-linear (most
survey grids) and linear (`LinearGrid`: a survey that publishes lambda = start + step * i). A grid's
dict carries its `type`; `grid_from_dict` rebuilds whichever it was, which is what a store, a checkpoint,
`pairspec info` and `pairspec validate` use."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LogLinearGrid:
    """log10(lambda_i) = crval1 + cdelt1 * i, i = 0..npix-1 (Angstrom, vacuum unless said)."""

    crval1: float
    cdelt1: float
    npix: int
    medium: str = "vacuum"
    frame: str = "rest"
    # half-open [start, end) pixel blocks the survey considers usable (chip blocks); empty = all
    blocks: tuple[tuple[int, int], ...] = ()

    def wavelength(self) -> np.ndarray:
        return 10.0 ** (self.crval1 + self.cdelt1 * np.arange(self.npix, dtype=np.float64))

    def usable(self) -> np.ndarray:
        """Boolean (npix,) True inside the usable blocks."""
        if not self.blocks:
            return np.ones(self.npix, dtype=bool)
        keep = np.zeros(self.npix, dtype=bool)
        for a, b in self.blocks:
            keep[a:b] = True
        return keep

    def matches(self, crval1: float, cdelt1: float, npix: int, rtol: float = 1e-9) -> bool:
        return (
            int(npix) == self.npix
            and abs(float(crval1) - self.crval1) <= rtol * max(1.0, abs(self.crval1))
            and abs(float(cdelt1) - self.cdelt1) <= 1e-3 * abs(self.cdelt1)
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["blocks"] = [list(b) for b in self.blocks]
        d["type"] = "log-linear"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LogLinearGrid:
        return cls(
            crval1=float(d["crval1"]),
            cdelt1=float(d["cdelt1"]),
            npix=int(d["npix"]),
            medium=d.get("medium", "vacuum"),
            frame=d.get("frame", "rest"),
            blocks=tuple(tuple(int(v) for v in b) for b in d.get("blocks", ())),
        )

    def describe(self) -> str:
        """The grid in one line, for `pairspec info`."""
        return (f"{self.npix} px, log10 lambda = {self.crval1} + {self.cdelt1} i ({self.medium}, {self.frame} "
                "frame)")


@dataclass(frozen=True, eq=False)
class LinearGrid(LogLinearGrid):
    """lambda_i = start_aa + step_aa * i (Angstrom), i = 0..npix-1. A LogLinearGrid subclass whose
    `crval1`/`cdelt1` hold the log-linear grid through the same end points (for code that only needs the
    pixel count and the range); `wavelength()` is exact, and its dict records `type: linear`, `start_aa`,
    `step_aa`. It equals a LogLinearGrid only through that stand-in (the dict read by an older pairspec)."""

    start_aa: float = 0.0
    step_aa: float = 0.0

    @classmethod
    def linear(cls, start_aa: float, step_aa: float, npix: int, **kw) -> LinearGrid:
        end = start_aa + step_aa * (npix - 1)
        crval1 = math.log10(start_aa)
        cdelt1 = (math.log10(end) - crval1) / max(npix - 1, 1)
        return cls(crval1=crval1, cdelt1=cdelt1, npix=int(npix), start_aa=float(start_aa), step_aa=float(step_aa), **kw)

    def wavelength(self) -> np.ndarray:
        return self.start_aa + self.step_aa * np.arange(self.npix, dtype=np.float64)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "type": "linear"}  # asdict in the base also takes start_aa, step_aa

    @classmethod
    def from_dict(cls, d: dict) -> LinearGrid:
        base = LogLinearGrid.from_dict(d)
        return cls(crval1=base.crval1, cdelt1=base.cdelt1, npix=base.npix, medium=base.medium, frame=base.frame,
                   blocks=base.blocks, start_aa=float(d["start_aa"]), step_aa=float(d["step_aa"]))

    def describe(self) -> str:
        return (f"{self.npix} px, lambda = {self.start_aa} + {self.step_aa} i A, linear ({self.medium}, "
                f"{self.frame} frame)")

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
        return True  # the log-linear stand-in an older pairspec rebuilt from this grid's dict

    def __hash__(self):
        return hash(self._base())


GRID_TYPES = {"log-linear": LogLinearGrid, "linear": LinearGrid}


def grid_from_dict(d: dict) -> LogLinearGrid:
    """The grid a `to_dict()` describes, of its own type (a dict without `type` is log-linear)."""
    kind = d.get("type", "log-linear")
    if kind not in GRID_TYPES:
        raise ValueError(f"unknown wavelength grid type {kind!r} (this pairspec knows {', '.join(GRID_TYPES)})")
    return GRID_TYPES[kind].from_dict(d)

