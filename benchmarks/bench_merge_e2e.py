"""What a user runs, end to end: the paper's official merge vs ``samcam merge``, one run, same masks.

    python benchmarks/bench_merge_e2e.py --official ../baselines/SAM_WSSS

Over the 558 VOC train images that have cached MobileSAM masks (32×32 points) and the official
TransCAM pseudo labels, each command runs as a subprocess, timed from start to exit (imports,
reading, the rule, writing):

(a) the official code, ``main.py --mode merge`` of cskyl/SAM_WSSS (its default ``max_iou_imp2``
    and its thread pool), on masks in ``amg.py``'s PNG-per-mask folders;
(b) ``samcam merge`` on the same PNG folders;
(c) ``samcam merge`` on samcam's compact files (``<id>.json.gz``, the same masks);
(d) ``samcam merge`` on the compact files with one process;

then checks that the labels of (b), (c), (d) equal (a)'s pixel for pixel (the official code writes
grayscale PNGs of class indices, samcam palette PNGs: the index arrays are compared). Also timed:
``samcam eval`` over the 1464 VOC train ids (TransCAM vs ground truth), which must stay under 5 s,
and the start-up of ``samcam merge --help`` / ``samcam eval --help``.

The PNG folders are written once (``--official-masks``, default ``work/bench/masks_official/
voc12_train_vit_t_p32`` in the checkout, a folder git ignores) from the compact files with
``samcam.sam.mask_files.write_official``. Without the official checkout the benchmark says so and stops
without writing results. Reported per command: wall seconds, CPU seconds (user + system, the
command and the processes it waited for), the peak RSS of its largest process (``wait4``'s
``ru_maxrss``) and the peak total RSS of its process tree (sampled every 0.1 s). Writes
results/benchmarks/merge_e2e.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import REPO, data_root, results, write  # noqa: E402

EVAL_LIMIT_S = 5.0


def _tree_rss_kib(root: int) -> int:
    """Total RSS (KiB) of ``root`` and its descendants, from /proc."""
    parent, rss = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            parent[int(entry.name)] = int(fields[1])
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") // 1024
        except (OSError, IndexError, ValueError):
            continue
    tree, grew = {root}, True
    while grew:
        more = {p for p, pp in parent.items() if pp in tree and p not in tree}
        tree |= more
        grew = bool(more)
    return sum(rss.get(p, 0) for p in tree)


def run_command(cmd: list[str], cwd: Path | None = None) -> dict:
    """Run ``cmd`` to completion: wall and CPU seconds (user + system, its waited-for children
    included), peak RSS of its largest process (``wait4``) and of its process tree (sampled). The
    pipes are read in threads so that the exit status and usage are collected by ``wait4``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    chunks = {"out": [], "err": []}

    def pump(stream, key):
        for line in iter(stream.readline, b""):
            chunks[key].append(line)
        stream.close()

    readers = [threading.Thread(target=pump, args=(proc.stdout, "out"), daemon=True), threading.Thread(target=pump, args=(proc.stderr, "err"), daemon=True)]
    peak_tree = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            peak_tree[0] = max(peak_tree[0], _tree_rss_kib(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    for t in (*readers, sampler):
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    for t in (*readers, sampler):
        t.join()
    out = b"".join(chunks["out"]).decode(errors="replace")
    err = b"".join(chunks["err"]).decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{err[-3000:]}")
    return {
        "command": " ".join(map(str, cmd)),
        "cwd": str(cwd) if cwd else None,
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "peak_tree_rss_mib": max(peak_tree[0], usage.ru_maxrss) / 1024,
        "stdout": out,
    }


def ensure_official_masks(compact: Path, folder: Path, ids: list[str]) -> None:
    """Write the ``amg.py`` PNG folders of ``ids`` from the compact files, once."""
    from samcam.sam.mask_files import MaskStore, write_official

    todo = [i for i in ids if not (folder / i).is_dir()]
    if not todo:
        return
    print(f"writing {len(todo)} amg.py mask folders into {folder} (once) ...", flush=True)
    src = MaskStore(compact, "compact")
    folder.mkdir(parents=True, exist_ok=True)
    for i in todo:
        write_official(folder / i, src.read(i))


def warm(paths: list[Path]) -> None:
    """Read every input file once, so that no command pays for a cold page cache."""
    for p in paths:
        if p.is_dir():
            for q in p.iterdir():
                q.read_bytes()
        else:
            p.read_bytes()


def labels_identical(ref_dir: Path, other_dir: Path, ids: list[str]) -> dict:
    import numpy as np
    from PIL import Image

    differ, missing = [], []
    for i in ids:
        a, b = ref_dir / f"{i}.png", other_dir / f"{i}.png"
        if not a.is_file() or not b.is_file():
            missing.append(i)
            continue
        with Image.open(a) as ia, Image.open(b) as ib:
            x, y = np.asarray(ia), np.asarray(ib)
        if x.shape != y.shape or not np.array_equal(x, y):
            differ.append(i)
    return {"images": len(ids), "identical": not differ and not missing, "differ": differ[:20], "n_differ": len(differ), "missing": missing[:20], "n_missing": len(missing)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def busy_processes(limit: int = 6) -> list[str]:
    """The busiest processes (``pcpu ni args``) other than this benchmark's own: the processes that
    started it (a niced ``samcam reproduce`` running it is no job beside it) and the ones it started
    (the ``ps`` asked here among them)."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,ppid,pcpu,ni,args", "--sort=-pcpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return []
    rows = [ln.split(None, 2) for ln in out.splitlines()[1:]]
    rows = [r for r in rows if len(r) == 3]
    parent = {r[0]: r[1] for r in rows}
    own = str(os.getpid())
    below = {own}
    while True:  # its descendants
        new = {r[0] for r in rows if r[1] in below} - below
        if not new:
            break
        below |= new
    above, pid = set(), parent.get(own)
    while pid in parent and pid not in above:  # its ancestors
        above.add(pid)
        pid = parent[pid]
    return [r[2][:160] for r in rows if r[0] not in below | above][:limit]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, default=REPO.parent / "baselines" / "SAM_WSSS", help="checkout of cskyl/SAM_WSSS (its util/vis.py imports cv2, a samcam dependency)")
    ap.add_argument("--official-masks", type=Path, default=REPO / "work" / "bench" / "masks_official" / "voc12_train_vit_t_p32", help="amg.py PNG folders (written once if absent)")
    ap.add_argument("--compact-masks", type=Path, default=REPO / "results" / "masks" / "voc12_train_vit_t_p32")
    ap.add_argument("--workers", type=int, help="samcam merge --workers for (b) and (c) (default: none given, samcam's own default: the cores available)")
    ap.add_argument("--workdir", type=Path, help="where outputs go (default: a temporary folder, removed)")
    ap.add_argument("--limit", type=int, help="only the first N images (a quick check; the results say so)")
    return ap


def writes(argv: list[str]) -> list[Path]:
    """What a run with ``argv`` writes (``samcam reproduce`` checks it against the step's outputs):
    the results, the official-format mask folders (when absent) and, if given, the work folder."""
    a = parser().parse_args(argv)
    return [*results("merge_e2e"), a.official_masks, *([a.workdir] if a.workdir else [])]


def main() -> int:
    a = parser().parse_args()

    main_py = a.official / "main.py"
    if not main_py.is_file() or not (a.official / "merge" / "max_iou_imp2.py").is_file():
        print(f"SKIPPED: the official checkout (cskyl/SAM_WSSS) is not at {a.official}; pass --official PATH. Nothing written.")
        return 0
    root = data_root()
    ids_file = root / "voc2012" / "ImageSets" / "Segmentation" / "train_with_images.txt"
    train_ids = root / "voc2012" / "ImageSets" / "Segmentation" / "train.txt"
    pseudo_src = root / "pseudo_labels" / "transcam"
    gt_dir = root / "voc2012" / "SegmentationClass"
    for p in (ids_file, train_ids, pseudo_src, gt_dir, a.compact_masks):
        if not p.exists():
            print(f"SKIPPED: {p} not found. Nothing written.")
            return 0
    from samcam.io import read_ids

    ids = read_ids(ids_file)[: a.limit]
    ensure_official_masks(a.compact_masks, a.official_masks, ids)
    samcam = [str(Path(sys.executable).with_name("samcam"))]
    if not Path(samcam[0]).is_file():
        samcam = [sys.executable, "-m", "samcam.cli"]

    work = Path(tempfile.mkdtemp(prefix="bench_e2e_", dir=a.workdir)) if a.workdir else Path(tempfile.mkdtemp(prefix="bench_e2e_"))
    try:
        if a.limit:  # the official code and samcam both take their ids from this file
            ids_file = work / "ids.txt"
            ids_file.write_text("\n".join(ids) + "\n")
        # the official code merges every file in --pseudo_path: a folder holding just these ids
        pseudo = work / "pseudo_labels" / "transcam"
        pseudo.mkdir(parents=True)
        for i in ids:
            (pseudo / f"{i}.png").symlink_to(pseudo_src / f"{i}.png")
        warm([pseudo_src / f"{i}.png" for i in ids] + [a.official_masks / i for i in ids] + [a.compact_masks / f"{i}.json.gz" for i in ids] + [gt_dir / f"{i}.png" for i in read_ids(train_ids)])
        load_before = os.getloadavg()
        busy_before = busy_processes()
        try:  # with autogroups, a niced job of another session still gets an equal share of the CPUs
            autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
        except OSError:
            autogroup = None

        runs = {}
        official_out = work / "processed_masks" / "transcam" / f"transcam_{a.official_masks.name}_max_iou_imp2"  # its save_path rule
        runs["official_png"] = run_command([sys.executable, "main.py", "--mode", "merge", "--pseudo_path", str(pseudo), "--sam_path", str(a.official_masks)], cwd=a.official)
        w = ["--workers", str(a.workers)] if a.workers else []  # none given: what a user gets by default
        merge = [*samcam, "merge", "--pseudo", str(pseudo), "--ids", str(ids_file)]
        runs["samcam_png"] = run_command([*merge, "--masks", str(a.official_masks), "--out", str(work / "samcam_png"), *w])
        runs["samcam_compact"] = run_command([*merge, "--masks", str(a.compact_masks), "--out", str(work / "samcam_compact"), *w])
        runs["samcam_compact_1proc"] = run_command([*merge, "--masks", str(a.compact_masks), "--out", str(work / "samcam_compact_1"), "--workers", "1"])
        runs["samcam_eval"] = run_command([*samcam, "eval", "--pred", str(pseudo_src), "--gt", str(gt_dir), "--ids", str(train_ids)])
        runs["startup_merge_help"] = run_command([*samcam, "merge", "--help"])
        runs["startup_eval_help"] = run_command([*samcam, "eval", "--help"])
        load_after = os.getloadavg()

        identity = {k: labels_identical(official_out, work / d, ids) for k, d in (("samcam_png", "samcam_png"), ("samcam_compact", "samcam_compact"), ("samcam_compact_1proc", "samcam_compact_1"))}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    eval_out = runs["samcam_eval"].pop("stdout")
    miou_line = eval_out.strip().splitlines()[-1]
    for r in runs.values():
        r.pop("stdout", None)
    off = runs["official_png"]
    ratio = {k: off["wall_s"] / runs[k]["wall_s"] for k in ("samcam_png", "samcam_compact", "samcam_compact_1proc")}
    cpu_ratio = {k: off["cpu_s"] / runs[k]["cpu_s"] for k in ratio}
    targets = {"samcam_compact": 20.0, "samcam_png": 5.0}
    result = {
        "images": len(ids),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_avg_before": load_before,
        "load_avg_after": load_after,
        "busy_processes_before": busy_before,
        "sched_autogroup": autogroup,
        "official_checkout": str(a.official),
        "official_masks": str(a.official_masks),
        "compact_masks": str(a.compact_masks),
        "workers": a.workers,
        "runs": runs,
        "ratio_wall": ratio,
        "ratio_cpu": cpu_ratio,
        "targets": targets,
        "targets_met": {k: ratio[k] >= t for k, t in targets.items()},
        "labels_identical_to_official": identity,
        "eval": {"ids": str(train_ids), "images": 1464, "wall_s": runs["samcam_eval"]["wall_s"], "limit_s": EVAL_LIMIT_S, "under_limit": runs["samcam_eval"]["wall_s"] < EVAL_LIMIT_S, "result": miou_line},
    }
    rows = [
        ("(a) official `main.py --mode merge`, PNG folders", "official_png"),
        (f"(b) `samcam merge{f' --workers {a.workers}' if a.workers else ''}` (default settings otherwise), same PNG folders", "samcam_png"),
        (f"(c) `samcam merge{f' --workers {a.workers}' if a.workers else ''}`, compact files", "samcam_compact"),
        ("(d) `samcam merge --workers 1`, compact files", "samcam_compact_1proc"),
    ]
    md = [
        f"# Merge end to end: the paper's official code vs `samcam merge` ({len(ids)} VOC train images)",
        "",
        (
            f"Machine: {result['cpu_model']}, {result['cpus']} CPUs (load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
            "the machine is shared, so CPU seconds are given beside wall seconds). Same MobileSAM 32×32 masks, official TransCAM labels, "
            "rule `max_iou_imp2`; every command a subprocess, from start to exit."
            + (
                " Busy beside it: a niced job of another session; with the kernel's autogroup scheduling on, that session still gets an "
                "equal share of the CPUs, so a command here gets about one core, whatever its number of processes."
                if autogroup and busy_before and any(ln.split()[1] not in ("0", "-") and float(ln.split()[0]) > 20 for ln in busy_before if len(ln.split()) > 1)
                else ""
            )
        ),
        "",
        "| command | wall s | speed-up (wall) | CPU s | speed-up (CPU) | peak RSS MiB (largest process / process tree) | labels = (a) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, key in rows:
        r = runs[key]
        same = "reference" if key == "official_png" else ("identical" if identity[key]["identical"] else f"**{identity[key]['n_differ']} differ, {identity[key]['n_missing']} missing**")
        sp = "1×" if key == "official_png" else f"**{ratio[key]:.1f}×**"
        spc = "1×" if key == "official_png" else f"{cpu_ratio[key]:.1f}×"
        md.append(f"| {name} | {r['wall_s']:.2f} | {sp} | {r['cpu_s']:.2f} | {spc} | {r['peak_rss_mib']:.0f} / {r['peak_tree_rss_mib']:.0f} | {same} |")
    ev = result["eval"]
    md += [
        "",
        (
            f"Targets (issue 15): compact ≥ 20× — {'met' if result['targets_met']['samcam_compact'] else '**not met**'} ({ratio['samcam_compact']:.1f}×); "
            f"PNG folders ≥ 5× — {'met' if result['targets_met']['samcam_png'] else '**not met**'} ({ratio['samcam_png']:.1f}×)."
        ),
        "",
        (
            f"`samcam eval` over the {ev['images']} VOC train ids (TransCAM vs ground truth), end to end: **{ev['wall_s']:.2f} s** "
            f"({'under' if ev['under_limit'] else '**over**'} the {EVAL_LIMIT_S:.0f} s limit; {runs['samcam_eval']['cpu_s']:.2f} CPU s, "
            f"peak RSS {runs['samcam_eval']['peak_rss_mib']:.0f} MiB); it prints `{ev['result']}`."
        ),
        f"Start-up: `samcam merge --help` {runs['startup_merge_help']['wall_s']:.2f} s, `samcam eval --help` {runs['startup_eval_help']['wall_s']:.2f} s.",
        "",
        f"Commands (`<tmp>/pseudo_labels/transcam` holds links to the {len(ids)} labels, since the official code merges every file of its folder):",
        "",
    ]
    for name, key in [*rows, ("eval", "samcam_eval")]:
        r = runs[key]
        md.append(f"- {name.split(' ')[0]}: `{r['command']}`" + (f" (in `{r['cwd']}`)" if r["cwd"] else ""))
    write("merge_e2e", result, "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
