"""Running an iterator a few items ahead on a background thread.

Decompression (Python's ``lzma``, ``gzip``, ``bz2``), the C trace parsers and the C MMU
all release the GIL while they work, so a trace can be decompressed, parsed and
translated at the same time on different cores.  :class:`Ahead` is the one mechanism
for that: ``emu.trace`` decompresses ahead with it, and ``mmulab run-trace`` reads and
parses ahead with it while the MMU runs the previous chunk.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")

THREAD_NAME = "mmulab-ahead"


class _End:
    """The iterator is exhausted."""


class _Raised:
    """The iterator raised ``exc``."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Ahead(Generic[T]):
    """Iterate ``source`` on a background thread, at most ``depth`` items ahead.

    Items come out in order; an exception raised by ``source`` is raised by
    ``__next__`` once every item before it has been taken.  :meth:`close` (also on
    leaving a ``with`` block) stops the thread, waits for it, and then closes
    ``source`` if it is a generator, so its ``finally`` blocks (closing files) run.

    Args:
        source: the iterator to run ahead.
        depth: most items waiting (bounds the memory held ahead).
    """

    def __init__(self, source: Iterator[T], depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._source = source
        self._q: queue.Queue[T | _End | _Raised] = queue.Queue(depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
        except BaseException as exc:  # raised again in the consumer's thread
            self._put(_Raised(exc))
            return
        self._put(_End())

    def _put(self, item: T | _End | _Raised) -> bool:
        """Queue ``item``; False when stopped first."""
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Ahead[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        item = self._q.get()
        if isinstance(item, _End):
            self._finished = True
            raise StopIteration
        if isinstance(item, _Raised):
            self._finished = True
            raise item.exc
        return item

    def close(self) -> None:
        """Stop the thread (it may be waiting on a full queue) and close ``source``."""
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._q.get(timeout=0.05)
        self._thread.join()
        self._finished = True
        close = getattr(self._source, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Ahead[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
