"""Merge a folder of pseudo labels with a folder of mask sets: resumable, parallel, atomic.

Every output is a palette PNG written atomically; ids whose output is complete are skipped, so an
interrupted run resumes. The output folder records the inputs and the rule (``samcam_run.json``): a
rerun with others is refused. It may not be (or lie inside) an input folder.

Per image the work is: read the label, read only the masks (compact files are decoded to runs, never
to a dense ``N × H × W`` array), apply the rule, write the PNG. ``workers > 1`` spreads the images
over processes (default: one per available core).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from samcam.data.spaces import DatasetSpec
from samcam.io import folder_ids, read_label, refuse_suffix_variants, write_label
from samcam.outputs import StepResult, claim_output, finish_step, pending
from samcam.pipeline.masks import folder_made_with
from samcam.pipeline.workers import process_pool, resolve_workers
from samcam.refine.merge import MergeRule, merge
from samcam.registry import lookup
from samcam.sam.mask_files import COMPACT_SUFFIX, MaskStore

MISSING_POLICIES = ("error", "keep-cam")


@dataclass(frozen=True)
class MergeResult(StepResult):
    """``done`` = ``merged`` + ``kept_cam`` (ids without a mask set that kept their label)."""

    merged: int = 0
    kept_cam: int = 0


def _merge_one(args: tuple) -> str:
    image_id, pseudo_dir, masks_dir, made_with, out_dir, spec, rule, missing = args
    label = read_label(Path(pseudo_dir) / f"{image_id}.png", spec)
    store = MaskStore(masks_dir, made_with=made_with)
    target = Path(out_dir) / f"{image_id}.png"
    if not store.has(image_id):
        if missing == "keep-cam":
            write_label(target, label, spec)
            return "kept"
        raise FileNotFoundError(f"no mask set for {image_id} in {masks_dir} (use --missing-masks keep-cam to keep its CAM label)")
    masks = store.read_masks(image_id, label.shape)
    write_label(target, merge(label, masks, spec.n_classes, rule).label, spec)
    return "merged"


def merge_folders(
    pseudo: str | os.PathLike,
    masks: str | os.PathLike,
    out: str | os.PathLike,
    spec: DatasetSpec,
    rule: MergeRule,
    ids: list[str] | None = None,
    workers: int | None = None,
    missing: str = "error",
    progress: bool | None = None,
) -> MergeResult:
    """Merge ``pseudo/<id>.png`` with the mask set of each id in ``masks`` into ``out/<id>.png``;
    ``workers=None``: one process per available core (:func:`samcam.pipeline.workers.resolve_workers`)."""
    from samcam.progress import progress_bar

    pseudo, masks, out = Path(pseudo), Path(masks), Path(out)
    workers = resolve_workers(workers)
    lookup(MISSING_POLICIES, missing, "--missing-masks policy")
    if not masks.is_dir():
        raise FileNotFoundError(f"mask folder not found: {masks}")
    ids = folder_ids(pseudo, ".png", "pseudo-label", ids)
    refuse_suffix_variants(masks, COMPACT_SUFFIX, "compact mask", ids)
    with claim_output(out, "merge", {"pseudo": pseudo, "masks": masks},
                      {"rule": vars(rule), "dataset": spec.name, "missing_masks": missing}):  # it decides what a label holds: compared
        todo = pending(ids, out)
        t0 = time.perf_counter()
        made_with = folder_made_with(masks, todo)  # every set read is held to it: one model, one setting
        tasks = [(i, pseudo, masks, made_with, out, spec, rule, missing) for i in todo]
        counts = {"merged": 0, "kept": 0}
        bar = progress_bar(total=len(tasks), desc="merge", unit="img", progress=progress)
        if workers > 1 and len(tasks) > 1:
            with process_pool(workers) as pool:
                for r in pool.map(_merge_one, tasks, chunksize=max(1, min(16, len(tasks) // (4 * workers)))):
                    counts[r] += 1
                    bar.update()
        else:
            for t in tasks:
                counts[_merge_one(t)] += 1
                bar.update()
        bar.close()
        return MergeResult(**vars(finish_step(out, ids, todo, time.perf_counter() - t0)), merged=counts["merged"], kept_cam=counts["kept"])
