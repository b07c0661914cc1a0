"""APOGEE (SDSS-IV DR17): the allStar + apStar/asStar adapter, its bitmasks and layout (grid, label
schema, continuum pixels), the Kurucz flux emulator with its visit-level fit, and the simulator that
writes a synthetic survey in the real file formats. Shipped data and their credits: data/README.md."""

from pairspec.surveys.apogee.adapter import (
    ApogeeDR17Adapter,
    apstar_to_spectrum,
    read_apstar,
)

__all__ = ["ApogeeDR17Adapter", "apstar_to_spectrum", "read_apstar"]
