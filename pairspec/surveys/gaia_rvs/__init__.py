"""Gaia RVS: the adapter of DR3 mean spectra (datalink FITS / VOTable / ECSV / CSV and the bulk
RvsMeanSpectrum_*.csv.gz files; DR4 epoch spectra through the same path, unverified), its synthetic
twins (degraded copies of the mean spectrum), label tables keyed by source id, and the simulator that
writes a synthetic set in those formats. What it reads and what the twins do and do not test: README.md."""

from pairspec.surveys.gaia_rvs.adapter import GaiaRvsAdapter

__all__ = ["GaiaRvsAdapter"]
