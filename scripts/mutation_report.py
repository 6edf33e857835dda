"""Fold the last ``mutmut run`` (mutants/*.meta) into results/mutation/: scores.csv, one survivors
file per module and README.md.

Usage: ``make mutation`` (all the modules of ``[tool.mutmut] only_mutate`` in pyproject.toml), or a
part: ``make mutation MUTANTS='"samcam.io*"'`` (mutmut's own selection by mutant name, passed to this
script as its arguments and recorded). A run replaces the rows of the modules it ran and keeps the
others, so the table is built up in parts; each row says its selection, the commit and the date it
ran on. Killed = a test failed on the mutant, it timed out or crashed (mutmut's own classification);
survived = every test passed (a missing test or an equivalent mutant); no tests = no test reaches
the mutated function; unscored = interrupted, skipped or suspicious runs and mutants not checked,
left out of the score. The commit is the one ``make mutation`` recorded in ``mutants/samcam_commit``
before mutmut copied the code (the checkout's own otherwise).
Every survivor is listed with its diff so a reader can judge it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from samcam.io import write_text
from samcam.cli import Parser

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "mutation"
#: mutmut's outcomes (mutmut.stats.status_by_exit_code) that count as killed: a test failed, the
#: run timed out or crashed, or a type check caught it. Survived and "no tests" count against the
#: score; an interrupted, skipped or suspicious run, or one not checked (outside the selection, or
#: a run stopped early), is not scored and is counted as unscored.
KILLED = ("killed", "timeout", "segfault", "caught by type check")
COLUMNS = ["module", "mutants", "killed", "survived", "no_tests", "timeouts", "unscored", "score_percent", "selection", "commit", "date", "mutmut"]
#: modules that decide a number and are not pure: at least this share killed (issue 22); pure ones 90 %
TARGET, PURE_TARGET = 85.0, 90.0
PURE = ("samcam/metrics.py", "samcam/cam/label.py", "samcam/refine/", "samcam/sam/masks.py", "samcam/report/tables.py", "samcam/training.py")


def module_rows(metas: list[Path], root: Path) -> tuple[list[dict], dict[str, list[str]]]:
    """Per module of ``root/mutants``: its counts, and the names of its surviving (or untested) mutants."""
    from mutmut.stats import status_by_exit_code

    rows, survivors = [], {}
    for meta in metas:
        module = meta.relative_to(root / "mutants").as_posix().removesuffix(".meta")
        try:
            status = {k: status_by_exit_code[v] for k, v in json.loads(meta.read_text())["exit_code_by_key"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # truncated, not JSON, or not mutmut's layout
            raise ValueError(f"{meta}: not a mutmut result file ({type(e).__name__}: {e})") from None
        scored = {k: s for k, s in status.items() if s in (*KILLED, "survived", "no tests")}
        if not scored:
            continue
        killed = sum(s in KILLED for s in scored.values())
        rows.append({"module": module, "mutants": len(scored), "killed": killed, "survived": sum(s == "survived" for s in scored.values()),
                     "no_tests": sum(s == "no tests" for s in scored.values()), "timeouts": sum(s == "timeout" for s in scored.values()),
                     "unscored": len(status) - len(scored), "score_percent": round(100 * killed / len(scored), 1)})  # fmt: skip
        survivors[module] = sorted(k for k, s in scored.items() if s in ("survived", "no tests"))
    return rows, survivors


def merge_scores(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``old``'s rows for modules ``new`` does not have, then ``new``'s, sorted by module; no "all" row."""
    old = old[(old["module"] != "all") & ~old["module"].isin(new["module"])] if len(old) else old
    both = pd.concat([df for df in (old, new) if len(df)], ignore_index=True) if len(old) or len(new) else new
    return both.reindex(columns=COLUMNS).sort_values("module", ignore_index=True)


def with_total(df: pd.DataFrame) -> pd.DataFrame:
    n = int(df["mutants"].sum())
    total = {"module": "all", **{c: int(df[c].sum()) for c in ("mutants", "killed", "survived", "no_tests")},
             **{c: df[c].sum(min_count=1) for c in ("timeouts", "unscored")},  # blank when no run recorded them
             "score_percent": round(100 * df["killed"].sum() / n, 1) if n else float("nan")}
    return pd.concat([df, pd.DataFrame([total])], ignore_index=True).reindex(columns=COLUMNS)


def target_of(module: str) -> float:
    return PURE_TARGET if module.startswith(PURE) else TARGET


def survivors_file(module: str) -> Path:
    return OUT / "survivors" / (module.removesuffix(".py").replace("/", ".") + ".md")


#: a mutmut selection: mutant-name patterns (``samcam.io*``, ``samcam.sam.masks.x_*compact*``)
PATTERN = re.compile(r"^[A-Za-z_*][\w.*ǁ]*$")


def parser() -> argparse.ArgumentParser:
    ap = Parser(prog="mutation_report", description=__doc__.splitlines()[0])
    ap.add_argument("selection", nargs="*", metavar="PATTERN",
                    help="the mutmut selection the run used (mutant-name patterns, e.g. 'samcam.io*'), recorded with its rows; none: all")  # fmt: skip
    return ap


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    bad = next((p for p in a.selection if not PATTERN.match(p)), None)
    if bad is not None:
        print(f"mutation_report: error: {bad!r} is not a mutant-name pattern (e.g. 'samcam.io*')", file=sys.stderr)
        return 2
    metas = sorted((REPO / "mutants").rglob("*.py.meta"))
    try:
        rows, survivors = module_rows(metas, REPO)
    except ValueError as e:
        print(f"mutation_report: error: {e}", file=sys.stderr)
        return 2
    if not rows:
        print("mutation_report: error: no mutmut results in mutants/; run `make mutation`", file=sys.stderr)
        return 2
    stamp = {"selection": " ".join(a.selection) or "all", "commit": _commit(), "date": f"{datetime.now(timezone.utc):%Y-%m-%d}", "mutmut": _version()}
    new = pd.DataFrame([{**r, **stamp} for r in rows])
    old = pd.read_csv(OUT / "scores.csv") if (OUT / "scores.csv").is_file() else pd.DataFrame(columns=COLUMNS)
    scores = merge_scores(old, new)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "survivors").mkdir(exist_ok=True)
    for module, keys in survivors.items():
        lines = [f"# Surviving mutants of `{module}`", "", f"mutmut {stamp['mutmut']} at commit {stamp['commit']}, {stamp['date']}.", ""]
        for key in keys:
            diff = subprocess.run([str(REPO / ".venv" / "bin" / "mutmut"), "show", key], cwd=REPO, capture_output=True, text=True).stdout
            changed = [ln for ln in diff.splitlines() if ln[:2] in ("- ", "+ ")]
            lines += [f"- `{key}`", "  ```diff", *[f"  {ln}" for ln in changed], "  ```"]
        write_text(survivors_file(module), "\n".join(lines) + "\n")
    table = with_total(scores)
    write_text(OUT / "scores.csv", table.to_csv(index=False))
    write_readme(table)
    print(table.to_string(index=False))
    return 0


def write_readme(table: pd.DataFrame) -> None:
    """results/mutation/README.md: the scores table with each module's target, and where the survivors are."""
    shown = table.assign(target=[f"{target_of(m):g}" if m != "all" else "" for m in table["module"]],
                         met=["" if m == "all" else ("yes" if s >= target_of(m) else "no") for m, s in zip(table["module"], table["score_percent"])])  # fmt: skip
    shown = shown.astype(object).where(shown.notna(), "")
    lines = ["# Mutation testing", "",
             "Made by `make mutation` (all modules of `only_mutate` in `[tool.mutmut]`, pyproject.toml) or in parts with "
             "`make mutation MUTANTS='\"samcam.io*\"'`; `scripts/mutation_report.py` folds each run into this table, so "
             "each row names the commit and date it ran on (`-dirty`: the package or tests had uncommitted changes). "
             "A mutant is killed when a test fails on it, it times out or crashes (blank: not recorded by that run; "
             "unscored: interrupted or skipped runs, left out). `selection` is the mutmut selection the row ran (a part of a module "
             "replaces the module's row, so it says so). "
             "Targets: 90 % for pure modules, 85 % for the others. Modules of `only_mutate` without a row have not run yet.", "",
             shown.to_markdown(index=False, tablefmt="github"), "",
             "Surviving mutants, each with its diff, are listed per module in `survivors/`. Each is a change no test "
             "notices: a missing test, or an equivalent mutant (same behaviour: a dtype numpy infers anyway, a "
             "warning filter whose effect no result shows).", ""]  # fmt: skip
    write_text(OUT / "README.md", "\n".join(lines) + "\n")


def _commit() -> str:
    recorded = REPO / "mutants" / "samcam_commit"
    if recorded.is_file():
        return recorded.read_text().strip()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "samcam", "tests", "pyproject.toml"], cwd=REPO, capture_output=True, text=True).stdout
    return head + ("-dirty" if dirty.strip() else "")


def _version() -> str:
    from importlib.metadata import version

    return version("mutmut")


if __name__ == "__main__":
    sys.exit(main())
