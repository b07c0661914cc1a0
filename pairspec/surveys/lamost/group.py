"""Which LAMOST files are one star: by Gaia source id where known, else by position.

A star's designation is not a key: LAMOST writes it per plate from the plate's input coordinates, so one
star gets DESIG strings that differ in the last digit (KIC 8098300: J192814.09+435531.0 in six real
MRS files, J192814.09+435530.7 in a seventh, J192814.09+435530.8 in an LRS file), and OBJNAME is the
input catalogue's id, which changes between plans. So files within `radius_arcsec` of each other are
linked (friends of friends, on a k-d tree), and then a group holding several distinct Gaia ids (two
stars closer than the radius, told apart by a catalogue) is split by id, each file without an id going
to the nearest id's subgroup.
"""

from __future__ import annotations

import numpy as np

from pairspec.surveys.lamost.catalogue import chord, unit_vectors


def _components(n: int, pairs) -> list[list[int]]:
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def group_files(ra: np.ndarray, dec: np.ndarray, gaia: np.ndarray, radius_arcsec: float) -> list[list[int]]:
    """Indices of the files of each star (each list increasing; lists ordered by their first index)."""
    from scipy.spatial import cKDTree

    ra, dec, gaia = np.asarray(ra, float), np.asarray(dec, float), np.asarray(gaia, np.int64)
    n = ra.size
    if n == 0:
        return []
    xyz = unit_vectors(ra, dec)
    pairs = cKDTree(xyz).query_pairs(chord(radius_arcsec)) if radius_arcsec > 0 else set()
    # a shared Gaia id links files wherever they are (positions of one source can differ by proper motion)
    first_of: dict[int, int] = {}
    id_pairs = []
    for i, g in enumerate(gaia):
        if g > 0:
            if g in first_of:
                id_pairs.append((first_of[g], i))
            else:
                first_of[g] = i
    out = []
    for comp in _components(n, list(pairs) + id_pairs):
        ids = sorted({int(gaia[i]) for i in comp if gaia[i] > 0})
        if len(ids) <= 1:
            out.append(sorted(comp))
            continue
        sub = {g: [i for i in comp if gaia[i] == g] for g in ids}
        centres = {g: xyz[sub[g]].mean(axis=0) for g in ids}
        for i in comp:
            if gaia[i] <= 0:
                g = min(ids, key=lambda g: float(np.sum((xyz[i] - centres[g]) ** 2)))
                sub[g].append(i)
        out.extend(sorted(s) for s in sub.values())
    return sorted(out, key=lambda g: g[0])
