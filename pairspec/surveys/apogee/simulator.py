"""`pairspec simulate apogee OUT`: the registered simulator object of the APOGEE survey."""

from __future__ import annotations

from pathlib import Path


class ApogeeSimulator:
    name = "apogee"
    description = ("an APOGEE DR17 tree: allStar-dr17-synspec_rev1.fits + apo25m|lco25m/<FIELD>/a[ps]Star-dr17-*.fits, "
                   "truth.fits beside it (or, --store-only, OUT/apogee.zarr + OUT/truth.fits)")

    def simulate(self, out, n_stars: int = 500, seed: int = 1, workers: int = 1, store_only: bool = False,
                 progress: bool = True) -> dict:
        """Write the survey; returns {"text": one-line summary, "truth": path, "source" or "store": path}."""
        out = Path(out)
        if n_stars < 1:
            raise ValueError(f"--stars must be at least 1, got {n_stars}")
        if store_only:
            from pairspec.surveys.apogee.store_sim import simulate_apogee_store

            out.mkdir(parents=True, exist_ok=True)
            res = simulate_apogee_store(str(out / "apogee.zarr"), n_stars=n_stars, seed=seed, workers=workers,
                                        progress=progress, truth=str(out / "truth.fits"))
            return {"text": f"wrote {res.n_stars} stars, {res.n_visits} visits to {res.store} ({len(res.skipped)} "
                            f"allStar row(s) left out, as ingest would) and {res.truth}",
                    "store": res.store, "truth": res.truth}
        from pairspec.surveys.apogee.simulate import simulate_apogee

        summary = simulate_apogee(out, n_stars=n_stars, seed=seed, workers=workers, progress=progress)
        return {"text": f"wrote {summary.n_stars} stars, {summary.n_visits} visits in {summary.n_files} files under "
                        f"{out}", "source": str(out), "truth": str(summary.paths["truth"])}


SIMULATOR = ApogeeSimulator()
