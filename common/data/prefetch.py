"""Load host batches ahead of the training step, in a background thread.

    with Prefetcher(load, items, depth=2) as batches:
        for batch in batches:            # load(items[0]), load(items[1]), ... in order
            step(batch)                  # while the thread loads the next `depth`

A thread suffices: the loading is numpy, h5py/zarr reads and memory copies, which release the
GIL, and the jitted step runs outside Python. An exception in `load` is raised by the iteration
at the item that failed (the same exception, with the worker's traceback); `close()` (or leaving the `with`)
stops the worker and joins it, also when the consumer stops early. `wait_seconds` is the time the
consumer spent waiting for a batch: near 0 when loading keeps up with the step.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_DONE = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher:
    """`load(item)` for each of `items`, `depth` ahead, yielded in order. depth 0 loads in the
    calling thread (no worker)."""

    def __init__(self, load: Callable[[Any], Any], items: Iterable, depth: int = 2):
        if depth < 0:
            raise ValueError(f"prefetch depth must be >= 0, got {depth}")
        self.load, self.items, self.depth = load, items, depth
        self.wait_seconds = 0.0
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._thread: threading.Thread | None = None
        if depth:
            self._thread = threading.Thread(target=self._work, name="jaxbrr-prefetch", daemon=True)
            self._thread.start()

    def _put(self, value) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(value, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            for item in self.items:
                if self._stop.is_set() or not self._put(self.load(item)):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            self._put(_Failure(error))
            return
        self._put(_DONE)

    def __iter__(self) -> Iterator:
        if self._thread is None:
            for item in self.items:
                since = time.perf_counter()
                value = self.load(item)
                self.wait_seconds += time.perf_counter() - since
                yield value
            return
        while True:
            since = time.perf_counter()
            value = self._queue.get()
            self.wait_seconds += time.perf_counter() - since
            if value is _DONE:
                return
            if isinstance(value, _Failure):
                raise value.error  # the loader's own exception, its traceback from the worker
            yield value

    def close(self) -> None:
        """Stop the worker and wait for it (a load in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:  # unblock a worker waiting on a full queue
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=0.05)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
