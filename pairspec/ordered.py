"""Ordered maps with a bounded number of jobs in flight: over any executor, or over threads."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator


def ordered_map(executor, fn: Callable, items: Iterable, window: int) -> Iterator:
    """fn(item) for each item, run on `executor` (threads or processes), yielded in item order, with at
    most `window` jobs submitted and not yet yielded: memory stays bounded however many items."""
    pending = deque()
    for item in items:
        pending.append(executor.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def thread_map(fn: Callable, items: Iterable, threads: int) -> Iterator:
    """fn(item) for each item, yielded in item order; with threads > 1 on that many threads, at most
    2 x threads items ahead of the consumer (for work that releases the GIL: Zarr decompression,
    numpy). threads <= 1, or a single item: run here, one at a time."""
    items = list(items)
    if threads <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=int(threads)) as pool:
        yield from ordered_map(pool, fn, items, 2 * int(threads))
