"""One style for every table of named choices.

A registry is a module-level ``dict`` from a name to what the name stands for: a spec (a dataclass), a
builder or a reader. Its keys are the choices the command line offers (``choices=TABLE``); what a name
does lives in its entry, never in an ``if name == ...`` chain elsewhere. Plain options that select no
implementation (a prompt kind, an optimizer) are tuples of names.

:func:`lookup` is the one way a name is resolved, for both kinds, so every unknown name gets the same
error: :class:`UnknownName`, which is both a ``KeyError`` and a ``ValueError`` and reads as its message.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, TypeVar, overload

T = TypeVar("T")


class UnknownName(KeyError, ValueError):
    """A name that is not in its registry (``str()`` is the message, without ``KeyError``'s quotes)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@overload
def lookup(table: Mapping[str, T], name: object, what: str, *, fold_case: bool = False) -> T: ...
@overload
def lookup(table: Collection[str], name: object, what: str, *, fold_case: bool = False) -> str: ...
def lookup(table: Any, name: object, what: str, *, fold_case: bool = False) -> Any:
    """``table[name]`` for a mapping, ``name`` itself for a tuple of names; ``fold_case`` matches
    regardless of case (and returns the registry's spelling for a tuple).

    Raises :class:`UnknownName` naming ``what`` and every known name.
    """
    if isinstance(name, str):
        if name in table:
            return table[name] if isinstance(table, Mapping) else name
        if fold_case:
            for key in table:
                if key.lower() == name.lower():
                    return table[key] if isinstance(table, Mapping) else key
    raise UnknownName(f"unknown {what} {name!r}; known: {', '.join(map(str, table))}")
