"""docs/cli.md, the command reference, is current and says what each command's --help says.

The committed reference is the spec a user reads: a changed option, default, range or help text fails
here until the reference is regenerated (``python scripts/cli_reference.py``) and the change is seen."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from samcam.cli import COMMANDS, main, reference

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "cli.md"


def test_the_committed_reference_is_current():
    assert DOC.is_file(), "docs/cli.md is missing: run python scripts/cli_reference.py"
    assert DOC.read_text(encoding="utf-8") == reference(), "docs/cli.md is out of date: run python scripts/cli_reference.py"


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## samcam (\S+)$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_section_names_the_options_of_its_help(command, capsys):
    """An independent reading: argparse's own --help output, against the reference's rows."""
    assert main([command, "--help"]) == 0
    help_text = capsys.readouterr().out
    section = _sections(DOC.read_text(encoding="utf-8"))[command]
    rows = re.findall(r"^\| `([^`]+)` \| (.*?) \| (.*) \|$", section, flags=re.M)
    documented = [s for opts, _, _ in rows for s in opts.split(", ") if s.startswith("-")]
    in_help = [tok.split()[0] for line in help_text.splitlines() if re.match(r"^  -", line)
               for tok in line.strip().split(", ") if tok.startswith("-")]
    assert documented == [s for s in in_help if s not in ("-h", "--help")]
    squeezed = re.sub(r"\s+", "", help_text)  # argparse wraps the help text (also at hyphens)
    for opts, takes, helptext in rows:
        assert re.sub(r"\s+", "", helptext.replace("\\|", "|")) in squeezed, (command, opts)


def test_ranges_and_choices_in_the_reference_are_the_parsers():
    """Each option with a range: a value just outside it is refused, one inside accepted (by the type)."""
    from samcam.cli import build_parser
    import argparse

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    doc = _sections(DOC.read_text(encoding="utf-8"))
    checked = 0
    for command, sp in sub.choices.items():
        for a in sp._actions:
            m = re.search(rf"^\| `{re.escape(', '.join(a.option_strings))}` \| [^|]*?in ([\[(])([-\d.e]+|-inf), ([-\d.e]+|inf)\]", doc[command], re.M)
            if not a.option_strings or m is None:
                continue
            lo, hi = float(m.group(2)), float(m.group(3))
            kind = int if a.type.__name__ == "int" else float
            if lo > float("-inf"):
                below = lo - 1 if kind is int else lo - 1e-3
                with pytest.raises(argparse.ArgumentTypeError):
                    a.type(str(kind(below)))
                if m.group(1) == "(":
                    with pytest.raises(argparse.ArgumentTypeError):
                        a.type(str(kind(lo)))
                else:
                    assert a.type(str(kind(lo))) == kind(lo)
            if hi < float("inf"):
                with pytest.raises(argparse.ArgumentTypeError):
                    a.type(str(kind(hi + 1 if kind is int else hi + 1e-3)))
                assert a.type(str(kind(hi))) == kind(hi)
            checked += 1
    assert checked >= 40


def test_the_script_checks_and_writes_atomically(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "cli_reference.py"), "--check"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and "current" in r.stdout, r.stdout + r.stderr


def test_a_help_text_names_only_options_that_exist():
    """Every ``--option`` a help text names is an option of its command, or of the samcam command
    named just before it (``cam-eval --csv``): refine's --pseudo pointed at a --format that refine
    does not take, and the command refused it (audit 11, F15)."""
    import argparse

    from samcam.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    options = {name: {o for a in sp._actions for o in a.option_strings} for name, sp in sub.choices.items()}
    wrong = []
    for name, sp in sub.choices.items():
        for a in sp._actions:
            for before, option in re.findall(r"(?:([\w-]+) )?(?<![\w-])(--[a-z][a-z0-9-]*)", a.help or ""):
                owner = before if before in options else name
                if option not in options[owner]:
                    wrong.append(f"{name} {'/'.join(a.option_strings)}: {option}")
    assert wrong == []
