"""The optical / near-IR line-spectrum generator: shapes, range, label responses, resolution, smoothness.

`python tests/test_linegen.py` re-derives the generator's calibration constants (STRONG_DLOGGF, and the
hydrogen H_DLOGGF and H_ZETA) from the solar / K-dwarf / A0V equivalent widths below and prints them; the
tests check that the shipped constants still reproduce those numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

from pairspec.surveys import linegen as lg
from pairspec.surveys.linegen import air_to_vacuum, normalized_spectrum, vacuum_to_air

# solar EWs (A), Moore, Minnaert & Houtgast (1966), of the calibrated strong lines (air wavelength)
SOLAR_EW = {3933.663: 20.25, 3968.468: 15.47, 8498.023: 1.46, 8542.091: 3.67, 8662.141: 2.60, 5167.321: 0.935,
            5172.684: 1.259, 5183.604: 1.584, 5889.951: 0.752, 5895.924: 0.564, 4226.728: 1.476, 4045.813: 1.17,
            4271.760: 0.756, 4383.545: 1.008, 4404.750: 0.898, 5269.537: 0.478, 5328.039: 0.375}
# Balmer EW targets (A): Sun (Moore+ 1966), a 5000 K dwarf's H-alpha, A0V H-beta/H-gamma (approximate)
BALMER_EW = [(lg.SUN, 3, 4.02), (lg.SUN, 4, 3.68), ((5000.0, 4.5, 0.0, 0.0), 3, 1.6),
             ((9500.0, 4.0, 0.0, 0.0), 4, 14.0), ((9500.0, 4.0, 0.0, 0.0), 5, 14.0)]


def log_grid(lo, hi, resolution, per_fwhm=3.0):
    return np.exp(np.arange(np.log(lo), np.log(hi), 1.0 / (per_fwhm * resolution)))


def strong_ews(labels, resolution=1e5) -> np.ndarray:
    """(N, L) intrinsic EW (A) of every strong line (metals, then hydrogen) alone, from the same profile code."""
    strong = lg._line_tables(True)["strong"]
    S, sigma, gamma, stark = lg.strong_line_parameters(lg.atmosphere(np.atleast_2d(labels)), strong)
    c, win = strong["wave"], strong["window"]
    out = np.zeros(S.shape)
    for i in range(c.size):
        w = log_grid(c[i] - win[i], c[i] + win[i], resolution)
        segs = lg._segments(w, c[i:i + 1], win[i:i + 1], resolution)
        cut = slice(i, i + 1)
        f = lg._strong_flux(segs, S[:, cut], sigma[:, cut], gamma[:, cut], stark[:, cut], c[cut], win[cut], w.size)
        out[:, i] = np.trapezoid(1.0 - f, w, axis=1)
    return out


def line_index(air_wave=None, upper=None, lower=2) -> int:
    if air_wave is not None:
        return [s[0] for s in lg.STRONG].index(air_wave)
    return len(lg.STRONG) + [(h[0], h[1]) for h in lg.HYDROGEN].index((lower, upper))


def test_shapes_dtype_range_on_survey_grids():
    labels = np.array([[3600, 4.8, 0.2, 0.0], [4600, 2.4, -0.3, 0.2], [5772, 4.44, 0, 0], [7000, 4.0, -1.0, 0.3],
                       [9500, 4.0, 0.0, 0.0], [4300, 1.0, -2.5, 0.4]])
    grids = {"lamost_mrs_blue": (np.linspace(4950, 5350, 4000), 7500.0),
             "lamost_mrs_red": (np.linspace(6300, 6800, 5000), 7500.0),
             "lamost_lrs": (10 ** (3.5682 + 1e-4 * np.arange(3909)), 1800.0),
             "boss": (10 ** (3.5523 + 1e-4 * np.arange(4648)), 2000.0),
             "gaia_rvs": (np.linspace(8460, 8700, 2401), 11500.0)}
    for name, (wave, R) in grids.items():
        f = normalized_spectrum(wave, labels, R)
        assert f.shape == (labels.shape[0], wave.size) and f.dtype == np.float64, name
        assert np.isfinite(f).all() and f.min() > 0.0 and f.max() <= 1.0 + 1e-12, name
        assert (f.min(axis=1) < 0.95).all(), f"{name}: every star has some absorption"
    assert normalized_spectrum(np.linspace(5000, 5100, 50), np.zeros((0, 4)), 5000.0).shape == (0, 50)


def test_deterministic_and_chunk_independent():
    wave = np.linspace(5100, 5300, 1500)
    lab = np.array([[5000, 3.0, -0.5, 0.2], [6200, 4.3, 0.1, 0.0], [4400, 1.5, -1.5, 0.3]])
    a = normalized_spectrum(wave, lab, 7500.0)
    assert np.array_equal(a, normalized_spectrum(wave, lab, 7500.0))
    np.testing.assert_allclose(normalized_spectrum(wave, lab, 7500.0, chunk=1), a, rtol=0, atol=1e-12)
    np.testing.assert_allclose(normalized_spectrum(wave, lab[1], 7500.0)[0], a[1], rtol=0, atol=1e-12)


def test_fe_line_depth_grows_with_metallicity():
    wave = np.linspace(5250, 5290, 800)
    pix = np.argmin(abs(wave - air_to_vacuum(5269.537)))  # Fe I 5269.54 (air)
    feh = np.linspace(-2.5, 0.5, 7)
    lab = np.stack([np.full(7, 4800.0), np.full(7, 2.5), feh, np.zeros(7)], 1)
    depth = 1.0 - normalized_spectrum(wave, lab, 7500.0)[:, pix]
    assert (np.diff(depth) > 0.005).all(), depth
    assert depth[0] < 0.25 and depth[-1] > 0.5, depth


def test_alpha_enhancement_strengthens_mg_not_fe():
    base = np.array([[5000.0, 3.0, -1.0, 0.0], [5000.0, 3.0, -1.0, 0.4]])
    ew = strong_ews(base)
    mg = line_index(5183.604)
    assert ew[1, mg] > 1.2 * ew[0, mg]
    wave = np.linspace(5260, 5280, 400)
    pix = np.argmin(abs(wave - air_to_vacuum(5269.537)))
    f = normalized_spectrum(wave, base, 7500.0)[:, pix]
    assert abs(f[1] - f[0]) / (1 - f[0]) < 0.1, "[alpha/Fe] barely moves an Fe I line (electron donors only)"


def test_balmer_grows_with_teff_and_peaks_near_9500k():
    teff = np.arange(5000.0, 7001.0, 500.0)
    lab = np.stack([teff, np.full(teff.size, 4.2), np.zeros(teff.size), np.zeros(teff.size)], 1)
    hb = strong_ews(lab, 3e4)[:, line_index(upper=4)]
    assert (np.diff(hb) > 0.3).all(), hb
    hot = np.arange(7000.0, 13001.0, 500.0)
    lab = np.stack([hot, np.full(hot.size, 4.0), np.zeros(hot.size), np.zeros(hot.size)], 1)
    hb = strong_ews(lab, 3e4)[:, line_index(upper=4)]
    assert 8500 <= hot[np.argmax(hb)] <= 10500, hot[np.argmax(hb)]
    assert hb.max() > 2.0 * hb[-1] / 1.5 and hb.max() > 10.0, hb


def test_balmer_wings_wider_in_a_dwarfs_and_paschen_in_rvs():
    lab = np.array([[9000.0, 4.5, 0, 0], [9000.0, 3.0, 0, 0], [5000.0, 4.5, 0, 0]])
    ew = strong_ews(lab, 3e4)
    assert ew[0, line_index(upper=5)] > 1.3 * ew[1, line_index(upper=5)]  # H-gamma: Stark wings ~ n_e
    wave = np.linspace(8460, 8700, 2401)
    f = normalized_spectrum(wave, lab[[0, 2]], 11500.0)
    for air in (8665.02, 8598.39, 8545.38):  # Paschen 13, 14, 15: broad in the A star, absent in the K dwarf
        near = np.abs(wave - air_to_vacuum(air)) < 1.0
        assert f[0, near].min() < 0.93, (air, f[0, near].min())
    p14 = np.abs(wave - air_to_vacuum(8598.39)) < 20.0
    assert f[0, p14].mean() < 0.95 and f[1, p14].mean() > f[0, p14].mean()


def test_ca_triplet_wings_wider_at_lower_gravity_in_giants():
    logg = np.array([3.5, 2.5, 1.5, 0.5])
    lab = np.stack([np.full(4, 4800.0), logg, np.full(4, -0.3), np.full(4, 0.1)], 1)
    ew = strong_ews(lab)[:, line_index(8542.091)]
    assert (np.diff(ew) > 0.1).all(), ew
    wave = np.linspace(8520, 8565, 900)
    f = normalized_spectrum(wave, lab, 11500.0)
    wing = np.abs(wave - air_to_vacuum(8542.091) - 3.0) < 0.3  # 3 A red of the core
    assert (np.diff(f[:, wing].mean(1)) < 0).all(), f[:, wing].mean(1)
    # Mg b works the other way (van der Waals wings grow with pressure): dwarfs beat giants
    mg = strong_ews(np.array([[5000, 4.6, 0, 0], [5000, 2.5, 0, 0]]))[:, line_index(5183.604)]
    assert mg[0] > 1.5 * mg[1]


def test_tio_bands_only_in_cool_stars():
    wave = np.linspace(6950, 7200, 1000)
    lab = np.array([[3400, 4.8, 0, 0], [3800, 4.7, 0, 0], [4200, 4.6, 0, 0], [5500, 4.5, 0, 0]])
    f = normalized_spectrum(wave, lab, 2000.0)
    head = air_to_vacuum(7054.2)
    blue = f[:, (wave > head - 30) & (wave < head - 10)].mean(1)
    red = f[:, (wave > head + 10) & (wave < head + 30)].mean(1)
    jump = blue / red
    assert (np.diff(jump) < 0).all() and jump[0] > 1.5 and jump[-1] < 1.02, jump


def test_resolution_scaling():
    wave = log_grid(5150, 5350, 60000.0)
    sun = np.array([lg.SUN])
    inner = (wave > 5180) & (wave < 5320)
    ew, depth = [], []
    for R in (2000.0, 7500.0, 22500.0):
        f = normalized_spectrum(wave, sun, R)[0]
        ew.append(np.trapezoid(1 - f[inner], wave[inner]))
        depth.append(1 - f[inner].min())
    assert np.diff(depth).min() > 0.02, depth  # narrower LSF, deeper lines
    np.testing.assert_allclose(ew, ew[-1], rtol=0.03)  # the LSF moves absorption, it does not make it
    # the LSF is a Gaussian of FWHM lambda / R: the R = 22500 spectrum smoothed to R = 2000 is the R = 2000 one
    from scipy.ndimage import gaussian_filter1d

    f_hi, f_lo = (normalized_spectrum(wave, np.array([[5200.0, 3.5, -0.3, 0.1]]), R)[0] for R in (22500.0, 2000.0))
    dln = np.log(wave[1] / wave[0])
    kernel = np.sqrt(1 / 2000.0**2 - 1 / 22500.0**2) / lg.FWHM_SIGMA / dln  # pixels
    diff = (gaussian_filter1d(f_hi, kernel) - f_lo)[inner]
    # (weak lines, strong lines and bands are convolved apart and multiplied, hence not exactly equal)
    assert np.abs(diff).max() < 0.06 and np.sqrt(np.mean(diff**2)) < 0.01
    assert np.abs(f_hi - f_lo)[inner].max() > 0.2


def test_smooth_in_labels():
    wave = np.linspace(5150, 5300, 1500)
    x0 = np.array([5100.0, 3.1, -0.4, 0.15])
    steps = np.array([2.0, 0.004, 0.002, 0.002])
    f0 = normalized_spectrum(wave, x0[None], 7500.0)[0]
    for k in range(4):
        d = np.zeros(4)
        d[k] = steps[k]
        fp, fm = normalized_spectrum(wave, np.stack([x0 + d, x0 - d]), 7500.0)
        first = np.abs(fp - fm).max()
        second = np.abs(fp - 2 * f0 + fm).max()
        assert 1e-5 < first < 0.02, (k, first)  # every label matters, a little
        assert second < 0.05 * first, (k, second, first)  # locally linear: no kinks or steps


def test_chi_square_fit_recovers_labels():
    from scipy.optimize import least_squares

    wave = np.linspace(4950, 5350, 3000)
    truth = np.array([5200.0, 3.0, -0.5, 0.2])
    rng = np.random.default_rng(7)
    obs = normalized_spectrum(wave, truth[None], 7500.0)[0] + rng.normal(0, 0.01, wave.size)  # S/N 100
    scale = np.array([1000.0, 1.0, 1.0, 1.0])

    def resid(p):
        return (normalized_spectrum(wave, (p * scale)[None], 7500.0)[0] - obs) / 0.01

    fit = least_squares(resid, np.array([5600.0, 3.8, -0.1, 0.0]) / scale, diff_step=1e-4)
    est = fit.x * scale
    assert abs(est[0] - truth[0]) < 40 and abs(est[1] - truth[1]) < 0.12, est
    assert abs(est[2] - truth[2]) < 0.05 and abs(est[3] - truth[3]) < 0.05, est


def test_air_vacuum_conversions():
    assert abs(air_to_vacuum(6562.79) - 6564.61) < 0.02  # H-alpha, NIST
    w = np.linspace(3600, 10400, 50)
    np.testing.assert_allclose(air_to_vacuum(vacuum_to_air(w)), w, rtol=0, atol=2e-3)
    wave = np.linspace(8480, 8560, 1200)
    lab = np.array([[4800.0, 2.5, 0.0, 0.0]])
    vac = normalized_spectrum(wave, lab, 11500.0)
    air = normalized_spectrum(vacuum_to_air(wave), lab, 11500.0, vacuum=False)
    np.testing.assert_allclose(air, vac, rtol=0, atol=6e-3)  # fine-grid sampling differs by a fraction of a step
    shifted = normalized_spectrum(wave, lab, 11500.0, vacuum=False)  # air lines on a vacuum grid: offset ~2.3 A
    assert np.abs(shifted - vac).max() > 0.1


def test_hydrogen_wavelengths_follow_rydberg():
    for lower, upper, air in lg.HYDROGEN:
        vac = 1e8 / (109677.58 * (1 / lower**2 - 1 / upper**2))
        assert abs(air_to_vacuum(air) - vac) < 0.15, (lower, upper)


def test_calibration_constants_reproduce_their_targets():
    ew = strong_ews(np.array([lg.SUN]))[0]
    for air, target in SOLAR_EW.items():
        assert abs(ew[line_index(air)] / target - 1) < 0.03, (air, ew[line_index(air)], target)
    for labels, upper, target in BALMER_EW:
        got = strong_ews(np.array([labels]), 6e4)[0, line_index(upper=upper)]
        assert 0.55 < got / target < 1.45, (labels, upper, got, target)  # a one-layer model: the trend, roughly


def test_bad_input_is_a_clear_error():
    wave = np.linspace(5000, 5100, 100)
    with pytest.raises(ValueError, match="labels must be"):
        normalized_spectrum(wave, np.zeros((3, 3)), 5000.0)
    with pytest.raises(ValueError, match="NaN"):
        normalized_spectrum(wave, [[5000, np.nan, 0, 0]], 5000.0)
    with pytest.raises(ValueError, match="teff = 1e"):
        normalized_spectrum(wave, [[1e6, 4, 0, 0]], 5000.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        normalized_spectrum(wave[::-1], [[5000, 4, 0, 0]], 5000.0)
    with pytest.raises(ValueError, match="resolution"):
        normalized_spectrum(wave, [[5000, 4, 0, 0]], -1.0)


def test_a_batch_gives_the_spectra_of_one_star_at_a_time():
    """Stars are computed `chunk` at a time: the batch must not mix stars (how fast: benchmarks/simulate_speed.py)."""
    rng = np.random.default_rng(1)
    n = 40
    lab = np.stack([rng.uniform(3500, 8000, n), rng.uniform(0.5, 5, n), rng.uniform(-2, 0.5, n),
                    rng.uniform(-0.1, 0.4, n)], 1)
    wave = 10 ** (3.5682 + 1e-4 * np.arange(4000))
    batched = normalized_spectrum(wave, lab, 1800.0, chunk=16)
    single = np.concatenate([normalized_spectrum(wave, lab[i:i + 1], 1800.0) for i in (0, 17, 39)])
    np.testing.assert_allclose(batched[[0, 17, 39]], single, rtol=0, atol=1e-12)


def calibrate() -> None:
    """Re-derive STRONG_DLOGGF, H_DLOGGF and H_ZETA; print them for pairspec/surveys/linegen.py."""
    from scipy.optimize import least_squares

    sun = np.array([lg.SUN])
    d = np.zeros(len(lg.STRONG))
    for _ in range(12):  # Newton on log EW, d log EW / d log gf ~ 0.5 for damped lines
        lg.STRONG_DLOGGF = tuple(d)
        lg._line_tables.cache_clear()
        ew = strong_ews(sun)[0]
        for air, target in SOLAR_EW.items():
            d[line_index(air)] += 2.0 * np.log10(target / ew[line_index(air)])
    print("STRONG_DLOGGF = (" + ", ".join(f"{x:.3f}" for x in d) + ")")
    stars = np.array([b[0] for b in BALMER_EW])

    def resid(p):  # H_STARK stays near its laboratory value (see linegen); strength and H_ZETA are fitted
        lg.H_ZETA, lg.H_DLOGGF = p
        ew = strong_ews(stars, 6e4)
        return [np.log(ew[i, line_index(upper=b[1])] / b[2]) for i, b in enumerate(BALMER_EW)]

    p = least_squares(resid, [lg.H_ZETA, lg.H_DLOGGF], diff_step=1e-3, bounds=([0.2, -12], [1.0, 3])).x
    print(f"H_DLOGGF, H_ZETA = {p[1]:.3f}, {p[0]:.3f}")


if __name__ == "__main__":
    calibrate()
