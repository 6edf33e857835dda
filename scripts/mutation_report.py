"""Summarise the last ``mutmut run`` (mutants/*.meta) into results/mutation/README.md and scores.csv.

Usage: ``make mutation`` (runs mutmut over the pure modules of [tool.mutmut] in pyproject.toml, then
this script). Killed = the test suite failed on the mutant; survived = it passed (a missing test or an
equivalent mutant); no tests = no test reaches the mutated function. Every survivor is listed with its
diff so a reader can judge it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "mutation"
SURVIVED, NO_TESTS, TIMEOUT = 0, 33, 36


def main() -> int:
    metas = sorted((REPO / "mutants").rglob("*.py.meta"))
    if not metas:
        print("no mutmut results in mutants/; run `make mutation`", file=sys.stderr)
        return 2
    rows, survivors = [], []
    for meta in metas:
        module = meta.relative_to(REPO / "mutants").as_posix().removesuffix(".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        done = {k: v for k, v in codes.items() if v is not None}
        if not done:
            continue
        killed = sum(v not in (SURVIVED, NO_TESTS) for v in done.values())
        rows.append({"module": module, "mutants": len(done), "killed": killed,
                     "survived": sum(v == SURVIVED for v in done.values()), "no_tests": sum(v == NO_TESTS for v in done.values()),
                     "score_percent": round(100 * killed / len(done), 1)})  # fmt: skip
        survivors += [(module, k) for k, v in done.items() if v in (SURVIVED, NO_TESTS)]
    df = pd.DataFrame(rows)
    total = {"module": "all", "mutants": int(df.mutants.sum()), "killed": int(df.killed.sum()), "survived": int(df.survived.sum()),
             "no_tests": int(df.no_tests.sum()), "score_percent": round(100 * df.killed.sum() / df.mutants.sum(), 1)}
    df = pd.concat([df, pd.DataFrame([total])], ignore_index=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "scores.csv").write_text(df.to_csv(index=False))
    lines = ["# Mutation testing of the pure modules", "",
             f"Made by `make mutation` (mutmut {_version()}, {datetime.now(timezone.utc):%Y-%m-%d}) over the mutants named by "
             "`MUTANTS` in the Makefile (every function of the pure modules; in `samcam/sam/masks.py` the mask-set "
             "formats, its compact and official readers and writers); tests: `tests_dir` of `[tool.mutmut]` in "
             "pyproject.toml. A mutant is killed when a test fails on it.", "",
             df.to_markdown(index=False, tablefmt="github"), "", "## Surviving mutants", "",
             "Each is a change no test notices: a missing test, or an equivalent mutant (same behaviour: a dtype "
             "argument numpy infers anyway, an `errstate`/warning filter whose effect no result shows, `float('NAN')` for "
             "`float('nan')`).", ""]  # fmt: skip
    for module, key in survivors:
        diff = subprocess.run([str(REPO / ".venv" / "bin" / "mutmut"), "show", key], cwd=REPO, capture_output=True, text=True).stdout
        changed = [ln for ln in diff.splitlines() if ln[:2] in ("- ", "+ ")]
        lines += [f"- `{key}`", "  ```diff", *[f"  {ln}" for ln in changed], "  ```"]
    (OUT / "README.md").write_text("\n".join(lines) + "\n")
    print(df.to_string(index=False))
    return 0


def _version() -> str:
    from importlib.metadata import version

    return version("mutmut")


if __name__ == "__main__":
    sys.exit(main())
