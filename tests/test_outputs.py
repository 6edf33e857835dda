"""The bookkeeping of samcam.outputs against independent computations: the machine description, the
cost record a step appends to and its sum, what counts as a finished output (and which ids are left),
recorded paths written and read back, the commit a record names, and how a refused rerun or an
unreadable record names what is wrong."""

from __future__ import annotations

import datetime
import gzip
import json
import os
import platform
import sys
import types

import numpy as np
import pytest

from samcam import outputs
from samcam.outputs import COST_RECORD, add_cost, is_complete, machine, machine_info, read_cost, resolve_recorded

CPUINFO = ["processor\t: 0", "vendor_id\t: AuthenticAMD", "model name\t: AMD EPYC: 7B13 64-Core", "processor\t: 1", "model name\t: other"]
MEMINFO = ["MemFree:         1000 kB", "MemTotal:       24683832 kB", "MemAvailable:    2000 kB"]


@pytest.fixture()
def proc(monkeypatch):
    """/proc as a test gives it: ``files[name] = lines``."""
    files = {"/proc/cpuinfo": CPUINFO, "/proc/meminfo": MEMINFO}
    monkeypatch.setattr(outputs, "_proc_lines", lambda path: list(files.get(path, [])))
    return files


def test_machine_info_reads_the_first_cpu_model_and_memtotal(proc, monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    info = machine_info()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert info == {"cpu": "AMD EPYC: 7B13 64-Core", "cores": cores, "memory_gib": 23.5,  # 24683832 kB / 2**20 = 23.54 GiB
                    "python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform()}  # fmt: skip
    assert machine() == f"AMD EPYC: 7B13 64-Core, {cores} cores"


def test_machine_info_without_proc_falls_back_to_platform(proc, monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    proc.clear()
    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    info = machine_info()
    assert info["cpu"] == "arm64" and info["memory_gib"] is None
    monkeypatch.setattr(platform, "processor", lambda: "i386")
    assert machine_info()["cpu"] == "i386"
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert machine_info()["cores"] == 7


def _fake_torch(gpu: bool) -> types.ModuleType:
    torch = types.ModuleType("torch")
    torch.__version__ = "9.9.9"
    torch.get_num_threads = lambda: 3
    torch.version = types.SimpleNamespace(cuda="12.4")

    def name(index):
        assert index == 0, index  # the first visible GPU
        return "NVIDIA H100"

    torch.cuda = types.SimpleNamespace(is_available=lambda: gpu, get_device_name=name)
    return torch


@pytest.mark.parametrize("gpu", [False, True])
def test_machine_info_adds_torch_and_its_gpu_where_torch_is_loaded(proc, monkeypatch, gpu):
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(gpu))
    info = machine_info()
    expected = {"torch": "9.9.9", "torch_threads": 3, "cuda": "NVIDIA H100" if gpu else None, "cuda_version": "12.4" if gpu else None}
    assert {k: info[k] for k in expected} == expected and set(info) == {"cpu", "cores", "memory_gib", "python", "numpy", "platform", *expected}


def test_add_cost_appends_one_run_as_written(tmp_path, proc, monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    add_cost(tmp_path, 1.23456, 4)
    add_cost(tmp_path, 2, 1.0, device="cuda:0")
    text = (tmp_path / COST_RECORD).read_text()
    runs = json.loads(text)["runs"]
    assert text == json.dumps({"runs": runs}, indent=1) + "\n"  # the layout the committed records have
    finished = [datetime.datetime.fromisoformat(r.pop("finished")) for r in runs]
    assert all(f.tzinfo == datetime.timezone.utc and before <= f <= before + datetime.timedelta(seconds=30) for f in finished)
    assert runs == [{"seconds": 1.235, "images": 4, "device": "cpu", "machine": machine()},
                    {"seconds": 2.0, "images": 1, "device": "cuda:0", "machine": "cuda:0"}]  # fmt: skip
    assert [type(r["images"]) for r in runs] == [int, int]


def test_read_cost_sums_the_runs(tmp_path):
    (tmp_path / COST_RECORD).write_text(json.dumps({"runs": [
        {"seconds": 3.0, "images": 2, "machine": "m1"},  # a record written before runs named their device
        {"seconds": 1.5, "images": 1, "device": "cuda:0", "machine": "m2"},
        {"seconds": 0.5, "images": 0, "device": "cpu", "machine": "m1"}]}))  # fmt: skip
    assert read_cost(tmp_path) == {"seconds": 5.0, "images": 3, "seconds_per_image": 5.0 / 3, "devices": ["cpu", "cuda:0"], "machines": ["m1", "m2"]}
    (tmp_path / COST_RECORD).write_text(json.dumps({"runs": [{"seconds": 0.5, "images": 0, "machine": "m"}]}))
    assert read_cost(tmp_path)["seconds_per_image"] is None  # no image: no rate
    assert read_cost(tmp_path / "none") == {"seconds": None, "images": 0, "seconds_per_image": None, "devices": [], "machines": []}


@pytest.mark.parametrize("runs", [[["seconds", "images", "machine"]], [{"seconds": 1, "images": 1}], "x"])
def test_an_unreadable_cost_record_is_named(tmp_path, runs):
    path = tmp_path / COST_RECORD
    path.write_text(json.dumps({"runs": runs}))
    with pytest.raises(ValueError, match=rf"^{path}: unreadable cost record \(.+\); remove it to start the record anew$") as e:
        read_cost(tmp_path)
    if isinstance(runs, list):
        assert "(a run lacks seconds, images or machine)" in str(e.value)


def test_a_cost_record_with_exactly_the_needed_keys_is_read(tmp_path):
    (tmp_path / COST_RECORD).write_text(json.dumps({"runs": [{"seconds": 2, "images": 1, "machine": "m"}]}))
    assert read_cost(tmp_path)["seconds"] == 2


def _gz(path, data: bytes, cut: int = 0):
    blob = gzip.compress(data)
    path.write_bytes(blob[: len(blob) - cut])
    return path


def test_is_complete_by_kind(tmp_path):
    """Empty files never; a gzip stream only whole; any other non-empty file (a checkpoint) yes."""
    assert not is_complete(tmp_path / "absent.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "one.pt").write_bytes(b"x")
    assert not is_complete(tmp_path / "empty.pt") and is_complete(tmp_path / "one.pt")
    big = os.urandom(3 << 20)  # more than one read of the stream
    assert is_complete(_gz(tmp_path / "whole.json.gz", big))
    assert not is_complete(_gz(tmp_path / "cut.json.gz", big, cut=9))
    np.save(tmp_path / "a.npy", np.arange(6.0))
    assert is_complete(tmp_path / "a.npy")
    (tmp_path / "b.npy").write_bytes((tmp_path / "a.npy").read_bytes()[:-8])
    assert not is_complete(tmp_path / "b.npy")


def test_recorded_paths_are_read_back_against_the_record_folder_or_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMCAM_DATA", str(tmp_path / "data"))
    assert resolve_recorded("${SAMCAM_DATA}", tmp_path / "r") == tmp_path / "data"
    assert resolve_recorded("${SAMCAM_DATA}/voc/x.png", tmp_path / "r") == tmp_path / "data" / "voc" / "x.png"
    assert resolve_recorded("../masks", tmp_path / "r") == tmp_path / "r" / ".." / "masks"
    assert resolve_recorded("${SAMCAM_DATA}x", tmp_path / "r") == tmp_path / "r" / "${SAMCAM_DATA}x"  # not the variable


def test_differences_name_each_changed_key():
    assert outputs.differences({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}, "parameters") == "parameters.b: 2 -> 3, parameters.c: (absent) -> 4"
    assert outputs.differences({"c": None}, {}, "p") == "p.c: None -> (absent)"  # a null is not a field left out
    # nested settings (masks' eleven generator fields): the field that differs, not the whole mapping
    old = {"settings": {"points_per_side": 32, "pred_iou_thresh": 0.88, "crop": {"n_layers": 0}}, "model": "vit_t"}
    new = {"settings": {"points_per_side": 16, "pred_iou_thresh": 0.88, "crop": {"n_layers": 1}}, "model": "vit_t"}
    assert outputs.differences(old, new, "parameters") == ("parameters.settings.crop.n_layers: 0 -> 1, "
                                                            "parameters.settings.points_per_side: 32 -> 16")
    assert outputs.differences("0.1", "0.2", "samcam_version") == "samcam_version: '0.1' -> '0.2'"
    assert outputs.differences({"a": 1}, "x", "p") == "p: {'a': 1} -> 'x'"


def test_machine_info_counts_the_cores_this_process_may_use_not_the_machines(proc, monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)  # a job pinned to 2 of 64 cores
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert machine_info()["cores"] == 2
    assert machine() == "AMD EPYC: 7B13 64-Core, 2 cores"


def test_git_commit_gives_up_on_a_git_that_hangs(tmp_path, monkeypatch):
    import subprocess

    limits = []

    def hanging_git(cmd, **kw):
        limits.append(kw.get("timeout"))
        if kw.get("timeout") is None:
            pytest.fail(f"git_commit waits on {cmd} without a time limit")
        raise subprocess.TimeoutExpired(cmd, kw["timeout"])

    monkeypatch.setattr(subprocess, "run", hanging_git)
    assert outputs.git_commit(tmp_path) is None  # a stalled git (a network file system) does not stall the run
    assert len(limits) == 1 and 0 < limits[0] <= 60


def _png(path, size=(8, 6), cut: int = 0):
    from PIL import Image

    Image.new("L", size, 7).save(path)
    if cut:
        path.write_bytes(path.read_bytes()[:-cut])
    return path


def test_is_complete_takes_a_png_only_whole(tmp_path):
    assert is_complete(_png(tmp_path / "whole.png"))
    assert not is_complete(_png(tmp_path / "no_iend.png", cut=12))  # the 12-byte IEND chunk lost: a killed write
    bad = bytearray(_png(tmp_path / "bad_crc.png").read_bytes())
    bad[-5] ^= 0xFF  # a byte of IEND's CRC
    (tmp_path / "bad_crc.png").write_bytes(bytes(bad))
    assert not is_complete(tmp_path / "bad_crc.png")
    (tmp_path / "text.png").write_text("not an image")
    assert not is_complete(tmp_path / "text.png")


def test_pending_lists_the_ids_without_a_whole_output_in_order(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"")  # made, never written: not done
    _png(tmp_path / "d.png", cut=12)
    (tmp_path / "e.npy").write_bytes(b"")
    assert outputs.pending(["d", "c", "b", "a"], tmp_path) == ["d", "c", "b"]
    np.save(tmp_path / "a.npy", np.zeros(3))
    assert outputs.pending(["a", "e"], tmp_path, suffix=".npy") == ["e"]


def test_a_link_named_like_an_output_is_never_done_and_is_foreign(tmp_path):
    """Audit 11, F11: a link ``<id>.png`` to a whole PNG (a user's ground truth, say) counted as a
    finished output, so a resume skipped it and the folder "held" the user's file."""
    out, theirs = tmp_path / "out", _png(tmp_path / "gt.png")
    out.mkdir()
    _png(out / "a.png")
    (out / "b.png").symlink_to(theirs)
    (out / "c").symlink_to(tmp_path)  # a link to a folder, where a step writes one folder per id
    assert is_complete(theirs) and not is_complete(out / "b.png")
    assert outputs.pending(["a", "b"], out) == ["b"]
    assert outputs.foreign_entries(out) == ["b.png (a link)", "c (a link)"]
    assert outputs.foreign_entries(out, id_folders=True) == ["b.png (a link)", "c (a link)"]
    with pytest.raises(ValueError, match=r"holds files samcam did not write \(b\.png \(a link\), c \(a link\)\)"):
        outputs.refuse_foreign(out)


def test_a_folder_is_unfinished_while_its_step_writes_and_after_it_stops_part_way(tmp_path):
    """Audit 11, F6: a reader of an output folder took whatever a step had written so far. The lock
    file holds the writing step's mark from the moment it writes until its block ends normally."""
    out = tmp_path / "out"
    with outputs.claim_output(out, "merge", {}, {"rule": "first"}):
        _png(out / "a.png")
        with pytest.raises(ValueError, match=rf"^{out}: samcam merge is writing this folder now \(a running process holds its \.samcam\.lock\)"):
            outputs.check_finished(out)  # (a lock held through another open file, here by this process)
    outputs.check_finished(out)  # ended: finished
    with pytest.raises(RuntimeError, match="stopped"):
        with outputs.claim_output(out, "merge", {}, {"rule": "first"}):
            _png(out / "b.png")
            raise RuntimeError("stopped")  # an error part-way, as a killed process: the block never ends normally
    with pytest.raises(ValueError, match=rf"^{out}: unfinished: the samcam merge run writing it \(started [0-9T:+-]+\) stopped before its end.*"
                                         "rerun samcam merge into this folder"):  # fmt: skip
        outputs.check_finished(out)
    with pytest.raises(ValueError, match="other settings"):  # a refused rerun changes nothing: still unfinished
        outputs.claim_output(out, "merge", {}, {"rule": "second"}).__enter__()
    with pytest.raises(ValueError, match="unfinished"):
        outputs.check_finished(out)
    with outputs.claim_output(out, "merge", {}, {"rule": "first"}):  # the rerun that finishes it
        pass
    outputs.check_finished(out)
    assert (out / outputs.LOCK_FILE).read_bytes() == b""
    other = tmp_path / "done"  # a finished folder that a refused rerun did not touch stays finished
    with outputs.claim_output(other, "merge", {}, {"rule": "first"}):
        _png(other / "a.png")
    with pytest.raises(ValueError, match="other settings"):
        outputs.claim_output(other, "merge", {}, {"rule": "second"}).__enter__()
    outputs.check_finished(other)
    outputs.check_finished(tmp_path)  # no lock file: not samcam's, nothing to say


def test_a_step_refuses_an_unfinished_input_folder_before_making_its_output(tmp_path):
    cams = tmp_path / "cams"
    with pytest.raises(KeyboardInterrupt):
        with outputs.claim_output(cams, "cam", {}, {}):
            (cams / "a.npy").write_bytes(b"x")
            raise KeyboardInterrupt
    with pytest.raises(ValueError, match=rf"^{cams}: unfinished: the samcam cam run"):
        outputs.claim_output(tmp_path / "labels", "cam2label", {"cams": cams}, {}).__enter__()
    assert not (tmp_path / "labels").exists()


def test_pending_refuses_an_id_that_is_not_a_name_naming_the_folder(tmp_path):
    out = tmp_path / "masks"
    with pytest.raises(ValueError, match=rf"^the ids given for {out}: id '\.\./x' is not a name") as e:
        outputs.pending(["a", "../x"], out)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("value", "kind"), [([1, 2], "list"), ("x", "str"), (3, "int"), (None, "NoneType")])
def test_a_record_that_is_not_an_object_is_named_with_what_it_is(tmp_path, value, kind):
    path = tmp_path / "samcam_run.json"
    path.write_text(json.dumps(value))
    with pytest.raises(ValueError) as e:
        outputs.read_record(path, "provenance record", "remove it or choose another output folder")
    assert str(e.value) == f"{path}: unreadable provenance record (a JSON {kind}, not an object); remove it or choose another output folder"


def test_record_path_of_the_data_root_itself_is_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMCAM_DATA", str(tmp_path / "data"))
    assert outputs.record_path(tmp_path / "data", tmp_path / "r") == "${SAMCAM_DATA}"
    assert outputs.record_path(tmp_path / "data" / "voc", tmp_path / "r") == "${SAMCAM_DATA}/voc"
    assert outputs.record_path(tmp_path / "masks" / "x", tmp_path / "r" / "s") == "../../masks/x"


def test_record_path_on_another_drive_is_the_absolute_path(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMCAM_DATA", str(tmp_path / "data"))

    def other_drive(path, start=None):  # what ntpath.relpath raises for a path on another drive than its start
        raise ValueError("path is on mount 'D:', start on mount 'C:'")

    monkeypatch.setattr(os.path, "relpath", other_drive)
    assert outputs.record_path(tmp_path / "elsewhere" / "x.png", tmp_path / "r") == str(tmp_path / "elsewhere" / "x.png")


def test_relocate_text_writes_checkout_paths_relative_to_the_record_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMCAM_DATA", str(tmp_path / "data"))
    repo = outputs.REPO
    base = repo / "results" / "seg"
    text = f"read {repo}/samcam/outputs.py and {repo}/notebooks/ then {tmp_path}/data/voc/a.png"
    assert outputs.relocate_text(text, base) == "read ../../samcam/outputs.py and ../../notebooks/ then ${SAMCAM_DATA}/voc/a.png"


def test_git_commit_is_dirty_for_changed_or_new_code_never_for_results(tmp_path, monkeypatch):
    import subprocess

    for var, value in {"HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CEILING_DIRECTORIES": str(tmp_path),
                       "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}.items():  # fmt: skip
        monkeypatch.setenv(var, value)
    repo = tmp_path / "repo"
    (repo / "results").mkdir(parents=True)
    (repo / "code.py").write_text("x = 1\n")
    (repo / "results" / "table.csv").write_text("a\n1\n")
    (repo / ".gitignore").write_text("work/\n")

    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "one")
    head = git("rev-parse", "HEAD")[:12]
    assert outputs.git_commit(repo) == head
    (repo / "results" / "table.csv").write_text("a\n2\n")  # a reproduce run rewriting its results
    (repo / "results" / "new.csv").write_text("a\n")
    (repo / "work").mkdir()
    (repo / "work" / "x.png").write_bytes(b"x")  # ignored
    assert outputs.git_commit(repo) == head and outputs.git_commit(repo / "results") == head
    (repo / "notes.py").write_text("")  # new code, not yet added
    assert outputs.git_commit(repo) == head + "-dirty" and outputs.git_commit(repo / "results") == head + "-dirty"
    (repo / "notes.py").unlink()
    (repo / "code.py").write_text("x = 2\n")
    assert outputs.git_commit(repo) == head + "-dirty"
    (tmp_path / "plain").mkdir()
    assert outputs.git_commit(tmp_path / "plain") is None


# --- outputs.py's surviving mutants (issue 22), each against what the file or the lock holds ---


def test_records_that_are_folders_are_named_as_records(tmp_path):
    (tmp_path / COST_RECORD).mkdir()
    with pytest.raises(ValueError) as e:
        read_cost(tmp_path)
    assert str(e.value) == (f"{tmp_path / COST_RECORD}: unreadable cost record ({tmp_path / COST_RECORD}: is a folder, not a regular file; "
                            "a record must be a file); remove it to start the record anew")  # fmt: skip
    with pytest.raises(ValueError) as e:
        outputs.read_record(tmp_path / COST_RECORD, "run record", "remove it")
    assert str(e.value) == (f"{tmp_path / COST_RECORD}: unreadable run record ({tmp_path / COST_RECORD}: is a folder, not a regular file; "
                            "a record must be a file); remove it")  # fmt: skip


def test_lock_held_only_while_another_open_file_holds_it(tmp_path, monkeypatch):
    import fcntl

    lock = tmp_path / ".lock"
    assert outputs._lock_held(lock) is False  # no lock file: nobody holds it
    lock.write_bytes(b"")
    assert outputs._lock_held(lock) is False
    with open(lock, "rb") as f:  # flock locks belong to an open file: another open of it is refused, as another process is
        fcntl.flock(f, fcntl.LOCK_EX)
        assert outputs._lock_held(lock) is True
        fcntl.flock(f, fcntl.LOCK_UN)
    assert outputs._lock_held(lock) is False
    monkeypatch.setitem(sys.modules, "fcntl", None)  # no advisory locks (Windows): never held
    with open(lock, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        assert outputs._lock_held(lock) is False


@pytest.mark.parametrize("text,mark", [("", None), ("null", None), ("[1]", None), ('{"pid": 3}', None), ('{"writing": 3}', None),
                                       ("{", None), ('{"writing": "merge", "pid": 3}', {"writing": "merge", "pid": 3})])  # fmt: skip
def test_writing_mark_is_a_mapping_naming_its_step(tmp_path, text, mark):
    (tmp_path / ".lock").write_text(text)
    assert outputs._writing_mark(tmp_path / ".lock") == mark


def test_differences_name_a_field_one_side_lacks_even_when_the_other_holds_none():
    assert outputs.differences({}, {"a": None}) == "a: (absent) -> None"
    assert outputs.differences({"a": None}, {}) == "a: None -> (absent)"
    assert outputs.differences({1: 1, "a": 1, "b": 0}, {1: 2, "a": 2, "b": 0}) == "1: 1 -> 2, a: 1 -> 2"  # keys of two kinds, in order


def test_a_table_of_one_column_is_recognised(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    assert outputs.is_table(tmp_path / "t.csv", ["a"]) and outputs.is_table(tmp_path / "t.csv", ["a", "b"])
    assert not outputs.is_table(tmp_path / "t.csv", []) and not outputs.is_table(tmp_path / "t.csv", ["b"])


def test_table_header_reads_the_first_line_within_64_kib(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    assert outputs.table_header(tmp_path / "empty.csv") == []
    (tmp_path / "long.csv").write_text("a," * 40000 + "\n1\n")  # a header line past 64 KiB: read up to that point
    got = outputs.table_header(tmp_path / "long.csv")
    assert len(got) == 32769 and got[-1] == "" and set(got[:-1]) == {"a"}
    (tmp_path / "bom.csv").write_bytes("\ufeffx,y\n".encode())
    assert outputs.table_header(tmp_path / "bom.csv") == ["x", "y"]


def test_write_table_leaves_a_one_byte_file_and_names_four_columns(tmp_path):
    import pandas as pd

    df = pd.DataFrame({c: [1] for c in "abcde"})
    (tmp_path / "t.csv").write_text("x")
    with pytest.raises(ValueError) as e:
        outputs.write_table(tmp_path / "t.csv", df)
    assert str(e.value) == (f"{tmp_path / 't.csv'}: holds a table with other columns than this 5-column table (a, b, c, d, ...); "
                            "it is left as it was: choose another file")  # fmt: skip
    assert (tmp_path / "t.csv").read_text() == "x"
    (tmp_path / "t.csv").write_text("")
    outputs.write_table(tmp_path / "t.csv", df)
    assert (tmp_path / "t.csv").read_text() == "a,b,c,d,e\n1,1,1,1,1\n"


def test_a_file_output_is_locked_while_written_and_the_lock_goes_after(tmp_path):
    # audit 12, F11: two trainings into one checkpoint both reported success, the file holding one of them
    import fcntl

    target = tmp_path / "sub" / "c.pt"
    with outputs.lock_file_output(target) as t:
        assert t == target and [p.name for p in target.parent.iterdir()] == [".c.pt.samcam.lock"]
        with pytest.raises(RuntimeError) as e:
            with outputs.lock_file_output(target):
                pass
        assert str(e.value) == (f"{target}: another samcam process is writing this file ({target.parent / '.c.pt.samcam.lock'} is locked); "
                                "wait for it or choose another path")  # fmt: skip
    assert list(target.parent.iterdir()) == []  # nothing left beside the user's file
    (target.parent / ".c.pt.samcam.lock").write_text("")  # one a killed run left: samcam's own, never a user's file
    assert outputs.foreign_entries(target.parent) == []
    with outputs.lock_file_output(target):  # free again
        pass
    with open(tmp_path / "sub" / ".c.pt.samcam.lock", "a") as f:  # another process's lock, as flock sees it
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match="another samcam process is writing this file"):
            with outputs.lock_file_output(target):
                pass


@pytest.mark.parametrize("which", ["classifier", "affinity"])
def test_a_training_refuses_a_checkpoint_another_run_is_writing(tmp_path, which):
    import fcntl

    out = tmp_path / "c.pt"
    with open(tmp_path / ".c.pt.samcam.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match=f"{out}: another samcam process is writing this file"):
            if which == "classifier":
                from samcam.pipeline.train_classifier import train_classifier

                train_classifier([np.zeros((8, 8, 3), np.uint8)], np.ones((1, 20), np.float32), out)
            else:
                from samcam.pipeline.affinity import train_affinity

                train_affinity({"a": tmp_path / "a.jpg"}, tmp_path, ["a"], out)
    assert not out.exists()


def _disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


def test_a_full_disk_names_the_output_it_could_not_write(tmp_path, monkeypatch):
    # audit 12, F8: '[Errno 28] No space left on device' alone, or torch's 'unexpected pos 128 vs 0', named no file
    import errno

    import torch

    from samcam.sam.mask_files import write_official
    from samcam.sam.masks import MaskSet
    from samcam.training import save_checkpoint

    (tmp_path / "run").mkdir()
    with monkeypatch.context() as m:
        m.setattr(os, "write", _disk_full)
        with pytest.raises(OSError) as e:
            with outputs.writing_mark(tmp_path / "run", "merge"):
                pass
    assert e.value.errno == errno.ENOSPC and str(e.value) == f"[Errno 28] {tmp_path / 'run' / '.samcam.lock'}: cannot be written (No space left on device)"

    from PIL import Image

    masks = np.zeros((2, 4, 5), bool)
    masks[0, 1:3, 1:4] = masks[1, 0, 0] = True
    with monkeypatch.context() as m:
        m.setattr(Image.Image, "save", _disk_full)
        with pytest.raises(OSError) as e:
            write_official(tmp_path / "official", MaskSet(masks))
    assert str(e.value) == f"[Errno 28] {tmp_path / 'official'}: cannot be written (No space left on device)"
    assert not (tmp_path / "official").exists()
    assert (tmp_path / ".official.tmp").is_dir()  # a failed write's temporary: cleared by the next write
    write_official(tmp_path / "official", MaskSet(masks))
    assert not (tmp_path / ".official.tmp").exists()
    assert sorted(p.name for p in (tmp_path / "official").iterdir()) == ["0.png", "1.png", "metadata.csv", "samcam_meta.json"]

    def torch_full(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 128 vs 0")

    with monkeypatch.context() as m:
        m.setattr(torch, "save", torch_full)
        with pytest.raises(OSError) as e:
            save_checkpoint(tmp_path / "c.pt", {"a": 1})
    assert str(e.value).startswith(f"[Errno 5] {tmp_path / 'c.pt'}: cannot be written (torch could not write the checkpoint, ")
    assert str(e.value).endswith("bytes free on its disk: [enforce fail at inline_container.cc:672] . unexpected pos 128 vs 0)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["official", "run"]  # no checkpoint, no temporary


def test_an_output_inside_another_steps_folder_is_refused(tmp_path):
    # audit 12, F9: labels --out c2l/sub wrote into cam2label's folder, which cam2label then refused as holding foreign files
    (tmp_path / "c2l").mkdir()
    (tmp_path / "c2l" / outputs.RUN_RECORD).write_text("{}")
    for out in (tmp_path / "c2l" / "sub", tmp_path / "c2l" / "a" / "b", tmp_path / "c2l" / "t.csv"):
        with pytest.raises(ValueError) as e:
            outputs.check_output(out)
        assert str(e.value) == f"output {out} lies inside {tmp_path / 'c2l'}, a samcam step's output folder (its {outputs.RUN_RECORD}); write it elsewhere"
    outputs.check_output(tmp_path / "c2l")  # the step's own folder, rerun
    outputs.check_output(tmp_path / "beside")


def test_naming_output_names_the_output_once_and_keeps_the_kind_of_error(tmp_path):
    from samcam.io import atomic_path, naming_output

    with pytest.raises(PermissionError) as e:
        with naming_output(tmp_path / "o"):
            with naming_output(tmp_path / "o"):
                raise PermissionError(13, "Permission denied")
    assert str(e.value) == f"[Errno 13] {tmp_path / 'o'}: cannot be written (Permission denied)"
    with pytest.raises(OSError) as e:
        with atomic_path(tmp_path / "o") as tmp:
            with naming_output(tmp_path / "o"):
                raise OSError(28, "No space left on device", str(tmp))
    assert str(e.value) == f"[Errno 28] {tmp_path / 'o'}: cannot be written (No space left on device)"


def test_a_score_table_made_before_its_network_column_is_replaced_and_a_header_alone_holds_none(tmp_path):
    import pandas as pd

    t = tmp_path / "ev.csv"
    t.write_text("map,threshold,miou\n80,0.1,0.3\n")  # cam-eval's table of an earlier samcam: no checkpoint_sha256
    outputs.check_table_target(t, "a" * 64, "classifier")
    outputs.write_table(t, pd.DataFrame({"map": [81.0], "threshold": [0.1], "miou": [0.4], outputs.SCORED_NETWORK: ["a" * 64]}))
    assert pd.read_csv(t)[outputs.SCORED_NETWORK].tolist() == ["a" * 64]
    t.write_text(f"map,threshold,miou,{outputs.SCORED_NETWORK}\n")  # a header alone
    outputs.check_table_target(t, "b" * 64, "classifier")
    with pytest.raises(ValueError, match="holds a table with other columns"):  # another table is still refused
        outputs.write_table(t, pd.DataFrame({"alpha": [1.0], "miou": [0.4]}))
