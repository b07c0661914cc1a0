"""Gaia's bulk CSV files (RvsMeanSpectrum_NNNNNN-MMMMMM.csv.gz and the like): ECSV-style text, one row per
source (or per transit, for an epoch product), array columns as one quoted field "[0.98,1.01,...,null]".

formats.md 4.2: '#' lines carry an ECSV YAML header (`# %ECSV 1.0`, the column list with datatypes), the
first other line names the columns, then one line per row; missing values are `null`, inside arrays too
(pandas returns those fields as strings). A file is decompressed once into memory and indexed by line, so
that an ingest worker reading a batch of rows of one file pays for the decompression once (`BulkFile.open`
keeps the last file per process). Nothing here trusts the file: a cut gzip stream keeps the rows before the
cut (`problem` says what was lost), a row that does not parse is an AdapterError naming file and row.
"""

from __future__ import annotations

import csv
import math
import os
import zlib

import numpy as np

from pairspec.surveys.base import AdapterError

TEXT_SUFFIXES = (".csv", ".csv.gz", ".ecsv", ".ecsv.gz", ".csv.bz2")
_CHUNK = 1 << 22


def read_bytes(path: str) -> tuple[bytes, str | None]:
    """The file's (decompressed) bytes and, for a gzip stream cut short or corrupt after some data, a
    sentence saying so (the bytes before the damage are returned). AdapterError if nothing is readable."""
    with open(path, "rb") as f:
        magic = f.read(2)
        f.seek(0)
        if magic != b"\x1f\x8b":
            if path.lower().endswith(".gz"):
                raise AdapterError(path, "cannot read: named .gz but not a gzip file")
            return f.read(), None
        parts, total, dec, ended, junk = [], 0, zlib.decompressobj(wbits=31), False, False
        try:
            for block in iter(lambda: f.read(_CHUNK), b""):
                while block and not junk:
                    if ended:  # a concatenated (multi-member) gzip file: the next member starts here
                        if block[:2] != b"\x1f\x8b":
                            junk = True  # trailing bytes after the last member, which gzip tolerates too
                            break
                        dec, ended = zlib.decompressobj(wbits=31), False
                    out = dec.decompress(block)
                    parts.append(out)
                    total += len(out)
                    ended, block = (True, dec.unused_data) if dec.eof else (False, b"")
                if junk:
                    break
        except zlib.error as exc:
            if not total:
                raise AdapterError(path, f"cannot read: corrupt gzip stream ({exc})") from exc
            return b"".join(parts), f"corrupt gzip stream after {total} bytes ({exc}); rows after that are lost"
        if not ended:
            if not total:
                raise AdapterError(path, "cannot read: gzip stream ends before any data (file truncated)")
            return b"".join(parts), f"gzip stream cut short after {total} bytes (file truncated); rows after that are lost"
        return b"".join(parts), None


def _scalar(text: str):
    """A CSV field as int, float, bool, str or None (null / empty)."""
    text = text.strip()
    if text in ("", "null", "NULL", "None", "nan", "NaN"):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    low = text.lower()
    if low in ("true", "t", "false", "f"):
        return low in ("true", "t")
    return text


def parse_array(text: str) -> np.ndarray | None:
    """A bracketed array field "[1.0,null,2.5]" as float64 (null -> NaN); None for a null/empty field."""
    text = text.strip()
    if text in ("", "null", "NULL", "[]"):
        return None
    if not (text.startswith("[") and text.endswith("]")):
        raise ValueError(f"array field does not look like [v1,v2,...]: {text[:40]!r}")
    body = text[1:-1].replace("null", "nan").replace("NULL", "nan")
    return np.array(body.split(","), dtype=np.float64)


def _delimiter(header_lines: list[str]) -> str:
    """The ECSV header's `delimiter:` (ECSV's default is a space; a plain CSV without header uses ',')."""
    ecsv = bool(header_lines) and header_lines[0].lstrip().startswith("%ECSV")
    for line in header_lines:
        text = line.strip()
        if text.startswith("delimiter:"):
            value = text.split(":", 1)[1].strip().strip("'\"")
            return value or " "
    return " " if ecsv else ","


class BulkFile:
    """One bulk text file in memory: column names, each data line's span, the YAML header text."""

    _last: BulkFile | None = None

    def __init__(self, path: str):
        self.path = str(path)
        data, self.problem = read_bytes(self.path)
        if b"\x00" in data[:4096]:
            raise AdapterError(self.path, "cannot read: binary data, not a CSV/ECSV text file")
        starts, pos, header_lines = [], 0, []
        self.names: list[str] | None = None
        self.delimiter = ","
        n = len(data)
        while pos < n:
            end = data.find(b"\n", pos)
            end = n if end < 0 else end
            line = data[pos:end]
            if line.startswith(b"#"):
                if self.names is None:
                    header_lines.append(line[1:].decode("utf-8", "replace"))
            elif line.strip():
                if self.names is None:
                    self.delimiter = _delimiter(header_lines)
                    text = line.decode("utf-8", "replace").strip()
                    self.names = [c.strip().lower() for c in next(csv.reader([text], delimiter=self.delimiter))]
                else:  # a last line without newline is whole unless the stream was cut
                    starts.append((pos, end, end < n or self.problem is None))
            pos = end + 1
        if not self.names:
            raise AdapterError(self.path, "cannot read: no header row with column names (not a Gaia CSV/ECSV file?)")
        self.data, self.spans, self.yaml = data, starts, "\n".join(header_lines)
        self.ecsv = self.yaml.lstrip().startswith("%ECSV")
        self.index = {c: i for i, c in enumerate(self.names)}

    @classmethod
    def open(cls, path: str) -> BulkFile:
        """The file, from the one-file cache when it is unchanged on disk."""
        st = os.stat(path)
        key = (str(path), st.st_size, st.st_mtime_ns)
        if cls._last is None or cls._last._key != key:
            f = cls(path)
            f._key = key
            cls._last = f
        return cls._last

    def __len__(self) -> int:
        return len(self.spans)

    def line(self, k: int) -> str:
        a, b, complete = self.spans[k]
        text = self.data[a:b].decode("utf-8", "replace").rstrip("\r")
        if not complete:
            raise AdapterError(self.path, f"row {k}: last line has no end (file cut short)")
        return text

    def fields(self, k: int) -> list[str]:
        text = self.line(k)
        try:
            fields = next(csv.reader([text.strip() if self.delimiter == " " else text], delimiter=self.delimiter,
                                     strict=True))
        except (csv.Error, StopIteration) as exc:
            raise AdapterError(self.path, f"row {k}: not a CSV line ({exc})") from exc
        if len(fields) != len(self.names):
            raise AdapterError(self.path, f"row {k}: {len(fields)} fields, the header names {len(self.names)} "
                                          "(row cut short or garbled)")
        return fields

    def quick(self, k: int, column: str):
        """One scalar column of row k, without parsing the array fields when they come after it."""
        i, n = self.index[column], len(self.names)
        arrays = [j for j, c in enumerate(self.names) if c in ("flux", "flux_error")]
        if self.delimiter == "," and arrays:
            line = self.line(k).strip()
            if i < arrays[0]:  # before the arrays: split from the left
                parts = line.split(",", i + 1)
                if len(parts) > i + 1 and '"' not in ",".join(parts[: i + 1]):
                    return _scalar(parts[i])
            elif i > arrays[-1]:  # after them: split from the right
                parts = line.rsplit(",", n - i)
                if len(parts) > n - i and '"' not in ",".join(parts[-(n - i):]) and parts[-(n - i) - 1].endswith('"'):
                    return _scalar(parts[-(n - i)])
        return _scalar(self.fields(k)[i])

    def row(self, k: int) -> dict:
        """Row k as {column: scalar or float64 array}; arrays are the columns whose field is bracketed."""
        out = {}
        for name, text in zip(self.names, self.fields(k)):
            if text.lstrip().startswith("["):
                try:
                    out[name] = parse_array(text)
                except ValueError as exc:
                    raise AdapterError(self.path, f"row {k}: column {name}: {exc}") from exc
            else:
                out[name] = _scalar(text)
        return out


def as_int(value) -> int | None:
    """A source id or count from a parsed field (None when missing or not an integer)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) and f == int(f) else None
