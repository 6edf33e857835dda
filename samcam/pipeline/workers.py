"""Worker processes that die with their parent: a pool for the parallel steps.

A killed parent (SIGTERM, SIGKILL) must not leave workers running and writing: on Linux every
worker asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``); elsewhere the pool's
own shutdown on SIGTERM/SIGINT is all there is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool


class _Pool(ProcessPoolExecutor):
    def __exit__(self, exc_type, exc, tb):
        self.shutdown(wait=True, cancel_futures=exc_type is not None)  # on an error or Ctrl-C, queued work is dropped
        return False


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``workers`` processes that end when this process ends; leaving its
    ``with`` block through an exception cancels the work not yet started."""
    return _Pool(workers, initializer=_die_with_parent, initargs=(os.getpid(),))
