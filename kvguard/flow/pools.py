"""The process's thread pools for the calls a step waits on the network for, each made on first
use: a cold start that needs none pays for no thread, nor for importing `concurrent.futures`."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor


class LazyPool:
    """One pool of `threads` threads named `prefix`, made by the first call and shared after."""

    def __init__(self, threads: int, prefix: str) -> None:
        self._threads = threads
        self._prefix = prefix
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def __call__(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix=self._prefix)
            return self._pool
