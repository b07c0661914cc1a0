"""`pairspec simulate gaia_rvs OUT`: the registered simulator object of the Gaia RVS survey."""

from __future__ import annotations

from pathlib import Path


class GaiaRvsSimulator:
    name = "gaia_rvs"
    description = ("a Gaia DR3 RVS set: Spectroscopy/rvs_mean_spectrum/RvsMeanSpectrum_*.csv.gz, datalink/RVS-Gaia DR3 "
                   "<id>.fits|.ecsv|.xml and RVS_RAW-Gaia DR3.fits, AstrophysicalParameters_* (GSP-Spec labels), "
                   "GaiaSource_* (S/N, RV), truth.fits")

    def simulate(self, out, n_stars: int = 500, seed: int = 1, workers: int = 1, store_only: bool = False,
                 progress: bool = True) -> dict:
        """Write the set (one process: `workers` does not change it); returns {"text", "truth", "source"}."""
        if store_only:
            raise ValueError("not supported: gaia_rvs simulates files only (ingest them: pairspec ingest gaia_rvs OUT STORE)")
        if n_stars < 1:
            raise ValueError(f"--stars must be at least 1, got {n_stars}")
        from pairspec.surveys.gaia_rvs.simulate import simulate_gaia_rvs

        res = simulate_gaia_rvs(Path(out), n_stars=n_stars, seed=seed, progress=progress)
        return {"text": f"wrote {res['n_stars']} Gaia RVS mean spectra in {res['n_files']} files under {out}",
                "source": str(out), "truth": str(res["paths"]["truth"])}


SIMULATOR = GaiaRvsSimulator()
