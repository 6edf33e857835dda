"""Settings declared once: a config dataclass's field carries its default, its range and its help
(:func:`setting`), and both the command line (:func:`add_options`, :func:`from_args`) and the
dataclass's own check (:func:`check_settings`, for a config read back from a checkpoint) use them.

Light on purpose (argparse and dataclasses only): ``samcam merge`` and ``samcam eval`` start without
torch.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import MISSING, field, fields
from typing import Any

from samcam.registry import lookup


def _interval(lo, hi, open_lo: bool) -> str:
    return f"{'(' if open_lo else '['}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"


def _inside(v, lo, hi, open_lo: bool) -> bool:
    finite = isinstance(v, int) or math.isfinite(v)  # a huge int is finite (math.isfinite would overflow)
    return finite and (lo is None or (v > lo if open_lo else v >= lo)) and (hi is None or v <= hi)


def number(kind: type, lo: float | None = None, hi: float | None = None, open_lo: bool = False):
    """An argparse type: a finite ``kind`` number in [lo, hi] (or (lo, hi] with ``open_lo``; NaN and
    infinities refused)."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if not _inside(v, lo, hi, open_lo):
            raise argparse.ArgumentTypeError(f"{text} is outside {_interval(lo, hi, open_lo)}")
        return v

    parse.__name__ = kind.__name__
    parse.interval = _interval(lo, hi, open_lo)  # the range, for the command reference (samcam.cli.reference)
    return parse


def setting(default: Any, lo: float | None = None, hi: float | None = None, help: str = "", choices: tuple | None = None,
            flag: str | None = None, open_lo: bool = False) -> Any:  # fmt: skip
    """A config field with its range ``[lo, hi]`` (``(lo, hi]`` with ``open_lo``: a rate that must be
    positive), its ``choices`` and its help.
    ``flag`` names the command-line switch of a boolean field (e.g. ``--no-flip`` for a field that
    defaults to true); other fields are ``--<name-with-dashes>``."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "help": help, "choices": choices, "flag": flag, "open_lo": open_lo})


def _declared(cls) -> list:
    return [f for f in fields(cls) if "help" in f.metadata]


def check_settings(obj, what: str) -> None:
    """``ValueError`` naming ``what`` and the field when a declared field of ``obj`` has the wrong
    type (a bool is not a number, an int is a float), is not finite, or lies outside its range or
    choices."""
    for f in _declared(obj):
        v, kind, m = getattr(obj, f.name), type(f.default), f.metadata
        if not (isinstance(v, kind) or (kind is float and isinstance(v, int))) or isinstance(v, bool) != (kind is bool):
            raise ValueError(f"{what} field {f.name} is {v!r}, expected {'an' if kind.__name__[0] in 'aeiou' else 'a'} {kind.__name__}")
        if kind in (int, float):
            if not _inside(v, m["lo"], m["hi"], m["open_lo"]):
                raise ValueError(f"{what} field {f.name} is {v!r}, expected a finite number in {_interval(m['lo'], m['hi'], m['open_lo'])}")
        if m["choices"] is not None and v not in m["choices"]:
            lookup(m["choices"], v, f"{what} field {f.name}")  # raises: unknown ... known: ...


def recorded_config(cls, values: object, where: str):
    """``cls`` built from a configuration a checkpoint recorded (fields it predates take their
    defaults), so every field is checked as the option was (:func:`check_settings` in the class's
    ``__post_init__``): ``ValueError`` naming ``where`` (the checkpoint) and the field when the record
    is not a mapping, holds a field ``cls`` does not have, or a value out of its range."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: its recorded config is a {type(values).__name__}, not a mapping")
    unknown = sorted(map(str, set(values) - {f.name for f in fields(cls)}))
    if unknown:
        raise ValueError(f"{where}: its recorded config holds {unknown[0]!r}, not a field samcam writes")
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: recorded config: {e}") from None


def add_options(p, cls, only: tuple[str, ...] | None = None, given_only: bool = False) -> None:
    """Declare the command-line options of ``cls``'s declared fields (or of those named in ``only``)
    on the parser or argument group ``p``, each with its default, range or choices, and help.
    ``given_only``: an option not given leaves no attribute (``argparse.SUPPRESS``), so that values
    from elsewhere (a file) fill it in :func:`from_args`; the help still names the class's default."""
    for f in _declared(cls):
        if only is not None and f.name not in only:
            continue
        m, d = f.metadata, f.default
        assert d is not MISSING, f.name
        default = argparse.SUPPRESS if given_only else d
        if isinstance(d, bool):
            flag = m["flag"] or f"--{f.name.replace('_', '-')}"
            p.add_argument(flag, dest=f.name, action="store_false" if d else "store_true", default=default, help=m["help"])
            continue
        flag = f"--{f.name.replace('_', '-')}"
        if m["choices"] is not None:
            p.add_argument(flag, dest=f.name, default=default, type=type(d), choices=m["choices"], help=f"{m['help']} (default {d})")
        else:
            p.add_argument(flag, dest=f.name, type=number(type(d), m["lo"], m["hi"], m["open_lo"]), default=default,
                           help=f"{m['help']} (default {d:g})")  # fmt: skip


def from_args(cls, a: argparse.Namespace, base: dict[str, Any] | None = None, **values):
    """``cls`` from the parsed options of its declared fields, ``values`` overriding or adding;
    ``base``: values of the fields whose option was not given (:func:`add_options`' ``given_only``)."""
    return cls(**{**(base or {}), **{f.name: getattr(a, f.name) for f in _declared(cls) if hasattr(a, f.name)}, **values})
