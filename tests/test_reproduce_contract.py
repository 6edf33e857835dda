"""The contract of ``samcam reproduce`` piece by piece: the config's checks and their messages, a
step's stamp and fingerprints, the plan and its lines, what a run reports and writes, and what
``execute`` hands papermill and leaves in the executed notebook. Each test works in a checkout of its
own (``checkout``); papermill and a command step are replaced by fakes, so no kernel starts."""

from __future__ import annotations

import ast
import hashlib
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from samcam import reproduce
from samcam.reproduce import Step, check_redo, describe, fingerprints, full_stamp, load_config, plan, resolve, skip_reason, stamp, step_state, taken_before


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _config(tmp_path: Path, text: str) -> Path:
    cfg = tmp_path / "r.yml"
    cfg.write_text(text)
    return cfg


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    """``tmp_path/repo`` as the checkout (``notebooks/t.ipynb``, default runs ``results/runs``),
    ``tmp_path/data`` as the data root, and a ``git_commit`` that says which folder it was asked about."""
    from samcam import io, outputs

    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    nbformat.write(new_notebook(cells=[new_code_cell("x = 1")]), str(repo / "notebooks" / "t.ipynb"))
    for module in (io, outputs, reproduce):
        monkeypatch.setattr(module, "REPO", repo)
    monkeypatch.setattr(reproduce, "NOTEBOOKS", repo / "notebooks")
    monkeypatch.setattr(reproduce, "RUNS", repo / "results" / "runs")
    monkeypatch.setenv("SAMCAM_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(outputs, "git_commit", lambda path: f"commit of {path}")
    return repo


# ---------------------------------------------------------------- the config


def test_a_command_step_names_itself_and_the_commands_it_may_run(checkout, tmp_path):
    cfg = _config(tmp_path, "steps:\n  - {name: x, command: [demo], outputs: [o]}\n")
    with pytest.raises(ValueError) as e:
        load_config(cfg)
    head, known = str(e.value).split("; known: ")
    assert head == f"{cfg}: step 0 (x) command 'demo' is not a samcam step"  # demo and reproduce run steps themselves
    names = known.split(", ")
    assert names == sorted(names) and {"eval", "masks", "cam", "merge"} <= set(names) and not {"demo", "reproduce"} & set(names)
    _config(tmp_path, 'steps:\n  - {name: x, command: [eval, "a\\0b"]}\n')
    with pytest.raises(ValueError, match=re.escape(f"{cfg}: step 0 (x) command must be a non-empty list of non-empty strings")):
        load_config(cfg)
    _config(tmp_path, "steps:\n  - {name: x, command: [eval, --pred, p, --gt, g]}\n")  # writes nothing it must declare
    assert load_config(cfg) == [Step("x", None, {}, [], [], ["eval", "--pred", "p", "--gt", "g"], None)]


@pytest.mark.parametrize("notebook", ['""', '"a\\0b.ipynb"'])
def test_a_notebook_name_that_is_empty_or_holds_a_nul_is_refused(checkout, tmp_path, notebook):
    cfg = _config(tmp_path, f"steps:\n  - {{name: x, notebook: {notebook}}}\n")
    with pytest.raises(ValueError, match=re.escape(f"{cfg}: step 0 (x) notebook ") + ".* must be a relative path inside notebooks/$"):
        load_config(cfg)


def test_the_weights_command_is_no_step(checkout, tmp_path):
    """``samcam weights`` writes the weights cache, outside the checkout: no step may run it, and the
    commands a config may run, as the refusal lists them, leave it out."""
    cfg = _config(tmp_path, "steps:\n  - {name: x, command: [weights, fetch], outputs: [o]}\n")
    with pytest.raises(ValueError) as e:
        load_config(cfg)
    head, known = str(e.value).split("; known: ")
    assert head == f"{cfg}: step 0 (x) command 'weights' is not a samcam step"
    assert "weights" not in known.split(", ") and "eval" in known.split(", ")


@pytest.mark.parametrize("step, message", [
    ("{name: x, command: eval, outputs: [o]}", "command is a str, expected a list"),
    ("{name: x, script: benchmarks/bench_eval.py, outputs: [o]}", "script is a str, expected a list"),
    ("{name: x, notebook: t.ipynb, outputs: [o], parameters: [1]}", "parameters is a list, expected a dict"),
    ("{name: x, notebook: t.ipynb, outputs: [o], scratch: work/a}", "scratch is a str, expected a list"),
    ("{name: x, notebook: t.ipynb, outputs: [o], long: 3}", "long is a int, expected a str"),
])  # fmt: skip
def test_each_key_of_a_step_is_checked_for_its_kind_before_it_is_read(checkout, tmp_path, step, message):
    """A key of the wrong kind is named as such, not read as what it is not (a command ``eval`` taken
    letter by letter, a ``long`` of 3 or ``parameters`` as a list failing in Python)."""
    cfg = _config(tmp_path, f"steps:\n  - {step}\n")
    with pytest.raises(ValueError, match="^" + re.escape(f"{cfg}: step 0 (x) {message}") + "$"):
        load_config(cfg)


def test_a_notebook_name_that_is_no_string_is_a_value_error():
    with pytest.raises(ValueError, match=r"^the notebook 3 must be a relative path inside notebooks/$"):
        reproduce._inside(3, Path("notebooks"), "the notebook")


def test_a_yaml_alias_is_refused_in_one_line_at_its_place(tmp_path):
    import yaml

    from samcam import io

    cfg = _config(tmp_path, "a: &a [1]\nsteps: *a\n")
    with pytest.raises(ValueError) as e:
        load_config(cfg)
    assert str(e.value) == f"{cfg}: not a readable YAML file (YAML aliases (*name) are not accepted in a configuration, line 2)"
    with pytest.raises(yaml.composer.ComposerError) as e:
        yaml.load("a: &a [1]\nsteps: *a\n", Loader=io._plain_loader())
    assert (e.value.problem_mark.line, e.value.problem_mark.column) == (1, 7)  # where the alias stands


def test_load_config_fills_defaults_and_expands_only_samcam_variables(checkout, tmp_path, monkeypatch):
    monkeypatch.setenv("SAMCAM_EXTRA", "/srv/extra")
    monkeypatch.setenv("OTHER_VAR", "/srv/other")
    cfg = _config(tmp_path, "steps:\n  - name: a\n    notebook: t.ipynb\n"
                            "  - name: b\n    notebook: t.ipynb\n    long: an hour\n"
                            "    inputs: ['${REPO}/in', '${SAMCAM_DATA}/voc', '${SAMCAM_EXTRA}/x', '${OTHER_VAR}/y']\n    outputs: [o]\n")
    assert load_config(cfg) == [
        Step("a", "t.ipynb", {}, [], [], None, None),
        Step("b", "t.ipynb", {}, [f"{checkout}/in", f"{tmp_path}/data/voc", "/srv/extra/x", "${OTHER_VAR}/y"], ["o"], None, "an hour"),
    ]
    with pytest.raises(ValueError, match="its steps list is empty"):  # a config of nothing is said to be one (audit 11, F17)
        load_config(_config(tmp_path, "steps: []\n"))
    for text in ("other: 1\n", "step: []\n"):  # no steps key (a misspelt one): not read as a config of nothing
        with pytest.raises(ValueError, match="expected a mapping with a 'steps' list"):
            load_config(_config(tmp_path, text))
    with pytest.raises(ValueError, match="unknown top-level keys other"):
        load_config(_config(tmp_path, "steps: []\nother: 1\n"))


@pytest.mark.parametrize("step, message", [
    ("{name: x, notebook: t.ipynb, inputs: in.txt}", "step 0 (x) inputs is a str, expected a list"),
    ("{name: x, notebook: t.ipynb, outputs: out.txt}", "step 0 (x) outputs is a str, expected a list"),
    ("{name: x, notebook: 3}", "step 0 (x) notebook is a int, expected a str"),
    ("{notebook: t.ipynb}", "step 0 lacks name"),
    ("{name: x, notebook: t.ipynb, foo: 1, bar: 2}", "step 0 (x) has unknown keys bar, foo"),
    ("{name: x, command: [rm], outputs: [o]}", "step 0 (x) command 'rm' is not a samcam step"),
    ("{name: x, command: [train-seg, --out, o, --record, r.json], outputs: [o]}", "step 0 (x) command writes --record r.json, which is not among its outputs"),
    # a malformed each
    *[("{name: 'x_${seed}', each: %s, notebook: t.ipynb, outputs: [o]}" % each, f"step 0 (x_${{seed}}) {message}") for each, message in [
        ("[0, 1]", "each must be a mapping of names to lists of values"),
        ("{}", "each must be a mapping of names to lists of values"),
        ("{seed: 0}", "each.seed must be a non-empty list of plain values"),
        ("{seed: []}", "each.seed must be a non-empty list of plain values"),
        ("{seed: [../x]}", "each.seed must be a non-empty list of plain values"),
        ("{seed: [true]}", "each.seed must be a non-empty list of plain values"),
        ("{seed: [1, '1']}", "each.seed repeats a value"),
        ("{other: [1]}", "name must hold ${other}"),
    ]],
    # names and paths a config cannot mean: a variable nothing sets, an each too large or hiding a variable, an output or
    # scratch over the checkout, the stamps, the step's own inputs, or nested in another's
    ("{name: 'x_${REPO}', each: {REPO: [a]}, notebook: t.ipynb, outputs: [o]}", "step 0 (x_${REPO}) each.REPO would hide the variable ${REPO}"),
    ("{name: 'x_${a}_${b}', each: {a: %s, b: %s}, notebook: t.ipynb, outputs: [o]}" % (list(range(41)), list(range(25))),
     "step 0 (x_${a}_${b}) each stands for 1025 steps, more than 1000"),
    ("{name: 'x_${seed}', notebook: t.ipynb, outputs: [o]}", "step 0 (x_${seed}): 'x_${seed}' names a variable that neither"),
    ("{name: x, command: [eval, --csv, 'o/${k}.csv'], outputs: ['o/${k}.csv']}", "step 0 (x): 'o/${k}.csv' names a variable"),
    ("{name: x, notebook: t.ipynb, outputs: ['.']}", "step 0 (x) output '.' is, holds or lies in"),
    ("{name: x, notebook: t.ipynb, outputs: [o], scratch: [results]}", "step 0 (x) output 'results' is, holds or lies in the reproduce stamps' folder"),
    ("{name: x, notebook: t.ipynb, outputs: [results/runs/x.csv]}", "step 0 (x) output 'results/runs/x.csv' is, holds or lies in the reproduce stamps' folder"),
    ("{name: x, notebook: t.ipynb, inputs: [results/seg], outputs: [results/seg/t.md]}", "step 0 (x) writes 'results/seg/t.md', which lies inside its input 'results/seg'"),
    ("{name: x, notebook: t.ipynb, inputs: [results/seg/rows], outputs: [o], scratch: [results/seg]}", "step 0 (x) writes 'results/seg', which holds its input 'results/seg/rows'"),
    ("{name: x, notebook: t.ipynb, outputs: [results/a]}\n  - {name: y, notebook: t.ipynb, outputs: [results/a/b]}",
     "output 'results/a/b' of step y lies inside 'results/a', an output of step x"),
    ("{name: x, notebook: t.ipynb, outputs: [results/a/b.md], scratch: [results/a]}", "output 'results/a/b.md' of step x lies inside 'results/a', an output of step x"),
    # notebook parameters papermill would write as code: a name that is no Python name, a value of a type it does not escape
    ("""{name: x, notebook: t.ipynb, outputs: [o], parameters: {'x=1;open("p","w");y': 1}}""",
     """step 0 (x) parameter name 'x=1;open("p","w");y' is not a Python name"""),
    ("{name: x, notebook: t.ipynb, outputs: [o], parameters: {class: 1}}", "step 0 (x) parameter name 'class' is not a Python name"),
    ("{name: x, notebook: t.ipynb, outputs: [o], parameters: {1: 1}}", "step 0 (x) parameter name 1 is not a Python name"),
    ("{name: x, notebook: t.ipynb, outputs: [o], parameters: {x: !!binary Ijsgb3BlbigicCIsInciKTsgIg==}}", "step 0 (x) parameter x is a bytes; a parameter is text"),
    ("{name: x, notebook: t.ipynb, outputs: [o], parameters: {x: [2026-12-07]}}", "step 0 (x) parameter x[0] is a date; a parameter is text"),
    ("{name: x, notebook: t.ipynb, outputs: [o], parameters: {x: {1: a}}}", "step 0 (x) parameter x has the key 1; keys are text"),
    ("{name: x, notebook: t.ipynb, outputs: [o], parameters: {x: .nan}}", "step 0 (x) parameter x is nan; a number parameter is finite"),
    # a parameter naming where the notebook writes is bounded: inside the checkout, never samcam's sources or the stamps
    ("{name: x, notebook: 03_paper_table.ipynb, outputs: [o], parameters: {results_dir: '${SAMCAM_DATA}/mine'}}",
     "step 0 (x) parameter results_dir is '%s'; it names where the notebook writes: a relative path inside the checkout"),
    ("{name: x, notebook: 03_paper_table.ipynb, outputs: [o], parameters: {results_dir: '$SAMCAM_NOPE/r'}}",
     "step 0 (x) parameter results_dir is '$SAMCAM_NOPE/r'; it names where"),
    ("{name: x, notebook: 02_enhance_method.ipynb, outputs: [o], parameters: {work_dir: 3}}", "step 0 (x) parameter work_dir is 3; it names where"),
    ("{name: x, notebook: 07_segmentation.ipynb, outputs: [o], parameters: {bench_dir: results/runs/b}}",
     "step 0 (x) parameter bench_dir (where the notebook writes): 'results/runs/b' lies in the reproduce stamps' folder"),
    ("{name: x, notebook: 08_claims_affinity.ipynb, outputs: [o], parameters: {labels_dir: results/runs}}",
     "step 0 (x) parameter labels_dir (where the notebook writes): 'results/runs' lies in the reproduce stamps' folder"),
])  # fmt: skip
def test_each_malformed_entry_is_named_with_the_config_and_step(checkout, tmp_path, step, message):
    message = message.replace("%s", str(tmp_path / "data" / "mine"))  # ${SAMCAM_DATA} as the config expands it
    cfg = _config(tmp_path, f"steps:\n  - {step}\n")
    with pytest.raises(ValueError, match="^" + re.escape(f"{cfg}: {message}")):
        load_config(cfg)


def test_each_gives_a_step_once_per_combination_of_its_values(checkout, tmp_path):
    """``each``: one step per combination (in the order of the mapping, the last name fastest), ``${name}``
    replaced in every string, ``${SAMCAM_DATA}`` still expanded; the expanded step is checked as any other."""
    cfg = _config(tmp_path, "steps:\n  - name: r_${row}_s${seed}\n    each: {row: [a, b], seed: [0, 2]}\n"
                            "    command: [eval, --pred, 'p/${row}', --gt, '${SAMCAM_DATA}/g', --csv, 'results/${row}_${seed}.csv']\n"
                            "    inputs: ['p/${row}', '${SAMCAM_DATA}/g']\n    outputs: ['results/${row}_${seed}.csv']\n    long: ${seed} min\n")
    steps = load_config(cfg)
    assert [s.name for s in steps] == ["r_a_s0", "r_a_s2", "r_b_s0", "r_b_s2"]
    assert steps[3] == Step("r_b_s2", None, {}, ["p/b", f"{tmp_path}/data/g"], ["results/b_2.csv"],
                            ["eval", "--pred", "p/b", "--gt", f"{tmp_path}/data/g", "--csv", "results/b_2.csv"], "2 min")  # fmt: skip
    bad = _config(tmp_path, "steps:\n  - {name: 'x_${seed}', each: {seed: [0, 1]}, notebook: t.ipynb, outputs: ['o_${seed}'], foo: 1}\n")
    with pytest.raises(ValueError, match="^" + re.escape(f"{bad}: step 0[seed=0] (x_0) has unknown keys foo")):
        load_config(bad)


def test_a_step_name_too_long_for_its_stamp_is_refused_at_load(checkout, tmp_path):
    """A 238-character step name ran its step, then failed writing results/runs/<name>.params.json
    (audit 10, F6): the name is refused before anything runs, naming the config and the step."""
    cfg = _config(tmp_path, f"steps:\n  - {{name: {'s' * 201}, notebook: t.ipynb, outputs: [o]}}\n")
    with pytest.raises(ValueError, match="^" + re.escape(f"{cfg}: step 0 name: id '{'s' * 40}'... is 201 bytes long; a name is at most 200 bytes")):
        load_config(cfg)
    ok = _config(tmp_path, f"steps:\n  - {{name: {'s' * 200}, notebook: t.ipynb, outputs: [o]}}\n")
    assert [s.name for s in load_config(ok)] == ["s" * 200]


def test_a_config_stands_for_a_bounded_number_of_steps(checkout, tmp_path):
    entry = "  - {{name: 'x{k}_${{s}}', each: {{s: %s}}, notebook: t.ipynb, outputs: ['o{k}/${{s}}']}}\n" % list(range(1000))
    cfg = _config(tmp_path, "steps:\n" + "".join(entry.format(k=k) for k in range(10)) + "  - {name: last, notebook: t.ipynb, outputs: [o]}\n")
    with pytest.raises(ValueError, match="^" + re.escape(f"{cfg}: step 10 (last) makes more than 10000 steps in all") + "$"):
        load_config(cfg)


def test_a_missing_config_or_a_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="^" + re.escape(f"reproduce config not found: {tmp_path / 'none.yml'}") + "$"):
        load_config(tmp_path / "none.yml")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path}: is a folder, not a regular file; a reproduce config must be a file")):
        load_config(tmp_path)


# ---------------------------------------------------------------- states, stamps and fingerprints


def test_resolve_expands_variables_and_reads_relative_paths_from_the_checkout(checkout, tmp_path):
    assert resolve("results/x") == checkout / "results" / "x"
    assert resolve("${SAMCAM_DATA}/voc") == tmp_path / "data" / "voc"
    assert resolve("/srv/x", checkout) == Path("/srv/x")


def test_a_stamp_writes_paths_relative_to_the_checkout(checkout, tmp_path):
    nb = Step("s", "t.ipynb", {"masks": f"{checkout}/results/m", "voc": f"{tmp_path}/data/voc", "n": 3}, [], ["o"])
    assert stamp(nb) == {"notebook": "t.ipynb", "parameters": {"masks": "results/m", "voc": "${SAMCAM_DATA}/voc", "n": 3}}
    cmd = Step("c", None, {}, [], ["out/x.csv"], ["eval", "--csv", f"{checkout}/out/x.csv"])
    assert stamp(cmd) == {"command": ["eval", "--csv", "out/x.csv"]}


def test_fingerprints_are_keyed_by_configured_path_and_the_commit_is_the_checkouts(checkout, tmp_path):
    (tmp_path / "data" / "a.png").write_bytes(b"label")
    (checkout / "in.txt").write_text("in")
    (checkout / "out.txt").write_text("out")
    step = Step("s", "t.ipynb", {}, [f"{tmp_path}/data/a.png", f"{checkout}/in.txt"], ["out.txt", "gone.txt"])
    inputs = {"${SAMCAM_DATA}/a.png": _sha(b"label"), "in.txt": _sha(b"in")}
    outputs = {"out.txt": _sha(b"out"), "gone.txt": None}
    notebook = _sha((checkout / "notebooks" / "t.ipynb").read_bytes())
    assert fingerprints(step) == {"inputs": inputs, "outputs": outputs, "notebook": notebook}
    assert fingerprints(step, kinds=("outputs",)) == {"outputs": outputs}
    assert fingerprints(Step("c", None, {}, [], ["out.txt", "gone.txt"], ["eval"])) == {"inputs": {}, "outputs": outputs}  # a command has no notebook
    assert taken_before(step) == {"inputs": inputs, "notebook": notebook, "commit": f"commit of {checkout}"}
    assert full_stamp(step) == {"notebook": "t.ipynb", "parameters": {},
                                "fingerprints": {"inputs": inputs, "outputs": outputs, "notebook": notebook}, "commit": f"commit of {checkout}"}  # fmt: skip
    before = {"inputs": {"in.txt": "sha256:old"}}  # taken as the step started; no commit known
    assert full_stamp(step, before=before) == {"notebook": "t.ipynb", "parameters": {}, "commit": None,
                                               "fingerprints": {"inputs": {"in.txt": "sha256:old"}, "outputs": outputs, "notebook": notebook}}  # fmt: skip
    assert step_state(Step("s", "t.ipynb", {}, ["in.txt"], [])) == "stale (no outputs declared)"


def test_a_script_step_fingerprints_its_script_and_the_helpers_beside_it(checkout, tmp_path):
    """A script step's stamp holds the script and the ``_*.py`` beside it (not its other neighbours); an
    edit of a helper, or other arguments, make the step stale, naming what changed."""
    bench = checkout / "benchmarks"
    bench.mkdir()
    (bench / "b.py").write_text("print(1)\n")
    (bench / "_common.py").write_text("X = 1\n")
    (bench / "other.py").write_text("Y = 1\n")  # another script: no helper of this one
    (checkout / "out.txt").write_text("out")
    step = Step("s", None, {}, [], ["out.txt"], None, None, ["benchmarks/b.py"])
    script = {"benchmarks/b.py": _sha(b"print(1)\n"), "benchmarks/_common.py": _sha(b"X = 1\n")}
    outputs = {"out.txt": _sha(b"out")}
    assert fingerprints(step) == {"inputs": {}, "outputs": outputs, "script": script}
    assert fingerprints(step, kinds=("outputs",)) == {"outputs": outputs}  # what run_script compares before and after
    assert taken_before(step) == {"inputs": {}, "script": script, "commit": f"commit of {checkout}"}
    assert describe(step, "stale (never run here)", True) == "s: would run [stale (never run here)] python benchmarks/b.py -> out.txt"
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "s.params.json").write_text(json.dumps({"script": ["benchmarks/b.py"], "fingerprints": {"inputs": {}, "outputs": outputs, "script": script},
                                                    "commit": "x"}))  # fmt: skip
    assert step_state(step, runs) == "current"
    assert step_state(Step("s", None, {}, [], ["out.txt"], None, None, ["benchmarks/b.py", "--n", "2"]), runs) == "stale (script or its arguments changed)"
    (bench / "other.py").write_text("Y = 2\n")
    assert step_state(step, runs) == "current"
    (bench / "_common.py").write_text("X = 2\n")
    assert step_state(step, runs) == "stale (script benchmarks/_common.py changed since the last run)"


# ---------------------------------------------------------------- the plan and its lines


def test_check_redo_refuses_only_a_resume_over_outputs_it_would_keep():
    cmd = Step("s", None, {}, [], ["out/a.csv", "out/b.csv"], ["eval"])
    check_redo(cmd, "stale (never run here)", force=True)  # nothing there to keep
    check_redo(cmd, "current", force=False)  # skipped anyway
    check_redo(Step("n", "t.ipynb", {}, [], ["o"]), "stale (command changed)", force=True)  # a notebook rewrites its outputs
    with pytest.raises(ValueError) as e:
        check_redo(cmd, "stale (command changed)", force=False)
    assert str(e.value) == ("step s (stale (command changed)): samcam eval resumes into out/a.csv, out/b.csv and would keep what is there; "
                            "remove them to redo the step")  # fmt: skip


def test_check_redo_names_a_forced_rerun_and_a_single_output():
    one = Step("s", None, {}, [], ["out/a.csv"], ["eval"])
    tail = "samcam eval resumes into out/a.csv and would keep what is there; remove it to redo the step"
    with pytest.raises(ValueError) as e:
        check_redo(one, "current", force=True)
    assert str(e.value) == f"step s (--force): {tail}"
    with pytest.raises(ValueError) as e:
        check_redo(one, "stale (output out/a.csv changed since the last run)", force=False)
    assert str(e.value) == f"step s (stale (output out/a.csv changed since the last run)): {tail}"


def test_describe_and_skip_reason_lines():
    two = Step("a", "t.ipynb", {}, [], ["x", "y"])
    assert describe(two, "stale (never run here)", True) == "a: would run [stale (never run here)] t.ipynb -> x, y"
    long = Step("c", None, {}, [], ["out/c.csv"], ["eval"], "an hour")
    assert describe(long, "current", False) == "c: skip [current] (long: an hour) samcam eval -> out/c.csv"
    run = Step("r", None, {}, [], ["out/r.json"], ["eval"], None, None, ["work/r", "work/r2"])
    assert describe(run, "current", False) == "r: skip [current] samcam eval -> out/r.json (not kept: work/r, work/r2)"
    assert skip_reason(long, "current") == "current"  # not forced: current is the whole reason
    assert skip_reason(long, "missing input in.txt") == "missing input in.txt"  # naming it would not help


def _made(checkout: Path, runs: Path, name: str, nb: str = "t.ipynb") -> None:
    """Stamp step ``name`` (input ``in.txt``, output ``out/<name>.txt``) current by hand, as a run would have."""
    (checkout / "out").mkdir(exist_ok=True)
    (checkout / "out" / f"{name}.txt").write_text(f"made {name}")
    prints = {"inputs": {"in.txt": _sha((checkout / "in.txt").read_bytes())}, "outputs": {f"out/{name}.txt": _sha(f"made {name}".encode())},
              "notebook": _sha((checkout / "notebooks" / nb).read_bytes())}  # fmt: skip
    runs.mkdir(parents=True, exist_ok=True)
    (runs / f"{name}.params.json").write_text(json.dumps({"notebook": nb, "parameters": {}, "fingerprints": prints, "commit": "x"}))


STEPS = "".join(f"  - name: {n}\n    notebook: t.ipynb\n{extra}    inputs: [in.txt]\n    outputs: [out/{n}.txt]\n"
                for n, extra in (("a", ""), ("b", ""), ("c", "    long: an hour\n"), ("d", "    long: a day\n")))  # fmt: skip


def test_plan_judges_steps_in_the_runs_folder_given(checkout, tmp_path):
    (checkout / "in.txt").write_text("in")
    runs = tmp_path / "myruns"  # not reproduce.RUNS
    _made(checkout, runs, "a")
    cfg = _config(tmp_path, "steps:\n" + STEPS)
    rows = [(s.name, state, now) for s, state, now in plan(cfg, runs=runs)]
    assert rows == [("a", "current", False), ("b", "stale (never run here)", True), ("c", "stale (never run here)", False),
                    ("d", "stale (never run here)", False)]  # fmt: skip
    assert [(s.name, now) for s, _, now in plan(cfg, only=["d"], runs=runs)] == [("d", True)]
    with pytest.raises(ValueError, match="^" + re.escape(f"{cfg}: no step named nope, zz; steps: a, b, c, d") + "$"):
        plan(cfg, only=["zz", "b", "nope"], runs=runs)


def test_a_cache_inside_a_steps_output_is_its_scratch_and_left_out_of_its_fingerprint(checkout, tmp_path):
    """demo's mask cache lies in results/demo and no clone holds it: its content made the committed
    stamp stale in every other checkout. A step's own scratch may lie inside its output, and is left
    out of that output's fingerprint; another step's output there is still refused."""
    cfg = _config(tmp_path, "steps:\n  - {name: d, notebook: t.ipynb, outputs: [res/d], scratch: [res/d/masks]}\n")
    (step,) = load_config(cfg)
    (checkout / "res" / "d" / "masks").mkdir(parents=True)
    (checkout / "res" / "d" / "g.png").write_bytes(b"figure")
    (checkout / "res" / "d" / "masks" / "a.json.gz").write_bytes(b"cache")
    h = hashlib.sha256(f"g.png\0{6}\0{hashlib.sha256(b'figure').hexdigest()}\n".encode()).hexdigest()
    assert fingerprints(step)["outputs"] == {"res/d": f"sha256:{h}"}  # the figure alone, computed here
    (checkout / "res" / "d" / "masks" / "a.json.gz").write_bytes(b"another cache")
    assert fingerprints(step)["outputs"] == {"res/d": f"sha256:{h}"}
    (checkout / "res" / "d" / "masksx.png").write_bytes(b"kept")  # a sibling whose name begins the same is kept
    assert fingerprints(step)["outputs"] != {"res/d": f"sha256:{h}"}
    other = _config(tmp_path, "steps:\n  - {name: d, notebook: t.ipynb, outputs: [res/d]}\n  - {name: e, notebook: t.ipynb, outputs: [x], scratch: [res/d/m]}\n")
    with pytest.raises(ValueError, match=re.escape("output 'res/d/m' of step e lies inside 'res/d', an output of step d")):
        load_config(other)


def test_scratch_is_written_but_does_not_decide_whether_a_step_is_current(checkout, tmp_path):
    """``scratch``: what a step writes and does not keep (a run folder). Its --out may name it; the step is
    current without it (a checkout that never had it), unlike a missing output; it is never a second
    step's output; a redo is told to remove it too."""
    (checkout / "in.txt").write_text("in")
    cfg = _config(tmp_path, "steps:\n  - name: a\n    command: [eval, --pred, in.txt, --gt, in.txt, --json, out/a.txt, --csv, work/a.csv]\n"
                            "    inputs: [in.txt]\n    outputs: [out/a.txt]\n    scratch: [work/a.csv]\n")
    (step,) = load_config(cfg)
    assert (step.outputs, step.scratch) == (["out/a.txt"], ["work/a.csv"])
    runs = tmp_path / "runs"
    (checkout / "out").mkdir()
    (checkout / "out" / "a.txt").write_text("made a")
    prints = {"inputs": {"in.txt": _sha(b"in")}, "outputs": {"out/a.txt": _sha(b"made a")}}
    runs.mkdir()
    (runs / "a.params.json").write_text(json.dumps({**stamp(step), "fingerprints": prints, "commit": "x"}))
    assert not (checkout / "work").exists() and step_state(step, runs) == "current"
    assert fingerprints(step)["outputs"] == {"out/a.txt": _sha(b"made a")}
    (checkout / "out" / "a.txt").unlink()
    assert step_state(step, runs) == "stale (output out/a.txt missing)"
    with pytest.raises(ValueError, match=re.escape("resumes into out/a.txt, work/a.csv and would keep what is there; remove them")):
        check_redo(step, "stale (command changed)", force=False)
    without = _config(tmp_path, "steps:\n  - {name: a, command: [eval, --csv, work/a.csv], outputs: [out/a.txt]}\n")
    with pytest.raises(ValueError, match=re.escape("command writes --csv work/a.csv, which is not among its outputs")):
        load_config(without)
    twice = _config(tmp_path, "steps:\n  - {name: a, command: [eval], outputs: [out/a.txt], scratch: [work/a]}\n"
                              "  - {name: b, command: [eval], outputs: [work/a]}\n")  # fmt: skip
    with pytest.raises(ValueError, match=re.escape("output 'work/a' of step b is also an output of step a")):
        load_config(twice)
    outside = _config(tmp_path, "steps:\n  - {name: a, command: [eval], outputs: [out/a.txt], scratch: [../w]}\n")
    with pytest.raises(ValueError, match=re.escape("output '../w' must be a relative path inside the checkout")):
        load_config(outside)


# ---------------------------------------------------------------- a run


def _fake_execute(checkout: Path, ran: list):
    def run(nb, out, params):  # writes the step's output, named after its executed notebook
        ran.append(Path(out).stem)
        (checkout / "out").mkdir(exist_ok=True)
        (checkout / "out" / f"{Path(out).stem}.txt").write_text(f"made {Path(out).stem}")

    return run


def test_a_run_reports_each_step_and_writes_its_stamp(checkout, tmp_path, monkeypatch):
    (checkout / "in.txt").write_text("in")
    runs = tmp_path / "myruns"
    _made(checkout, runs, "a")
    _made(checkout, runs, "c")
    ran, lines = [], []
    monkeypatch.setattr(reproduce, "execute", _fake_execute(checkout, ran))
    cfg = _config(tmp_path, "steps:\n" + STEPS)
    report = reproduce.reproduce(cfg, runs=runs, log=lines.append)
    long_d = "stale (never run here); a long step (a day): name it with --only d, or give --long"
    assert report == [("a", "skipped (current)"), ("b", "ran in 0 s"), ("c", "skipped (current)"), ("d", f"skipped ({long_d})")]
    assert lines == ["a: skipped (current)", "b: running (stale (never run here)) — t.ipynb", "b: done in 0 s", "c: skipped (current)",
                     f"d: skipped ({long_d})"]  # fmt: skip
    prints = {"inputs": {"in.txt": _sha(b"in")}, "outputs": {"out/b.txt": _sha(b"made b")},
              "notebook": _sha((checkout / "notebooks" / "t.ipynb").read_bytes())}  # fmt: skip
    expected = {"notebook": "t.ipynb", "parameters": {}, "fingerprints": prints, "commit": f"commit of {checkout}"}
    assert (runs / "b.params.json").read_text() == json.dumps(expected, indent=1)
    assert ran == ["b"] and not (checkout / "results" / "runs").exists()
    # forced and named: the long step c runs too, though judged after a ran
    lines.clear()
    report = reproduce.reproduce(cfg, only=["a", "c"], force=True, runs=runs, log=lines.append)
    assert [r[0] for r in report] == ["a", "c"] and ran == ["b", "a", "c"]
    assert lines[0] == "a: running (forced) — t.ipynb" and lines[2] == "c: running (forced) — t.ipynb (long: an hour)"
    # an input changed: every step is stale; with --long the long ones run after the first
    (checkout / "in.txt").write_text("in, edited")
    ran.clear()
    assert [r[1] for r in reproduce.reproduce(cfg, runs=runs, long=True)] == ["ran in 0 s"] * 4 and ran == ["a", "b", "c", "d"]


def test_a_notebook_never_writes_into_samcams_own_sources(checkout, tmp_path):
    (checkout / "pyproject.toml").write_text("")  # a checkout: its notebooks/ are samcam's own
    for value in ("notebooks", "notebooks/x"):
        cfg = _config(tmp_path, "steps:\n  - {name: x, notebook: 03_paper_table.ipynb, outputs: [o], parameters: {results_dir: %s}}\n" % value)
        with pytest.raises(ValueError, match=re.escape("step 0 (x) parameter results_dir (where the notebook writes): output ")):
            load_config(cfg)
    # a root it also reads under, its own default written out, a checkpoint it resumes; a parameter another notebook only reads
    # (each with what it then writes declared: reproduce.notebook_writes)
    table = "[{0}/table_pseudo_label_miou.csv, {0}/table_pseudo_label_miou.md, {0}/table_pseudo_label_miou.png]"
    for nb, params, inputs, outputs in (("03_paper_table.ipynb", "{results_dir: results}", "[results/voc]", table.format("results")),
                                        ("03_paper_table.ipynb", "{results_dir: results/paper}", "[results/paper/voc]", table.format("results/paper")),
                                        ("08_claims_affinity.ipynb", "{affinity_checkpoint: work/claims/a.pt, affinity_sam_checkpoint: null, "
                                         "labels_dir: o/l, results_dir: o/r}", "[work/claims/a.pt]", "[o]"),
                                        ("04_per_class_explorer.ipynb", "{results_dir: notebooks}", "[]", "[o]")):  # fmt: skip
        cfg = _config(tmp_path, f"steps:\n  - {{name: x, notebook: {nb}, inputs: {inputs}, outputs: {outputs}, parameters: {params}}}\n")
        assert len(load_config(cfg)) == 1, (nb, params)


def test_a_notebook_step_that_did_not_write_its_outputs_is_not_stamped(checkout, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setattr(reproduce, "execute", lambda *a, **k: None)  # ran, and wrote nothing it declared
    cfg = _config(tmp_path, "steps:\n  - {name: b, notebook: t.ipynb, outputs: [out/b.txt, out/c.txt]}\n")
    (checkout / "out").mkdir(exist_ok=True)
    (checkout / "out" / "c.txt").write_text("old")
    with pytest.raises(RuntimeError, match="^" + re.escape("step b: t.ipynb did not write out/b.txt, out/c.txt; nothing is stamped (an output left from an earlier run is never claimed: remove it to redo the step)") + "$"):
        reproduce.reproduce(cfg, runs=runs)  # c.txt, there from before and left as it was, is not this run's either
    assert not (runs / "b.params.json").exists()
    monkeypatch.setattr(reproduce, "execute", lambda *a, **k: [(checkout / "out" / n).write_text("old") for n in ("b.txt", "c.txt")])
    reproduce.reproduce(cfg, runs=runs)  # both rewritten, c.txt with the same text: made by this run, stamped
    assert (runs / "b.params.json").exists()


@pytest.mark.parametrize("kind", ["command", "script", "notebook"])
def test_every_kind_of_step_that_did_not_write_its_outputs_is_not_stamped(checkout, tmp_path, monkeypatch, kind):
    """Audit 12, F2: a command step that left its declared output as it was (a file from before: eval run
    without --csv), or never made it, was stamped current, the stamp claiming the old file. Every kind of
    step goes through reproduce.check_written: each output is this run's (a file new or rewritten), else
    nothing is stamped. What was written is judged here by the file's bytes and inode, apart from it."""
    runs = tmp_path / "runs"
    (checkout / "out").mkdir()
    old = checkout / "out" / "c.txt"
    old.write_text("55.34")
    was = (old.read_bytes(), old.stat().st_ino)
    writes: dict[str, bytes] = {}  # what the fake step writes: name -> bytes

    def run(*args, **kwargs):
        for name, data in writes.items():
            (checkout / "out" / name).write_bytes(data)

    if kind == "command":
        monkeypatch.setattr(reproduce, "run_command", run)
        step = "{name: b, command: [eval, --pred, p, --gt, g], outputs: [out/b.txt, out/c.txt]}"
        what = "samcam eval"
    elif kind == "script":
        monkeypatch.setattr(reproduce, "run_script", run)
        monkeypatch.setattr(reproduce, "SCRIPTS", checkout / "benchmarks")
        (checkout / "benchmarks").mkdir()
        (checkout / "benchmarks" / "s.py").write_text("def writes(argv):\n    return ['out/b.txt', 'out/c.txt']\n")
        step = "{name: b, script: [benchmarks/s.py], outputs: [out/b.txt, out/c.txt]}"
        what = "python benchmarks/s.py"
    else:
        monkeypatch.setattr(reproduce, "execute", run)
        step = "{name: b, notebook: t.ipynb, outputs: [out/b.txt, out/c.txt]}"
        what = "t.ipynb"
    cfg = _config(tmp_path, f"steps:\n  - {step}\n")
    for wrote, left in (({}, "out/b.txt, out/c.txt"), ({"b.txt": b"made"}, "out/c.txt")):  # nothing; the new file only
        writes.clear()
        writes.update(wrote)
        with pytest.raises(RuntimeError, match="^" + re.escape(f"step b: {what} did not write {left}; nothing is stamped (an output left from an earlier run is never claimed: remove it to redo the step)") + "$"):
            reproduce.reproduce(cfg, runs=runs)
        assert not (runs / "b.params.json").exists() and (old.read_bytes(), old.stat().st_ino) == was  # the old file is left, unclaimed
        assert step_state(load_config(cfg)[0], runs) == "stale (never run here)"
    writes.update({"b.txt": b"made", "c.txt": b"55.65"})  # both written by this run: stamped, each output as its bytes are
    assert reproduce.reproduce(cfg, runs=runs) == [("b", "ran in 0 s")]
    recorded = json.loads((runs / "b.params.json").read_text())["fingerprints"]["outputs"]
    assert recorded == {"out/b.txt": _sha(b"made"), "out/c.txt": _sha(b"55.65")}
    assert step_state(load_config(cfg)[0], runs) == "current"


def test_a_resumed_output_folder_left_whole_is_written_and_a_newly_declared_output_is_named(checkout, tmp_path, monkeypatch):
    """Review 10: 08 resumes its label folders, so a rerun over complete labels leaves them as they were;
    such a folder, there before the run, counts as written by its step (a missing folder, or a file
    left as it was, still does not). A stamp made before an output was declared says so, rather than
    that the output changed."""
    runs = tmp_path / "runs"
    (checkout / "labels" / "cam").mkdir(parents=True)
    (checkout / "labels" / "cam" / "a.png").write_bytes(b"label")
    monkeypatch.setattr(reproduce, "execute", lambda *a, **k: (checkout / "table.csv").write_text("t"))  # rewrites its table only
    cfg = _config(tmp_path, "steps:\n  - {name: c, notebook: t.ipynb, outputs: [labels, table.csv]}\n")
    reproduce.reproduce(cfg, runs=runs)
    assert reproduce.step_state(load_config(cfg)[0], runs) == "current"
    shutil.rmtree(checkout / "labels")
    with pytest.raises(RuntimeError, match=re.escape("step c: t.ipynb did not write labels; nothing is stamped")):
        reproduce.reproduce(cfg, runs=runs, force=True)  # absent after the run: not written
    (checkout / "labels").mkdir()
    (checkout / "more.csv").write_text("m")
    cfg = _config(tmp_path, "steps:\n  - {name: c, notebook: t.ipynb, outputs: [labels, table.csv, more.csv]}\n")
    assert reproduce.step_state(load_config(cfg)[0], runs) == "stale (output more.csv is not in the last run's stamp)"


def test_every_notebook_parameter_either_names_where_it_writes_or_only_reads():
    """reproduce.WRITING_PARAMETERS is whole: each parameter of each notebook's parameters cell is either
    one of its notebook's (a config's value is then bounded as a place to write) or one of these, which
    never name a place the notebook writes (inputs, settings, texts; 04's results_dir only reads)."""
    import nbformat

    reads = {"image_id", "data", "pseudo_subdir", "masks_dir", "rule", "images_dir", "ids_file", "limit", "model_type", "checkpoint",
             "points_per_side", "generator", "device", "shard", "fmt", "n_show", "method", "dataset", "pseudo_dir", "threshold", "gt_dir",
             "majority", "coverage", "measured_on", "gallery_n", "class_name", "n_worst", "source", "configs", "coco_root", "splits",
             "classifier", "prompts", "runs_dir", "rows", "names", "reference", "recipe", "command", "gallery_run", "cams_dir",
             "walk_alpha_table", "affinity_backbone", "affinity_epochs", "affinity_crop", "affinity_crf", "walk_steps",
             "ground_truth_walk", "prompt", "classifier_cost", "mask_cost_cpu_benchmark"}  # fmt: skip
    notebooks = sorted(reproduce.NOTEBOOKS.glob("*.ipynb"))
    assert set(reproduce.WRITING_PARAMETERS) <= {p.name for p in notebooks}
    for path in notebooks:
        cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
        body = ast.parse(cell.source).body
        assert all(isinstance(t, (ast.Assign, ast.AnnAssign)) for t in body), path.name  # a parameters cell assigns, nothing else
        names = reproduce.notebook_parameters(path)  # what a config's parameters are checked against
        assert names == {(t.targets[0] if isinstance(t, ast.Assign) else t.target).id for t in body}, path.name
        writes = reproduce.WRITING_PARAMETERS.get(path.name, frozenset())
        assert writes <= names, f"{path.name}: {sorted(writes - names)} listed, not parameters"
        unknown = names - writes - reads - ({"results_dir"} if path.name == "04_per_class_explorer.ipynb" else set())  # 04 only reads there
        assert not unknown, f"{path.name}: parameters {sorted(unknown)}: say whether each names where the notebook writes"


def test_a_dirty_checkout_is_refused_or_noted_with_its_commit(checkout, tmp_path, monkeypatch):
    from samcam import outputs

    monkeypatch.setattr(outputs, "git_commit", lambda path: f"commit of {path}-dirty")
    monkeypatch.setattr(reproduce, "execute", _fake_execute(checkout, []))
    lines = []
    cfg = _config(tmp_path, "steps:\n  - {name: a, notebook: t.ipynb, outputs: [out/a.txt]}\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(checkout))}: uncommitted changes outside results/ \(commit of .*-dirty\); .*--allow-dirty"):
        reproduce.reproduce(cfg, log=lines.append)
    assert lines == [] and not (checkout / "out" / "a.txt").exists()  # refused before any step ran
    reproduce.reproduce(cfg, log=lines.append, allow_dirty=True)
    assert lines[0] == (f"note: this checkout has uncommitted changes outside results/ (commit of {checkout}-dirty); "
                        "commit results only from a run on a clean commit")  # fmt: skip


def test_a_command_step_runs_with_its_runs_folder_made(checkout, tmp_path, monkeypatch):
    runs = tmp_path / "deep" / "er" / "runs"  # its parents do not exist yet

    def run_command(step):
        assert runs.is_dir()
        (checkout / "out").mkdir()
        (checkout / "out" / "s.csv").write_text("iou\n")

    monkeypatch.setattr(reproduce, "run_command", run_command)
    cfg = _config(tmp_path, "steps:\n  - {name: s, command: [eval, --pred, p, --gt, g, --csv, out/s.csv], outputs: [out/s.csv]}\n")
    assert reproduce.reproduce(cfg, runs=runs) == [("s", "ran in 0 s")]
    assert json.loads((runs / "s.params.json").read_text()) == {"command": ["eval", "--pred", "p", "--gt", "g", "--csv", "out/s.csv"],
                                                                "fingerprints": {"inputs": {}, "outputs": {"out/s.csv": _sha(b"iou\n")}},
                                                                "commit": f"commit of {checkout}"}  # fmt: skip


def test_the_data_root_check_concerns_only_steps_that_read_it(checkout, tmp_path, monkeypatch):
    from samcam import io

    monkeypatch.setattr(reproduce, "execute", _fake_execute(checkout, []))
    (checkout / "in.txt").write_text("in")
    monkeypatch.setenv("SAMCAM_DATA", str(tmp_path / "nowhere"))
    plain = _config(tmp_path, "steps:\n  - {name: a, notebook: t.ipynb, inputs: [in.txt], outputs: [out/a.txt]}\n")
    assert reproduce.reproduce(plain) == [("a", "ran in 0 s")]
    root = _config(tmp_path, "steps:\n  - {name: a, notebook: t.ipynb, inputs: ['${SAMCAM_DATA}'], outputs: [out/a.txt]}\n")
    with pytest.raises(ValueError, match="^" + re.escape(f"the data root {tmp_path / 'nowhere'} does not exist (SAMCAM_DATA={tmp_path / 'nowhere'}); "
                                                         "steps that read it would all be skipped") + "$"):  # fmt: skip
        reproduce.reproduce(root)
    monkeypatch.delenv("SAMCAM_DATA")  # the default: ../shared/data beside the checkout, absent here
    assert io.data_root() == tmp_path / "shared" / "data"
    under = _config(tmp_path, "steps:\n  - {name: a, notebook: t.ipynb, inputs: ['${SAMCAM_DATA}/voc'], outputs: [out/a.txt]}\n")
    with pytest.raises(ValueError, match=re.escape(f"the data root {tmp_path / 'shared' / 'data'} does not exist "
                                                   "(SAMCAM_DATA=(unset: ../shared/data beside the checkout)); ")):  # fmt: skip
        reproduce.reproduce(under)


# ---------------------------------------------------------------- execute and the executed notebook


def _papermill_writes(texts: list[str], calls: list):
    """A stand-in for ``papermill.execute_notebook``: records its call, writes a notebook whose one
    cell printed ``texts`` and whose papermill metadata names the paths it was given."""

    def execute_notebook(input_path, output_path, **kw):
        calls.append((input_path, output_path, kw))
        nb = new_notebook(cells=[new_code_cell("run()", outputs=[new_output("stream", name="stdout", text=t) for t in texts])])
        nb.metadata["papermill"] = {"input_path": input_path, "output_path": output_path, "parameters": kw.get("parameters")}
        nbformat.write(nb, output_path)

    return execute_notebook


def test_execute_hands_papermill_the_notebook_its_parameters_and_a_quiet_kernel(checkout, tmp_path, monkeypatch):
    import papermill as pm

    calls = []
    monkeypatch.setattr(pm, "execute_notebook", _papermill_writes([f"wrote {tmp_path}/data/x.png and {checkout}/results/y.csv\n"], calls))
    out = checkout / "results" / "runs" / "s.ipynb"
    assert reproduce.execute("t.ipynb", out, {"a": 1}) == out
    (nb, tmp, kw), = calls
    assert nb == str(checkout / "notebooks" / "t.ipynb") and Path(tmp).parent == out.parent and tmp.endswith(".ipynb") and tmp != str(out)
    assert kw == {"parameters": {"a": 1}, "kernel_name": "python3", "cwd": str(checkout), "progress_bar": False, "log_output": False,
                  "extra_arguments": ["--log-level=ERROR"]}  # fmt: skip
    done = nbformat.read(str(out), as_version=4)
    assert done.metadata.papermill == {"input_path": "notebooks/t.ipynb", "output_path": "results/runs/s.ipynb", "parameters": {"a": 1}}
    assert done.cells[0].outputs[0].text == "wrote ${SAMCAM_DATA}/x.png and results/y.csv\n"
    # an absolute notebook, run from another folder: paths are written relative to where it ran
    (checkout / "other").mkdir()
    (checkout / "other" / "u.ipynb").write_text("{}")
    calls.clear()
    reproduce.execute(checkout / "other" / "u.ipynb", out, cwd=checkout / "notebooks", log_output=True)
    (nb, _, kw), = calls
    assert nb == str(checkout / "other" / "u.ipynb") and (kw["parameters"], kw["cwd"], kw["log_output"]) == ({}, str(checkout / "notebooks"), True)
    done = nbformat.read(str(out), as_version=4)
    assert (done.metadata.papermill.input_path, done.metadata.papermill.output_path) == ("../other/u.ipynb", "../results/runs/s.ipynb")
    assert done.cells[0].outputs[0].text == "wrote ${SAMCAM_DATA}/x.png and ../results/y.csv\n"


def test_a_failed_run_is_one_line_naming_the_notebook_and_what_is_kept(checkout, monkeypatch):
    import papermill as pm

    def died(input_path, output_path, **kw):
        raise RuntimeError("kernel died\nthe rest of its story")

    monkeypatch.setattr(pm, "execute_notebook", died)
    nb, out = checkout / "notebooks" / "t.ipynb", checkout / "runs" / "s.ipynb"
    with pytest.raises(RuntimeError) as e:
        reproduce.execute("t.ipynb", out)
    assert str(e.value) == f"{nb}: failed with RuntimeError: kernel died; the failed notebook is kept at {checkout / 'runs' / 's.failed.ipynb'}"

    def vanished(input_path, output_path, **kw):  # nothing left to keep, and nothing said
        Path(output_path).unlink()
        raise OSError()

    monkeypatch.setattr(pm, "execute_notebook", vanished)
    with pytest.raises(RuntimeError) as e:
        reproduce.execute("t.ipynb", checkout / "runs" / "v.ipynb")
    assert str(e.value) == f"{nb}: failed with OSError: " and not (checkout / "runs" / "v.failed.ipynb").exists()


def test_relocate_notebook_names_the_real_paths_and_no_machine_path(checkout, tmp_path):
    nb = new_notebook(cells=[new_code_cell(f"voc = '{tmp_path}/data/voc'", outputs=[new_output("stream", name="stdout", text="read /elsewhere/checkout/results/m.csv\n")])])
    nb.metadata["papermill"] = {"input_path": "/elsewhere/.t.ipynb.x1", "output_path": "/elsewhere/.s.ipynb.x2.ipynb",
                                "parameters": {"masks": f"{checkout}/results/masks"}}  # fmt: skip
    path = checkout / "results" / "runs" / ".s.ipynb.x2.ipynb"
    path.parent.mkdir(parents=True)
    nbformat.write(nb, str(path))
    reproduce.relocate_notebook(path, checkout / "notebooks" / "t.ipynb", checkout / "results" / "runs" / "s.ipynb", checkout, ["/elsewhere/checkout"])
    done = nbformat.read(str(path), as_version=4)
    assert done.metadata.papermill == {"input_path": "notebooks/t.ipynb", "output_path": "results/runs/s.ipynb", "parameters": {"masks": "results/masks"}}
    assert done.cells[0].source == "voc = '${SAMCAM_DATA}/voc'"
    assert done.cells[0].outputs[0].text == "read results/m.csv\n"  # a path of the checkout that made it, taken as this one's


def test_notebook_parameters_are_the_names_its_parameters_cell_assigns(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("a = 1\nb, (c, d) = 2, (3, 4)\ne: int = 5\nfor i in range(2):\n    pass\n", metadata={"tags": ["parameters"]})]  # fmt: skip
    nbformat.write(nb, tmp_path / "p.ipynb")
    assert reproduce.notebook_parameters(tmp_path / "p.ipynb") == {"a", "b", "c", "d", "e"}
    nb.cells[1].metadata = {}
    nbformat.write(nb, tmp_path / "none.ipynb")
    assert reproduce.notebook_parameters(tmp_path / "none.ipynb") is None  # no parameters cell: papermill puts them first
    assert reproduce.notebook_parameters(tmp_path / "missing.ipynb") is None


# ---------------------------------------------------------------- what a command reads of a VOC tree (audit 12, F3)


_OPENED: list | None = None  # the paths opened or listed while a traced command runs (an audit hook cannot be removed)


def _trace(event: str, args: tuple) -> None:
    if _OPENED is not None and event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, Path)):
        _OPENED.append(Path(args[0]))


def _tiny_voc(root: Path) -> None:
    import numpy as np
    from PIL import Image

    for folder in ("JPEGImages", "SegmentationClass", "Annotations"):
        (root / folder).mkdir(parents=True)
    Image.fromarray(np.full((40, 48, 3), 128, np.uint8)).save(root / "JPEGImages" / "a.jpg")
    label = np.zeros((40, 48), np.uint8)
    label[10:30, 10:30] = 7  # a car, as the annotation says
    Image.fromarray(label).save(root / "SegmentationClass" / "a.png")
    (root / "Annotations" / "a.xml").write_text("<annotation><object><name>car</name></object></annotation>")


def test_the_commands_reading_a_voc_tree_are_those_with_a_voc_option():
    """reproduce.VOC_READS is whole: every samcam command whose parser takes --voc (which else reads
    $SAMCAM_VOC_ROOT) is in it, and only those, so a step running one is checked for what it reads."""
    import argparse

    from samcam import cli

    with_voc = set()
    for name in cli.COMMANDS:
        sub = next(a for a in cli.build_parser([name])._actions if isinstance(a, argparse._SubParsersAction))
        if any(reproduce.VOC_OPTION in a.option_strings for a in sub.choices[name]._actions):
            with_voc.add(name)
    assert with_voc == set(reproduce.VOC_READS)


@pytest.mark.parametrize("labels", ["gt", "xml"])
@pytest.mark.parametrize("command", ["train-classifier", "cam", "cam-eval"])
def test_voc_reads_names_the_folders_of_the_tree_the_command_opens(tmp_path, monkeypatch, capsys, command, labels):
    """Audit 12, F3: what reproduce.voc_reads says a command reads of its --voc tree is what the command
    opens there, traced by an audit hook (the network, its training and its CAM scoring replaced by stops:
    score_cams is handed the ground-truth folder it reads). With --labels xml that is Annotations, which
    a step declaring only JPEGImages and SegmentationClass did not fingerprint."""
    import sys

    import numpy as np

    from samcam import cli
    from samcam.cam import infer, nets
    from samcam.pipeline import cam, train_classifier

    global _OPENED
    if _trace not in getattr(sys, "_samcam_hooks", ()):
        sys.addaudithook(_trace)
        sys._samcam_hooks = (*getattr(sys, "_samcam_hooks", ()), _trace)
    root = tmp_path / "voc"
    _tiny_voc(root)
    (tmp_path / "ids.txt").write_text("a\n")
    import torch

    torch.save({}, tmp_path / "c.pt")  # hashed for the table's record; the network built from it is a stand-in

    class Stop(Exception):
        pass

    class Net:
        def to(self, device):
            return self

    def stop(*args, **kwargs):
        raise Stop

    def score(net, images, gt, *args, **kwargs):
        _OPENED.append(Path(gt))
        raise Stop

    monkeypatch.setattr(nets, "build_camnet", lambda *a, **k: Net())
    monkeypatch.setattr(train_classifier, "train_classifier", stop)
    monkeypatch.setattr(cam, "extract_cams", stop)
    monkeypatch.setattr(cam, "score_cams", score)
    monkeypatch.setattr(infer, "predict_scores", lambda net, images, sources=None: np.full((len(images), 20), 0.5))
    argv = {"train-classifier": ["--out", str(tmp_path / "c.pt"), "--ids", str(tmp_path / "ids.txt")],
            "cam": ["--images", str(tmp_path / "img"), "--out", str(tmp_path / "cams"), "--checkpoint", str(tmp_path / "c.pt")],
            "cam-eval": ["--checkpoint", str(tmp_path / "c.pt"), "--ids", str(tmp_path / "ids.txt"), "--device", "cpu"]}[command]
    if command == "cam":
        shutil.copytree(root / "JPEGImages", tmp_path / "img")  # its images come from --images
    argv = [command, *argv, "--voc", str(root), "--labels", labels]
    _OPENED = []
    try:
        assert cli.main(argv) == 2
    finally:
        opened, _OPENED = _OPENED, None
    assert "Stop" in capsys.readouterr().err  # it read all it reads of the tree, and reached the stop
    parts = {p.relative_to(root).parts[0] for p in opened if root in p.parents}
    said = {str(Path(p).relative_to(root)) for p, _ in reproduce.voc_reads(argv, "step")}
    assert parts == said and ("Annotations" in said) == (labels == "xml")
