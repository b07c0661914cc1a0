"""Rows written straight into a Zarr v3 array's chunks, and the locks parallel writers share.

The pair store's arrays have two layouts (`store._create`): spectra in row-aligned shards of inner
chunks (codecs bytes + blosc, index bytes + crc32c), everything else in chunks of whole rows (bytes or
vlen-utf8, then zstd). For those layouts `write_array` encodes the chunks here and stores them under
zarr's own keys, because zarr's generic write path costs ~3x more CPU per shard and ~1.5 ms per 1-D
chunk, which made it the bulk of an ingest. The bytes are zarr's own: tests/test_store.py compares
them with what zarr writes, and reads them back through zarr. Any other layout is written by zarr.

A chunk only partly covered by a write is read, merged and rewritten; when two writer processes
share such a chunk (the edge chunks of neighbouring ingest batches), they hold its `ChunkLocks` lock.
Every chunk is stored atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import numpy as np


def write_array(arr, start: int, values: np.ndarray) -> None:
    """arr[start:start + len(values)] = values. Arrays with a layout `store._create` gives them go through
    `ShardCodec` (spectra) or `ChunkCodec` (the rest): whole chunks are encoded directly, partial
    ones merged into the stored chunk; zarr writes anything else."""
    codec = ShardCodec.of(arr) or ChunkCodec.of(arr)
    if codec is None:
        arr[start:start + len(values)] = np.asarray(values)
        return
    rows, end, items = codec.rows, start + len(values), {}
    for first in range(start - start % rows, end, rows):
        a, b = max(start, first), min(end, first + rows)
        block, key = values[a - start:b - start], codec.key(first // rows)
        if a == first and b == first + rows:
            items[key] = codec.encode_whole(block)
        else:
            items[key] = codec.merge(_get_key(arr, key), a - first, block)
    _put_keys(arr, items)


def _key(arr, index: int) -> str:
    key = arr.metadata.encode_chunk_key((index,) + (0,) * (arr.ndim - 1))
    return f"{arr.path}/{key}" if arr.path else key  # "" for an array opened at its own path


class ChunkCodec:
    """Row chunks of an unsharded array with the layout `store._create` gives it (chunks of whole rows;
    codecs [bytes little-endian or vlen-utf8, zstd]), encoded here: zarr spends ~1.5 ms of CPU per
    chunk on its generic path, which for the ingest's 1-D columns cost as much as the spectra. The
    bytes are zarr's own (tests/test_store.py compares them); None for any other layout."""

    @classmethod
    def of(cls, arr) -> ChunkCodec | None:
        try:
            d = arr.metadata.to_dict()
            first, second = d["codecs"]
            if (first["name"] not in ("bytes", "vlen-utf8") or second["name"] != "zstd"
                    or first.get("configuration", {}).get("endian", "little") != "little"
                    or d["chunk_grid"]["name"] != "regular" or d.get("storage_transformers")
                    or tuple(arr.chunks[1:]) != tuple(arr.shape[1:])):
                return None
            import numcodecs

            z = second["configuration"]
            return cls(arr, numcodecs.Zstd(level=z.get("level", 0), checksum=z.get("checksum", False)),
                       first["name"] == "vlen-utf8")
        except (KeyError, ValueError, TypeError, AttributeError):
            return None

    def __init__(self, arr, zstd, text: bool):
        self.arr, self.zstd, self.text, self.rows = arr, zstd, text, arr.chunks[0]
        self.shape = tuple(arr.chunks)
        if text:
            from numcodecs.vlen import VLenUTF8

            self.vlen, self.dtype, self.fill = VLenUTF8(), np.dtype(object), ""
        else:
            self.dtype, self.fill = np.dtype(arr.dtype).newbyteorder("<"), arr.metadata.fill_value

    def key(self, index: int) -> str:
        return _key(self.arr, index)

    def encode_whole(self, block: np.ndarray) -> bytes:
        if self.text:
            return self.zstd.encode(self.vlen.encode(np.asarray(block, dtype=object)))
        return self.zstd.encode(np.ascontiguousarray(block, dtype=self.dtype).reshape(-1).view(np.uint8))

    def merge(self, stored: bytes | None, row0: int, block: np.ndarray) -> bytes:
        if stored is None:
            rows = np.full(self.shape, self.fill, dtype=self.dtype)
        elif self.text:
            rows = self.vlen.decode(self.zstd.decode(stored)).reshape(self.shape)
        else:
            rows = np.frombuffer(self.zstd.decode(stored), dtype=self.dtype).reshape(self.shape).copy()
        rows[row0:row0 + len(block)] = block
        return self.encode_whole(rows)


_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
_LITTLE = {"name": "bytes", "configuration": {"endian": "little"}}
_EMPTY = 2**64 - 1  # shard index entry of an absent inner chunk


class ShardCodec:
    """Shards of a spectra array with the layout `store._create` gives it (row-aligned shards of inner
    chunks spanning all pixels; inner codecs [bytes little-endian, blosc]; index [bytes little-endian,
    crc32c] at the end), encoded here rather than by zarr, whose generic path fills and copies every
    inner chunk twice and costs ~3x more CPU: the ingest writers spend most of their time here.
    The bytes are zarr's own (tests/test_store.py compares them); `of` returns None for any other
    layout, which zarr then writes."""

    @classmethod
    def of(cls, arr) -> ShardCodec | None:
        try:
            (codec,) = arr.metadata.to_dict()["codecs"]
            conf = codec["configuration"]
            inner, index = conf["codecs"], conf["index_codecs"]
            if (codec["name"] != "sharding_indexed" or conf.get("index_location", "end") != "end"
                    or len(inner) != 2 or inner[0] != _LITTLE or inner[1]["name"] != "blosc"
                    or [c["name"] for c in index] != ["bytes", "crc32c"] or index[0] != _LITTLE
                    or arr.ndim != 2 or tuple(arr.chunks[1:]) != tuple(arr.shape[1:])
                    or tuple(arr.shards[1:]) != tuple(arr.shape[1:]) or arr.shards[0] % arr.chunks[0]):
                return None
            import numcodecs

            b = inner[1]["configuration"]
            blosc = numcodecs.Blosc(cname=b["cname"], clevel=b["clevel"], shuffle=_SHUFFLE[b["shuffle"]],
                                    blocksize=b.get("blocksize", 0), typesize=b["typesize"])
            return cls(arr, blosc)
        except (KeyError, ValueError, TypeError, AttributeError):
            return None

    def __init__(self, arr, blosc):
        self.arr, self.blosc = arr, blosc
        self.dtype = np.dtype(arr.dtype).newbyteorder("<")
        self.fill = arr.metadata.fill_value
        self.inner_rows, self.rows, self.npix = arr.chunks[0], arr.shards[0], arr.shape[1]
        self.n_inner = self.rows // self.inner_rows

    def key(self, shard: int) -> str:
        return _key(self.arr, shard)

    def _encode(self, rows: np.ndarray) -> bytes:
        return self.blosc.encode(np.ascontiguousarray(rows, dtype=self.dtype).reshape(-1).view(np.uint8))

    def _decode(self, data: bytes) -> np.ndarray:
        return np.frombuffer(self.blosc.decode(data), dtype=self.dtype).reshape(self.inner_rows, self.npix).copy()

    def _assemble(self, parts: list) -> bytes:
        import google_crc32c

        table = np.full((self.n_inner, 2), _EMPTY, dtype="<u8")  # (offset, length) of each inner chunk
        offset = 0
        for j, part in enumerate(parts):
            if part is not None:
                table[j] = offset, len(part)
                offset += len(part)
        raw = table.tobytes()
        return b"".join([*(p for p in parts if p is not None), raw,
                         np.array([google_crc32c.value(raw)], dtype="<u4").tobytes()])

    def _split(self, data: bytes | None) -> list:
        """The encoded inner chunks of a stored shard (None where absent)."""
        if data is None:
            return [None] * self.n_inner
        import google_crc32c

        size = self.n_inner * 16
        raw, checksum = data[-size - 4:-4], data[-4:]
        if len(raw) != size or google_crc32c.value(raw) != int.from_bytes(checksum, "little"):
            raise ValueError(f"{self.arr.path}: a stored shard's index is corrupt")
        table = np.frombuffer(raw, dtype="<u8").reshape(self.n_inner, 2)
        return [None if off == _EMPTY else data[int(off):int(off) + int(n)] for off, n in table]

    def encode_whole(self, block: np.ndarray) -> bytes:
        r = self.inner_rows
        return self._assemble([self._encode(block[j * r:(j + 1) * r]) for j in range(self.n_inner)])

    def merge(self, stored: bytes | None, row0: int, block: np.ndarray) -> bytes:
        """The shard `stored` (None: none yet) with rows row0.. of it replaced by `block`: inner
        chunks outside those rows keep their bytes, a partly covered one is decoded and merged."""
        parts, r, row1 = self._split(stored), self.inner_rows, row0 + len(block)
        for j in range(self.n_inner):
            a, b = max(row0, j * r), min(row1, (j + 1) * r)
            if a >= b:
                continue
            if (a, b) == (j * r, (j + 1) * r):
                parts[j] = self._encode(block[a - row0:b - row0])
                continue
            rows = (self._decode(parts[j]) if parts[j] is not None
                    else np.full((r, self.npix), self.fill, dtype=self.dtype))
            rows[a - j * r:b - j * r] = block[a - row0:b - row0]
            parts[j] = self._encode(rows)
        return self._assemble(parts)


def _local_root(arr):
    """The directory of a local (zarr LocalStore) array's store, else None."""
    from zarr.storage import LocalStore

    return Path(arr.store.root) if isinstance(arr.store, LocalStore) else None


def _get_key(arr, key: str) -> bytes | None:
    root = _local_root(arr)
    if root is not None:  # plain file I/O: zarr's async store API costs ~0.5 ms a call
        try:
            return (root / key).read_bytes()
        except FileNotFoundError:
            return None
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    buf = sync(arr.store.get(key, prototype=default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def _put_keys(arr, items: dict[str, bytes]) -> None:
    """Store encoded chunks under zarr's own keys, each atomically (a temporary file renamed into
    place, as zarr's LocalStore does; other stores through zarr's store API)."""
    root = _local_root(arr)
    if root is not None:
        for key, data in items.items():
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
            try:
                tmp.write_bytes(data)
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    buffer = default_buffer_prototype().buffer

    async def put():
        for key, data in items.items():
            await arr.store.set(key, buffer.from_bytes(data))

    sync(put())


def whole_chunks(start: int, n: int, chunk: int) -> tuple[int, int]:
    """(h, t): rows [h, t) of the n rows stored from row `start` fill whole chunks (or shards) of
    `chunk` rows; rows [0, h) share a chunk with the rows before them, rows [t, n) with the rows
    after them (h = t = n when no whole chunk fits)."""
    h = min(n, -start % chunk)
    t = h + (n - h) // chunk * chunk
    return h, t


def lock_path(store_path: str) -> str:
    """The lock file of a parallel ingest, beside the store (like its ingest report)."""
    return store_path.rstrip("/") + ".ingest-lock"


class ChunkLocks:
    """Exclusive locks, across the writer processes of one ingest, on the chunk rows two batches
    share: a POSIX record lock on one byte per (group, chunk index) of the lock file. The kernel
    drops the locks of a process that dies."""

    def __init__(self, path: str):
        import fcntl

        self._fcntl, self.fd = fcntl, os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    @contextlib.contextmanager
    def hold(self, sub: str, chunk_index: int):
        offset = (1 << 40) * (sub == "visits") + int(chunk_index)
        self._fcntl.lockf(self.fd, self._fcntl.LOCK_EX, 1, offset)
        try:
            yield
        finally:
            self._fcntl.lockf(self.fd, self._fcntl.LOCK_UN, 1, offset)
