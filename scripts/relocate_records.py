"""Rewrite the committed records made before samcam recorded relocatable paths (run once, from the
checkout; ``--made-in`` is the checkout that wrote them, whose absolute paths they hold).

Paths are rewritten by the producers' own functions (:func:`samcam.outputs.record_path`,
:func:`samcam.outputs.relocate`, :func:`samcam.reproduce.relocate_notebook`, the benchmarks'
``relocated``); numbers are left as written. Each ``samcam_run.json`` gains the content fingerprint
of each input that exists here (``null`` for one that does not: a rerun then counts it as changed).

    python scripts/relocate_records.py --made-in PATH_OF_THAT_CHECKOUT
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from samcam.io import REPO, write_text
from samcam.outputs import RUN_RECORD, fingerprint, record_path, relocate, relocate_text, resolve_recorded
from samcam.reproduce import relocate_notebook
from samcam.cli import Parser

sys.path.insert(0, str(REPO / "benchmarks"))
from _common import relocated  # noqa: E402


#: committed text that quotes source code, not records: its paths are code's (``/proc/cpuinfo``), never a checkout's
QUOTED = ("results/mutation/",)


def check_made_in(made_in: str) -> None:
    """``--made-in``: one printable line, an absolute path, and, where a folder of that name exists on
    this machine, a samcam checkout (``pyproject.toml`` and ``samcam/``): ``/proc`` or ``/usr`` would
    rewrite every path below them in the committed files. ``ValueError`` saying which."""
    if not made_in.isprintable() or not made_in.strip():
        raise ValueError(f"{made_in!r} is not one line of printable text")
    if not Path(made_in).is_absolute():
        raise ValueError(f"{made_in}: is not an absolute path; give the folder of the checkout that wrote the records")
    folder = Path(made_in)
    if folder.exists() and not ((folder / "pyproject.toml").is_file() and (folder / "samcam").is_dir()):
        raise ValueError(f"{made_in}: exists here and is not a samcam checkout (no pyproject.toml and samcam/ in it)")


def migrate_record(path: Path, made_in: str) -> None:
    doc = json.loads(path.read_text())
    if "fingerprints" in doc:
        return
    said = {k: v for k, v in doc["inputs"].items() if not (v and Path(v).is_absolute())}  # none, or words (not kept)
    here = {k: resolve_recorded(relocate_text(v, REPO, [made_in]), REPO) for k, v in doc["inputs"].items() if k not in said}
    doc["inputs"] = {**said, **{k: record_path(p, path.parent) for k, p in here.items()}}
    here.update(dict.fromkeys(said))
    doc["fingerprints"] = {k: fingerprint(p) for k, p in here.items()}
    doc["parameters"] = relocate(doc["parameters"], path.parent, [made_in])
    write_text(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")


def main() -> int:
    ap = Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--made-in", required=True, help="the checkout whose absolute paths the committed files hold")
    made_in = ap.parse_args().made_in
    try:
        relocate_text("", REPO, [made_in])  # the checkout is checked where every path is rewritten
        check_made_in(made_in)
    except ValueError as e:
        print(f"relocate_records: error: --made-in {e}", file=sys.stderr)
        return 2
    files = subprocess.run(["git", "ls-files", "results", "benchmarks"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        path = REPO / name
        if path.name == RUN_RECORD:
            migrate_record(path, made_in)
        elif path.suffix == ".ipynb":
            meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
            notebook = REPO / "notebooks" / Path(meta.get("input_path", path.name)).name
            relocate_notebook(path, notebook, path, REPO, [made_in])
        elif path.suffix in (".json", ".md") and name.startswith(("results/", "benchmarks/")) and not name.startswith(QUOTED):
            text = path.read_text()
            base = path.parent if path.name == "summary.json" else REPO  # as write_results writes it
            new = relocated(text, [made_in]) if base == REPO else relocate_text(text, base, [made_in])
            if new != text:
                write_text(path, new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
