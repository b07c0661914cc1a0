"""`pairspec simulate sdssv OUT`: the registered simulator of the SDSS-V MWM survey (files only: there is no
direct-to-store path, store_only raises ValueError)."""

from __future__ import annotations

from pathlib import Path

from pairspec.surveys.sdssv.layout import DEFAULT_PIPELINES
from pairspec.surveys.simtools import render_all


class SdssvSimulator:
    name = "sdssv"
    description = ("an astra tree: spectra/visit|star/{g1}/{g2}/mwmVisit|mwmStar-0.8.1-<sdss_id>.fits, "
                   "summary/astraAllStarASPCAP|BossNet-0.8.1.fits.gz, truth.fits beside it")

    def simulate(self, out, n_stars: int = 500, seed: int = 1, workers: int = 1, store_only: bool = False,
                 progress: bool = True) -> dict:
        """Write the survey; returns {"text": one-line summary, "truth": path, "source": path}."""
        if store_only:
            raise ValueError("not supported: the sdssv simulator writes files only (ingest them with "
                             "`pairspec ingest sdssv OUT STORE`)")
        if n_stars < 1:
            raise ValueError(f"--stars must be at least 1, got {n_stars}")
        return simulate_sdssv(Path(out), n_stars=n_stars, seed=seed, workers=workers, progress=progress)


def simulate_sdssv(out: Path, n_stars: int = 500, seed: int = 1, workers: int = 1, progress: bool = True) -> dict:
    """The whole tree under `out`; the same seed gives the same files for any number of workers."""
    from pairspec.surveys.sdssv import sim_files, sim_summary
    from pairspec.surveys.sdssv.simulate import V, boss_available, plan_survey

    out.mkdir(parents=True, exist_ok=True)
    stars, tasks = plan_survey(n_stars, seed, str(out))
    from pairspec.surveys.sdssv.simulate import render_star

    results = render_all(render_star, tasks, workers, progress, "simulating mwmVisit/mwmStar files")
    summary = out / "summary"
    aspcap = sim_summary.aspcap_columns(stars, results, seed, orphan=n_stars >= 10)
    bossnet = sim_summary.bossnet_columns(stars, results, seed)
    sim_files.write_summary(summary / f"astraAllStar{DEFAULT_PIPELINES['apogee']}-{V}.fits.gz",
                            DEFAULT_PIPELINES["apogee"], {}, aspcap)
    sim_files.write_summary(summary / f"astraAllStar{DEFAULT_PIPELINES['boss']}-{V}.fits.gz",
                            DEFAULT_PIPELINES["boss"], bossnet, {})
    truth = sim_summary.write_truth(out / "truth.fits", stars)
    n_visits = sum(r["n_visits"] for r in results)
    boss_note = "" if boss_available() else " (no BOSS spectra: pairspec.surveys.linegen is not installed)"
    return {"text": f"wrote {n_stars} stars, {n_visits} visits in {2 * n_stars} mwmVisit/mwmStar files under "
                    f"{out}{boss_note}", "source": str(out), "truth": str(truth)}


SIMULATOR = SdssvSimulator()
