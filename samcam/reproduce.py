"""Running the parameterised notebooks with papermill, and ``samcam reproduce``.

A reproduce configuration (YAML) lists steps. Each runs one of: a notebook with its parameters, a
``samcam`` command (``command: [masks, --images, ...]``, run from the checkout), or one of the
checkout's benchmark scripts (``script: [benchmarks/bench_eval.py, ...]``, run with samcam's
interpreter from the checkout; each script's ``writes(argv)`` names what a run with those arguments
writes, its defaults included, and a step whose script writes anything it does not declare is
refused before it runs); and it names the inputs it reads and the outputs it writes. After a
run, a stamp beside the executed notebook (``<runs>/<name>.params.json``) records the step's
definition and the content fingerprints (:func:`samcam.outputs.fingerprint`) of its inputs, its
notebook or script (with the helpers beside it) and its outputs; a run that did not write each of
its declared outputs (:func:`check_written`, for every kind of step) fails and stamps nothing. A step
is *current*, and skipped, when that stamp matches: same definition, same input and notebook
contents, and outputs untouched since. File times play no part, so a fresh clone (whose files all carry the checkout's time)
and a moved checkout judge a step as the machine that ran it did. samcam's own code is not
fingerprinted: after a change to the package, ``--force`` a step to rerun it.

A step marked ``long`` (its value: the expected time) runs only when named with ``--only`` or when
``--long`` is given. Paths may use ``${VAR}``; ``SAMCAM_DATA`` defaults to ``../shared/data`` beside
the checkout. A step's ``scratch`` names what it writes and does not keep (a training's run folder,
which it resumes from): its outputs alone decide whether it is current, so a result committed from
one checkout stays current in another that never had the run folder. A step with ``each`` (e.g.
``{seed: [0, 1, 2]}``) stands for one step per value, ``${seed}`` replaced in its name and strings.
"""

from __future__ import annotations

import contextlib
import functools
import keyword
import json
import math
import os
import re
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samcam.io import REPO, check_id, data_root
from samcam.outputs import STAMPS

NOTEBOOKS = REPO / "notebooks"
#: the checkout's folder whose Python files a ``script`` step may run (the benchmarks)
SCRIPTS = REPO / "benchmarks"
RUNS = STAMPS  # the stamps and executed notebooks (samcam.outputs.STAMPS: no command's output may lie there)
DEFAULT_CONFIG = NOTEBOOKS / "reproduce.yml"


def resolve(path: str | os.PathLike | None, default: Path | None = None) -> Path | None:
    """A notebook parameter path: absolute as given, else relative to the checkout (so a notebook
    runs the same from papermill, from ``notebooks/`` in JupyterLab, or from anywhere); ``default``
    when the parameter is ``None`` (e.g. a folder of ``VocTree.shared()``)."""
    if path is None:
        return default
    p = Path(os.path.expandvars(str(path)))
    return p if p.is_absolute() else REPO / p


def execute(notebook: str | os.PathLike, output: str | os.PathLike, parameters: dict[str, Any] | None = None,
            cwd: str | os.PathLike | None = None, log_output: bool = False) -> Path:  # fmt: skip
    """Execute ``notebook`` (a name in ``notebooks/``, or an absolute path) with papermill into ``output`` (atomic)."""
    import papermill as pm

    from samcam.io import atomic_path

    nb = Path(notebook) if Path(notebook).is_absolute() else NOTEBOOKS / notebook  # a name: in notebooks/, never the cwd
    if not nb.exists():
        raise FileNotFoundError(f"notebook not found: {nb}")
    with atomic_path(output, suffix=".ipynb") as tmp:
        try:
            pm.execute_notebook(str(nb), str(tmp), parameters=parameters or {}, kernel_name="python3",
                                cwd=str(cwd or REPO), progress_bar=False, log_output=log_output,
                                extra_arguments=["--log-level=ERROR"])  # the kernel's own start-up warnings are noise to a user  # fmt: skip
        except Exception as e:  # papermill's errors, or a kernel that died: one line, the notebook kept
            failed = Path(output).with_suffix(".failed.ipynb")
            if tmp.exists():
                os.replace(tmp, failed)
            kept = f"; the failed notebook is kept at {failed}" if failed.exists() else ""
            if isinstance(e, pm.PapermillExecutionError):  # still one, for callers that catch it; said in one line
                e.__class__ = _one_line_error(type(e))
                e.line = f"{nb}: failed in cell {e.exec_count} with {e.ename}: {e.evalue}{kept}"
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise RuntimeError(f"{nb}: failed with {type(e).__name__}: {first}{kept}") from e
        relocate_notebook(tmp, nb, output, cwd or REPO)
    return Path(output)


def relocate_notebook(path: str | os.PathLike, notebook: str | os.PathLike, output: str | os.PathLike,
                      cwd: str | os.PathLike = REPO, checkouts=()) -> None:  # fmt: skip
    """Rewrite the executed notebook ``path`` in place so it holds no machine path: papermill's
    ``input_path`` and ``output_path`` become ``notebook`` and ``output`` (not the temporary file
    papermill wrote), and every path under the data root or the checkout, in sources, outputs and
    metadata, is written as :func:`samcam.outputs.relocate` writes it, relative to ``cwd`` (where the
    notebook's code ran). ``checkouts``: other checkouts whose paths are taken as this one's."""
    import nbformat

    from samcam.io import write_text
    from samcam.outputs import relocate

    doc = nbformat.read(str(path), as_version=nbformat.NO_CONVERT)
    pm = doc.get("metadata", {}).get("papermill")
    if pm is not None:
        pm["input_path"], pm["output_path"] = str(Path(notebook).absolute()), str(Path(output).absolute())
    doc = nbformat.from_dict(relocate(doc, cwd, checkouts))
    write_text(path, nbformat.writes(doc))


@functools.cache
def _one_line_error(kind: type) -> type:
    """``kind`` (papermill's error of a failed cell, whose text is the whole traceback) said in one
    line: the notebook, the cell, the error and where the failed notebook is kept."""
    return type(kind.__name__, (kind,), {"__str__": lambda self: self.line})


def _expand(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, str):
        for k, v in env.items():
            value = value.replace("${" + k + "}", v)
        return value
    if isinstance(value, list):
        return [_expand(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, env) for k, v in value.items()}
    return value


@dataclass
class Step:
    name: str
    notebook: str | None
    parameters: dict[str, Any]
    inputs: list[str]
    outputs: list[str]
    command: list[str] | None = None  # a samcam command's arguments (run from the checkout) instead of a notebook
    long: str | None = None  # the expected time of a long step: it runs only when named or with --long
    script: list[str] | None = None  # a checkout script and its arguments, instead of a notebook
    scratch: list[str] = field(default_factory=list)  # what the step also writes and does not keep (a run folder a
    # long step resumes from): neither fingerprinted nor needed for the step to be current, unlike its outputs

    @property
    def what(self) -> str:
        """What the step runs, in a plan's words: the notebook's name, ``samcam <command>`` or ``python <script>``."""
        if self.command is not None:
            return f"samcam {self.command[0]}"
        return f"python {self.script[0]}" if self.script is not None else self.notebook

    @property
    def code(self) -> Path | None:
        """The file whose content the stamp fingerprints beside the inputs: the notebook or the script."""
        if self.script is not None:
            return REPO / self.script[0]
        return NOTEBOOKS / self.notebook if self.notebook is not None else None

    @property
    def helpers(self) -> list[Path]:
        """What a script shares with the scripts beside it (``_*.py`` in its folder, e.g. the benchmarks'
        ``_common.py``): fingerprinted with it, since a change there changes what the script writes."""
        return sorted(self.code.parent.glob("_*.py")) if self.script is not None else []


#: what a value of a step's ``each`` may hold: it becomes part of a step's name and of its paths
EACH_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: the most steps one ``each`` entry stands for, and the most of a whole config (a config lists work a
#: person can run, not a search space)
MAX_EACH, MAX_STEPS = 1000, 10_000


def _each(raw: list, path: Path) -> list[tuple[str, dict]]:
    """``(index, step)`` for each step of a config's list, a step with ``each`` (a mapping of names to
    lists of values, e.g. ``{seed: [0, 1, 2]}``) given once per combination of its values, with
    ``${name}`` replaced by the value in every string of the step (``index`` as ``3[seed=1]``). Every
    entry is checked, and the steps counted (:data:`MAX_EACH`, :data:`MAX_STEPS`), before any is made."""
    import itertools

    entries, total = [], 0
    for i, s in enumerate(raw):
        if not isinstance(s, dict):
            raise ValueError(f"{path}: step {i} is not a mapping")
        if "name" not in s:
            raise ValueError(f"{path}: step {i} lacks name")
        each = s.get("each")
        if each is not None:
            _check_each(each, s["name"], f"{path}: step {i} ({s['name']})")
        total += math.prod(len(v) for v in each.values()) if each is not None else 1
        if total > MAX_STEPS:
            raise ValueError(f"{path}: step {i} ({s['name']}) makes more than {MAX_STEPS} steps in all")
        entries.append((i, s, each))
    steps = []
    for i, s, each in entries:
        if each is None:
            steps.append((str(i), s))
            continue
        body = {key: v for key, v in s.items() if key != "each"}
        for combo in itertools.product(*each.values()):
            env = dict(zip(each, map(str, combo)))
            steps.append((f"{i}[{','.join(f'{k}={v}' for k, v in env.items())}]", _expand(body, env)))
    return steps


def _check_each(each: object, name: object, where: str) -> None:
    """An ``each``: a mapping of plain names (none hiding an environment variable, each held in the
    step's name) to non-empty lists of distinct plain values, standing for at most :data:`MAX_EACH` steps."""
    if not isinstance(each, dict) or not each:
        raise ValueError(f"{where} each must be a mapping of names to lists of values, e.g. {{seed: [0, 1, 2]}}")
    for k, values in each.items():
        ok = isinstance(values, list) and values and all(isinstance(v, (str, int)) and not isinstance(v, bool) and EACH_VALUE.match(str(v)) for v in values)
        if not (isinstance(k, str) and EACH_VALUE.match(k)) or not ok:
            raise ValueError(f"{where} each.{k} must be a non-empty list of plain values (letters, digits, _ . -)")
        if len(set(map(str, values))) != len(values):
            raise ValueError(f"{where} each.{k} repeats a value")
        if not isinstance(name, str) or "${" + k + "}" not in name:
            raise ValueError(f"{where} name must hold ${{{k}}}, so that each of its steps has its own name")
        if k == "REPO" or k.startswith("SAMCAM_"):
            raise ValueError(f"{where} each.{k} would hide the variable ${{{k}}}; give it another name")
    n = math.prod(len(v) for v in each.values())
    if n > MAX_EACH:
        raise ValueError(f"{where} each stands for {n} steps, more than {MAX_EACH}")


def load_config(path: str | os.PathLike = DEFAULT_CONFIG) -> list[Step]:
    """Steps of a reproduce configuration, with ``${VAR}`` expanded and each ``each`` step given once per value (:func:`_each`)."""
    from samcam.io import read_yaml

    path = Path(path)
    doc = read_yaml(path, "reproduce config")
    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list):  # a misspelt 'step:' is no config of nothing
        raise ValueError(f"{path}: expected a mapping with a 'steps' list")
    if unknown := sorted(map(str, set(doc) - {"steps"})):
        raise ValueError(f"{path}: unknown top-level keys {', '.join(unknown)} (a config holds 'steps')")
    if not doc["steps"]:  # a run of nothing would look like one of current steps
        raise ValueError(f"{path}: its steps list is empty; list the steps to run")
    env = {"SAMCAM_DATA": os.path.abspath(data_root()), "REPO": str(REPO)}  # a relative SAMCAM_DATA: from where samcam runs
    env.update({k: v for k, v in os.environ.items() if k.startswith("SAMCAM_") and k not in env})
    steps: list[Step] = []
    names: set[str] = set()
    wheres: dict[str, str] = {}
    for i, s in _each(doc["steps"], path):
        if sum(k in s for k in ("notebook", "command", "script")) != 1:
            raise ValueError(f"{path}: step {i} ({s['name']}) needs exactly one of notebook, command and script")
        unknown = sorted(set(s) - {"name", "notebook", "command", "script", "parameters", "inputs", "outputs", "scratch", "long"})
        if unknown:
            raise ValueError(f"{path}: step {i} ({s['name']}) has unknown keys {', '.join(map(str, unknown))}")
        _refuse_bare_variables(s, f"{path}: step {i} ({s['name']})")
        s = _expand(s, env)
        check_id(s["name"], f"{path}: step {i} name")  # the executed notebook is runs/<name>.ipynb
        for key, kind in (("notebook", str), ("command", list), ("script", list), ("parameters", dict), ("inputs", list), ("outputs", list),
                          ("scratch", list), ("long", str)):  # fmt: skip
            if key in s and not isinstance(s[key], kind):
                raise ValueError(f"{path}: step {i} ({s['name']}) {key} is a {type(s[key]).__name__}, expected a {kind.__name__}")
        if "long" in s and not s["long"].strip():  # an empty one read as "not long", so the step ran without --long
            raise ValueError(f"{path}: step {i} ({s['name']}) long is empty; it says how long the step takes (e.g. \"about 10 min on a 2-core CPU\")")
        for key in ("inputs", "outputs", "scratch"):
            bad = [v for v in s.get(key, []) if not (isinstance(v, str) and v)]
            if bad:
                raise ValueError(f"{path}: step {i} ({s['name']}) {key} holds {bad[0]!r}; expected paths (non-empty strings)")
        if s["name"] in names:
            raise ValueError(f"{path}: step {i} repeats the name {s['name']!r}; each step's executed notebook is results/runs/<name>.ipynb")
        names.add(s["name"])
        where = wheres[s["name"]] = f"{path}: step {i} ({s['name']})"
        unset = next((v for key in ("name", "command", "script", "outputs", "scratch") for v in _strings(s.get(key)) if "${" in v), None)
        if unset is not None:
            raise ValueError(f"{where}: {unset!r} names a variable that neither the step's each nor the environment (SAMCAM_*, REPO) sets")
        written = s.get("outputs", []) + s.get("scratch", [])
        _check_outputs(written, where, kept=s.get("outputs", []))
        _check_apart(written, s.get("inputs", []), where)
        if "notebook" in s:
            _inside(s["notebook"], NOTEBOOKS, f"{where} notebook")
            if not s["notebook"].endswith(".ipynb"):
                raise ValueError(f"{where} notebook {s['notebook']!r} is not a notebook (.ipynb) of {NOTEBOOKS.name}/")
            _check_parameters(s.get("parameters", {}), s.get("inputs", []), where, s["notebook"])
            _check_notebook_writes(s["notebook"], s.get("parameters", {}), s, where)
        elif "command" in s:
            _check_command(s["command"], s.get("parameters"), s.get("inputs", []), written, where)
        else:
            _check_script(s["script"], s.get("parameters"), s.get("inputs", []), written, where)
        steps.append(Step(s["name"], s.get("notebook"), s.get("parameters", {}), s.get("inputs", []), s.get("outputs", []),
                          s.get("command"), s.get("long"), s.get("script"), s.get("scratch", [])))  # fmt: skip
    owner: dict[str, str] = {}
    for step in steps:  # one output, one step: two steps (or one twice) writing a file cannot both be current
        for out in step.outputs + step.scratch:
            key = os.path.normpath(out)
            if key in owner:
                raise ValueError(f"{path}: output {out!r} of step {step.name} is also an output of step {owner[key]}")
            owner[key] = step.name
    scratch = {(step.name, os.path.normpath(x)) for step in steps for x in step.scratch}
    for key, name in owner.items():  # nor can one write inside what another writes (or inside its own other output)
        above = next((str(p) for p in Path(key).parents if str(p) in owner), None)
        if above is not None and not (owner[above] == name and (name, key) in scratch):  # its own scratch inside its output: a cache
            raise ValueError(f"{path}: output {key!r} of step {name} lies inside {above!r}, an output of step {owner[above]}")
    for step in steps:  # what another step writes is a path by its name alone (a bare foo.csv too, before it exists)
        if argv := step.command or step.script:
            _check_paths_declared(argv, step.inputs, step.outputs + step.scratch, wheres[step.name],
                                  "command" if step.command else "script", written=set(owner))  # fmt: skip
    return steps


#: ``$NAME`` without braces, which a config does not expand (only ``${NAME}``)
_BARE_VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")

#: the keys of a step that hold paths and commands, where ``${NAME}`` is expanded
_PATH_KEYS = ("name", "notebook", "command", "script", "inputs", "outputs", "scratch")


def _refuse_bare_variables(step: dict, where: str) -> None:
    """A step's paths and commands (:data:`_PATH_KEYS`) write a variable as ``${NAME}``: a ``$NAME``
    without braces was taken as a literal relative path (``$SAMCAM_DATA/x``, a missing input)."""
    for key in _PATH_KEYS:
        for v in _strings(step.get(key)):
            if m := _BARE_VARIABLE.search(v):
                raise ValueError(f"{where} {key} {v!r} holds ${m[1]} without braces, which is not expanded; write ${{{m[1]}}}")


def _strings(value: Any) -> list[str]:
    """The strings of a config value (a string, or a list of them; anything else has none)."""
    return [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _check_apart(written: list, inputs: list, where: str) -> None:
    """A step never writes what it reads: no output or scratch is, holds or lies inside one of its inputs."""
    def full(p: str) -> Path:
        return Path(os.path.normpath(p if os.path.isabs(p) else REPO / p))

    for w in written:
        for i in inputs:
            fw, fi = full(w), full(i)
            if fw == fi or fi in fw.parents or fw in fi.parents:
                raise ValueError(f"{where} writes {w!r}, which {'is' if fw == fi else 'lies inside' if fi in fw.parents else 'holds'} its input {i!r}")


def _inside(name: object, folder: Path, what: str) -> None:
    """A name from a config never leaves its folder: a relative path below ``folder`` (no ``..``, not
    absolute), else a ``ValueError`` naming ``what``."""
    parts = Path(name).parts if isinstance(name, str) else ()
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in parts or "\x00" in name:
        raise ValueError(f"{what} {name!r} must be a relative path inside {folder.name}/")


#: commands that are no step: they run steps themselves, or write outside the checkout (the weights cache)
NOT_STEPS = ("reproduce", "demo", "weights")

#: the options by which a samcam command, or a script of benchmarks/, names what it writes (the scripts'
#: --workdir and --official-masks too: a folder they write in, or write once when it is absent)
OUTPUT_OPTIONS = ("--out", "--csv", "--per-image-csv", "--json", "--sweep-csv", "--save-predictions", "--record", "--workdir", "--official-masks")


def _check_command(command: list, parameters: object, inputs: list, outputs: list, where: str) -> None:
    """A command step's arguments: non-empty strings, the first a samcam command other than the
    ones that run steps themselves; a command step takes no notebook parameters; it reads only what
    it declares (:func:`_check_paths_declared`); it writes only inside the checkout, and only what it
    declares (every output option's value is one of its ``outputs``, each a relative path below the
    checkout)."""
    from samcam.cli import COMMANDS  # the commands register as samcam.cli is imported

    if not command or not all(isinstance(a, str) and a and "\x00" not in a for a in command):
        raise ValueError(f"{where} command must be a non-empty list of non-empty strings, e.g. [masks, --images, ...]")
    if command[0] not in COMMANDS or command[0] in NOT_STEPS:
        raise ValueError(f"{where} command {command[0]!r} is not a samcam step; known: {', '.join(sorted(set(COMMANDS) - set(NOT_STEPS)))}")
    _check_arguments(command, parameters, outputs, where, "command")
    _check_paths_declared(command, inputs, outputs, where, "command")


def _check_paths_declared(argv: list, inputs: list, outputs: list, where: str, kind: str, written: set[str] = frozenset()) -> None:
    """What a command or script step reads is declared, so its stamp fingerprints it and a changed
    input makes the step stale. Every argument that names a path is one of the step's inputs or
    outputs, or lies inside one (a path is an argument with a ``/``, one starting with ``.`` that is
    no number, a file or folder of the checkout, or what a step of the config writes, ``written``, or
    lies inside it). A command reading a VOC tree names it with ``--voc``, and each folder of it that
    the command reads is among the step's inputs, or inside one (:func:`voc_reads`: its images,
    ground truth or annotations, by command and ``--labels``), never a root above some declared parts."""
    declared = [os.path.normpath(p) for p in inputs + outputs]
    voc = voc_reads(argv, where) if kind == "command" else []
    for before, arg in zip(argv, argv[1:]):
        value = arg.split("=", 1)[-1]
        if arg.startswith("-") and "=" not in arg or before in OUTPUT_OPTIONS:
            continue  # an option's name, or what it writes (:func:`_check_arguments` checks that)
        if before == VOC_OPTION and kind == "command" and argv[0] in VOC_READS:
            continue  # a VOC root: what the command reads of it is checked below (with cls_labels, nothing)
        v = os.path.normpath(value)
        path = _names_path(value) or v in written or any(str(p) in written for p in Path(v).parents)
        if path and not _within(v, declared):
            raise ValueError(f"{where} {kind} argument {arg!r} names a path that is not among the step's inputs or outputs; "
                             "declare it, so that a change to it makes the step stale")  # fmt: skip
    for read, why in voc:
        if not _within(os.path.normpath(read), [os.path.normpath(p) for p in inputs]):
            raise ValueError(f"{where} command {argv[0]} reads {read} ({why}), which is not among the step's inputs; "
                             "declare it, so that a change to it makes the step stale")  # fmt: skip


def _within(path: str, declared: list[str]) -> bool:
    """Whether the normalised ``path`` is one of ``declared`` (normalised) or lies inside one."""
    return any(path == d or path.startswith(d + os.sep) for d in declared)


#: the option by which a samcam command names the VOC tree it reads (without it: ``$SAMCAM_VOC_ROOT``)
VOC_OPTION = "--voc"

#: the samcam commands that read a VOC tree (those with a --voc option: a test keeps this whole), each
#: with the folders of it that it reads besides its image-level labels' (:func:`voc_reads`)
VOC_READS: dict[str, tuple[str, ...]] = {"train-classifier": ("JPEGImages",), "cam": (), "cam-eval": ("JPEGImages", "SegmentationClass")}


def voc_reads(command: list, where: str) -> list[tuple[str, str]]:
    """What a command step reads of a VOC tree, as ``(path, why)``: the folders of its ``--voc`` root
    that the command reads (:data:`VOC_READS`), and its image-level labels' folder by ``--labels``
    (:func:`samcam.data.voc.label_source_path`: ``SegmentationClass`` for ``gt``, the default;
    ``Annotations`` for ``xml``; ``cls_labels``' file is an argument, checked as any); none for a command
    that reads no VOC tree. ``ValueError`` naming ``where`` when it reads one and names none with
    ``--voc``: it would read ``$SAMCAM_VOC_ROOT``, which no step declares, so the step would stay
    current after a change there."""
    from samcam.data.voc import DEFAULT_LABEL_SOURCE, VocTree, label_source_path

    if not command or command[0] not in VOC_READS:
        return []
    given = dict(zip(command[1:], command[2:]))  # an option and its value (each option once, named in full: samcam's parser)
    if VOC_OPTION not in given:
        raise ValueError(f"{where} command {command[0]} reads a VOC tree and names none with {VOC_OPTION}: it would read "
                         f"${VocTree.ENV}, which a step does not declare; give {VOC_OPTION} (and declare what the command reads of it)")  # fmt: skip
    tree, source = VocTree(given[VOC_OPTION], must_exist=False), given.get("--labels", DEFAULT_LABEL_SOURCE)
    try:
        labels = label_source_path(tree, source)
    except ValueError as e:
        raise ValueError(f"{where} command argument --labels: {e}") from None
    reads = [(str(tree.root / part), f"{VOC_OPTION} {tree.root}") for part in VOC_READS[command[0]]]
    return reads + ([(str(labels), f"the image-level labels of {VOC_OPTION} {tree.root} with --labels {source}")] if labels is not None else [])


def _names_path(value: str) -> bool:
    if "/" in value or os.sep in value:
        return True
    if value.startswith("."):
        try:
            float(value)
            return False
        except ValueError:
            return True
    return os.path.lexists(REPO / value)


def _check_script(script: list, parameters: object, inputs: list, outputs: list, where: str) -> None:
    """A script step's arguments: non-empty strings, the first a Python file directly in the
    checkout's ``benchmarks/`` (:data:`SCRIPTS`; no link out of it), and every argument that names a
    path one of the step's inputs or outputs, or inside one (a script's own options are not known
    here, so a path is how a write elsewhere would show); its outputs as a command step's."""
    if not script or not all(isinstance(a, str) and a and "\x00" not in a for a in script):
        raise ValueError(f"{where} script must be a non-empty list of non-empty strings, e.g. [benchmarks/bench_eval.py]")
    folder = os.path.relpath(SCRIPTS, REPO)
    if Path(script[0]).parent != Path(folder) or not script[0].endswith(".py"):
        raise ValueError(f"{where} script {script[0]!r} must be a Python file in the checkout's {folder}/")
    path = REPO / script[0]
    if not path.is_file() or path.resolve().parent != SCRIPTS.resolve():
        raise ValueError(f"{where} script {script[0]!r} is not a file of this checkout's {folder}/")
    _check_paths_declared(script, inputs, outputs, where, "script")
    _check_arguments(script, parameters, outputs, where, "script")
    written = [os.path.normpath(p) for p in outputs]
    for path in script_writes(script, where):
        rel = os.path.relpath(os.path.abspath(REPO / path), REPO)
        if not any(rel == d or rel.startswith(d + os.sep) for d in written):
            raise ValueError(f"{where} script {script[0]} writes {rel} (with these arguments, its defaults included), "
                             "which is not among the step's outputs or scratch")  # fmt: skip


def script_writes(script: list[str], where: str) -> list[Path]:
    """What a script of benchmarks/ writes when run with ``script[1:]``, its defaults included: its own
    ``writes(argv)``, which each of them defines beside its argument parser, called without running
    the script (relative paths are taken from the checkout, where steps run). ``ValueError`` naming
    the step when the script says nothing of what it writes or refuses the arguments."""
    import contextlib
    import importlib.util
    import io

    path = REPO / script[0]
    spec = importlib.util.spec_from_file_location(f"_samcam_step_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)  # the scripts' top level defines functions (and puts their folder on sys.path)
    except (Exception, SystemExit) as e:
        raise ValueError(f"{where} script {script[0]} fails as it is imported ({type(e).__name__}: {e}); "
                         "a script runs only under `if __name__ == \"__main__\"`") from None  # fmt: skip
    finally:
        sys.path[:] = saved
    if not callable(getattr(module, "writes", None)):
        raise ValueError(f"{where} script {script[0]} does not say what it writes (it defines no writes(argv))")
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):  # a --help among the arguments prints, then exits
            return [Path(p) for p in module.writes(list(script[1:]))]
    except SystemExit:  # its parser refused the arguments, or showed its help
        said = err.getvalue().strip().splitlines()  # argparse's usage, then "prog: error: what"
        why = said[-1].split("error: ", 1)[-1] if said else "it exits at once (e.g. on --help)" if out.getvalue() else script[1:]
        raise ValueError(f"{where} script {script[0]} refuses its arguments: {why}") from None


def _check_outputs(outputs: list, where: str, kept: list = ()) -> None:
    """Every step writes only inside the checkout, never into samcam's own sources (its notebooks, the
    package, the configuration: :func:`samcam.outputs.check_output`); its committed results (``kept``
    outputs under results/) stay inside the checkout through links too, while work/ (intermediate files
    and scratch) may be a link to another disk."""
    from samcam.outputs import check_output, project_paths

    home = Path(os.path.realpath(REPO))
    for out in outputs:
        if Path(out).is_absolute() or Path(out).anchor or ".." in Path(out).parts:  # anchor: Windows' rooted \x
            raise ValueError(f"{where} output {out!r} must be a relative path inside the checkout")
        real = Path(os.path.realpath(REPO / out))  # the links along it followed (a missing tail as written)
        if out in kept and Path(out).parts[:1] == ("results",) and real != home and home not in real.parents:
            raise ValueError(f"{where} output {out!r} leads outside the checkout through a link (to {real}); results are kept in the checkout")
        try:
            check_output(REPO / out)
        except ValueError as e:
            raise ValueError(f"{where} output {out!r}: {e}") from None
        o = Path(os.path.normpath(REPO / out))
        held = next((p for p in (*project_paths(), RUNS) if o == Path(os.path.normpath(p)) or o in Path(os.path.normpath(p)).parents), None)
        if held is not None or RUNS in o.parents:
            what = "the reproduce stamps' folder" if held is None or held == RUNS else f"samcam's own {held.name}"
            raise ValueError(f"{where} output {out!r} is, holds or lies in {what}; write results elsewhere (results/<...>, work/)")


#: what each of samcam's notebooks writes, as paths made of its parameters: ``{name}`` is the parameter's
#: value, the one a step gives or else its default, and a path whose first parameter is ``None`` is not
#: written. A file or a folder the notebook writes as a whole (a folder whose files vary). A step declares
#: each among its outputs or scratch, or a folder above it (:func:`notebook_writes`, checked at load).
NOTEBOOK_WRITES: dict[str, tuple[str, ...]] = {
    "01_sam_masks.ipynb": ("{out_dir}",),
    "02_enhance_method.ipynb": ("{results_dir}/{dataset}/{method}", "{work_dir}/{dataset}/{method}"),
    "03_paper_table.ipynb": tuple(f"{{results_dir}}/table_pseudo_label_miou.{x}" for x in ("csv", "md", "png")),
    "05_prompted_ablation.ipynb": ("{refined_dir}", "{results_dir}/{source}"),
    "06_coco_check.ipynb": ("{work_dir}", "{results_dir}/cam_vs_prompted.csv", "{results_dir}/per_class_iou.csv"),
    "07_segmentation.ipynb": (*(f"{{results_dir}}/{n}" for n in ("table.md", "table.csv", "gaps.md", "gaps.csv", "per_class.png")),
                              "{bench_dir}/seg_train_cpu.md", "{bench_dir}/seg_train_cpu.json"),
    "08_claims_affinity.ipynb": ("{labels_dir}", "{affinity_checkpoint}", "{affinity_sam_checkpoint}",
                                 *(f"{{results_dir}}/{n}" for n in ("table.csv", "per_class_iou.csv", "per_class_errors.csv", "claims.png",
                                                                   "per_class_iou.png"))),
    "demo.ipynb": ("{out_dir}",),
}

#: the parameters by which each notebook names where it writes: the first of each path of
#: :data:`NOTEBOOK_WRITES` (a test keeps this whole: every parameter of every notebook is either here or
#: among those that only read). A root the notebook also reads under (03's results_dir), or a checkpoint
#: it resumes (08's), is one of them: bounded as a place to write.
WRITING_PARAMETERS: dict[str, frozenset[str]] = {
    nb: frozenset(next(string.Formatter().parse(t))[1] for t in paths) for nb, paths in NOTEBOOK_WRITES.items()}

#: writing parameters a notebook takes as ``None`` (nothing written there: 08 without its CAM + SAM-seeded row);
#: any other is a path
OPTIONAL_WRITES: dict[str, frozenset[str]] = {"08_claims_affinity.ipynb": frozenset({"affinity_sam_checkpoint"})}

#: writing parameters naming a file the notebook reads when it is there and writes when it is not (08's
#: affinity checkpoints, trained once and then resumed): a step may declare one among its inputs
RESUMED: dict[str, frozenset[str]] = {"08_claims_affinity.ipynb": frozenset({"affinity_checkpoint", "affinity_sam_checkpoint"})}


def notebook_writes(notebook: str, parameters: dict, where: str) -> list[tuple[str, str]]:
    """What a notebook step writes: each path of :data:`NOTEBOOK_WRITES` with the step's parameters
    over the notebook's defaults, as ``(path, the parameter it starts with)``. A name inside a path
    (02's method) is a name (:func:`samcam.io.check_id`), so it cannot lead elsewhere; a default that
    is no literal must be given (``ValueError`` naming ``where``)."""
    paths = NOTEBOOK_WRITES.get(notebook, ())
    if not paths:
        return []
    values = {**(notebook_defaults(NOTEBOOKS / notebook) or {}), **parameters}
    written = []
    for template in paths:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
        unset = [f for f in fields if values.get(f, NOT_A_LITERAL) is NOT_A_LITERAL]
        if unset:
            raise ValueError(f"{where} parameter {unset[0]} is not given and its default in {notebook} is no literal; give it "
                             "(it names where the notebook writes)")  # fmt: skip
        if values[fields[0]] is None:
            if fields[0] in OPTIONAL_WRITES.get(notebook, ()):
                continue  # not written (08's affinity_sam_checkpoint = None: no such row)
            raise ValueError(f"{where} parameter {fields[0]} is null; {notebook} writes there, so it takes a path")
        bad = next((f for f in fields[1:] if not isinstance(values[f], str) or not values[f] or not _is_name(values[f])), None)
        if bad is not None:
            raise ValueError(f"{where} parameter {bad} is {values[bad]!r}; {notebook} writes into a folder of that name, so it is a name "
                             "(no /, \\, .., control characters)")  # fmt: skip
        path = template.format(**{f: values[f] for f in fields})
        written.append((os.path.normpath(path), fields[0]))
    return written


def _is_name(text: str) -> bool:
    """Text usable as one folder name: :func:`samcam.io.check_id`'s rule (an id is a name, never a path)."""
    try:
        check_id(text, "name")
    except ValueError:
        return False
    return True


def _check_notebook_writes(notebook: str, parameters: dict, step: dict, where: str) -> None:
    """Each path :func:`notebook_writes` gives is declared: one of the step's outputs or scratch, or
    below one; a resumed checkpoint (:data:`RESUMED`) may be one of its inputs instead. Checked at
    load, before anything runs, so a step never writes where its config does not say (a default of a
    parameter it leaves out included)."""
    declared = [os.path.normpath(p) for p in step.get("outputs", []) + step.get("scratch", [])]
    inputs = [os.path.normpath(p) for p in step.get("inputs", [])]
    values = {**(notebook_defaults(NOTEBOOKS / notebook) or {}), **parameters}  # the notebook read once, not once per path
    for path, parameter in notebook_writes(notebook, parameters, where):
        _check_writing_parameter(parameter, values[parameter], where)
        if any(path == d or Path(d) in Path(path).parents for d in declared):
            continue
        if parameter in RESUMED.get(notebook, ()) and path in inputs:
            continue
        template = next(t for t in NOTEBOOK_WRITES[notebook] if t.startswith("{" + parameter + "}"))
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
        made = ", ".join(f"{'its' if f in parameters else 'its default'} {f}" for f in fields)  # what the path is made of, and from where
        raise ValueError(f"{where}: {notebook} writes {path} ({made}), which the step declares neither among its outputs "
                         "nor its scratch; declare it, or give the parameter a place the step declares")  # fmt: skip


def _check_writing_parameter(key: str, value: object, where: str) -> None:
    """A notebook parameter naming where it writes: a relative path inside the checkout (no variables),
    never samcam's own sources (its notebooks, the package, the configuration) nor in the reproduce
    stamps' folder. It may hold what the step reads (a results root): the notebook reads there too."""
    from samcam.outputs import check_output

    if value is None:
        return
    if not isinstance(value, str) or not value or "$" in value or value.startswith("~") or Path(value).is_absolute() \
            or Path(value).anchor or ".." in Path(value).parts:  # fmt: skip
        raise ValueError(f"{where} parameter {key} is {value!r}; it names where the notebook writes: a relative path inside the checkout "
                         "(no variables)")  # fmt: skip
    try:
        check_output(REPO / value)
    except ValueError as e:
        raise ValueError(f"{where} parameter {key} (where the notebook writes): {e}") from None
    o = Path(os.path.normpath(REPO / value))
    if o == Path(os.path.normpath(RUNS)) or Path(os.path.normpath(RUNS)) in o.parents:
        raise ValueError(f"{where} parameter {key} (where the notebook writes): {value!r} lies in the reproduce stamps' folder")


#: a notebook parameter whose default is no literal (an expression): any value is taken
NOT_A_LITERAL = object()


def notebook_parameters(notebook: str | os.PathLike) -> frozenset[str] | None:
    """The names its parameters cell (the cell tagged ``parameters``) assigns; ``None`` when the
    notebook cannot be read or has no such cell (papermill then puts the values at the top)."""
    defaults = notebook_defaults(notebook)
    return None if defaults is None else frozenset(defaults)


def notebook_defaults(notebook: str | os.PathLike) -> dict[str, Any] | None:
    """Each name its parameters cell assigns, with its default: the literal assigned, else
    :data:`NOT_A_LITERAL`; ``None`` as :func:`notebook_parameters`."""
    import ast

    import nbformat

    try:
        cells = nbformat.read(Path(notebook), as_version=4).cells
    except (OSError, ValueError):
        return None
    cell = next((c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        return None
    try:
        body = ast.parse(cell.source).body
    except SyntaxError:
        return None  # papermill's run names the fault
    def literal(node) -> Any:
        try:
            return ast.literal_eval(node) if node is not None else NOT_A_LITERAL
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return NOT_A_LITERAL

    defaults: dict[str, Any] = {}

    def bind(target, value) -> None:  # a, (b, c) = 1, (2, 3) binds each name to its own literal
        if isinstance(target, ast.Name):
            defaults[target.id] = literal(value)
        elif isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts):
            for t, v in zip(target.elts, value.elts):
                bind(t, v)
        else:
            defaults.update((n.id, NOT_A_LITERAL) for n in ast.walk(target) if isinstance(n, ast.Name))

    for t in body:  # assignments only (a loop's target is no parameter)
        targets = t.targets if isinstance(t, ast.Assign) else [t.target] if isinstance(t, ast.AnnAssign) else []
        for target in targets:
            bind(target, t.value)
    return defaults


def _check_parameter_type(key: str, value: object, default: object, where: str, notebook: str) -> None:
    """A given parameter takes its default's kind (text, a whole number, a number, true/false, a list,
    a mapping); a default that is ``None`` or no literal takes anything, and ``null`` is taken for any."""
    if value is None or default is None or default is NOT_A_LITERAL:
        return
    kinds = [(bool, "true or false"), (int, "a whole number"), (float, "a number"), (str, "text"), ((list, tuple), "a list"), (dict, "a mapping")]
    want, said = next(((k, w) for k, w in kinds if isinstance(default, k)), (None, None))
    if want is None:  # a literal of another kind (a set, bytes, ...): papermill's own run says what it takes
        return
    if want is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif want is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, want) and (want is bool or not isinstance(value, bool))
    if not ok:
        raise ValueError(f"{where} parameter {key} is {value!r}; {notebook} takes {said} there (its default: {default!r})")


def _check_parameters(parameters: dict, inputs: list, where: str, notebook: str = "") -> None:
    """A notebook's parameters name paths inside the checkout, under the data root (what
    ``${SAMCAM_DATA}`` expands to) or in one of the step's declared ``inputs``, never elsewhere: a
    string that is an absolute path, or a relative one leaving the checkout, read as :func:`resolve`
    reads it (``$VAR`` and ``~`` expanded), is refused elsewhere, at any depth of lists and mappings."""
    allowed = [REPO, Path(os.path.abspath(data_root())), *(Path(os.path.abspath(resolve(i))) for i in inputs)]

    def check(value, key: str) -> None:
        if value is not None and not isinstance(value, (str, bool, int, float, list, dict)):  # papermill writes these as Python literals, any other
            raise ValueError(f"{where} parameter {key} is a {type(value).__name__}; a parameter is text, a number, true/false, null, a list or a mapping")  # type as text it does not escape
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where} parameter {key} is {value}; a number parameter is finite")
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise ValueError(f"{where} parameter {key} has the key {k!r}; keys are text")
                check(v, f"{key}.{k}")
        elif isinstance(value, list):
            for k, v in enumerate(value):
                check(v, f"{key}[{k}]")
        elif isinstance(value, str):
            text = os.path.expanduser(os.path.expandvars(value))
            if not (Path(text).is_absolute() or Path(text).anchor or ".." in Path(text).parts):
                return  # a name or a path below the checkout, or plain text
            p = Path(os.path.abspath(REPO / text))
            if not any(p == a or a in p.parents for a in allowed):
                raise ValueError(f"{where} parameter {key} = {value!r} names a path outside the checkout, the data root and the step's inputs")

    for k, v in parameters.items():
        if not isinstance(k, str) or not k.isidentifier() or keyword.iskeyword(k):  # papermill writes the name as code: `<name> = <value>`
            raise ValueError(f"{where} parameter name {k!r} is not a Python name (letters, digits and _, not starting with a digit)")
        check(v, str(k))
        if k in WRITING_PARAMETERS.get(notebook, ()):
            _check_writing_parameter(k, v, where)
    known = notebook_defaults(NOTEBOOKS / notebook) if notebook else None
    if known is not None and (unknown := sorted(map(str, set(parameters) - set(known)))):  # papermill would pass it on unused, the
        raise ValueError(f"{where} parameter {unknown[0]!r} is not one of {notebook}'s parameters "  # notebook writing where its default says
                         f"({', '.join(sorted(known))})")  # fmt: skip
    for k, v in (parameters.items() if known is not None else ()):
        _check_parameter_type(k, v, known[k], where, notebook)


def _check_arguments(argv: list, parameters: object, outputs: list, where: str, kind: str) -> None:
    """A command or script step takes no notebook parameters and writes only what it declares (every
    output option's value is one of its ``outputs``)."""
    if parameters:
        raise ValueError(f"{where}: parameters are a notebook's; a {kind} step's settings are its arguments")
    glued = [a for a in argv[1:] if a.startswith("--") and "=" in a]
    if glued:  # --out=x would pass the check below unseen
        raise ValueError(f"{where} {kind} argument {glued[0]!r}: give an option and its value as two items ([--out, path])")
    for option, value in zip(argv, argv[1:]):
        if option in OUTPUT_OPTIONS and os.path.normpath(value) not in {os.path.normpath(o) for o in outputs}:
            raise ValueError(f"{where} {kind} writes {option} {value}, which is not among its outputs")
        if kind == "command" and option in TABLE_OPTIONS and not value.lower().endswith(".csv"):  # the command would refuse it as it runs
            raise ValueError(f"{where} {kind} writes the table {option} {value}; a table is written as CSV: give a path ending with .csv")


#: the options by which a samcam command names a table it writes (a CSV: samcam.outputs.check_file_output)
TABLE_OPTIONS = ("--csv", "--per-image-csv", "--sweep-csv")


def stamp(step: Step) -> dict:
    """A step's definition as its stamp records it: the notebook and its parameters, or the command;
    paths written as :func:`samcam.outputs.relocate` writes them (relative to the checkout, where
    :func:`resolve` reads them), so a stamp made in one checkout is current in another."""
    from samcam.outputs import relocate

    if step.command is not None:
        return {"command": relocate(step.command, REPO)}
    if step.script is not None:
        return {"script": relocate(step.script, REPO)}
    return {"notebook": step.notebook, "parameters": relocate(step.parameters, REPO)}


def _scratch_inside(step: Step, output: str) -> list[str]:
    """The step's scratch that lies inside its output folder ``output``, relative to it (demo's mask
    cache inside results/demo): left out of the output's fingerprint, as no clone holds it."""
    out = os.path.normpath(output)
    return [os.path.relpath(os.path.normpath(x), out) for x in step.scratch if os.path.normpath(x).startswith(out + os.sep)]


def fingerprints(step: Step, root: Path | None = None, kinds: tuple[str, ...] = ("inputs", "notebook", "outputs")) -> dict:
    """The content fingerprints a stamp records: every input, the notebook (of a notebook step) or the
    script and its helpers (of a script step), and every output (``None`` for one that is absent),
    keyed by the path as the config names it, written as :func:`samcam.outputs.relocate_text` writes
    it (so the keys match in any checkout)."""
    from samcam.outputs import fingerprint, relocate_text

    root = REPO if root is None else root
    prints = {kind: {relocate_text(p, REPO): fingerprint(root / p, _scratch_inside(step, p) if kind == "outputs" else ()) for p in paths}
              for kind, paths in (("inputs", step.inputs), ("outputs", step.outputs)) if kind in kinds}  # fmt: skip
    if step.script is not None and "notebook" in kinds:
        prints["script"] = {relocate_text(str(p.relative_to(REPO)), REPO): fingerprint(p) for p in [step.code, *step.helpers]}
    elif step.notebook is not None and "notebook" in kinds:
        prints["notebook"] = fingerprint(step.code)
    return prints


def full_stamp(step: Step, root: Path | None = None, before: dict | None = None) -> dict:
    """What ``<runs>/<step>.params.json`` holds after a run: :func:`stamp`, :func:`fingerprints` and
    the commit that ran it (:func:`samcam.outputs.git_commit`; provenance, not compared). ``before``
    (:func:`taken_before`): the inputs' and notebook's fingerprints and the commit, taken as the step
    started (what the outputs were made from and by, even if an input or the code is edited while a
    long step runs)."""
    from samcam.outputs import git_commit

    before = dict(before) if before is not None else {"commit": git_commit(REPO)}
    commit = before.pop("commit", None)
    return {**stamp(step), "fingerprints": {**fingerprints(step, root), **before}, "commit": commit}


def taken_before(step: Step) -> dict:
    """What a stamp takes as a step starts: its inputs' and notebook's fingerprints and the commit."""
    from samcam.outputs import git_commit

    return {**fingerprints(step, kinds=("inputs", "notebook")), "commit": git_commit(REPO)}


def step_state(step: Step, runs: Path | None = None, root: Path | None = None) -> str:
    """``missing input …``, ``current`` or ``stale (why)``; inputs and outputs are relative to ``root``.
    Current means: the stamp of the last run matches the step's definition, and the fingerprints of
    its inputs, notebook and outputs are those the stamp recorded (contents, never file times)."""
    from samcam.outputs import read_record

    runs = RUNS if runs is None else runs
    root = REPO if root is None else root
    absent = [i for i in step.inputs if not (root / i).exists()]
    if absent:
        return f"missing input {absent[0]}"
    stamp_file = runs / f"{step.name}.params.json"
    if not step.outputs:
        return "stale (no outputs declared)"
    if not stamp_file.exists():
        return "stale (never run here)"
    missing = [o for o in step.outputs if not (root / o).exists()]
    if missing:
        return f"stale (output {missing[0]} missing)"
    old = read_record(stamp_file, "reproduce stamp", f"remove it to rerun step {step.name}")
    if {k: v for k, v in old.items() if k not in ("fingerprints", "commit")} != stamp(step):
        if step.command is not None or step.script is not None:
            return f"stale ({'command' if step.command is not None else 'script or its arguments'} changed)"
        return "stale (notebook or parameters changed)"
    recorded = old.get("fingerprints")
    if not isinstance(recorded, dict):
        return "stale (run before samcam fingerprinted a step's inputs)"
    try:
        now = fingerprints(step, root)
    except (OSError, ValueError) as e:  # a dangling link or a pipe inside a folder: a state, not a crash
        return f"stale (cannot read an input or output: {e})"
    for kind, label in (("inputs", "input"), ("notebook", "notebook"), ("script", "script"), ("outputs", "output")):
        was, is_ = recorded.get(kind), now.get(kind)
        if isinstance(is_, dict):
            new = [k for k in is_ if isinstance(was, dict) and k not in was]
            if new:  # declared since: the last run's stamp cannot say whether it made it
                return f"stale ({label} {new[0]} is not in the last run's stamp)"
            changed = [k for k in is_ if not isinstance(was, dict) or was.get(k) != is_[k]]
            if changed:
                return f"stale ({label} {changed[0]} changed since the last run)"
        elif was != is_:
            return f"stale ({label} {step.notebook} changed since the last run)"
    return "current"


def _runs_now(step: Step, state: str, only: list[str] | None, force: bool, long: bool) -> bool:
    """Whether a step in ``state`` runs: never without its inputs; a long one only when named or with
    ``long``; else when forced or not current."""
    if state.startswith("missing") or (step.long and not long and step.name not in (only or ())):
        return False
    return force or state != "current"


def plan(config: str | os.PathLike = DEFAULT_CONFIG, only: list[str] | None = None, force: bool = False,
         runs: Path | None = None, long: bool = False) -> list[tuple[Step, str, bool]]:  # fmt: skip
    """``(step, state, will run)`` for every selected step of ``config``, in order (:func:`_runs_now`);
    ``only``: the names of the steps selected (``None``: every step). An empty selection is refused:
    ``--only`` given no name selected every step, and ran what it would not name."""
    if only is not None and not only:
        raise ValueError("--only names no step; give the names of the steps to run (samcam reproduce --list shows them), or leave it out")
    steps = load_config(config)
    unknown = sorted(set(only or ()) - {s.name for s in steps})
    if unknown:
        raise ValueError(f"{config}: no step named {', '.join(unknown)}; steps: {', '.join(s.name for s in steps)}")
    rows = []
    for step in steps:
        if only and step.name not in only:
            continue
        state = step_state(step, runs)
        rows.append((step, state, _runs_now(step, state, only, force, long)))
    return rows


def describe(step: Step, state: str, runs_now: bool) -> str:
    """A plan's line for one step (``samcam reproduce --list``)."""
    long = f" (long: {step.long})" if step.long else ""
    scratch = f" (not kept: {', '.join(step.scratch)})" if step.scratch else ""
    return f"{step.name}: {'would run' if runs_now else 'skip'} [{state}]{long} {step.what} -> {', '.join(step.outputs)}{scratch}"


def skip_reason(step: Step, state: str, force: bool = False) -> str:
    """Why a step that does not run is skipped, in one line."""
    if step.long and not state.startswith("missing") and (state != "current" or force):
        return f"{state}; a long step ({step.long}): name it with --only {step.name}, or give --long"
    return state


def check_redo(step: Step, state: str, force: bool) -> None:
    """A command step resumes into its outputs (ids already there are kept), so rerunning it over
    outputs made from other inputs, by another command, or changed since, would stamp them current
    unchanged; and ``--force`` would redo nothing. Such a run is refused with the way out: remove the
    outputs."""
    remade = state == "stale (command changed)" or state.endswith("changed since the last run)")
    if step.command is not None and (remade or (force and state == "current")):
        why = "--force" if state == "current" else state
        written = step.outputs + step.scratch
        raise ValueError(f"step {step.name} ({why}): samcam {step.command[0]} resumes into {', '.join(written)} and would keep "
                         f"what is there; remove {'it' if len(written) == 1 else 'them'} to redo the step")


def check_written(step: Step, before: list) -> None:
    """Every declared output of a step that ran (a notebook, a command or a script alike) is this run's:
    there after it, and a file written by it (new, or its size, time or inode changed since ``before``,
    :func:`samcam.outputs.stat_signature` of each output as the step started); a folder that was there
    and is left as it was counts as written (resumed whole: its step found every part done, as 08's
    label folders or a mask folder), for a command step only where its command names it (an output
    option's value, or inside one: a folder an earlier run left was claimed by a step writing none,
    audit 13's F2). Else a ``RuntimeError`` naming the step and what it did not write,
    and nothing is stamped: a stamp never claims a file left from before (a command run without the
    option that writes it, a benchmark that found no baseline and exited 0) or one never made."""
    from samcam.outputs import stat_signature

    named = None if step.command is None else [os.path.normpath(v) for o, v in zip(step.command, step.command[1:]) if o in OUTPUT_OPTIONS]

    def resumed(o: str, was) -> bool:  # a folder left whole by a step that writes it (a command: named by an output option)
        return was is not None and (REPO / o).is_dir() and (named is None or _within(os.path.normpath(o), named))

    kept = [o for o, was in zip(step.outputs, before)
            if not (REPO / o).exists() or (stat_signature(REPO / o) == was and not resumed(o, was))]
    if kept:
        raise RuntimeError(f"step {step.name}: {step.what} did not write {', '.join(kept)}; nothing is stamped "
                           "(an output left from an earlier run is never claimed: remove it to redo the step)")


def run_command(step: Step) -> None:
    """Run a command step: ``python -m samcam.cli <command>`` from the checkout, its output shown as it
    goes; a ``RuntimeError`` naming the step when it fails."""
    import subprocess
    import sys

    rc = subprocess.call([sys.executable, "-m", "samcam.cli", *step.command], cwd=REPO)
    if rc != 0:
        raise RuntimeError(f"step {step.name}: samcam {step.command[0]} exited with status {rc}")


def run_script(step: Step) -> None:
    """Run a script step: samcam's interpreter on the script, from the checkout, with the checkout on
    ``PYTHONPATH`` (so the package need not be installed); a ``RuntimeError`` naming the step when it fails."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
           "PYTHONDONTWRITEBYTECODE": "1"}  # no __pycache__ in an input (a baseline checkout the script runs)  # fmt: skip
    rc = subprocess.call([sys.executable, *step.script], cwd=REPO, env=env)
    if rc != 0:
        raise RuntimeError(f"step {step.name}: python {step.script[0]} exited with status {rc}")


def reproduce(config: str | os.PathLike = DEFAULT_CONFIG, only: list[str] | None = None, force: bool = False,
              runs: Path | None = None, log=None, long: bool = False, allow_dirty: bool = False) -> list[tuple[str, str]]:  # fmt: skip
    """Run every stale step of ``config`` (executed notebooks go to ``results/runs/``); ``log`` (e.g.
    ``print``) hears each step's name, whether it runs and why, and its time as it goes. Raises
    ``ValueError`` when every selected step lacks an input (nothing could be reproduced), or when a
    selected step reads the data root and it does not exist (``SAMCAM_DATA`` pointing nowhere: the
    data steps would all be skipped, and the run would seem to succeed), or when a step would run on a
    checkout with uncommitted changes outside ``results/`` (its stamp could name no code that exists)
    unless ``allow_dirty``: then the stamps name the ``-dirty`` commit and ``log`` hears a note."""
    from samcam.outputs import git_commit

    runs = RUNS if runs is None else runs
    rows = plan(config, only, force, runs, long)
    root = Path(os.path.abspath(data_root()))
    if not root.is_dir() and any(i == str(root) or i.startswith(str(root) + os.sep) for step, _, _ in rows for i in step.inputs):
        raise ValueError(f"the data root {root} does not exist (SAMCAM_DATA={os.environ.get('SAMCAM_DATA', '(unset: ../shared/data beside the checkout)')}); "
                         "steps that read it would all be skipped")  # fmt: skip
    if rows and all(state.startswith("missing") for _, state, _ in rows):
        raise ValueError(f"{config}: every selected step lacks an input (e.g. {rows[0][0].name}: {rows[0][1]}); "
                         f"is the data where SAMCAM_DATA points ({data_root()})?")  # fmt: skip
    commit = git_commit(REPO)
    if commit and commit.endswith("-dirty") and any(r[2] for r in rows):
        if not allow_dirty:
            raise ValueError(f"{REPO}: uncommitted changes outside results/ ({commit}); a result names the commit that made it, so commit "
                             "or stash them first (or give --allow-dirty for a trial run whose stamps name the -dirty commit)")  # fmt: skip
        if log:
            log(f"note: this checkout has uncommitted changes outside results/ ({commit}); commit results only from a run on a clean commit")
    with _weights_cache_read_only():
        return _run_steps(rows, runs, only, force, long, log)


@contextlib.contextmanager
def _weights_cache_read_only():
    """While steps run, the weights cache (outside the checkout, like the data root) is read, never
    filled (:data:`samcam.sam.weights.NO_FETCH`, which the steps' processes and kernels inherit): a
    step whose checkpoint is not cached fails naming ``samcam weights fetch``, the one command that
    writes there (``make reproduce`` runs it first)."""
    from samcam.sam.weights import NO_FETCH

    old = os.environ.get(NO_FETCH)
    os.environ[NO_FETCH] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(NO_FETCH, None)
        else:
            os.environ[NO_FETCH] = old


def _run_steps(rows: list, runs: Path, only, force: bool, long: bool, log) -> list[tuple[str, str]]:
    """The loop of :func:`reproduce`: each planned step run, or skipped with its reason."""
    import time

    from samcam.io import write_text
    from samcam.outputs import stat_signature

    report, ran = [], False
    for step, state, runs_now in rows:
        if ran:  # an earlier step of this run may have written this one's inputs: judge it now
            state = step_state(step, runs)
            runs_now = _runs_now(step, state, only, force, long)
        if not runs_now:
            why = skip_reason(step, state, force)
            report.append((step.name, f"skipped ({why})"))
            if log:
                log(f"{step.name}: skipped ({why})")
            continue
        check_redo(step, state, force)
        if log:
            log(f"{step.name}: running ({'forced' if state == 'current' else state}) — {step.what}" + (f" (long: {step.long})" if step.long else ""))
        t0 = time.perf_counter()
        try:
            before = taken_before(step)
        except (OSError, ValueError) as e:  # a broken link or a pipe inside an input folder
            raise ValueError(f"step {step.name}: cannot fingerprint its inputs: {e}") from None
        outputs_before = [stat_signature(REPO / o) for o in step.outputs]
        if step.notebook is not None:
            execute(step.notebook, runs / f"{step.name}.ipynb", step.parameters)
        else:
            runs.mkdir(parents=True, exist_ok=True)
            run_command(step) if step.command is not None else run_script(step)
        check_written(step, outputs_before)
        write_text(runs / f"{step.name}.params.json", json.dumps(full_stamp(step, before=before), indent=1))
        report.append((step.name, f"ran in {time.perf_counter() - t0:.0f} s"))
        ran = True
        if log:
            log(f"{step.name}: done in {time.perf_counter() - t0:.0f} s")
    return report
