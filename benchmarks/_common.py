"""Helpers shared by the benchmark scripts: machine description and result writing."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "benchmarks"


def machine() -> dict:
    """The machine (:func:`samcam.outputs.machine_info`, torch's threads and GPU included) and the commit."""
    import torch  # noqa: F401  (imported, so that machine_info names its version, threads and GPU)

    from samcam.outputs import git_commit, machine_info

    return {**machine_info(), "git_commit": git_commit(REPO)}


def results(name: str, out: str | os.PathLike = OUT) -> list[Path]:
    """The files :func:`write` makes for benchmark ``name``: ``<out>/<name>.json`` and ``.md``. Each
    script's ``writes(argv)`` names them (and whatever else it writes), so that ``samcam reproduce``
    can check a step writes only what it declares before the script runs."""
    return [Path(out) / f"{name}.json", Path(out) / f"{name}.md"]


def write(name: str, result: dict, markdown: str, out: str | os.PathLike = OUT) -> None:
    """:func:`results` (default in ``results/benchmarks/``), with the command and machine."""
    from samcam.io import write_text

    json_file, md_file = results(name, out)
    result = {"benchmark": name, "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine(), **result}
    write_text(json_file, relocated(json.dumps(result, indent=1)) + "\n")
    write_text(md_file, relocated(markdown.rstrip() + f"\n\nCommand: `{result['command']}` ({result['when']}, {result['machine']['cores']} cores: {result['machine']['cpu']})") + "\n")
    print(markdown)


def relocated(text: str, checkouts=()) -> str:
    """A benchmark record's ``text`` without machine paths: data, checkout and the folders beside it
    as :func:`samcam.outputs.relocate_text` writes them (relative to the checkout, where the commands
    run), the temporary folder as ``$TMPDIR``. ``checkouts``: other checkouts taken as this one."""
    import tempfile

    from samcam.outputs import relocate_text

    return relocate_text(text, REPO, checkouts).replace(tempfile.gettempdir().rstrip("/") + "/", "$TMPDIR/")


def data_root() -> Path:
    """samcam's data root (``$SAMCAM_DATA``, empty meaning unset, or ``../shared/data``): one rule for the
    package and its benchmarks."""
    from samcam.io import data_root as root

    return root()
