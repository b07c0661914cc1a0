"""A fast, deterministic generator of continuum-normalised optical / near-IR stellar spectra.

Why: the optical and Ca-triplet simulators (LAMOST MRS/LRS, SDSS-V BOSS, Gaia RVS) need spectra outside
APOGEE's H band, and no small, openly licensed optical emulator could be shipped (docs/adding-a-survey.md).
This is a line-by-line, SINGLE-LAYER LTE model. Each star is one line-forming layer: T = 0.9 Teff, gas and
electron pressure from hydrostatic equilibrium at continuum optical depth 0.3 (H-, H bound-free and
electron-scattering opacity, Saha ionisation of H and 15 metals, solved by fixed-point iteration). A
line's integrated optical depth is its Saha-Boltzmann lower-level population over that continuum opacity.
How each label acts:
- Teff: excitation exp(-chi/kT), ionisation, continuum opacity, molecular dissociation; hydrogen lines peak
  near 9500 K (n=2 population against H-/H bound-free opacity, Stark wings growing with n_e);
- log g: electron pressure (ionisation balance: ion lines and the Ca triplet grow at low g), van der Waals
  wings (Mg b, Na D, Ca I 4227 wider in dwarfs), Stark wings of H (wider in A dwarfs), MgH (dwarfs);
- [Fe/H]: every metal and the electron donors; [alpha/Fe]: Mg, Si, Ca, Ti, O (and so TiO).
Weak lines follow a Voigt curve of growth (Doppler table + damping, Rodgers & Williams 1974) with a
microturbulence xi(Teff, log g); strong lines are computed profile by profile.

Lines (air wavelengths, converted to vacuum unless vacuum=False; the Ciddor/Morton relations). Profile by
profile: H Balmer H3-H18 and Paschen P7-P18, Ca II H&K and the triplet, Mg b, Na D, Ca I 4227, K I
7665/7699, Na I 8183/8195 and the six strongest Fe I lines (4046-5328 A); as weak lines, ~40 named Fe, Mg,
Si, Ca, Ti, Cr, Mn, Ba, Sr, Al lines. All at their NIST wavelengths, with approximate gf.
The strong lines' gf are scaled ("astrophysical gf", STRONG_DLOGGF) so the model Sun has their observed
solar equivalent widths (Moore, Minnaert & Houtgast 1966), and the hydrogen constants are fitted to solar,
K-dwarf and A0V Balmer EWs (tests/test_linegen.py holds both calibrations). The weak-line forest is a
DETERMINISTIC PSEUDO LINE LIST (fixed seed; species, excitation and strength drawn from plausible
distributions, density ~ lambda^-3): its wavelengths are made up. Molecules: smooth band envelopes (TiO
heads, CH G band, MgH) whose strength follows dissociation equilibrium (C locked in CO in cool stars).

Rendering: weak lines are unit-area Gaussians of the instrumental + 2.5 km/s macroturbulent width that
carry their EW (the area is solved so exp(-a g) has it; a sparse matrix product; blends combine as
exp(-sum)); strong lines are computed on a fine
log-lambda grid with a unit-area Voigt-like profile (exact far wings; Holtsmark-like Stark wings for H),
F = r + (1 - r) exp(-tau) with a residual core r, convolved with a Gaussian LSF of resolving power
R = lambda / FWHM (constant) and interpolated to the pixels. The three parts (weak lines, strong lines,
bands) are broadened apart and multiplied, so equivalent widths hold to a few per cent across R, not
exactly. Everything is smooth in the labels. Known misfits: the model Sun's H-beta is ~40 % weaker than
observed (H-alpha ~30 % stronger), and the Ca triplet has its minimum near log g 3.5 (giants and
supergiants stronger, as observed, but dwarfs regain strength from van der Waals wings).

What it is NOT: not a model atmosphere (one layer, no temperature structure), no NLTE, no chromospheric
cores or emission, no rotation, no hyperfine/isotopic structure, no molecular rotational lines, continuum
opacity taken at 5000 A for every line, approximate partition functions, and only normalised spectra (no
flux continuum or Balmer jump). Calibrated for 3500-10000 K, log g 0-5, [Fe/H] -2.5..+0.5 over
3600-10400 A; outside that it returns smooth numbers that are less like real stars.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

C_KMS = 299792.458
K_EV = 8.617333e-5  # Boltzmann constant, eV / K
K_CGS = 1.380649e-16
PI_RE = 8.8528e-13  # pi e^2 / (m_e c^2), cm
M_H = 1.6726e-24
FWHM_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
V_MACRO = 2.5  # km/s, Gaussian sigma of macroturbulence (line shape only)
R_CORE = 0.15  # residual intensity of a saturated strong-line core (source function at the surface)
TAU_LAYER = 0.3  # continuum optical depth of the line-forming layer
LINE_SCALE = 0.1  # line column relative to the layer's continuum column (Eddington-Barbier-like; solar)
SUN = (5772.0, 4.44, 0.0, 0.0)

# name, solar log eps (Asplund+ 2009), alpha?, mass (amu), I1, I2 (eV), u0, u1, u2 (partition fns, constant)
from pairspec.surveys.linegen_lines import (
    BANDS,
    CO_LOGK,
    FOREST_LOGTAU,
    FOREST_SEED,
    FOREST_SKEW,
    GAUSS_TAU_MAX,
    H_DLOGGF,
    H_POWER,
    H_STARK,
    H_WINDOW,
    H_ZETA,
    HOLTSMARK_NORM,
    HYDROGEN,
    MOLECULES,
    N_FOREST,
    NAMED,
    R_BAND,
    SP,
    SPECIES,
    STRONG,
    STRONG_DLOGGF,
)


def air_to_vacuum(wave_air) -> np.ndarray:
    """Air -> vacuum wavelength (A): the VALD/IAU inversion (N. Piskunov) of Ciddor (1996), > 2000 A."""
    w = np.asarray(wave_air, dtype=np.float64)
    s2 = (1e4 / w) ** 2
    return w * (1 + 8.336624212083e-5 + 2.408926869968e-2 / (130.1065924522 - s2)
                + 1.599740894897e-4 / (38.92568793293 - s2))


def vacuum_to_air(wave_vac) -> np.ndarray:
    """Vacuum -> air wavelength (A), Morton (2000) after Ciddor (1996), > 2000 A."""
    w = np.asarray(wave_vac, dtype=np.float64)
    s2 = (1e4 / w) ** 2
    return w / (1 + 8.34254e-5 + 2.406147e-2 / (130 - s2) + 1.5998e-4 / (38.9 - s2))


def _uniform(seed: int, n: int, k: int) -> np.ndarray:
    """(n, k) uniforms in [0, 1) from PCG64's raw stream, which numpy keeps stable across versions."""
    raw = np.random.PCG64(seed).random_raw(n * k)
    return ((raw >> np.uint64(11)).astype(np.float64) * 2.0**-53).reshape(n, k)


@lru_cache(maxsize=1)
def forest_lines() -> dict[str, np.ndarray]:
    """The pseudo line list (deterministic, MADE-UP wavelengths): air A, species index, stage, chi, log gf.

    Density ~ lambda^-3 over 3000-25000 A. Each line's strength is drawn as its line-centre optical depth
    in the model Sun (log10 tau0 in FOREST_LOGTAU) and turned into a log gf through the solar layer, so the
    solar EW distribution is set directly and every other star follows the physics of species and chi."""
    u = _uniform(FOREST_SEED, N_FOREST, 4)
    lo, hi = 3000.0, 25000.0
    wave = (lo**-2 - u[:, 0] * (lo**-2 - hi**-2)) ** -0.5
    names = ("Fe", "Fe", "Fe", "Ti", "Cr", "Ni", "Ca", "Si", "Mg", "Mn", "Fe", "Ti")
    pick = np.minimum((u[:, 1] * len(names)).astype(int), len(names) - 1)
    species = np.array([SP[names[p]] for p in pick])
    stage = (pick >= 10).astype(int)  # the last two entries are Fe II and Ti II
    chi = np.where(stage == 0, 0.5 + 4.5 * u[:, 2] ** 0.7, 2.0 + 3.0 * u[:, 2])
    log_tau = FOREST_LOGTAU[0] + (FOREST_LOGTAU[1] - FOREST_LOGTAU[0]) * u[:, 3] ** FOREST_SKEW
    sun = atmosphere(np.array([SUN]))
    ln_tau = _ln_tau_area(sun, species, stage, chi, np.zeros(N_FOREST), wave)[0] \
        - np.log(np.sqrt(np.pi) * _doppler(sun, species, wave)[0])
    return {"wave": wave, "species": species, "stage": stage, "chi": chi, "loggf": log_tau - ln_tau / np.log(10)}


def _check_labels(labels) -> np.ndarray:
    lab = np.asarray(labels, dtype=np.float64)
    lab = lab[None, :] if lab.ndim == 1 and lab.size == 4 else lab
    if lab.ndim != 2 or lab.shape[1] != 4:
        raise ValueError(f"labels must be (N, 4) [teff, logg, fe_h, alpha_fe]; got shape {lab.shape}")
    if not np.isfinite(lab).all():
        raise ValueError("labels contain NaN or inf; every star needs finite teff, logg, fe_h, alpha_fe")
    for j, (name, lo, hi) in enumerate((("teff", 2000, 50000), ("logg", -1, 6), ("fe_h", -5, 1.5),
                                        ("alpha_fe", -1, 1.5))):
        bad = (lab[:, j] < lo) | (lab[:, j] > hi)
        if bad.any():
            raise ValueError(f"{name} = {lab[bad, j][0]:g} is outside the generator's domain [{lo}, {hi}]")
    return lab


def _saha(T: np.ndarray, chi: float, u_ratio: float) -> np.ndarray:
    """Saha Phi(T) = N_{j+1} P_e / N_j in dyn cm^-2 (Gray's 0.6665 form)."""
    return 0.6665 * u_ratio * T**2.5 * 10.0 ** (-5040.0 / T * chi)


def atmosphere(labels) -> dict[str, np.ndarray]:
    """The line-forming layer of each star: T, P_g, P_e, continuum opacity per H nucleus, ion fractions.

    Hydrostatic equilibrium at continuum optical depth TAU_LAYER, P_g = tau g (1.4 m_H) / kappa, kappa per
    H nucleus from H- bound-free (5000 A), H bound-free from n >= 3 and electron scattering, and
    P_e = P_g E / (1.085 + E) with E electrons per H from the Saha balance of H and the metals; 30 damped
    fixed-point steps on log P_e converge to < 1e-6 dex over 2000-50000 K.
    """
    lab = _check_labels(labels)
    teff, logg, feh, afe = lab.T
    T = 0.9 * teff
    kT = K_EV * T
    g = 10.0**logg
    ab = np.stack([10.0 ** (s[1] - 12 + (0 * feh if s[0] == "H" else feh + s[2] * afe)) for s in SPECIES], 1)
    phi1 = np.stack([_saha(T, s[4], s[7] / s[6]) for s in SPECIES], 1)
    phi2 = np.stack([_saha(T, s[5], s[8] / s[7]) for s in SPECIES], 1)
    h_minus = 3.5e-17 / (1.333 * T**2.5 * 10.0 ** (-0.754 * 5040.0 / T))  # H- bf per H per unit P_e
    n = np.arange(3, 8)[None, :]
    h_bf = (7.91e-18 * n * (5000.0 / (911.27 * n**2)) ** 3 * n**2
            * np.exp(-13.598 * (1 - 1.0 / n**2) / kT[:, None])).sum(1)  # per neutral H at 5000 A

    def layer(pe):
        r1, r2 = phi1 / pe[:, None], phi2 / pe[:, None]
        f0 = 1.0 / (1.0 + r1 + r1 * r2)
        elec = (ab * (1.0 - f0)).sum(1)
        kappa = f0[:, 0] * (h_minus * pe + h_bf) + 6.652e-25 * elec
        return f0, r1 * f0, elec, kappa, TAU_LAYER * g * 1.4 * M_H / kappa

    log_pe = np.log10(1e-4 * g**0.5 + 1e-6)
    for _ in range(30):
        *_, elec, kappa, pg = layer(10.0**log_pe)
        log_pe = 0.5 * (log_pe + np.log10(pg * elec / (1.085 + elec)))
    pe = 10.0**log_pe
    f0, f1, elec, kappa, pg = layer(pe)
    # microturbulence (km/s): a smooth max of a dwarf branch rising with Teff and the giants' 2.48 - 0.325 logg
    xi = 0.25 * np.logaddexp(4.0 * (1.0 + 4e-4 * (teff - 5500.0)), 4.0 * (2.48 - 0.325 * logg))
    return {"T": T, "kT": kT, "pe": pe, "pg": pg, "kappa": kappa, "ab": ab, "f0": f0, "f1": f1,
            "n_h": pg / (K_CGS * T) / (1.085 + elec), "n_e": pe / (K_CGS * T), "x_hi": f0[:, 0], "xi": xi}


def _ln_tau_area(atm, species, stage, chi, loggf, wave_aa) -> np.ndarray:
    """(N, L) ln of the integrated line optical depth S (A) = pi r_e lambda^2 gf N_lower / kappa (per H
    nucleus) x LINE_SCALE, built in log space from per-(star, species, stage) factors: one gather, one sum."""
    species, stage = np.asarray(species), np.asarray(stage)
    u = np.array([[s[6], s[7]] for s in SPECIES])
    ln_b = np.log(atm["ab"])[:, :, None] + np.log(np.stack([atm["f0"], atm["f1"]], 2) / u[None]) \
        - np.log(atm["kappa"])[:, None, None]
    base = np.log(LINE_SCALE * PI_RE * 1e-8 * np.asarray(wave_aa) ** 2) + np.log(10.0) * np.asarray(loggf)
    return base[None, :] + ln_b.reshape(ln_b.shape[0], -1)[:, species * 2 + stage] \
        - np.asarray(chi)[None, :] / atm["kT"][:, None]


def _doppler(atm, species, wave_aa) -> np.ndarray:
    """(N, L) Doppler width Delta lambda_D (A): thermal + microturbulence."""
    mass = np.array([s[3] for s in SPECIES])
    v = np.sqrt(2 * K_CGS * atm["T"][:, None] / (mass[None, :] * 1.6605e-24) / 1e10 + atm["xi"][:, None] ** 2)
    return v[:, np.asarray(species)] * (np.asarray(wave_aa) / C_KMS)[None, :]


def _damping(atm, log_gamma6, wave_aa, extra=0.0) -> np.ndarray:
    """(N, L) Lorentzian HWHM (A): radiative 1e8 s^-1 + van der Waals 10^logG6 n_H (T/1e4)^0.3 (+ extra rate)."""
    rate = 1e8 + 10.0 ** np.asarray(log_gamma6)[None, :] * (atm["n_h"] * (atm["T"] / 1e4) ** 0.3)[:, None] + extra
    return rate * (np.asarray(wave_aa) ** 2 * 1e-8 / (4 * np.pi * C_KMS * 1e5))[None, :]


@lru_cache(maxsize=1)
def _doppler_cog_table() -> tuple[float, float, np.ndarray]:
    """Pure-Doppler EW in units of Delta lambda_D, int 1 - exp(-tau0 e^-x^2) dx, on a uniform ln tau0 grid
    (start, step, values): the lookup needs one subtraction of logs and no power."""
    ln_tau = np.linspace(np.log(1e-4), np.log(1e14), 2001)
    x = np.linspace(0.0, 7.0, 1401)
    vals = 1.0 - np.exp(-np.exp(ln_tau)[:, None] * np.exp(-x[None, :] ** 2))
    return float(ln_tau[0]), float(ln_tau[1] - ln_tau[0]), 2.0 * np.trapezoid(vals, x, axis=1)


def _table_lookup(ln_arg, start, step, table) -> np.ndarray:
    """Linear interpolation in a table on a uniform grid (start, step), clamped at both ends."""
    pos = (ln_arg - start) / step
    np.clip(pos, 0.0, table.size - 1.000001, out=pos)
    i = pos.astype(np.intp)
    pos -= i
    lo = table[i]
    return lo + (table[i + 1] - lo) * pos


def curve_of_growth(ln_S, doppler, gamma) -> np.ndarray:
    """Equivalent width (A) of a Voigt line of integrated optical depth S = exp(ln_S): W_D from the Doppler
    table, W_L = S / sqrt(1 + u), u = S / 4 gamma (weak and square-root limits), combined as Rodgers &
    Williams (1974): W^2 = W_D^2 + W_L^2 - (W_D W_L / S)^2 = (W_D^2 u + S^2) / (1 + u)."""
    S = np.exp(ln_S)
    start, step, table = _doppler_cog_table()
    w_d = np.minimum(doppler * _table_lookup(ln_S - np.log(np.sqrt(np.pi) * doppler), start, step, table), S)
    u = S / (4.0 * gamma)
    return np.sqrt((w_d * w_d * u + S * S) / (1.0 + u))


@lru_cache(maxsize=1)
def _inverse_cog_table() -> tuple[float, float, np.ndarray]:
    """ln tau0 as a function of ln D (the Doppler curve of growth inverted) on a uniform ln D grid."""
    start, step, table = _doppler_cog_table()
    ln_d = np.linspace(np.log(table[0]), np.log(table[-1]), 4001)
    ln_tau = np.interp(ln_d, np.log(table), start + step * np.arange(table.size))
    return float(ln_d[0]), float(ln_d[1] - ln_d[0]), ln_tau


def _gauss_amplitude(W, sigma, cap: bool = True) -> np.ndarray:
    """Area a of a Gaussian of width sigma whose transmission exp(-a g) has equivalent width W: the inverse
    of the Doppler curve of growth, W = sqrt(2) sigma D(a / (sqrt(2 pi) sigma)), so an isolated weak line
    keeps its EW at every resolution while blends still saturate. The peak optical depth is softly capped
    at GAUSS_TAU_MAX: a line much wider than the LSF (damping wings of a cool dwarf) cannot be one
    Gaussian, and it keeps a core instead of a black gap (its EW then falls short)."""
    start, step, table = _inverse_cog_table()
    x = W / (np.sqrt(2.0) * sigma)
    big = np.exp(_table_lookup(np.log(np.maximum(x, 1e-300)), start, step, table))
    tau = np.where(x < np.exp(start), x / np.sqrt(np.pi), big)
    if cap:
        tau = tau / np.sqrt(1.0 + (tau / GAUSS_TAU_MAX) ** 2)
    return tau * (np.sqrt(2.0 * np.pi) * sigma)


def _kramers_f(lower: int, upper: int) -> float:
    """Hydrogen absorption oscillator strength: Kramers' semi-classical value x Gaunt factor 0.8 (within
    ~20 % of NIST for the lines used)."""
    return 0.8 * 32.0 / (3.0 * np.sqrt(3.0) * np.pi) / (lower**5 * upper**3) * (1.0 / lower**2 - 1.0 / upper**2) ** -3


@lru_cache(maxsize=4)
def _line_tables(vacuum: bool) -> dict[str, dict]:
    """Weak (named + pseudo forest), strong (metals, then hydrogen) and band tables in the grid's medium."""
    conv = air_to_vacuum if vacuum else (lambda w: np.asarray(w, dtype=np.float64))
    fo = forest_lines()
    col = lambda rows, k, dtype=float: np.array([r[k] for r in rows], dtype=dtype)
    weak = {"wave": conv(np.concatenate([col(NAMED, 0), fo["wave"]])),
            "species": np.concatenate([[SP[r[1]] for r in NAMED], fo["species"]]).astype(int),
            "stage": np.concatenate([col(NAMED, 2, int), fo["stage"]]),
            "chi": np.concatenate([col(NAMED, 3), fo["chi"]]), "loggf": np.concatenate([col(NAMED, 4), fo["loggf"]])}
    weak["log_g6"] = np.where(weak["stage"] == 0, -7.5, -7.8)
    metal = {"species": np.array([SP[r[1]] for r in STRONG]), "stage": col(STRONG, 2, int), "chi": col(STRONG, 3),
             "loggf": col(STRONG, 4) + np.array(STRONG_DLOGGF), "log_g6": col(STRONG, 5)}
    hyd = {"lower": col(HYDROGEN, 0, int), "upper": col(HYDROGEN, 1, int),
           "f": np.array([_kramers_f(h[0], h[1]) for h in HYDROGEN])}
    strong = {"wave": conv(np.concatenate([col(STRONG, 0), col(HYDROGEN, 2)])), "n_metal": len(STRONG),
              "window": np.concatenate([col(STRONG, 6), [H_WINDOW.get(h[1], 60.0) if h[0] == 2 else 60.0
                                                         for h in HYDROGEN]]), "metal": metal, "hyd": hyd}
    bands = {"wave": conv(col(BANDS, 0)), "dir": col(BANDS, 2), "length": col(BANDS, 3),
             "strength": col(BANDS, 4), "mol": [b[1] for b in BANDS]}
    return {"weak": weak, "strong": strong, "bands": bands}


def strong_line_parameters(atm, strong) -> tuple[np.ndarray, ...]:
    """(N, L) integrated optical depth S (A), Doppler-core sigma, Lorentzian HWHM and Stark half-width (A)
    of the strong lines (metals, then hydrogen).

    Hydrogen: S ~ N_l / kappa with N_l / N_HI = l^2 exp(-(E_l - (1 - H_ZETA) E_2) / kT): the wings form over
    a range of depths, deeper and hotter (relative to Teff) in cooler stars, which one layer cannot follow;
    damping the n=2 Boltzmann factor stands for it (Paschen / Balmer keeps the full E_3 - E_2). Holtsmark
    widths grow as n_e^(2/3) lambda^2 ((u^2 - l^2) / 5)^H_POWER; van der Waals as for the metals."""
    m, h, nm = strong["metal"], strong["hyd"], strong["n_metal"]
    wm, wh = strong["wave"][:nm], strong["wave"][nm:]
    s_m = np.exp(_ln_tau_area(atm, m["species"], m["stage"], m["chi"], m["loggf"], wm))
    low = h["lower"][None, :]
    pop = low**2 * np.exp(-(13.598 * (1.0 - 1.0 / low**2) - 10.199 * (1.0 - H_ZETA)) / atm["kT"][:, None])
    s_h = PI_RE * 1e-8 * 10.0**H_DLOGGF * (h["f"] * wh**2)[None, :] * pop * (atm["x_hi"] / atm["kappa"])[:, None]
    growth = ((h["upper"] ** 2 - h["lower"] ** 2) / 5.0) ** H_POWER
    stark_h = H_STARK * atm["n_e"][:, None] ** (2.0 / 3.0) * (growth * wh**2)[None, :]
    g_h = _damping(atm, np.full(wh.size, -7.5), wh)
    dopp = np.concatenate([_doppler(atm, m["species"], wm), _doppler(atm, np.zeros(wh.size, int), wh)], 1)
    sigma = dopp / np.sqrt(2.0)
    gamma = np.concatenate([_damping(atm, m["log_g6"], wm), g_h], 1)
    return np.concatenate([s_m, s_h], 1), sigma, gamma, np.concatenate([np.zeros_like(s_m), stark_h], 1)


def _tau_profile(x, S, sigma, width, gamma, stark=None) -> np.ndarray:
    """Optical depth of a line of integrated optical depth S whose Gaussian core (true sigma) is drawn with
    `width` >= sigma (macroturbulence and fine-grid sampling): (1 - s) [core + b S Lorentz(gamma + width)]
    + s S H(stark + width), b = gamma / (gamma + width), s = (stark / (stark + width))^1.5, with H(a) =
    1 / ((1 + |x/a|^2.5) 2.64 a) a Holtsmark-like quasi-static Stark wing. The core's area is re-solved
    (_gauss_amplitude) so its equivalent width is that of the true core: a broadened core keeps its EW.
    Unit area and exact far wings (gamma / pi x^2, stark^1.5 / 2.64 |x|^2.5), Gauss / Lorentz limits."""
    hw = gamma + width
    b = gamma / hw
    s = 0.0 if stark is None else (stark / (stark + width)) ** 1.5
    core = (1.0 - s) * (1.0 - b) * S
    start, step, table = _doppler_cog_table()
    dl = np.sqrt(2.0) * sigma
    ln_tau0 = np.log(np.maximum(core, 1e-300) / (np.sqrt(np.pi) * dl))
    w_core = np.minimum(dl * _table_lookup(ln_tau0, start, step, table), core)
    tau = _gauss_amplitude(w_core, width, cap=False) * np.exp(-0.5 * (x / width) ** 2) / (np.sqrt(2 * np.pi) * width)
    tau += ((1.0 - s) * b * S * hw / np.pi) / (x * x + hw * hw)
    if stark is not None:
        a = stark + width
        t = np.abs(x) / a
        tau += (s * S / (HOLTSMARK_NORM * a)) / (1.0 + t * t * np.sqrt(t))
    return tau


def _weak_matrix(wave, line_wave, sigma):
    """Sparse (npix, L) matrix of unit-area Gaussians of width sigma (A) sampled at the pixels."""
    from scipy.sparse import csr_matrix

    lo = np.searchsorted(wave, line_wave - 5 * sigma)
    counts = np.searchsorted(wave, line_wave + 5 * sigma) - lo
    cols = np.repeat(np.arange(line_wave.size), counts)
    rows = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    x = (wave[rows] - line_wave[cols]) / sigma[cols]
    vals = np.exp(-0.5 * x**2) / (np.sqrt(2 * np.pi) * sigma[cols])
    return csr_matrix((vals, (rows, cols)), shape=(wave.size, line_wave.size))


def _segments(wave, centers, windows, resolution):
    """Fine log-lambda grids (2.5 points per LSF sigma) over the merged windows of the strong lines, with
    each segment's output pixels, interpolation indices and the lines it holds (index, first, stop)."""
    dln = 1.0 / (FWHM_SIGMA * resolution * 2.5)
    pad = 6.0 / (FWHM_SIGMA * resolution)
    keep = np.flatnonzero((centers + windows > wave[0]) & (centers - windows < wave[-1]))
    merged: list[list] = []
    for a, b, i in sorted((np.log(centers[i] - windows[i]) - pad, np.log(centers[i] + windows[i]) + pad, i)
                          for i in keep):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
            merged[-1][2].append(i)
        else:
            merged.append([a, b, [i]])
    out, lnw = [], np.log(wave)
    for a, b, lines in merged:
        fine = np.arange(a, b + dln, dln)
        pix = np.flatnonzero((lnw >= fine[0]) & (lnw <= fine[-1]))
        if pix.size:
            j = np.clip(np.searchsorted(fine, lnw[pix]) - 1, 0, fine.size - 2)
            lam = np.exp(fine)
            spans = [(i, np.flatnonzero(np.abs(lam - centers[i]) < windows[i])) for i in lines]
            out.append((lam, pix, j, (lnw[pix] - fine[j]) / dln, [(i, s[0], s[-1] + 1) for i, s in spans if s.size]))
    return out


def _strong_flux(segments, S, sigma, gamma, stark, centers, windows, npix) -> np.ndarray:
    """(N, npix) transmission of the strong lines: fine-grid tau (profiles tapered to zero at their window
    edges), residual core, Gaussian LSF convolution, linear interpolation to the pixels."""
    from scipy.ndimage import gaussian_filter1d

    out = np.ones((S.shape[0], npix))
    for lam, pix, j, frac, lines in segments:
        tau = np.zeros((S.shape[0], lam.size))
        step = lam * (lam[1] / lam[0] - 1.0)
        for i, a, b in lines:
            x = lam[a:b] - centers[i]
            sig = sigma[:, i, None]
            width = np.sqrt(sig**2 + (centers[i] * V_MACRO / C_KMS) ** 2 + (0.7 * step[(a + b) // 2]) ** 2)
            st = stark[:, i, None] if stark[:, i].any() else None
            tau[:, a:b] += _tau_profile(x, S[:, i, None], sig, width, gamma[:, i, None], st) \
                * (1.0 - (x / windows[i]) ** 2) ** 2
        flux = gaussian_filter1d(R_CORE + (1.0 - R_CORE) * np.exp(-tau), 2.5, axis=1, mode="nearest", truncate=4.0)
        out[:, pix] = flux[:, j] * (1.0 - frac) + flux[:, j + 1] * frac
    return out


def _band_shapes(wave, bands, resolution) -> np.ndarray:
    """(n_band, npix) band envelopes: a head with exponential decay, convolved with the LSF (closed form)."""
    from scipy.special import erfc, erfcx

    sigma = bands["wave"][:, None] / (FWHM_SIGMA * resolution)
    L = bands["length"][:, None]
    x = bands["dir"][:, None] * (wave[None, :] - bands["wave"][:, None])
    z = (sigma / L - x / sigma) / np.sqrt(2.0)
    pos = 0.5 * erfcx(np.maximum(z, 0.0)) * np.exp(-0.5 * (x / sigma) ** 2)
    neg = 0.5 * np.exp(np.minimum(0.5 * (sigma / L) ** 2 - x / L, 0.0)) * erfc(np.minimum(z, 0.0))
    return np.where(z >= 0, pos, neg)


def _molecule_column(atm, mol) -> np.ndarray:
    """Abundance (per H) of the element bound in the molecule: dissociation equilibrium P_A P_B / P_AB = K,
    log K = c + 1.5 log T - D0 5040 / T, with the partner's neutral partial pressure."""
    elem, partner, d0, c, _ = MOLECULES[mol]
    e, p = SP[elem], SP[partner]
    p_h = atm["x_hi"] * atm["n_h"] * K_CGS * atm["T"]
    p_b = p_h if partner == "H" else atm["ab"][:, p] * atm["f0"][:, p] * atm["n_h"] * K_CGS * atm["T"]
    y = p_b / 10.0 ** (c + 1.5 * np.log10(atm["T"]) - d0 * 5040.0 / atm["T"])
    free = 1.0
    if elem == "C":  # carbon locked in CO (D0 = 11.09 eV) in cool stars leaves less for CH
        p_o = atm["ab"][:, SP["O"]] * atm["f0"][:, SP["O"]] * atm["n_h"] * K_CGS * atm["T"]
        free = 1.0 / (1.0 + p_o / 10.0 ** (CO_LOGK + 1.5 * np.log10(atm["T"]) - 11.09 * 5040.0 / atm["T"]))
    return atm["ab"][:, e] * atm["f0"][:, e] * free * y / (1.0 + y)


@lru_cache(maxsize=1)
def _band_reference() -> dict[str, float]:
    return {m: float(_molecule_column(atmosphere(np.array([v[4]])), m)[0]) for m, v in MOLECULES.items()}


def _band_depths(atm, bands) -> np.ndarray:
    """(N, n_band) band optical depth: strength x sqrt(column / reference star's column), the square-root
    part of the curve of growth of a band of saturated lines."""
    cols = {m: np.sqrt(_molecule_column(atm, m) / ref) for m, ref in _band_reference().items()}
    return np.stack([cols[m] for m in bands["mol"]], 1) * bands["strength"][None, :]


def normalized_spectrum(wavelength_aa, labels, resolution: float, *, vacuum: bool = True,
                        chunk: int = 256) -> np.ndarray:
    """Continuum-normalised spectra (N, npix) float64 in (0, 1] of stars with labels (N, 4) [teff K, logg,
    fe_h, alpha_fe], on the increasing wavelength grid `wavelength_aa` (A; vacuum, or air with
    vacuum=False), at resolving power `resolution` = lambda / FWHM of a Gaussian LSF. Deterministic: the
    same inputs give the same bits. `chunk` stars are computed at a time (memory ~ chunk x lines)."""
    wave = np.asarray(wavelength_aa, dtype=np.float64)
    if wave.ndim != 1 or wave.size < 2 or not np.isfinite(wave).all() or (wave <= 0).any():
        raise ValueError(f"wavelength_aa must be a 1-D array of positive finite wavelengths; got shape {wave.shape}")
    if (np.diff(wave) <= 0).any():
        raise ValueError("wavelength_aa must be strictly increasing")
    r_arr = np.asarray(resolution, dtype=np.float64)
    if r_arr.size != 1 or not np.isfinite(r_arr).all() or r_arr.item() <= 0:
        raise ValueError(f"resolution must be one positive finite lambda/FWHM; got {resolution!r}")
    R = float(r_arr.item())
    lab = _check_labels(labels)
    tab = _line_tables(bool(vacuum))
    weak, strong, bands = tab["weak"], tab["strong"], tab["bands"]
    pad = 6 * wave[-1] / (FWHM_SIGMA * R) + 1.0
    use = np.flatnonzero((weak["wave"] > wave[0] - pad) & (weak["wave"] < wave[-1] + pad))
    w_use, sp_use = weak["wave"][use], weak["species"][use]
    sig_use = w_use * np.hypot(1.0 / (FWHM_SIGMA * R), V_MACRO / C_KMS)  # instrument + macroturbulence
    G = _weak_matrix(wave, w_use, sig_use)
    segs = _segments(wave, strong["wave"], strong["window"], R)
    shapes = _band_shapes(wave, bands, R)
    out = np.empty((lab.shape[0], wave.size))
    for a in range(0, lab.shape[0], chunk):
        atm = atmosphere(lab[a:a + chunk])
        ln_S = _ln_tau_area(atm, sp_use, weak["stage"][use], weak["chi"][use], weak["loggf"][use], w_use)
        W = curve_of_growth(ln_S, _doppler(atm, sp_use, w_use), _damping(atm, weak["log_g6"][use], w_use))
        flux = np.exp(-np.asarray(G @ _gauss_amplitude(W, sig_use).T).T)
        flux *= R_BAND + (1.0 - R_BAND) * np.exp(-_band_depths(atm, bands) @ shapes)
        if segs:
            flux *= _strong_flux(segs, *strong_line_parameters(atm, strong), strong["wave"], strong["window"],
                                 wave.size)
        out[a:a + flux.shape[0]] = flux
    return out
