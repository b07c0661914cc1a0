"""VOTable files of the Gaia archive as [(columns, meta)] tables, fast for TABLEDATA.

astropy's VOTable parser converts TABLEDATA cell by cell in Python (~0.25 s for one 2401-row datalink
spectrum, most of an ingest's time); here an XML iterparse collects the cells and numpy converts whole
columns. Files with BINARY / BINARY2 / FITS serialisations (the archive's "votable" format; TABLEDATA is
"votable_plain") go to astropy. PARAMs of the VOTABLE, its RESOURCEs and each TABLE (inner ones win) are
the table's meta, lower-case keys, as the datalink INDIVIDUAL files keep the scalar columns there.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

_INTS = ("long", "int", "short", "unsignedByte")
_FLOATS = ("float", "double")


def _convert(text: str | None, datatype: str):
    text = (text or "").strip()
    if datatype in _INTS:
        try:
            return int(text)
        except ValueError:
            return None
    if datatype in _FLOATS:
        try:
            return float(text)
        except ValueError:
            return None
    if datatype == "boolean":
        return {"t": True, "true": True, "1": True, "f": False, "false": False, "0": False}.get(text.lower())
    return text


def _column(values: list[str], datatype: str, arraysize: str | None) -> np.ndarray:
    if arraysize not in (None, "", "1") and datatype in _FLOATS + _INTS:
        rows = [np.array(v.replace("NaN", "nan").split(), dtype=np.float64) if v.strip() else None for v in values]
        sizes = {r.size for r in rows if r is not None}
        if len(sizes) == 1 and all(r is not None for r in rows):
            return np.stack(rows) if rows else np.zeros((0, 0))
        out = np.empty(len(rows), dtype=object)
        out[:] = rows
        return out
    if datatype in _FLOATS:
        return np.array([float(v) if v.strip() not in ("",) else np.nan for v in values], dtype=np.float64)
    if datatype in _INTS:
        try:
            return np.array([int(v) for v in values], dtype=np.int64)
        except ValueError:  # a null cell: keep the rest as numbers
            return np.array([float(v) if v.strip() else np.nan for v in values], dtype=np.float64)
    return np.array([_convert(v, datatype) for v in values], dtype=object)


def read_tables(path: str) -> list[tuple[dict, dict]]:
    """Every TABLE of the file as (columns {name: array}, meta {param: value}), lower-case names."""
    fast = _tabledata_tables(path)
    return fast if fast is not None else _astropy_tables(path)


def _tabledata_tables(path: str):
    """The tables by iterparse, or None when the file uses a binary serialisation."""
    tables, scopes, table = [], [{}], None
    for event, el in ET.iterparse(path, events=("start", "end")):
        tag = el.tag.rsplit("}", 1)[-1]
        if event == "start":
            if tag == "RESOURCE":
                scopes.append(dict(scopes[-1]))
            elif tag == "TABLE":
                table = {"fields": [], "params": {}, "rows": []}
            elif tag in ("BINARY", "BINARY2", "FITS"):
                return None
            continue
        if tag == "PARAM":
            name = el.get("name") or el.get("ID") or ""
            (table["params"] if table is not None else scopes[-1])[name.lower()] = _convert(el.get("value"), el.get("datatype", "char"))
        elif tag == "FIELD" and table is not None:
            table["fields"].append(((el.get("name") or el.get("ID") or "").lower(), el.get("datatype", "char"),
                                    el.get("arraysize")))
        elif tag == "TR" and table is not None:
            table["rows"].append([td.text or "" for td in el])
            el.clear()
        elif tag == "TABLE" and table is not None:
            width = len(table["fields"])
            if any(len(r) != width for r in table["rows"]):
                raise ValueError(f"a TABLEDATA row has not {width} cells")
            cols = {name: _column([r[j] for r in table["rows"]], dtype, size)
                    for j, (name, dtype, size) in enumerate(table["fields"])}
            tables.append((cols, {**scopes[-1], **table["params"]}))
            table = None
        elif tag == "RESOURCE":
            scopes.pop()
    return tables


def _astropy_tables(path: str) -> list[tuple[dict, dict]]:
    import warnings

    from astropy.io import votable

    from pairspec.surveys.gaia_rvs.products import _plain

    out = []

    def walk(resource, inherited):
        meta = dict(inherited)
        meta.update({p.name.lower(): _plain(p.value) for p in resource.params})
        for table in resource.tables:
            tmeta = dict(meta)
            tmeta.update({p.name.lower(): _plain(p.value) for p in table.params})
            t = table.to_table()
            out.append(({n.lower(): t[n] for n in t.colnames}, tmeta))
        for sub in resource.resources:
            walk(sub, meta)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # VOTable spec nits (W-codes) are not errors of the data
        vot = votable.parse(path)
    top = {p.name.lower(): _plain(p.value) for p in vot.params}
    for resource in vot.resources:
        walk(resource, top)
    return out
