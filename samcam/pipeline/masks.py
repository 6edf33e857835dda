"""Batch mask generation over a folder of images: resumable, shardable, atomic, with provenance.

Each finished image is one file (or folder) written atomically, so a killed run loses at most the
image in flight and the next run skips every id already done. ``shard=(i, n)`` takes every n-th id
starting at i (0-based) of the id list, so n machines (a SLURM array: ``--shard auto``) can split a
split deterministically; ``devices`` splits one run's pending ids over the GPUs of one machine.
The settings, model and checkpoint hash of a run are kept in the folder's provenance record
(``<out>/samcam_run.json``, the record every step writes: step ``masks``) and its cost in
``<out>/samcam_cost.json``; a later run into the same folder with other settings is refused rather
than mixing mask sets, and so is one given another image of an id already done (each set records
its image's SHA-256, ``meta.image_sha256``). A folder made by samcam 0.1 (its record in ``samcam_masks.json``) is read as
well and its record moved into ``samcam_run.json`` by the next run that resumes it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from samcam.io import image_index, image_size, near_miss, read_image, sha256_file, write_text
from samcam.outputs import (LEGACY_MASK_RECORD, RUN_RECORD, StepResult, add_cost, check_folder_output, clean_temporaries, differences, lock_output,
                            fingerprint_files, read_record, record_path, refuse_foreign, resolve_recorded, writing_mark)  # fmt: skip
from samcam.pipeline.workers import run_on_devices
from samcam.sam.mask_files import FORMATS, MADE_WITH, MaskStore

#: the settings two runs into one mask folder must share (the checkpoint by content, not by path;
#: not samcam's version: a new release resumes a folder of hours of masks)
MASK_SETTINGS = (*MADE_WITH, "format")
#: what a mask folder's record keeps of a run's settings
MASK_PARAMETERS = ("model_type", "checkpoint", *MASK_SETTINGS[1:])


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
    if step < 1:  # SLURM's steps are ≥ 1: 0 or less describes no range (it was taken as 1)
        raise ValueError(f"--shard auto: SLURM_ARRAY_TASK_STEP is {step}; a job array's step is at least 1")
    i, rest = divmod(task - low, step)
    if rest or not 0 <= i < count:
        raise ValueError(f"--shard auto: task {task} is not one of {count} evenly spaced tasks from {low} by {step}; "
                         "use a plain range such as --array=0-7")  # fmt: skip
    return i, count


def select_ids(index: dict[str, Path], ids: list[str] | None, shard: tuple[int, int], images: str | os.PathLike = "the image folder") -> list[str]:
    """The ids to process: ``ids`` (checked to have images in ``images``) or all, then this shard's part."""
    if ids is None:
        ids = sorted(index)
    else:
        missing = [i for i in ids if i not in index]
        if missing:
            raise FileNotFoundError(f"{images}: no image for {len(missing)} of the ids given, e.g. {', '.join(missing[:5])}"
                                    f"{near_miss(missing, index.__contains__)}")  # fmt: skip
    i, n = shard
    return ids[i::n]


def check_mask_folder(out: Path) -> None:
    """A mask folder holds only what the mask step writes, and mask sets only beside its record."""
    if not out.is_dir():
        return
    refuse_foreign(out, (".json.gz",), id_folders=True)
    if not (out / RUN_RECORD).exists() and not (out / LEGACY_MASK_RECORD).exists() and MaskStore(out).ids():
        raise ValueError(f"{out}: holds mask sets without samcam's record ({RUN_RECORD}); choose another --out folder")


def read_mask_record(folder: str | os.PathLike, remedy: str = "remove it or use another --out folder") -> dict[str, Any]:
    """What a mask folder's sets were made with: ``model_type``, ``checkpoint``, ``checkpoint_sha256``,
    ``settings``, ``generator``, ``format`` and ``samcam_version``, from its record (samcam 0.1's
    ``samcam_masks.json`` where that is all it has); ``{}`` for a folder without samcam's record (masks
    of another tool). ``ValueError`` naming the record when it is unreadable or another step's, with
    ``remedy`` (what to do: the folder is an output here, an input where a merge reads it)."""
    folder = Path(folder)
    path = folder / RUN_RECORD
    if not path.exists():
        legacy = folder / LEGACY_MASK_RECORD
        return read_record(legacy, "run record", remedy) if legacy.exists() else {}
    record = read_record(path, "run record", remedy)
    if record.get("step") != "masks" or not isinstance(record.get("parameters"), dict):
        raise ValueError(f"{path}: the record of another step ({record.get('step')!r}), not of mask generation; {remedy}")
    return {**record["parameters"], "samcam_version": record.get("samcam_version")}


def folder_made_with(folder: str | os.PathLike, ids: list[str]) -> dict[str, Any]:
    """How a mask folder's sets were made (:data:`MADE_WITH`), for :class:`MaskStore` to hold every set
    read to it: from the folder's record, or, without one, from the first of ``ids`` that has a set."""
    record = read_mask_record(folder, "remove it or use another mask folder")
    if not record:
        store = MaskStore(folder)
        first = next((i for i in ids if store.has(i)), None)
        record = store.meta(first) if first is not None else {}
    return {k: record[k] for k in MADE_WITH if k in record}


def mask_record(meta: dict[str, Any], images: str | os.PathLike | None, out: str | os.PathLike) -> dict[str, Any]:
    """The provenance record of a mask folder, in the shape every step's record has (step, inputs,
    fingerprints, parameters, version, notes). The image folder is recorded by path, not fingerprinted:
    each mask set carries its image's id, size and content (``meta.image_sha256``, compared on every
    rerun: :func:`pending_images`), and runs over other id lists (shards, a split extended later)
    add to one folder."""
    return {"step": "masks", "samcam_version": meta.get("samcam_version"),
            "inputs": {"images": record_path(images, out) if images is not None else None}, "fingerprints": {},
            "parameters": {k: meta.get(k) for k in MASK_PARAMETERS},
            "notes": {"compared": f"a run into this folder must have the same {', '.join(MASK_SETTINGS)}; the images are checked per mask set "
                                  "(its image_sha256)"}}  # fmt: skip


def check_run_meta(out: Path, meta: dict[str, Any], images: str | os.PathLike | None = None) -> None:
    """Write the folder's record or check that the existing one has the same model, checkpoint,
    settings, generator and format (a folder never mixes mask sets of two settings). A folder that
    holds no mask set yet (a first run that failed early) takes the new record; a samcam 0.1 record
    (``samcam_masks.json``) that matches is moved into ``samcam_run.json``, its version kept."""
    path, legacy = out / RUN_RECORD, out / LEGACY_MASK_RECORD
    check_mask_folder(out)
    if (path.exists() or legacy.exists()) and MaskStore(out).ids():
        old = read_mask_record(out)
        diff = [k for k in MASK_SETTINGS if old.get(k, meta.get(k)) != meta.get(k)]
        if diff:
            where = path if path.exists() else legacy
            what = "; ".join(differences(old.get(k), meta.get(k), k) for k in diff)  # the field that differs, as every step's record says it
            raise ValueError(f"{where}: this folder holds masks made with other {', '.join(diff)} ({what}); use another --out folder")
        if path.exists():
            _check_same_images(path, images, out)
            legacy.unlink(missing_ok=True)  # left by a run stopped between writing the record and removing the old one
            return
        meta = {**meta, **{k: old[k] for k in ("checkpoint", "samcam_version") if k in old}}  # who made the masks
    write_text(path, json.dumps(mask_record(meta, images, out), indent=1, sort_keys=True) + "\n")
    legacy.unlink(missing_ok=True)


def _check_same_images(path: Path, images: str | os.PathLike | None, out: Path) -> None:
    """``ValueError`` when the record at ``path`` names an image folder that exists, is another folder
    than ``images``, and holds other images of the ids the folder has masks of: a folder's mask sets come
    from one image folder, the one its record names (a copy of it, or a moved folder whose recorded path
    is gone, is the same)."""
    recorded = (read_record(path, "run record", "use another --out folder").get("inputs") or {}).get("images")
    if images is None or not isinstance(recorded, str):
        return
    there = resolve_recorded(recorded, out)
    if not there.is_dir() or os.path.samefile(there, images):
        return
    old, new, done = image_index(there), image_index(images), MaskStore(out).ids()
    same = [i for i in done if i in old]  # a copy of the folder (node-local scratch) is the same images
    if any(i not in new for i in same) or fingerprint_files({i: old[i] for i in same}) != fingerprint_files({i: new[i] for i in same}):
        raise ValueError(f"{path}: this folder holds masks of the images in {there}, not of --images {images} (whose images of those "
                         "ids differ or are missing); use another --out folder (one folder's masks come from one image folder)")  # fmt: skip


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
    While it writes, the folder's lock file holds the mark of a step writing (:func:`samcam.outputs.writing_mark`,
    as every other step's): a run killed or stopped by an error leaves the folder unfinished, and its
    readers refuse it until a rerun into it ends.
    """
    from samcam import __version__
    from samcam.sam.model import amg_settings, checkpoint_info

    out = Path(out)
    images = Path(images)
    if devices and device:
        raise ValueError("give --device or --devices, not both")
    devices = list(devices) if devices else [device]
    check_folder_output(out, images, checkpoint)
    index = image_index(images)
    todo_all = select_ids(index, ids, shard, images)
    info = checkpoint_info(model_type, checkpoint)
    meta = {**info, "settings": amg_settings(**settings), "generator": generator, "samcam_version": __version__, "format": fmt}
    check_mask_folder(out)  # before the lock file is made
    with lock_output(out):  # one process writes a mask folder at a time
        check_run_meta(out, meta, images)
        todo = pending_images(out, fmt, {i: index[i] for i in todo_all})  # before the mark: a refused rerun leaves a finished folder finished
        with writing_mark(out, "masks"):  # a run killed or failed part-way leaves the folder unfinished: merge refuses it until a rerun ends
            return _generate(out, fmt, index, todo, len(todo_all) - len(todo), meta, model_type, checkpoint, generator, settings, devices, threads,
                             progress)  # fmt: skip


def pending_images(out: Path, fmt: str, images: dict[str, Path]) -> list[str]:
    """The ids of ``images`` (id → image file) that have no whole mask set in ``out`` yet, in order;
    ``ValueError`` naming the mask set and its image when one that has was made from another image
    than the one given now: its recorded ``image_sha256`` differs from the file's (an image changed in
    place, or another folder's image of that id given after the recorded folder went). The folder is
    refused rather than kept with stale masks, as every step refuses an input changed since its
    outputs were made. A set made before samcam recorded its image's content is compared by what it
    has, its size."""
    store, todo = MaskStore(out, fmt), []
    for image_id, path in images.items():
        if not store.has(image_id) or not FORMATS[fmt].complete(store.path(image_id)):
            todo.append(image_id)  # made (again) by this run
            continue
        where = store.path(image_id)
        recorded = store.meta(image_id).get("image_sha256")
        if recorded is not None:
            now = sha256_file(path, what="image")
            if now != recorded:
                raise ValueError(f"{where}: made from another image than {path} ({differences(recorded, now, 'image_sha256')}): "
                                 "the image changed since its masks were made; use another --out folder (a folder's masks are of the images given)")  # fmt: skip
            continue
        shape, size = store.image_size(image_id), image_size(path)
        if tuple(shape) != tuple(size):
            raise ValueError(f"{where}: masks of a {shape[0]}×{shape[1]} image, but {path} is {size[0]}×{size[1]}: "
                             "the image changed since its masks were made; use another --out folder (a folder's masks are of the images given)")  # fmt: skip
    return todo


def _generate(out: Path, fmt: str, index: dict[str, Path], todo: list[str], skipped: int, meta: dict, model_type: str, checkpoint, generator: str,
              settings: dict, devices: list, threads: int | None, progress: bool | None) -> StepResult:  # fmt: skip
    """The masks of the ids ``todo`` (:func:`pending_images`) written into ``out`` (:func:`run_masks`,
    whose lock and writing mark are held); ``skipped``: the ids already there."""
    from samcam.progress import progress_bar

    if not todo:
        return StepResult(out, 0, skipped, 0.0)
    clean_temporaries(out)
    start = time.perf_counter()
    bar = progress_bar(total=len(todo), desc=f"masks {model_type}", unit="img", progress=progress)

    where: list[str] = []

    def done(image_id: str, info: tuple[int, str]) -> None:
        bar.update()
        bar.set_postfix(masks=info[0])
        where.append(info[1])

    work = ({i: index[i] for i in todo}, out, fmt, meta, model_type, checkpoint, generator, settings)
    try:
        run_on_devices(generate_into, devices, todo, work, done, threads)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    add_cost(out, seconds, len(todo), ", ".join(dict.fromkeys(where)))  # wall time, model building included, as every step
    return StepResult(out, len(todo), skipped, seconds)


def generate_into(device: str | None, ids: list[str], report, paths: dict[str, Path], out: Path, fmt: str, meta: dict,
                  model_type: str, checkpoint, generator: str, settings: dict) -> None:  # fmt: skip
    """Build the generator on ``device`` and write the mask set of each of ``ids`` into ``out``,
    calling ``report(image_id, (number of masks, device))`` after each: the loop of one process, or of one
    device's worker (:func:`samcam.pipeline.workers.run_on_devices`)."""
    from samcam.sam.model import build_generator, check_sam_size

    gen = build_generator(model_type, checkpoint, device, generator, **settings)
    store = MaskStore(out, fmt)
    for image_id in ids:
        image = read_image(paths[image_id])
        check_sam_size(image.shape, paths[image_id])
        t0 = time.perf_counter()
        ms = gen.generate(image)
        ms.meta = {**meta, "image_id": image_id, "image_sha256": sha256_file(paths[image_id]),  # its image's content: a rerun compares it
                   "seconds": round(time.perf_counter() - t0, 3), "device": gen.device}
        store.write(image_id, ms)
        report(image_id, (len(ms), str(gen.device)))
