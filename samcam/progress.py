"""Progress bars: one rule for the whole package.

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
