"""The data of pairspec.surveys.linegen: species, strong lines, hydrogen series, named lines, molecular bands
and the pseudo forest's parameters (real wavelengths are NIST's; see linegen's docstring for what each
entry means and how the strengths were calibrated)."""

import numpy as np

SUN = (5772.0, 4.44, 0.0, 0.0)

SPECIES = (
    ("H", 12.00, 0, 1.0, 13.598, 99.0, 2.0, 1.0, 1.0), ("Fe", 7.50, 0, 55.8, 7.902, 16.19, 25.0, 40.0, 25.0),
    ("Mg", 7.60, 1, 24.3, 7.646, 15.04, 1.0, 2.0, 1.0), ("Si", 7.51, 1, 28.1, 8.152, 16.35, 9.3, 5.7, 1.0),
    ("Ca", 6.34, 1, 40.1, 6.113, 11.87, 1.2, 2.1, 1.0), ("Ti", 4.95, 1, 47.9, 6.828, 13.58, 30.0, 55.0, 22.0),
    ("Na", 6.24, 0, 23.0, 5.139, 47.29, 2.0, 1.0, 1.0), ("Al", 6.45, 0, 27.0, 5.986, 18.83, 6.0, 1.0, 2.0),
    ("K", 5.03, 0, 39.1, 4.341, 31.63, 2.0, 1.0, 1.0), ("Cr", 5.64, 0, 52.0, 6.767, 16.49, 8.0, 7.0, 25.0),
    ("Ni", 6.22, 0, 58.7, 7.640, 18.17, 30.0, 10.0, 25.0), ("Mn", 5.43, 0, 54.9, 7.434, 15.64, 6.0, 7.0, 10.0),
    ("Ba", 2.18, 0, 137.3, 5.212, 10.00, 2.5, 2.5, 1.0), ("Sr", 2.87, 0, 87.6, 5.695, 11.03, 1.0, 2.0, 1.0),
    ("C", 8.43, 0, 12.0, 11.260, 24.38, 9.0, 6.0, 1.0), ("O", 8.69, 1, 16.0, 13.618, 35.12, 9.0, 4.0, 1.0),
)
SP = {s[0]: i for i, s in enumerate(SPECIES)}
# strong metal lines: air A, species, stage, chi (eV), log gf, log Gamma6 (vdW per n_H), window half-width A
STRONG = (
    (3933.663, "Ca", 1, 0.00, 0.13, -7.5, 90.0), (3968.468, "Ca", 1, 0.00, -0.17, -7.5, 90.0),
    (8498.023, "Ca", 1, 1.69, -1.31, -8.0, 40.0), (8542.091, "Ca", 1, 1.70, -0.36, -8.0, 40.0),
    (8662.141, "Ca", 1, 1.69, -0.62, -8.0, 40.0), (5167.321, "Mg", 0, 2.71, -0.87, -7.3, 25.0),
    (5172.684, "Mg", 0, 2.71, -0.39, -7.3, 25.0), (5183.604, "Mg", 0, 2.72, -0.17, -7.3, 25.0),
    (5889.951, "Na", 0, 0.00, 0.11, -7.5, 25.0), (5895.924, "Na", 0, 0.00, -0.19, -7.5, 25.0),
    (4226.728, "Ca", 0, 0.00, 0.24, -7.6, 30.0), (7664.899, "K", 0, 0.00, 0.13, -7.4, 20.0),
    (7698.965, "K", 0, 0.00, -0.17, -7.4, 20.0), (8183.256, "Na", 0, 2.10, 0.24, -7.2, 15.0),
    (8194.824, "Na", 0, 2.10, 0.49, -7.2, 15.0), (4045.813, "Fe", 0, 1.49, 0.28, -7.6, 15.0),
    (4271.760, "Fe", 0, 1.49, -0.16, -7.6, 15.0), (4383.545, "Fe", 0, 1.48, 0.20, -7.6, 15.0),
    (4404.750, "Fe", 0, 1.56, -0.14, -7.6, 15.0), (5269.537, "Fe", 0, 0.86, -1.32, -7.6, 15.0),
    (5328.039, "Fe", 0, 0.92, -1.47, -7.6, 15.0),
)
# log gf offsets giving the model Sun the observed solar EWs (tests/test_linegen.py: python tests/test_linegen.py)
STRONG_DLOGGF = (0.660, 0.685, 0.487, 0.358, 0.273, 0.599, 0.379, 0.369, 0.235, 0.279, 0.639, 0.0, 0.0, 0.0, 0.0,
                 0.362, 0.320, 0.160, 0.467, 0.105, 0.077)
# hydrogen, NIST air wavelengths: (lower, upper, air A)
HYDROGEN = tuple((2, u, w) for u, w in zip(range(3, 19), (
    6562.79, 4861.35, 4340.47, 4101.73, 3970.07, 3889.05, 3835.38, 3797.90, 3770.63, 3750.15, 3734.37,
    3721.94, 3711.97, 3703.86, 3697.15, 3691.56))) + tuple((3, u, w) for u, w in zip(range(7, 19), (
    10049.37, 9545.97, 9229.01, 9014.91, 8862.78, 8750.47, 8665.02, 8598.39, 8545.38, 8502.48, 8467.25, 8437.95)))
H_WINDOW = {3: 150.0, 4: 120.0, 5: 90.0, 6: 90.0, 7: 90.0}  # Balmer half-windows (A) by upper level; else 60
# hydrogen: Holtsmark half-width per n_e^(2/3) lambda^2 (A; ~2x the laboratory H-beta width, 0.22 A at
# n_e = 1e14, because the wings form deeper than the layer), its growth along a series, strength offset and
# fraction of the n=2 excitation felt (the spread of wing-forming depths; see strong_line_parameters)
H_STARK, H_POWER, H_DLOGGF, H_ZETA = 4.0e-18, 1.0, -3.821, 0.577
HOLTSMARK_NORM = 2.0 * (np.pi / 2.5) / np.sin(np.pi / 2.5)  # integral of 1 / (1 + |x|^2.5)
# named weak/medium lines, NIST air wavelengths and approximate gf: air A, species, stage, chi, log gf
NAMED = (
    (5371.490, "Fe", 0, 0.96, -1.65), (5397.128, "Fe", 0, 0.92, -1.99), (5405.775, "Fe", 0, 0.99, -1.85),
    (5429.697, "Fe", 0, 0.96, -1.88), (6400.001, "Fe", 0, 3.60, -0.29), (6494.980, "Fe", 0, 2.40, -1.27),
    (6677.987, "Fe", 0, 2.69, -1.42), (8468.407, "Fe", 0, 2.22, -2.07), (8514.072, "Fe", 0, 2.20, -2.23),
    (8611.803, "Fe", 0, 2.85, -1.93), (8621.601, "Fe", 0, 2.95, -2.32), (8674.746, "Fe", 0, 2.83, -1.80),
    (8688.624, "Fe", 0, 2.18, -1.21), (4923.927, "Fe", 1, 2.89, -1.32), (5018.440, "Fe", 1, 2.89, -1.22),
    (5169.033, "Fe", 1, 2.89, -1.30), (6456.383, "Fe", 1, 3.90, -2.05), (4481.130, "Mg", 1, 8.86, 0.74),
    (5528.405, "Mg", 0, 4.35, -0.50), (8806.757, "Mg", 0, 4.35, -0.14), (8736.019, "Mg", 0, 5.95, -0.34),
    (6347.109, "Si", 1, 8.12, 0.15), (6371.371, "Si", 1, 8.12, -0.08), (8556.780, "Si", 0, 5.86, -0.37),
    (8648.465, "Si", 0, 6.21, 0.51), (6102.723, "Ca", 0, 1.88, -0.79), (6122.217, "Ca", 0, 1.89, -0.32),
    (6162.173, "Ca", 0, 1.90, -0.09), (6439.075, "Ca", 0, 2.53, 0.39), (6717.681, "Ca", 0, 2.71, -0.52),
    (4443.794, "Ti", 1, 1.08, -0.72), (4501.270, "Ti", 1, 1.12, -0.77), (8682.980, "Ti", 0, 1.05, -1.79),
    (5206.040, "Cr", 0, 0.94, 0.02), (5208.419, "Cr", 0, 0.94, 0.16), (4030.753, "Mn", 0, 0.00, -0.47),
    (4554.029, "Ba", 1, 0.00, 0.17), (6496.897, "Ba", 1, 0.60, -0.38), (4077.709, "Sr", 1, 0.00, 0.15),
    (3944.006, "Al", 0, 0.00, -0.64), (3961.520, "Al", 0, 0.01, -0.34),
)
# molecular bands: air head A (approximate), molecule, direction (+1: degraded to the red), e-fold A, strength
BANDS = (
    (4761.1, "TiO", 1, 60.0, 0.5), (4954.6, "TiO", 1, 60.0, 0.7), (5166.7, "TiO", 1, 80.0, 0.8),
    (5448.3, "TiO", 1, 70.0, 0.8), (5597.6, "TiO", 1, 60.0, 0.6), (5847.2, "TiO", 1, 80.0, 0.8),
    (6158.7, "TiO", 1, 90.0, 1.0), (6651.3, "TiO", 1, 100.0, 0.8), (7054.2, "TiO", 1, 140.0, 1.4),
    (7589.4, "TiO", 1, 120.0, 0.8), (8432.4, "TiO", 1, 120.0, 0.6), (8859.6, "TiO", 1, 120.0, 0.6),
    (4314.0, "CH", -1, 25.0, 0.6), (5211.0, "MgH", -1, 45.0, 0.12),
)
# molecule: element, partner, D0 (eV), log K constant, reference star whose band optical depth = strength
MOLECULES = {"TiO": ("Ti", "O", 6.87, 6.9, (3500.0, 4.8, 0.0, 0.0)), "CH": ("C", "H", 3.47, 8.2, SUN),
             "MgH": ("Mg", "H", 1.34, 4.6, SUN)}
CO_LOGK = 11.0  # CO dissociation constant offset: half the carbon in CO near a 4300 K dwarf
GAUSS_TAU_MAX = 3.0  # soft cap on a weak line's rendered peak optical depth (see _gauss_amplitude)
R_BAND = 0.25  # residual flux of a saturated band (gaps between its lines)
N_FOREST, FOREST_SEED = 12000, 20261201
FOREST_LOGTAU = (-1.5, 1.6)  # log10 solar line-centre optical depths of the pseudo lines
FOREST_SKEW = 1.3  # > 1: more weak lines than strong ones
