"""The benchmarks' shared record writer (``benchmarks/_common.write``): every benchmark ends in it, so
a key it reads that the machine description no longer has fails every benchmark at its last line."""

import importlib.util
import json
import sys
from pathlib import Path

from samcam.io import REPO
from samcam.outputs import machine_info


def _common():
    spec = importlib.util.spec_from_file_location("bench_common", REPO / "benchmarks" / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_benchmark_record_names_its_command_machine_and_commit_without_machine_paths(tmp_path, monkeypatch):
    common = _common()
    monkeypatch.setattr(sys, "argv", [str(REPO / "benchmarks" / "bench_x.py"), "--n", "2"])
    common.write("x", {"ratio": 3.5, "where": str(REPO / "results" / "masks")}, "# X\n\n| a |\n", out=tmp_path)
    record = json.loads((tmp_path / "x.json").read_text())
    machine = machine_info()
    assert record["benchmark"] == "x" and record["ratio"] == 3.5
    assert record["command"] == f"{Path(sys.executable).name} benchmarks/bench_x.py --n 2"
    assert {k: record["machine"][k] for k in machine} == machine and "git_commit" in record["machine"]
    assert record["where"] == "results/masks"  # relative to the checkout, where the commands run
    md = (tmp_path / "x.md").read_text()
    assert md.startswith("# X\n\n| a |\n\nCommand: `")
    assert md.endswith(f"({record['when']}, {machine['cores']} cores: {machine['cpu']})\n")
    assert str(REPO) not in md + (tmp_path / "x.json").read_text()
    assert sorted(tmp_path.iterdir()) == sorted(common.results("x", tmp_path))  # what the scripts' writes() name


def test_each_benchmark_script_names_what_it_writes():
    """Every script of benchmarks/ says what a run with given arguments writes, its defaults included
    (``samcam reproduce`` checks it against a step's outputs before running the script)."""
    from samcam.reproduce import script_writes

    out = REPO / "results" / "benchmarks"
    expected = {
        "bench_eval.py": ([], [out / "eval.json", out / "eval.md"]),
        "bench_merge.py": (["--real-limit", "3"], [out / "merge.json", out / "merge.md"]),
        "bench_modes.py": (["--n", "1"], [out / "modes_vit_t_cpu.json", out / "modes_vit_t_cpu.md"]),
        "bench_generator.py": (["--out", "g", "--device", "cuda", "--points-per-side", "16"], [Path("g/generator_vit_t_p16_cuda.json"), Path("g/generator_vit_t_p16_cuda.md")]),
        "bench_merge_e2e.py": (["--workdir", "w"], [out / "merge_e2e.json", out / "merge_e2e.md", REPO / "work/bench/masks_official/voc12_train_vit_t_p32", Path("w")]),
    }
    assert sorted(expected) == sorted(p.name for p in (REPO / "benchmarks").glob("bench_*.py"))
    for name, (argv, files) in expected.items():
        assert script_writes([f"benchmarks/{name}", *argv], "step") == files, name


def test_the_busy_processes_beside_a_benchmark_leave_out_the_benchmark_and_what_started_it():
    """The e2e benchmark said "busy beside it: a niced job of another session" about itself, run by a
    niced `samcam reproduce`, and then about its own `ps`: its process, its ancestors and its children
    are no job beside it; a process outside that tree is."""
    import os
    import subprocess

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("bench_merge_e2e_t", REPO / "benchmarks" / "bench_merge_e2e.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    child = subprocess.Popen(["sleep", "30.5"])
    apart = int(subprocess.run(["bash", "-c", "sleep 30.25 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True, check=True).stdout)
    try:  # the second sleep's shell has ended: it belongs to no process of this tree
        lines = module.busy_processes(limit=10_000)
    finally:
        child.kill()
        child.wait()
        os.kill(apart, 9)
    args = {ln.split(None, 2)[2] for ln in lines if len(ln.split(None, 2)) == 3}
    own = Path(f"/proc/{os.getpid()}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()[:150]
    assert "sleep 30.25" in args and "sleep 30.5" not in args
    assert not any(a.startswith(own) or a.startswith("ps -eo") for a in args)
