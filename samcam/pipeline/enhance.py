"""Pipeline step: enhance one method's pseudo labels with SAM masks and score them before and after.

One row of the paper's table. The steps are the project's own, composed: the labels are merged with
the mask sets by :func:`samcam.pipeline.merge.merge_folders` (resumable, atomic), then the original
and the enhanced folders are scored by :func:`samcam.pipeline.evaluate.evaluate_folders`; the pure
:class:`samcam.metrics.Comparison` turns the two scores into tables. A method whose output is not a
PNG folder is first exported with :func:`samcam.pipeline.labels.export_labels`.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from samcam.data.spaces import VOC, DatasetSpec
from samcam.io import read_image, read_label, write_text
from samcam.outputs import git_commit, relocate
from samcam.metrics import Comparison, error_rates
from samcam.pipeline.evaluate import evaluate_folders
from samcam.pipeline.masks import read_mask_record
from samcam.pipeline.merge import merge_folders
from samcam.refine.merge import MergeRule
from samcam.sam.mask_files import MaskStore


def enhance_method(
    pseudo_dir: str | os.PathLike,
    masks_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    ids: list[str],
    out_labels: str | os.PathLike,
    rule: MergeRule = MergeRule(),
    spec: DatasetSpec = VOC,
    workers: int | None = None,
    progress: bool | None = None,
) -> Comparison:
    """Merge ``pseudo_dir/<id>.png`` with the masks into ``out_labels`` and score both folders."""
    merge_folders(pseudo_dir, masks_dir, out_labels, spec, rule, ids, workers, progress=progress)
    before = evaluate_folders(pseudo_dir, gt_dir, spec, ids)
    after = evaluate_folders(out_labels, gt_dir, spec, ids)
    return Comparison(before, after)


def write_results(res: Comparison, out_dir: str | os.PathLike, rule: MergeRule, masks: str | os.PathLike, **extra: Any) -> dict[str, Any]:
    """Write ``per_class.csv``, ``per_image.csv``, ``confusion_{before,after}.csv`` and ``summary.json``."""
    out = Path(out_dir)
    names = list(res.spec.class_names)
    write_text(out / "per_class.csv", res.per_class().to_csv(index=False))
    write_text(out / "per_image.csv", res.per_image().to_csv(index=False))
    for tag, ev in (("before", res.before), ("after", res.after)):
        conf = pd.DataFrame(ev.conf, index=names, columns=[*names, "void_prediction"])
        write_text(out / f"confusion_{tag}.csv", conf.to_csv(index_label="gt\\pred"))
    mask_run = read_mask_record(masks, "remove it or use another mask folder")
    errors = {f"{k}_{tag}": v for tag, ev in (("before", res.before), ("after", res.after)) for k, v in error_rates(ev.conf).items()}
    summary = {
        **extra, **res.summary(), **errors,
        "rule": {"name": rule.name, "majority": rule.majority, "coverage": rule.coverage, "keep_uncovered": rule.keep_uncovered},
        "masks": {k: mask_run.get(k) for k in ("model_type", "checkpoint", "checkpoint_sha256", "settings", "generator")},
        "samcam_commit": git_commit(Path(__file__).parent),
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip
    summary = relocate(summary, out)  # paths as a record holds them: relative to out, or ${SAMCAM_DATA}/…
    write_text(out / "summary.json", json.dumps(summary, indent=1, default=float) + "\n")
    return summary


def gallery_rows(ids: list[str], pseudo_dir, enhanced_dir, masks_dir, gt_dir, images_dir, spec: DatasetSpec = VOC,
                 titles: dict[str, str] | None = None) -> list[dict]:  # fmt: skip
    """Rows (image | CAM label | SAM masks | enhanced | ground truth) for :func:`samcam.report.figures.gallery`,
    read from the folders an :func:`enhance_method` run wrote."""
    store = MaskStore(masks_dir)
    rows = []
    for image_id in ids:
        gt = read_label(Path(gt_dir) / f"{image_id}.png", spec)
        jpg = Path(images_dir) / f"{image_id}.jpg" if images_dir else None
        rows.append({"title": (titles or {}).get(image_id, image_id), "image": read_image(jpg) if jpg and jpg.exists() else None,
                     "CAM label": read_label(Path(pseudo_dir) / f"{image_id}.png", spec), "SAM masks": store.read(image_id, gt.shape),
                     "enhanced": read_label(Path(enhanced_dir) / f"{image_id}.png", spec), "ground truth": gt})  # fmt: skip
    return rows
