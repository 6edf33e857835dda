"""Batch mask generation over a folder of images: resumable, shardable, atomic, with provenance.

Each finished image is one file (or folder) written atomically, so a killed run loses at most the
image in flight and the next run skips every id already done. ``shard=(i, n)`` takes every n-th id
starting at i (0-based) of the id list, so n machines (a SLURM array: ``--shard auto``) can split a
split deterministically; ``devices`` splits one run's pending ids over the GPUs of one machine.
The settings, model and checkpoint hash of a run are kept in ``<out>/samcam_masks.json``; a later run
into the same folder with other settings is refused rather than mixing mask sets.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from samcam.io import image_index, read_image, write_text
from samcam.outputs import MASK_RECORD, StepResult, check_output, clean_temporaries, lock_output, read_record, refuse_foreign
from samcam.pipeline.workers import run_on_devices
from samcam.sam.mask_files import FORMATS, MaskStore

RUN_META = MASK_RECORD


def parse_shard(text: str | None, environ: dict[str, str] | None = None) -> tuple[int, int]:
    """``"I/N"`` → ``(I, N)`` with ``0 ≤ I < N``; ``None`` → ``(0, 1)``; ``"auto"`` → this task's part of
    a SLURM job array (:func:`slurm_shard`)."""
    if not text:
        return 0, 1
    if text == "auto":
        return slurm_shard(os.environ if environ is None else environ)
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 0/4) or be auto, got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {text}: need 0 <= I < N")
    return i, n


#: the job-array variables SLURM sets in each task
SLURM_VARS = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN")


def slurm_shard(environ: dict[str, str]) -> tuple[int, int]:
    """``(I, N)`` of this SLURM array task: ``I = (TASK_ID - TASK_MIN) / TASK_STEP``, ``N = TASK_COUNT``,
    so ``--array=0-7`` and ``--array=1-8`` (and ``0-14:2``) all give shards 0..7 of 8. ``ValueError``
    when the variables are absent (not in an array job) or describe no range."""
    missing = [v for v in SLURM_VARS if v not in environ]
    if missing:
        raise ValueError(f"--shard auto: {', '.join(missing)} not set; it reads them inside a SLURM job array (sbatch --array=0-N), "
                         "elsewhere give --shard I/N")  # fmt: skip
    try:
        task, count, low = (int(environ[v]) for v in SLURM_VARS)
        step = int(environ.get("SLURM_ARRAY_TASK_STEP", "1") or 1)
    except ValueError:
        raise ValueError(f"--shard auto: non-integer SLURM array variables {({v: environ.get(v) for v in SLURM_VARS})}") from None
    i, rest = divmod(task - low, max(step, 1))
    if rest or not 0 <= i < count:
        raise ValueError(f"--shard auto: task {task} is not one of {count} evenly spaced tasks from {low} by {step}; "
                         "use a plain range such as --array=0-7")  # fmt: skip
    return i, count


def select_ids(index: dict[str, Path], ids: list[str] | None, shard: tuple[int, int]) -> list[str]:
    """The ids to process: ``ids`` (checked to have images) or all, then this shard's part."""
    if ids is None:
        ids = sorted(index)
    else:
        missing = [i for i in ids if i not in index]
        if missing:
            raise FileNotFoundError(f"{len(missing)} ids have no image, e.g. {', '.join(missing[:5])}")
    i, n = shard
    return ids[i::n]


def check_mask_folder(out: Path) -> None:
    """A mask folder holds only what the mask step writes, and mask sets only beside its record."""
    if not out.is_dir():
        return
    refuse_foreign(out, (".json.gz",), id_folders=True)
    if not (out / RUN_META).exists() and MaskStore(out).ids():
        raise ValueError(f"{out}: holds mask sets without samcam's record ({RUN_META}); choose another --out folder")


def check_run_meta(out: Path, meta: dict[str, Any]) -> None:
    """Write ``samcam_masks.json`` or check that the existing one has the same model, checkpoint,
    settings, generator and format (a folder never mixes mask sets of two settings). A folder that
    holds no mask set yet (a first run that failed early) takes the new record."""
    path = out / RUN_META
    check_mask_folder(out)
    if path.exists() and MaskStore(out).ids():
        old = read_record(path, "run record", "remove it or use another --out folder")
        keys = ("model_type", "checkpoint_sha256", "settings", "generator", "format")
        diff = [k for k in keys if old.get(k, meta.get(k)) != meta.get(k)]
        if diff:
            raise ValueError(
                f"{path}: this folder holds masks made with other {', '.join(diff)} "
                f"({ {k: old.get(k) for k in diff} }); use another --out folder"
            )
        return
    write_text(path, json.dumps(meta, indent=1, sort_keys=True) + "\n")


def run_masks(
    images: str | os.PathLike,
    out: str | os.PathLike,
    ids: list[str] | None = None,
    model_type: str = "vit_t",
    checkpoint: str | os.PathLike | None = None,
    fmt: str = "compact",
    shard: tuple[int, int] = (0, 1),
    generator: str = "fast",
    device: str | None = None,
    progress: bool | None = None,
    devices: list[str] | None = None,
    threads: int | None = None,
    **settings: Any,
) -> StepResult:
    """Generate and store the masks of every selected image that has none yet in ``out``.

    ``devices`` (e.g. ``["cuda:0", "cuda:1"]``, two or more) runs one spawned process per device, each
    on a disjoint slice of the pending ids, with one progress bar for all (``threads``: torch CPU
    threads per process, default the cores shared out); the files are those one process writes.
    """
    from samcam.progress import progress_bar

    from samcam import __version__
    from samcam.sam.model import amg_settings, checkpoint_info

    out = Path(out)
    images = Path(images)
    if devices and device:
        raise ValueError("give --device or --devices, not both")
    devices = list(devices) if devices else [device]
    check_output(out, images, checkpoint)
    index = image_index(images)
    todo_all = select_ids(index, ids, shard)
    info = checkpoint_info(model_type, checkpoint)
    meta = {**info, "settings": amg_settings(**settings), "generator": generator, "samcam_version": __version__, "format": fmt}
    check_mask_folder(out)  # before the lock file is made
    with lock_output(out):  # one process writes a mask folder at a time
        check_run_meta(out, meta)
        store = MaskStore(out, fmt)
        todo = [i for i in todo_all if not store.has(i) or not FORMATS[fmt].complete(store.path(i))]
        skipped = len(todo_all) - len(todo)
        if not todo:
            return StepResult(out, 0, skipped, 0.0)
        clean_temporaries(out)
        start = time.perf_counter()
        bar = progress_bar(total=len(todo), desc=f"masks {model_type}", unit="img", progress=progress)

        def done(image_id: str, n_masks: int) -> None:
            bar.update()
            bar.set_postfix(masks=n_masks)

        work = ({i: index[i] for i in todo}, out, fmt, meta, model_type, checkpoint, generator, settings)
        try:
            run_on_devices(generate_into, devices, todo, work, done, threads)
        finally:
            bar.close()
        return StepResult(out, len(todo), skipped, time.perf_counter() - start)


def generate_into(device: str | None, ids: list[str], report, paths: dict[str, Path], out: Path, fmt: str, meta: dict,
                  model_type: str, checkpoint, generator: str, settings: dict) -> None:  # fmt: skip
    """Build the generator on ``device`` and write the mask set of each of ``ids`` into ``out``,
    calling ``report(image_id, number of masks)`` after each: the loop of one process, or of one
    device's worker (:func:`samcam.pipeline.workers.run_on_devices`)."""
    from samcam.sam.model import build_generator

    gen = build_generator(model_type, checkpoint, device, generator, **settings)
    store = MaskStore(out, fmt)
    for image_id in ids:
        image = read_image(paths[image_id])
        t0 = time.perf_counter()
        ms = gen.generate(image)
        ms.meta = {**meta, "image_id": image_id, "seconds": round(time.perf_counter() - t0, 3), "device": gen.device}
        store.write(image_id, ms)
        report(image_id, len(ms))
