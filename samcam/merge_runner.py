"""Merge a folder of pseudo labels with a folder of mask sets: resumable, parallel, atomic.

Every output is a palette PNG written atomically; ids whose output exists are skipped, so an
interrupted run resumes. The output folder may not be (or lie inside) an input folder.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .datasets import DatasetSpec, read_label, write_label
from .masks import MaskStore
from .merge import MergeRule, merge

MISSING_POLICIES = ("error", "keep-cam")


@dataclass
class MergeSummary:
    merged: int
    kept_cam: int
    skipped: int
    out: Path


def check_output_folder(out: Path, *inputs: Path) -> None:
    """Refuse an output folder equal to or inside an input folder (inputs are never written)."""
    o = out.resolve()
    for i in inputs:
        r = i.resolve()
        if o == r or r in o.parents:
            raise ValueError(f"output folder {out} lies in the input folder {i}; choose another --out")


def _merge_one(args: tuple) -> str:
    image_id, pseudo_dir, masks_dir, out_dir, spec, rule, missing = args
    label_path = Path(pseudo_dir) / f"{image_id}.png"
    label = read_label(label_path, spec)
    store = MaskStore(masks_dir)
    if not store.has(image_id):
        if missing == "keep-cam":
            write_label(Path(out_dir) / f"{image_id}.png", label, spec)
            return "kept"
        raise FileNotFoundError(f"no mask set for {image_id} in {masks_dir} (use --missing-masks keep-cam to keep its CAM label)")
    ms = store.read(image_id, label.shape)
    write_label(Path(out_dir) / f"{image_id}.png", merge(label, ms, spec.n_classes, rule).label, spec)
    return "merged"


def merge_folders(
    pseudo: str | os.PathLike,
    masks: str | os.PathLike,
    out: str | os.PathLike,
    spec: DatasetSpec,
    rule: MergeRule,
    ids: list[str] | None = None,
    workers: int = 1,
    missing: str = "error",
    progress: bool = True,
) -> MergeSummary:
    """Merge ``pseudo/<id>.png`` with the mask set of each id in ``masks`` into ``out/<id>.png``."""
    from tqdm.auto import tqdm

    pseudo, masks, out = Path(pseudo), Path(masks), Path(out)
    if missing not in MISSING_POLICIES:
        raise ValueError(f"--missing-masks must be one of {MISSING_POLICIES}")
    for folder, what in ((pseudo, "pseudo-label"), (masks, "mask")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder not found: {folder}")
    check_output_folder(out, pseudo, masks)
    if ids is None:
        ids = sorted(p.stem for p in pseudo.glob("*.png"))
    missing_labels = [i for i in ids if not (pseudo / f"{i}.png").is_file()]
    if missing_labels:
        raise FileNotFoundError(f"{len(missing_labels)} pseudo labels missing in {pseudo}, e.g. {missing_labels[0]}.png")
    todo = [i for i in ids if not (out / f"{i}.png").exists()]
    out.mkdir(parents=True, exist_ok=True)
    tasks = [(i, pseudo, masks, out, spec, rule, missing) for i in todo]
    counts = {"merged": 0, "kept": 0}
    bar = tqdm(total=len(tasks), desc="merge", unit="img", disable=not progress)
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(workers) as pool:
            for r in pool.map(_merge_one, tasks, chunksize=8):
                counts[r] += 1
                bar.update()
    else:
        for t in tasks:
            counts[_merge_one(t)] += 1
            bar.update()
    bar.close()
    return MergeSummary(counts["merged"], counts["kept"], len(ids) - len(todo), out)
