"""Relocatable records: what an output folder records holds no machine path, inputs are compared by
content (a moved checkout resumes, a changed input is refused), one process writes a folder at a
time, and no committed file names a folder of the machine that made it."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samcam import cli
from samcam.outputs import RUN_RECORD, claim_output, fingerprint, lock_output, record_path, relocate_text, resolve_recorded

REPO = Path(__file__).resolve().parents[1]


def _merge_inputs(root: Path) -> list[str]:
    """A pseudo-label folder (two labels), a mask folder and the merge command into ``root/out``."""
    from samcam.sam.masks import MaskSet
    from samcam.sam.mask_files import write_compact

    (root / "masks").mkdir(parents=True)
    (root / "pseudo").mkdir()
    masks = np.zeros((2, 6, 8), bool)
    masks[0, :3] = True
    masks[1, 3:] = True
    for i, v in (("a", 7), ("b", 3)):
        write_compact(root / "masks" / f"{i}.json.gz", MaskSet(masks))
        Image.fromarray(np.full((6, 8), v, np.uint8)).save(root / "pseudo" / f"{i}.png")
    return ["merge", "--pseudo", str(root / "pseudo"), "--masks", str(root / "masks"), "--out", str(root / "out" / "merged"), "--workers", "1"]


def _main(args, capsys) -> tuple[int, str]:
    code = cli.main(args)
    return code, capsys.readouterr().err.strip()


def test_record_paths_are_relative_or_under_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMCAM_DATA", str(tmp_path / "data"))
    base = tmp_path / "results" / "labels" / "x"
    assert record_path(tmp_path / "data" / "voc" / "JPEGImages", base) == "${SAMCAM_DATA}/voc/JPEGImages"
    assert record_path(tmp_path / "results" / "masks" / "m", base) == "../../masks/m"
    assert record_path(base / "sub", base) == "sub"
    for path in (tmp_path / "data" / "voc", tmp_path / "results" / "masks" / "m"):
        assert resolve_recorded(record_path(path, base), base).resolve() == path.resolve()
    text = f"wrote {tmp_path}/data/a.png and {REPO}/results/b.png, not /usr/lib/c"
    assert relocate_text(text, REPO) == "wrote ${SAMCAM_DATA}/a.png and results/b.png, not /usr/lib/c"
    assert relocate_text("--out /elsewhere/runs/seg/<row>", REPO, ["/elsewhere/checkout"]) == "--out ../runs/seg/<row>"
    for bad in ("/", str(REPO), str(REPO.parent), "//"):  # "/" took every absolute path for the checkout's
        with pytest.raises(ValueError, match=r": not another checkout \(a root, this checkout or a folder above it\)$"):
            relocate_text("${SAMCAM_DATA}/pseudo_labels and /usr/lib", REPO, [bad])
    # a checkout right below the root (a container's /app) is one: its paths are taken, the root's others are not
    assert relocate_text("--out /app/results/x, /usr/lib/y and /shared/z", REPO, ["/app"]) == "--out results/x, /usr/lib/y and /shared/z"


def test_relocate_records_refuses_a_root_as_the_old_checkout(clone):
    """``--made-in /`` had rewritten 43 committed files (every slash taken for the old checkout's); now
    refused in one line, before any file is read."""
    r = _relocate_records(clone, "/")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "relocate_records: error: --made-in /: not another checkout (a root, this checkout or a folder above it)\n"


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A clone of this checkout's last commit, for relocate_records to rewrite (never this checkout)."""
    if not (REPO / ".git").exists():
        pytest.skip("needs the checkout's git history to clone (a copy without it, as mutmut's mutants/, has none)")
    path = tmp_path_factory.mktemp("relocate") / "clone"
    subprocess.run(["git", "clone", "-q", "--no-local", str(REPO), str(path)], check=True, capture_output=True)
    return path


def _relocate_records(clone, made_in):
    """This checkout's script (the clone holds the last commit's) rewriting the clone (its package's REPO)."""
    env = {**os.environ, "PYTHONPATH": str(clone)}
    return subprocess.run([sys.executable, str(REPO / "scripts" / "relocate_records.py"), "--made-in", made_in],
                          capture_output=True, text=True, env=env, cwd=clone)  # fmt: skip


@pytest.mark.parametrize("made_in, why", [
    ("/proc", "/proc: exists here and is not a samcam checkout (no pyproject.toml and samcam/ in it)"),  # audit 10, F2: 26 lines rewritten
    ("elsewhere/repo", "elsewhere/repo: is not an absolute path; give the folder of the checkout that wrote the records"),
    ("/tmp/a\nb", "'/tmp/a\\nb' is not one line of printable text"),
])
def test_relocate_records_refuses_what_is_no_other_checkout(clone, made_in, why):
    def state():
        return subprocess.run(["git", "-C", str(clone), "diff", "HEAD"], capture_output=True, text=True, check=True).stdout

    before = state()
    r = _relocate_records(clone, made_in)
    assert (r.returncode, r.stdout, r.stderr) == (2, "", f"relocate_records: error: --made-in {why}\n")
    assert state() == before


def test_relocate_records_rewrites_records_but_not_quoted_source(clone):
    """A benchmark's text naming the old checkout is relocated; the mutation survivors, which quote
    source code, are left as they are (audit 10, F2: their /proc/cpuinfo was rewritten)."""
    old = "/gone/checkout"
    (clone / "results" / "mutation" / "survivors" / "quoted.md").write_text(f"- `open('{old}/x')`\n")
    (clone / "results" / "benchmarks" / "moved.md").write_text(f"python {old}/benchmarks/bench_eval.py\n")
    git = ["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "-A"], check=True, capture_output=True)
    subprocess.run([*git, "commit", "-qm", "t"], check=True, capture_output=True)
    r = _relocate_records(clone, old)
    assert r.returncode == 0, r.stderr
    assert (clone / "results" / "mutation" / "survivors" / "quoted.md").read_text() == f"- `open('{old}/x')`\n"
    assert (clone / "results" / "benchmarks" / "moved.md").read_text() == "python benchmarks/bench_eval.py\n"


def test_a_shared_environment_is_written_as_this_checkouts_venv(tmp_path, monkeypatch):
    """A worktree that runs another checkout's .venv writes that environment's paths as its own
    .venv (what a user's clone has), never as the sibling checkout; a venv that is not a checkout's
    .venv, and paths of the other checkout outside its .venv, are relocated as they would be anyway."""
    import sys

    other = tmp_path / "main"
    (other / "samcam").mkdir(parents=True)
    (other / ".venv" / "bin").mkdir(parents=True)
    python = f"{other}/.venv/bin/python"
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "env"))  # an environment that is no checkout's .venv
    plain = {t: relocate_text(t, REPO) for t in (f"{other}/results/x", python, f"{tmp_path}/env/bin/python")}
    assert plain[python] != ".venv/bin/python"
    monkeypatch.setattr(sys, "prefix", str(other / ".venv"))
    assert relocate_text(f"ran {python} on {other}/results/x", REPO) == f"ran .venv/bin/python on {plain[f'{other}/results/x']}"
    assert relocate_text(python, REPO / "results" / "runs") == "../../.venv/bin/python"
    (other / "samcam").rmdir()  # a .venv that belongs to no samcam checkout
    assert relocate_text(python, REPO) == plain[python]


def test_a_record_holds_no_machine_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAMCAM_DATA", str(tmp_path / "data"))
    args = _merge_inputs(tmp_path / "data")  # the pseudo labels and masks lie under the data root
    args[args.index("--out") + 1] = str(tmp_path / "results" / "merged")
    assert _main(args, capsys)[0] == 0
    text = (tmp_path / "results" / "merged" / RUN_RECORD).read_text()
    assert str(tmp_path) not in text
    record = json.loads(text)
    assert record["inputs"] == {"masks": "${SAMCAM_DATA}/masks", "pseudo": "${SAMCAM_DATA}/pseudo"}
    assert record["fingerprints"]["pseudo"] == fingerprint(tmp_path / "data" / "pseudo")


def test_a_moved_checkout_resumes(tmp_path, capsys):
    args = _merge_inputs(tmp_path / "one")
    assert _main(args, capsys)[0] == 0
    record = json.loads((tmp_path / "one" / "out" / "merged" / RUN_RECORD).read_text())
    assert record["inputs"]["pseudo"] == "../../pseudo"
    shutil.move(tmp_path / "one", tmp_path / "two")  # same content, another absolute path
    moved = [a.replace(str(tmp_path / "one"), str(tmp_path / "two")) for a in args]
    (tmp_path / "two" / "out" / "merged" / "b.png").unlink()  # one output left to do
    code, err = _main(moved, capsys)
    assert code == 0, err
    assert (tmp_path / "two" / "out" / "merged" / "b.png").exists()


def test_a_changed_input_is_refused_naming_it(tmp_path, capsys):
    args = _merge_inputs(tmp_path)
    assert _main(args, capsys)[0] == 0
    out = tmp_path / "out" / "merged"
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    Image.fromarray(np.full((6, 8), 5, np.uint8)).save(tmp_path / "pseudo" / "a.png")  # one label replaced in place
    code, err = _main(args, capsys)
    assert code == 2
    last = err.splitlines()[-1]
    assert "pseudo" in last and str(tmp_path / "pseudo") in last and "differs in content" in last and str(out / RUN_RECORD) in last
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == before  # nothing stale kept as new, nothing deleted
    # bookkeeping of an input folder (its own record and cost) is not its content
    Image.fromarray(np.full((6, 8), 7, np.uint8)).save(tmp_path / "pseudo" / "a.png")
    assert fingerprint(tmp_path / "pseudo") == json.loads((out / RUN_RECORD).read_text())["fingerprints"]["pseudo"]
    (tmp_path / "pseudo" / "samcam_cost.json").write_text('{"runs": []}\n')
    assert _main(args, capsys)[0] == 0


def test_a_record_without_fingerprints_is_refused(tmp_path):
    out = tmp_path / "o"
    with claim_output(out, "s", {}, {"a": 1}):
        (out / "x.png").write_bytes(b"x")
    record = json.loads((out / RUN_RECORD).read_text())
    del record["fingerprints"]
    (out / RUN_RECORD).write_text(json.dumps(record))
    with pytest.raises(ValueError, match="without input fingerprints"):
        claim_output(out, "s", {}, {"a": 1}).__enter__()


def _hold(out: str, ready, release) -> None:
    with claim_output(out, "merge", {}, {"rule": "first"}):
        ready.set()
        release.wait(30)


def test_a_folder_being_written_refuses_a_second_process_at_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    out = tmp_path / "new"
    first = ctx.Process(target=_hold, args=(str(out), ready, release))
    first.start()
    try:
        assert ready.wait(30)
        t0 = time.perf_counter()
        with pytest.raises(RuntimeError) as e:
            claim_output(out, "merge", {}, {"rule": "second"}).__enter__()
        assert time.perf_counter() - t0 < 5
        assert str(out) in str(e.value) and "another samcam process" in str(e.value) and "\n" not in str(e.value)
    finally:
        release.set()
        first.join(30)
    assert json.loads((out / RUN_RECORD).read_text())["parameters"] == {"rule": "first"}
    with lock_output(out):  # released when the first run ended
        pass


#: absolute folders of a machine (``/work/`` etc.), where a path begins: not inside a relative path
#: such as ``results/work/``, not a bare ``/work/`` (``.gitignore``'s anchored pattern)
MACHINE_PATH = re.compile(r"(?<![\w.~$}-])(?:/(?:work|root|home|tmp|Users)/(?=[\w.$<{-])|[A-Za-z]:\\\\?(?=\w))")
#: this file spells the patterns out
SELF = Path(__file__).resolve().relative_to(REPO).as_posix()


def _committed_texts(*under: str):
    """``(name, text)`` of each committed text file (binary ones left out), all or those ``under`` the
    given folders; the test is skipped outside a git checkout."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", *under], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for name in listed.decode().split("\0"):
        path = REPO / name
        if not name or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" not in data[:8192]:
            yield name, data.decode("utf-8", errors="replace")


def test_committed_files_hold_no_machine_paths():
    found = []
    for name, text in _committed_texts():
        if name == SELF:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if m := MACHINE_PATH.search(line):
                found.append(f"{name}:{n}: {line[max(0, m.start() - 40): m.end() + 60].strip()}")
    assert not found, f"{len(found)} lines name machine paths:\n" + "\n".join(found[:40])


#: a path into a Python installation (``…/site-packages/tqdm/auto.py``): it tells where the maker's packages
#: live, relative or not (a kernel warning once printed ``../main/.venv/lib/python3.11/site-packages/…``)
INSTALL_PATH = re.compile(r"[\w.~/-]*(?:site|dist)-packages/")
#: executed notebooks made before the warning's source was fixed (samcam.sam.weights.import_pooch), each with
#: the step that remakes it; an entry leaves the list when its step is rerun (the test then says so)
AWAITING_RERUN = {"results/runs/claims.ipynb": "claims"}


def test_committed_results_name_no_installation_path():
    found, clean = [], []
    for name, text in _committed_texts("results"):
        hit = INSTALL_PATH.search(text)
        if hit and name not in AWAITING_RERUN:
            found.append(f"{name}: {hit.group(0)}")
        elif not hit and name in AWAITING_RERUN:
            clean.append(f"{name} (step {AWAITING_RERUN[name]} was rerun: take it out of AWAITING_RERUN)")
    assert not found, "installation paths in committed results:\n" + "\n".join(found)
    assert not clean, "\n".join(clean)


@pytest.mark.parametrize("text, hit", [
    ("../main/.venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning", True), ("/usr/lib/python3/dist-packages/x.py", True),
    ("C:/Python311/Lib/site-packages/pooch/core.py", True), ("site packages", False), ("results/runs/demo.ipynb", False),
])  # fmt: skip
def test_the_installation_path_pattern(text, hit):
    assert bool(INSTALL_PATH.search(text)) == hit


@pytest.mark.parametrize("line, hit", [
    ("cams: /work/main/work/claims/cams", True), ('"/home/me/x"', True), ("C:\\Users\\me", True), ("--out /tmp/x", True),
    ("/work/", False), ("results/work/x", False), ("../work/seg", False), ("${SAMCAM_DATA}/voc", False), ("$TMPDIR/x", False),
])  # fmt: skip
def test_the_machine_path_pattern(line, hit):
    assert bool(MACHINE_PATH.search(line)) == hit


def test_one_machine_description(monkeypatch):
    """Cost records, checkpoints, the segmentation table and the benchmarks describe the machine with
    one function; torch's fields appear only where torch is loaded (a torch-free step stays so)."""
    import importlib.util
    import sys

    from samcam.outputs import machine, machine_info

    import torch  # noqa: F401  (loaded, as in a step that uses it)

    info = machine_info()
    assert info["cores"] >= 1 and info["cpu"] and machine() == f"{info['cpu']}, {info['cores']} cores"
    assert info["memory_gib"] is None or info["memory_gib"] > 0  # None where /proc/meminfo is not there to read
    assert {"torch", "torch_threads", "cuda"} <= set(info) and info["torch_threads"] >= 1  # the tests load torch
    spec = importlib.util.spec_from_file_location("bench_common", REPO / "benchmarks" / "_common.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert {"cpu", "cores", "torch", "git_commit"} <= set(bench.machine())
    monkeypatch.delitem(sys.modules, "torch")  # as in a process that never loaded it (restored after the test)
    assert "torch" not in machine_info() and "torch" not in sys.modules


def test_an_input_replaced_while_a_step_ran_is_named_after_it(tmp_path):
    """The record fingerprints the inputs as the run began; one replaced while the step read it (a
    label copied over mid-run) would leave outputs of two versions under a record naming one."""
    import os

    src = tmp_path / "labels"
    src.mkdir()
    (src / "a.png").write_bytes(b"one")
    (src / ".samcam.lock").write_bytes(b"")  # hidden files are no input: they may change
    with claim_output(tmp_path / "out", "s", {"labels": src}, {}):
        (src / ".samcam.lock").write_bytes(b"held")
        (src / "a.png").write_bytes(b"one")  # rewritten with the same bytes (a sync, a cp over it): the same input
        os.utime(src / "a.png", ns=(5, 5))
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'out'}: the input labels ({src}) changed while this run read it, "
                                                   "so its outputs may mix both versions; remove the folder and rerun")):  # fmt: skip
        with claim_output(tmp_path / "out", "s", {"labels": src}, {}) as out:
            (out / "a.png").write_bytes(b"made from one")
            (src / "a.png").write_bytes(b"two")
            os.utime(src / "a.png", ns=(1, 1))  # whatever the clock's resolution
    with pytest.raises(ValueError, match="differs in content"):  # and a rerun is refused, as for any changed input
        with claim_output(tmp_path / "out", "s", {"labels": src}, {}):
            pass
