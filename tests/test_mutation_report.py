"""scripts/mutation_report.py folds a mutmut run into results/mutation/ in parts: a run's modules
replace their rows, the other rows stay, and the total is recomputed from the rows."""

import importlib.util
import json
from pathlib import Path

import pandas as pd

_spec = importlib.util.spec_from_file_location("mutation_report", Path(__file__).resolve().parents[1] / "scripts" / "mutation_report.py")
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


def test_module_rows_count_each_exit_code(tmp_path):
    meta = tmp_path / "mutants" / "samcam" / "io.py.meta"
    meta.parent.mkdir(parents=True)
    # mutmut's exit codes: 1 killed, 0 survived, 33 and 5 no tests, 36 and 24 timeouts, -11 a crash,
    # None not run, 2 interrupted and 34 skipped (not scored)
    codes = {"a": 1, "b": 0, "c": 33, "d": 36, "e": None, "f": 1, "g": -11, "h": 2, "i": 34, "j": 24, "k": 5}
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    (rows,), survivors = report.module_rows([meta], tmp_path)
    assert rows == {"module": "samcam/io.py", "mutants": 8, "killed": 5, "survived": 1, "no_tests": 2, "timeouts": 2, "unscored": 3,
                    "score_percent": 62.5}  # fmt: skip
    assert survivors == {"samcam/io.py": ["b", "c", "k"]}


def test_a_part_replaces_its_modules_and_keeps_the_others():
    old = pd.DataFrame([{"module": "samcam/a.py", "mutants": 10, "killed": 9, "commit": "old"},
                        {"module": "samcam/b.py", "mutants": 20, "killed": 10, "commit": "old"},
                        {"module": "all", "mutants": 30, "killed": 19}])  # fmt: skip
    new = pd.DataFrame([{"module": "samcam/b.py", "mutants": 4, "killed": 4, "commit": "new"},
                        {"module": "samcam/c.py", "mutants": 6, "killed": 3, "commit": "new"}])  # fmt: skip
    merged = report.merge_scores(old, new)
    assert merged["module"].tolist() == ["samcam/a.py", "samcam/b.py", "samcam/c.py"]
    assert merged["commit"].tolist() == ["old", "new", "new"] and merged["mutants"].tolist() == [10, 4, 6]
    total = report.with_total(merged.fillna({c: 0 for c in ("survived", "no_tests", "timeouts", "unscored")})).iloc[-1]
    assert total["module"] == "all" and total["mutants"] == 20 and total["killed"] == 16 and total["score_percent"] == 80.0
    first = report.merge_scores(pd.DataFrame(columns=report.COLUMNS), new)  # the first run: no table yet
    assert first["module"].tolist() == ["samcam/b.py", "samcam/c.py"]


def test_targets_follow_purity():
    assert report.target_of("samcam/metrics.py") == 90 and report.target_of("samcam/refine/merge.py") == 90
    assert report.target_of("samcam/pipeline/merge.py") == 85 and report.target_of("samcam/io.py") == 85


def test_help_and_bad_input_write_nothing(tmp_path, monkeypatch, capsys):
    """``--help`` prints the usage (it had been recorded as a selection, replacing a module's committed
    row); an option or a pattern that is no mutant name, and a truncated or foreign ``.meta`` file, are
    refused in one line naming the file, exit 2; nothing is written."""
    import pytest

    monkeypatch.setattr(report, "REPO", tmp_path)
    monkeypatch.setattr(report, "OUT", tmp_path / "results" / "mutation")
    meta = tmp_path / "mutants" / "samcam" / "io.py.meta"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"exit_code_by_key": {"samcam.io.x_f__mutmut_1": 1}}))
    with pytest.raises(SystemExit) as e:
        report.main(["--help"])
    assert e.value.code == 0 and "PATTERN" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        report.main(["--bogus"])
    assert e.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert report.main(["samcam.io* ; rm"]) == 2
    assert capsys.readouterr().err == "mutation_report: error: 'samcam.io* ; rm' is not a mutant-name pattern (e.g. 'samcam.io*')\n"
    for text, what in [('{"exit_code_by_key": {', "JSONDecodeError"), ("[]", "TypeError"), ('{"other": {}}', "KeyError")]:
        meta.write_text(text)
        assert report.main(["samcam.io*"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"mutation_report: error: {meta}: not a mutmut result file ({what}") and err.count("\n") == 1
    assert not (tmp_path / "results").exists()
