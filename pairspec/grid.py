"""Wavelength grids: log-linear survey grids built from an integer pixel index (never np.arange on floats)."""

from __future__ import annotations

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
