"""SDSS-V Milky Way Mapper (astra DR19/DR20): the mwmVisit + mwmStar + astraAllStar adapter of one instrument
(APOGEE on DR17's apStar grid, or BOSS), and the simulator that writes a synthetic survey in those formats.
What is read, and what is not verified: README.md beside this file."""

from pairspec.surveys.sdssv.adapter import SdssvAdapter

__all__ = ["SdssvAdapter"]
