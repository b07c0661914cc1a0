"""The survey-agnostic Galactic population of the simulators: thin/thick disc, halo, bulge and open
clusters, with stellar parameters from a simple documented parameterisation (NOT isochrones).

With t_MS(M) = 10 Gyr * M^-2.5 the turn-off mass is M_to = (age / 10 Gyr)^-0.4 * (1 + 0.1 [Fe/H]);
- dwarfs: M ~ U(0.65, min(1.3, M_to)), tau = age / t_MS, Teff = 5772 M^0.55 10^(-0.06 [Fe/H]) (1 - 0.05 tau),
  R = M^0.85 (1 + 0.5 tau^2), log g = 4.438 + log M - 2 log R;
- RGB: M = M_to, log g = 1 + 2.5 sqrt(u), Teff = 4600 + 280 (log g - 2.5) - 350 [Fe/H] + 120 (M - 1.2);
- red clump ([Fe/H] > -0.8 only): M = M_to - 0.1, log g = 2.45 + 0.3 log(M/1.2), Teff = 4700 - 300 [Fe/H] + 150 (M - 1.2);
each with small Gaussian scatter, clipped to Teff 3560-6950 K and log g 0.4-5.2. [Fe/H] is clipped at
-0.98..0.51 and [alpha/Fe] at -0.2..0.5 (the range of the emulators in use); [Mg/Fe] truth = [alpha/Fe].
Cluster members share [Fe/H], [alpha/Fe] = 0, age and RV (+- 1 km/s).

A survey's simulator passes its own pointings (fields) and adds what is its own: designations,
photometry, visit counts, spectra.
"""

from __future__ import annotations

import numpy as np

POPULATIONS = ("thin", "thick", "halo", "bulge")
POP_FRACTIONS = (0.58, 0.20, 0.09, 0.13)
# (name, glon, glat, [Fe/H], age Gyr, vhelio km/s)
CLUSTERS = (("M67", 215.7, 31.9, 0.0, 4.0, 34.0), ("N7789", 115.5, -5.4, -0.02, 1.6, -54.0),
            ("N6819", 74.0, 8.5, 0.05, 2.4, 2.8), ("N6791", 70.0, 10.9, 0.3, 8.0, -47.0),
            ("N188", 122.8, 22.4, 0.1, 6.0, -42.0), ("N2420", 198.1, 19.6, -0.2, 2.0, 74.0))
# Galactic -> ICRS rotation (transpose of the ICRS -> Galactic matrix, Hipparcos convention)
GAL_TO_ICRS = np.array([[-0.0548755604, -0.8734370902, -0.4838350155],
                        [0.4941094279, -0.4448296300, 0.7469822445],
                        [-0.8676661490, -0.1980763734, 0.4559837762]]).T


def galactic_to_icrs(glon: np.ndarray, glat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    l, b = np.radians(glon), np.radians(glat)
    v = GAL_TO_ICRS @ np.stack([np.cos(b) * np.cos(l), np.cos(b) * np.sin(l), np.sin(b)])
    return np.degrees(np.arctan2(v[1], v[0])) % 360.0, np.degrees(np.arcsin(np.clip(v[2], -1, 1)))


def kiel(stage: np.ndarray, age: np.ndarray, feh: np.ndarray, rng: np.random.Generator):
    """(mass, teff, logg) from evolutionary stage, age and [Fe/H] (parameterisation in the module doc)."""
    n = stage.size
    m_to = np.clip((age / 10.0) ** -0.4 * (1 + 0.1 * feh), 0.75, 3.0)
    mass = np.where(stage == "rc", np.maximum(m_to - 0.1, 0.7), m_to)
    dwarf = stage == "dwarf"
    m_d = rng.uniform(0.65, np.minimum(1.3, m_to))
    tau = np.clip(age / (10.0 * m_d**-2.5), 0.0, 1.0)
    radius = m_d**0.85 * (1 + 0.5 * tau**2)
    t_d = 5772.0 * m_d**0.55 * 10 ** (-0.06 * feh) * (1 - 0.05 * tau) + rng.normal(0, 40, n)
    g_d = 4.438 + np.log10(m_d) - 2 * np.log10(radius) + rng.normal(0, 0.03, n)
    g_rgb = 1.0 + 2.5 * np.sqrt(rng.random(n))
    t_rgb = 4600 + 280 * (g_rgb - 2.5) - 350 * feh + 120 * (mass - 1.2) + rng.normal(0, 40, n)
    g_rc = 2.45 + 0.3 * np.log10(mass / 1.2) + rng.normal(0, 0.05, n)
    t_rc = 4700 - 300 * feh + 150 * (mass - 1.2) + rng.normal(0, 40, n)
    teff = np.select([dwarf, stage == "rc"], [t_d, t_rc], t_rgb)
    logg = np.select([dwarf, stage == "rc"], [g_d, g_rc], g_rgb)
    mass = np.where(dwarf, m_d, mass)
    return mass, np.clip(teff, 3560.0, 6950.0), np.clip(logg, 0.4, 5.2)


def draw_population(n_stars: int, rng: np.random.Generator, fields) -> dict:
    """True parameters and positions of n_stars distinct stars: per star population, cluster ('' for field
    stars), stage, teff, logg, fe_h, alpha_fe, mg_fe, mass, age, vhelio, glon, glat, ra, dec, field and site.

    `fields`: the survey's pointings as (name, site, glon, glat, kind), kind one of "disc", "halo",
    "bulge"; field stars are placed in a pointing of their population's kind (a third of the thick disc
    in "halo" pointings), cluster members around the cluster (field = cluster name, site = the first
    disc pointing's)."""
    n_clusters = min(len(CLUSTERS), max(1, round(n_stars / 150)))
    sizes = rng.integers(10, 21, n_clusters)
    sizes = np.minimum(sizes, max(2, n_stars // (3 * n_clusters)))
    n_field = n_stars - int(sizes.sum())
    pop = rng.choice(POPULATIONS, size=n_field, p=POP_FRACTIONS)
    cluster = np.array([""] * n_field + [CLUSTERS[c][0] for c in range(n_clusters) for _ in range(sizes[c])], dtype=object)
    pop = np.concatenate([pop, np.array(["cluster"] * int(sizes.sum()))])
    n = n_stars
    feh = np.select([pop == "thin", pop == "thick", pop == "halo"],
                    [rng.normal(-0.05, 0.2, n), rng.normal(-0.45, 0.25, n), rng.normal(-1.3, 0.35, n)],
                    np.where(rng.random(n) < 0.5, rng.normal(0.25, 0.15, n), rng.normal(-0.4, 0.25, n)))
    alpha = np.select([pop == "thin", pop == "thick", pop == "halo"],
                      [0.02 - 0.15 * feh, 0.30 - 0.1 * (feh + 0.5), np.where(rng.random(n) < 0.3, 0.1, 0.3)],
                      np.clip(0.12 - 0.3 * feh, -0.05, 0.35)) + rng.normal(0, 0.03, n)
    age = np.select([pop == "thin", pop == "thick", pop == "halo"],
                    [rng.uniform(0.5, 10, n), rng.uniform(8, 12.5, n), rng.uniform(10, 13, n)], rng.uniform(7, 12, n))
    vhelio = rng.normal(0, np.select([pop == "halo", pop == "bulge"], [150.0, 120.0], 40.0))
    glon, glat = np.zeros(n), np.zeros(n)
    field_name, site = np.empty(n, dtype=object), np.empty(n, dtype=object)
    cluster_site = next(f[1] for f in fields if f[4] == "disc")
    for i in range(n):
        if cluster[i]:
            c = next(c for c in CLUSTERS if c[0] == cluster[i])
            feh[i], alpha[i], age[i], vhelio[i] = c[3], 0.0, c[4], c[5] + rng.normal(0, 1.0)
            field_name[i], site[i], l0, b0, radius = c[0], cluster_site, c[1], c[2], 0.3
        else:
            kind = {"thin": "disc", "thick": "disc", "halo": "halo", "bulge": "bulge"}[pop[i]]
            if pop[i] == "thick" and rng.random() < 0.3:
                kind = "halo"
            opts = [f for f in fields if f[4] == kind]
            f = opts[int(rng.integers(len(opts)))]
            field_name[i], site[i], l0, b0, radius = f[0], f[1], f[2], f[3], 1.5
        glon[i] = (l0 + rng.uniform(-radius, radius) / max(np.cos(np.radians(b0)), 0.2)) % 360
        glat[i] = b0 + rng.uniform(-radius, radius)
    # cluster members share [Fe/H], [alpha/Fe], age exactly (set above, after the field draws)
    feh, alpha = np.clip(feh, -0.98, 0.51), np.clip(alpha, -0.2, 0.5)
    stage = rng.choice(["dwarf", "rgb", "rc"], size=n, p=[0.3, 0.5, 0.2])
    stage[(stage == "rc") & (feh < -0.8)] = "rgb"  # no red clump for metal-poor stars
    mass, teff, logg = kiel(stage, age, feh, rng)
    ra, dec = galactic_to_icrs(glon, glat)
    return {"population": pop, "cluster": cluster, "stage": stage, "teff": teff, "logg": logg, "fe_h": feh,
            "alpha_fe": alpha, "mg_fe": alpha.copy(), "mass": mass, "age": age, "vhelio": vhelio, "ra": ra,
            "dec": dec, "glon": glon, "glat": glat, "field": field_name, "site": site}
