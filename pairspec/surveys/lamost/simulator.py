"""`pairspec simulate lamost OUT`: the registered simulator object of the LAMOST survey."""

from __future__ import annotations

from pathlib import Path


class LamostSimulator:
    name = "lamost"
    description = ("a LAMOST tree: mrs/<LMJD>/<PLANID>/med-*.fits (DR7 and DR9 layouts), lrs/.../spec-*.fits (DR1, "
                   "DR2-8 and DR9 layouts), lamost_MRS_catalogue.fits / lamost_LRS_catalogue.fits (labels, rv), "
                   "truth.fits (MRS grid) and truth_lrs.fits (LRS grid)")

    def simulate(self, out, n_stars: int = 500, seed: int = 1, workers: int = 1, store_only: bool = False,
                 progress: bool = True) -> dict:
        """Write the survey; returns {"text", "truth" (MRS), "truth_lrs", "source"}. store_only: not supported."""
        if store_only:
            raise ValueError("lamost: --store-only is not supported; simulate the files and run pairspec ingest")
        if n_stars < 1:
            raise ValueError(f"--stars must be at least 1, got {n_stars}")
        from pairspec.surveys.lamost.simulate import simulate_lamost

        s = simulate_lamost(Path(out), n_stars=n_stars, seed=seed, workers=workers, progress=progress)
        return {"text": f"wrote {s.n_stars} stars: {s.n_mrs_files} MRS files ({s.n_exposures} exposures) and "
                        f"{s.n_lrs_files} LRS files under {s.out}; ingest with `pairspec ingest lamost {s.out} STORE` "
                        f"(--option resolution=lrs for the LRS files)",
                "source": str(s.out), "truth": str(s.truth), "truth_lrs": str(s.truth_lrs)}


SIMULATOR = LamostSimulator()
