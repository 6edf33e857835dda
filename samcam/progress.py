"""Progress bars and notes: one rule for the whole package.

A bar is shown when the caller asks for one (``progress=True``), never when it asks for none
(``progress=False``), and otherwise (``progress=None``) when stderr is a terminal, so logs and
captured output stay free of bars. What happens to be imported (IPython, a notebook kernel) never
decides: every bar is the plain ``tqdm`` bar on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any


def show_progress(progress: bool | None = None) -> bool:
    """Whether to show a bar: ``progress`` when given, else whether stderr is a terminal."""
    if progress is not None:
        return bool(progress)
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(iterable: Iterable | None = None, progress: bool | None = None, **kwargs: Any):
    """A ``tqdm`` bar on stderr over ``iterable`` (or with ``total=``), disabled unless
    :func:`show_progress` says to show it. Keyword arguments go to ``tqdm``."""
    from tqdm import tqdm

    return tqdm(iterable, disable=not show_progress(progress), file=sys.stderr, dynamic_ncols=True, **kwargs)


#: the notes :func:`say_once` knows; each is said once per command, however many pool workers read
NOTES = ("masks-01", "not-an-id", "untracked-ids", "exif-orientation")
_said_here: set[str] = set()
_said_shared = None  # a multiprocessing Value (a bit per note) shared by a command and its pool workers


def reset_notes() -> None:
    """Forget the notes said: a new command starts (:func:`samcam.cli.main` calls this first)."""
    global _said_shared
    _said_here.clear()
    _said_shared = None


def shared_notes(ctx=None):
    """The notes' shared state, made once in the command's process (in the multiprocessing context
    ``ctx`` its pool uses) and handed to every pool worker (:func:`samcam.pipeline.workers.process_pool`
    passes it to :func:`adopt_notes`). Per-device workers (``run_on_devices``) do not share it: each
    may say a note once."""
    global _said_shared
    if _said_shared is None:
        import multiprocessing

        _said_shared = (ctx or multiprocessing).Value("q", 0)
        for key in _said_here:
            _said_shared.value |= 1 << NOTES.index(key)
    return _said_shared


def adopt_notes(shared) -> None:
    """In a pool worker: say a note only if no process of the command has said it."""
    global _said_shared
    _said_shared = shared


def say_once(key: str, text: str) -> None:
    """Print ``samcam: note: text`` on stderr unless the note ``key`` (one of :data:`NOTES`) was said
    already by this command: by this process or, through :func:`shared_notes`, by its pool workers."""
    if key not in NOTES:  # a fault of samcam's code, not of the input
        raise TypeError(f"say_once: unknown note {key!r}; add it to samcam.progress.NOTES")
    bit = 1 << NOTES.index(key)
    if _said_shared is None:
        if key in _said_here:
            return
        _said_here.add(key)
    else:
        with _said_shared.get_lock():
            if _said_shared.value & bit:
                return
            _said_shared.value |= bit
    print(f"samcam: note: {text}", file=sys.stderr)
