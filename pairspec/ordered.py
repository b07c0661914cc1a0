"""An ordered map over an executor with a bounded number of jobs in flight."""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterable, Iterator


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
