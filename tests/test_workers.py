"""How many workers: CPU affinity and cgroup quotas (v2 and v1, read from fake files), the default and
the bound of --workers, and the --devices list."""

import pytest

from samcam import cli
from samcam.pipeline import workers
from samcam.pipeline.workers import cgroup_cpu_limit, parse_devices, resolve_workers


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_of_the_process_group_and_its_parents(tmp_path):
    root, me = tmp_path / "cgroup", tmp_path / "self_cgroup"
    _write(me, "0::/job/step\n")
    _write(root / "job" / "step" / "cpu.max", "max 100000\n")  # no limit here ...
    _write(root / "job" / "cpu.max", "250000 100000\n")  # ... but 2.5 CPUs above it
    assert cgroup_cpu_limit(root, me) == 2.5
    _write(root / "job" / "step" / "cpu.max", "50000 100000\n")  # the smallest along the path wins
    assert cgroup_cpu_limit(root, me) == 0.5


def test_cgroup_v2_namespace_and_no_limit(tmp_path):
    root, me = tmp_path / "cgroup", tmp_path / "self_cgroup"
    _write(me, "0::/not/visible/here\n")  # a cgroup namespace: the process's group is the mount's root
    _write(root / "cpu.max", "400000 100000\n")
    assert cgroup_cpu_limit(root, me) == 4.0
    _write(root / "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(root, me) is None
    assert cgroup_cpu_limit(tmp_path / "absent", tmp_path / "absent_self") is None


@pytest.mark.parametrize("folder", ["cpu", "cpu,cpuacct"])
def test_cgroup_v1_quota(tmp_path, folder):
    root, me = tmp_path / "cgroup", tmp_path / "self_cgroup"
    _write(me, f"4:memory:/x\n2:{folder}:/docker/abc\n1:name=systemd:/\n")
    _write(root / folder / "docker" / "abc" / "cpu.cfs_quota_us", "300000\n")
    _write(root / folder / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(root, me) == 3.0
    _write(root / folder / "docker" / "abc" / "cpu.cfs_quota_us", "-1\n")  # unlimited
    assert cgroup_cpu_limit(root, me) is None
    _write(root / folder / "docker" / "abc" / "cpu.cfs_period_us", "garbage\n")  # unreadable: ignored
    assert cgroup_cpu_limit(root, me) is None


def test_available_cores_takes_affinity_and_quota(monkeypatch):
    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    monkeypatch.setattr(workers, "cgroup_cpu_limit", lambda: None)
    assert workers.available_cores() == 6
    monkeypatch.setattr(workers, "cgroup_cpu_limit", lambda: 2.5)  # a fractional quota rounds up
    assert workers.available_cores() == 3
    monkeypatch.setattr(workers, "cgroup_cpu_limit", lambda: 0.2)
    assert workers.available_cores() == 1


def test_workers_default_and_bound(monkeypatch):
    monkeypatch.setattr(workers, "available_cores", lambda: 3)
    assert resolve_workers(None) == 3 and resolve_workers(6) == 6
    with pytest.raises(ValueError, match=r"--workers 7: must be between 1 and 6 \(2 × the 3 cores"):
        resolve_workers(7)
    monkeypatch.setattr(workers, "available_cores", lambda: 500)
    assert resolve_workers(None) == workers.DEFAULT_WORKERS_CAP


def test_merge_refuses_too_many_workers_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(workers, "available_cores", lambda: 2)
    (tmp_path / "pseudo").mkdir()
    assert cli.main(["merge", "--pseudo", str(tmp_path / "pseudo"), "--masks", str(tmp_path), "--out", str(tmp_path / "o"), "--workers", "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["samcam merge: error: --workers 64: must be between 1 and 4 (2 × the 2 cores available to this process)"]
    assert not (tmp_path / "o").exists()


def test_devices_are_parsed_and_checked():
    assert parse_devices(None) is None
    assert parse_devices("cpu, cpu") == ["cpu", "cpu"]
    with pytest.raises(ValueError, match=r"--devices cuda:0,gpu1: 'gpu1' is not a device"):
        parse_devices("cuda:0,gpu1")
    with pytest.raises(ValueError, match="is not a device"):
        parse_devices("cpu,")
    import torch

    n = torch.cuda.device_count()
    with pytest.raises(ValueError, match=f"cuda:{n} asked for, but this machine has {n} GPU"):
        parse_devices(f"cuda:{n}")


def test_one_device_runs_in_this_process():
    """With one device the step's loop runs here (no spawn): a local function, which a spawned
    process could not import, sees every id in order and reports each."""
    import os

    from samcam.pipeline.workers import run_on_devices

    seen, reported = [], []

    def target(device, ids, report, tag):
        for i in ids:
            seen.append((device, i, tag, os.getpid()))
            report(i, len(i))

    run_on_devices(target, ["cpu"], ["a", "bb", "ccc"], ("t",), lambda i, n: reported.append((i, n)))
    assert seen == [("cpu", i, "t", os.getpid()) for i in ("a", "bb", "ccc")]
    assert reported == [("a", 1), ("bb", 2), ("ccc", 3)]
    run_on_devices(target, [None], ["z"], ("u",))  # no on_done: reports go nowhere
    assert seen[-1] == (None, "z", "u", os.getpid())


def test_one_device_choice_for_every_step(monkeypatch):
    """``torch_device`` is the one device choice: every command's default is a GPU where one is
    visible, else the CPU; a name is checked the same way for all."""
    import torch

    from samcam.pipeline.workers import torch_device
    from samcam.sam.model import default_device
    from samcam.seg.train import pick_device

    assert torch_device(None) == torch.device("cpu") and torch_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert torch_device(None, default="auto") == pick_device() == cli._device(None) == torch.device("cpu") and default_device() == "cpu"
    for bad, message in (("bogus", "--device bogus: 'bogus' is not a device"), ("cpu,cpu", "--device cpu,cpu: one device"),
                         ("cuda:0", "--device cuda:0: no CUDA device is available here")):  # fmt: skip
        for choose in (torch_device, pick_device, cli._device):
            with pytest.raises(ValueError, match=message.replace("(", r"\(")):
                choose(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # where a GPU is visible, "auto" takes it
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert torch_device(None, default="auto") == pick_device() == cli._device(None) == torch.device("cuda") and default_device() == "cuda"
    assert torch_device(None) == torch.device("cpu")  # the function's own default: the CPU
