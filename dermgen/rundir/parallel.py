"""Bounded, ordered parallel reads: at most `workers` store requests in flight, results in input order.

The read-side commands (verify, inspect, report) and resume read one object per shard (and verify one per
image); on S3 each read is a round trip, so a few threads overlap them. The bound keeps memory flat: only
`workers` results wait beside the one the caller is using, however long the input.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

READ_WORKERS = 8  # the read-side commands' default (their option models use this value)


def bounded_map(fn: Callable[[T], R], items: Iterable[T], workers: int = 1) -> Iterator[tuple[T, R]]:
    """(item, fn(item)) for every item, in order, with at most `workers` calls running at once.

    `workers` <= 1 calls `fn` in this thread. An exception raised by `fn` is raised here, at its item.
    """
    if workers <= 1:
        for item in items:
            yield item, fn(item)
        return
    source = iter(items)
    pending: deque[tuple[T, Future]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dermgen-read") as pool:
        try:
            for item in source:
                pending.append((item, pool.submit(fn, item)))
                if len(pending) >= workers:
                    break
            while pending:
                item, fut = pending.popleft()
                for nxt in source:  # keep `workers` requests in flight while the caller works
                    pending.append((nxt, pool.submit(fn, nxt)))
                    break
                yield item, fut.result()
        finally:
            for _, fut in pending:  # stopped early: do not start what is still queued
                fut.cancel()
