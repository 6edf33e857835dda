"""Worker processes that die with their parent, how many to start, and one process per device.

A killed parent (SIGTERM, SIGKILL) must not leave workers running and writing: on Linux every
worker asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``); elsewhere the pool's
own shutdown on SIGTERM/SIGINT is all there is.

How many: :func:`available_cores` is what this process may really use — its CPU affinity (``taskset``,
SLURM's ``--cpus-per-task``) and its cgroup's CPU quota (``docker --cpus``, Kubernetes limits; cgroup v2
``cpu.max`` and v1 ``cpu.cfs_quota_us``), not the machine's core count. ``--workers`` defaults to it,
capped at :data:`DEFAULT_WORKERS_CAP`, and may be at most :data:`MAX_WORKERS_PER_CORE` times it: more
processes than that only add start-up and switching on the same cores.

One per device: :func:`run_on_devices` runs a step's loop in one spawned process per device
(``--devices cuda:0,cuda:1``), each on a disjoint slice of the pending ids, reporting each finished id
to the parent, which keeps one progress bar.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import pickle
import re
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1
#: ``--workers`` above this many times :func:`available_cores` is refused
MAX_WORKERS_PER_CORE = 2
#: the default number of workers never exceeds this, however many cores there are
DEFAULT_WORKERS_CAP = 32
#: the folders cgroup v1 mounts its cpu controller under
_V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def _v2_quota(folder: Path) -> float | None:
    quota, period = (folder / "cpu.max").read_text().split()[:2]  # "max 100000" or "150000 100000"
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(folder: Path) -> float | None:
    quota = int((folder / "cpu.cfs_quota_us").read_text())
    period = int((folder / "cpu.cfs_period_us").read_text())
    return quota / period if quota > 0 and period > 0 else None  # -1: no limit


def _up(base: Path, rel: str):
    """``base/rel`` and its parents up to ``base`` (a quota anywhere above applies too); just ``base``
    when ``rel`` is not there (a cgroup namespace shows the process's own group as the root)."""
    here = base / rel.strip("/")
    if not here.is_dir():
        yield base
        return
    while True:
        yield here
        if here == base:
            return
        here = here.parent


def cgroup_cpu_limit(root: str | os.PathLike = "/sys/fs/cgroup", self_cgroup: str | os.PathLike = "/proc/self/cgroup") -> float | None:
    """The CPUs this process's cgroup quota allows (``quota / period``, the smallest along its path), or
    ``None`` when there is no quota or no cgroup file to read."""
    root = Path(root)
    v2, v1 = "/", "/"
    try:
        lines = Path(self_cgroup).read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "cpu" in parts[1].split(","):
            v1 = parts[2]
    found = []
    places = [(root, v2, _v2_quota)] + [(root / d, v1, _v1_quota) for d in _V1_CPU_DIRS if (root / d).is_dir()]
    for base, rel, quota in places:
        for folder in _up(base, rel):
            try:
                q = quota(folder)
            except (OSError, ValueError, IndexError, ZeroDivisionError):
                continue
            if q is not None:
                found.append(q)
    return min(found) if found else None


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, lowered to its cgroup quota (rounded up)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        n = min(n, math.ceil(limit))
    return max(1, n)


def resolve_workers(workers: int | None, option: str = "--workers") -> int:
    """``workers``, or the default (:func:`available_cores`, at most :data:`DEFAULT_WORKERS_CAP`) for
    ``None``; ``ValueError`` naming ``option`` below 1 or above :data:`MAX_WORKERS_PER_CORE` × the cores."""
    cores = available_cores()
    if workers is None:
        return min(cores, DEFAULT_WORKERS_CAP)
    bound = MAX_WORKERS_PER_CORE * cores
    if not 1 <= workers <= bound:
        raise ValueError(f"{option} {workers}: must be between 1 and {bound} ({MAX_WORKERS_PER_CORE} × the {cores} cores available to this process)")
    return workers


def _pool_worker(parent: int, notes) -> None:
    """A pool worker's start: die with the parent, and share its notes (:func:`samcam.progress.say_once`)."""
    from samcam.progress import adopt_notes

    _die_with_parent(parent)
    adopt_notes(notes)


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool


class _Pool(ProcessPoolExecutor):
    def __exit__(self, exc_type, exc, tb):
        self.shutdown(wait=True, cancel_futures=exc_type is not None)  # on an error or Ctrl-C, queued work is dropped
        return False


def pool_context():
    """The start method of :func:`process_pool`, chosen here rather than by Python's default (which
    becomes ``forkserver`` in 3.14, whose workers are children of the server, not of samcam):
    ``fork`` where the platform has it, else ``spawn``."""
    import multiprocessing

    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``workers`` processes that end when this process ends and say each
    note once between them and this process; leaving its ``with`` block through an exception cancels
    the work not yet started."""
    from samcam.progress import shared_notes

    ctx = pool_context()
    return _Pool(workers, mp_context=ctx, initializer=_pool_worker, initargs=(os.getpid(), shared_notes(ctx)))


# ----------------------------------------------------------------------------- one process per device

#: a device name ``--devices`` accepts
_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def parse_devices(text: str | None, option: str = "--devices", threads: int | None = None) -> list[str] | None:
    """``"cuda:0,cuda:1"`` → ``["cuda:0", "cuda:1"]`` (``None`` for ``None``); ``ValueError`` naming
    ``option``, a malformed entry, a GPU this machine does not have (``mps`` where PyTorch has no MPS
    device: the one check of every device named, before any output is made), or more processes than
    :data:`MAX_WORKERS_PER_CORE` × the cores (or the GPUs named), or, with ``threads`` (``--threads``,
    per process), more CPU threads in all than :data:`MAX_WORKERS_PER_CORE` × the cores. A device may
    repeat (two processes share it)."""
    if text is None:
        return None
    devices = [d.strip() for d in text.split(",")]
    bad = [d for d in devices if not _DEVICE.match(d)]
    if bad:
        raise ValueError(f"{option} {text}: {bad[0]!r} is not a device (use e.g. cuda:0,cuda:1 or cpu,cpu)")
    gpus = [int(d.split(":")[1]) if ":" in d else 0 for d in devices if d.startswith("cuda")]
    if gpus:
        import torch

        count = torch.cuda.device_count()
        if max(gpus) >= count:
            raise ValueError(f"{option} {text}: cuda:{max(gpus)} asked for, but this machine has {count} GPU{'s' * (count != 1)}")
    if "mps" in devices:
        import torch

        if not torch.backends.mps.is_available():
            why = "this PyTorch is built without it" if not torch.backends.mps.is_built() else "this machine has no Apple GPU"
            raise ValueError(f"{option} {text}: mps asked for, but no MPS device is available here ({why}); use cpu or cuda")
    bound = MAX_WORKERS_PER_CORE * max(available_cores(), len(set(gpus)))
    if len(devices) > bound:
        raise ValueError(f"{option}: {len(devices)} processes asked for, at most {bound} ({MAX_WORKERS_PER_CORE} × the "
                         f"{available_cores()} cores available to this process, or per GPU named)")
    cpu_bound = MAX_WORKERS_PER_CORE * available_cores()
    if threads is not None and threads * len(devices) > cpu_bound:
        raise ValueError(f"--threads {threads} × {len(devices)} processes of {option} = {threads * len(devices)} CPU threads, at most {cpu_bound} "
                         f"({MAX_WORKERS_PER_CORE} × the {available_cores()} cores available to this process)")  # fmt: skip
    return devices


def torch_device(name: str | None = None, default: str = "cpu", option: str = "--device"):
    """The one device choice of every step: a torch device from ``name`` (a ``--device`` value), or
    ``default`` when it is absent (``"auto"``: ``cuda`` where a GPU is visible, else ``cpu``). The
    name is checked as ``--devices`` entries are (:func:`parse_devices`: the form, the GPU index);
    ``cuda`` without a GPU, or several devices, is a one-line ``ValueError`` naming ``option``."""
    import torch

    if name is None:
        name = ("cuda" if torch.cuda.is_available() else "cpu") if default == "auto" else default
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{option} {name}: no CUDA device is available here")
    if len(parse_devices(name, option)) != 1:
        raise ValueError(f"{option} {name}: one device (for several, --devices)")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"{option} {name}: {e}") from None


def _device_main(target: Callable, device: str, ids: list[str], queue, parent: int, threads: int, args: tuple) -> None:
    """A device worker: run ``target`` on its ids, sending each finished id, then the end or the error."""
    _die_with_parent(parent)
    try:
        import torch

        torch.set_num_threads(threads)
        target(device, ids, lambda image_id, info=None: queue.put(("done", image_id, info)), *args)
        queue.put(("end", device, None))
    except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent, which raises it
        try:
            pickle.dumps(e)
        except Exception:  # noqa: BLE001 - an exception that does not pickle travels as its text
            e = RuntimeError(f"{type(e).__name__}: {e}")
        queue.put(("error", device, e))


def run_on_devices(
    target: Callable,
    devices: list[str],
    ids: list[str],
    args: tuple = (),
    on_done: Callable[[str, Any], None] | None = None,
    threads: int | None = None,
) -> None:
    """``target(device, ids[k::n], report, *args)`` in one spawned process per device (``n`` devices,
    the ``k``-th takes every ``n``-th id from ``k``: disjoint slices); with one device, in this
    process (no spawn, this process's threads). ``target`` calls
    ``report(image_id, info)`` after each output it wrote; here ``on_done(image_id, info)`` receives them
    in the order they finish, so one progress bar can follow the whole list.

    ``target`` must be a module-level function (spawned processes import it). Workers die with this
    process, and they are terminated when it leaves this call early: on the first worker error (raised
    here, as the worker raised it), on a worker that dies without a word (exit code named), or on
    Ctrl-C. Each worker gets ``threads`` torch CPU threads (default: this process's cores shared out).
    """
    import multiprocessing
    import queue as queues

    if len(devices) == 1:
        target(devices[0], list(ids), on_done or (lambda image_id, info=None: None), *args)
        return
    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
    messages = ctx.Queue()
    threads = threads or max(1, available_cores() // len(devices))
    slices = [(d, ids[k :: len(devices)]) for k, d in enumerate(devices)]
    procs = [
        ctx.Process(target=_device_main, args=(target, d, part, messages, os.getpid(), threads, args), daemon=True, name=f"samcam-{d}")
        for d, part in slices
        if part  # fewer ids than devices: the devices without any start no process
    ]
    try:
        for p in procs:
            p.start()
        running = len(procs)
        while running:
            try:
                kind, key, value = messages.get(timeout=1.0)
            except queues.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"the worker on {dead[0].name[len('samcam-'):]} died (exit code {dead[0].exitcode}) before finishing its images; rerun to resume") from None
                continue
            if kind == "error":
                raise value
            if kind == "end":
                running -= 1
            elif on_done is not None:
                on_done(key, value)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join()
        messages.close()
