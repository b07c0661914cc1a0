"""The pair store: one Zarr v3 group per survey release (docs/data-model.md). The only Zarr writer
(chunk_io.py encodes the chunks it writes).

Appends are atomic batches: array data is written past the committed length first, then the root
attributes n_stars/n_visits are updated (the commit). Opening for append truncates leftovers of an
interrupted batch, so a rerun gives exactly the store an uninterrupted run would have given.

Modules: layout.py (array specs, split rule, create_store, open_store), pairstore.py (PairStore: reads,
appends, commits), rows.py (records -> columns, the parallel writers' write_batch), spectra.py (the
denoised-spectra store); validate.py beside the package checks every invariant.
"""

from __future__ import annotations

from pairspec.store.layout import (
    _META_COLUMNS,
    SPLIT_NAMES,
    STAR_ARRAYS,
    STORE_VERSION,
    VISIT_ARRAYS,
    ConcurrentWrite,
    MissingArray,
    _as_str,
    _create,
    _zarr,
    create_store,
    open_store,
    record_problem,
    split_of,
)
from pairspec.store.pairstore import PairStore
from pairspec.store.rows import (
    _WRITER,
    _Arrays,
    _Key,
    _Rows,
    batch_columns,
    write_batch,
)
from pairspec.store.spectra import SpectraWriter, create_spectra_store

__all__ = [
    "SPLIT_NAMES",
    "STAR_ARRAYS",
    "STORE_VERSION",
    "VISIT_ARRAYS",
    "ConcurrentWrite",
    "MissingArray",
    "PairStore",
    "SpectraWriter",
    "batch_columns",
    "create_spectra_store",
    "create_store",
    "open_store",
    "record_problem",
    "split_of",
    "write_batch",
]
_PRIVATE = (_META_COLUMNS, _as_str, _create, _zarr, _WRITER, _Arrays, _Key, _Rows)  # used across the package
