"""Enhance one method's pseudo labels with SAM masks and score them before and after.

This is the paper's experiment for one row of its table: for every id, the method's pseudo label
is merged with the image's mask set by a rule of :mod:`samcam.merge`, and both the original and the
enhanced labels are scored against ground truth with the standard protocol (:mod:`samcam.metrics`).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .atomic import write_text
from .datasets import VOC, DatasetSpec, read_label, write_label
from .masks import MaskStore
from .merge import MergeRule, merge
from .methods import load_pseudo_label
from .metrics import Evaluator


@dataclass
class EnhanceResult:
    spec: DatasetSpec
    before: Evaluator
    after: Evaluator
    n_masks: list[int] = field(default_factory=list)
    mask_run: dict[str, Any] = field(default_factory=dict)
    rule: MergeRule = MergeRule()

    @property
    def ids(self) -> list[str]:
        return self.before.image_ids

    def per_class(self) -> pd.DataFrame:
        b, a = self.before.scores(), self.after.scores()
        return pd.DataFrame({
            "class": list(self.spec.class_names),
            "iou_before": b.iou, "iou_after": a.iou, "iou_delta": a.iou - b.iou,
            "precision_before": b.precision, "precision_after": a.precision,
            "recall_before": b.recall, "recall_after": a.recall,
        })  # fmt: skip

    def per_image(self) -> pd.DataFrame:
        b, a = self.before.per_image_table(), self.after.per_image_table()
        df = pd.DataFrame({"id": b["id"], "miou_before": b["miou"], "miou_after": a["miou"], "n_masks": self.n_masks})
        df["miou_delta"] = df["miou_after"] - df["miou_before"]
        for name in self.spec.class_names:
            df[f"before:{name}"] = b[name]
            df[f"after:{name}"] = a[name]
        return df

    def summary(self) -> dict[str, Any]:
        b, a = self.before.scores(), self.after.scores()
        return {
            "n_images": len(self.ids),
            "miou_before": b.miou, "miou_after": a.miou, "miou_gain": a.miou - b.miou,
            "precision_before": b.mean_precision, "precision_after": a.mean_precision,
            "recall_before": b.mean_recall, "recall_after": a.mean_recall,
            "pixel_accuracy_before": b.pixel_accuracy, "pixel_accuracy_after": a.pixel_accuracy,
            "mean_masks_per_image": float(np.mean(self.n_masks)) if self.n_masks else 0.0,
            "rule": {"name": self.rule.name, "majority": self.rule.majority, "coverage": self.rule.coverage, "keep_uncovered": self.rule.keep_uncovered},
            "masks": {k: self.mask_run.get(k) for k in ("model_type", "checkpoint", "checkpoint_sha256", "settings", "generator")},
        }  # fmt: skip


def enhance_method(
    pseudo_dir: str | os.PathLike,
    masks_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    ids: list[str],
    fmt: str = "png",
    threshold: float | None = None,
    rule: MergeRule = MergeRule(),
    out_labels: str | os.PathLike | None = None,
    spec: DatasetSpec = VOC,
    progress: bool = True,
) -> EnhanceResult:
    """Merge and score every id (each input file read once); optionally write the enhanced labels."""
    from tqdm.auto import tqdm

    store = MaskStore(masks_dir)
    missing = [i for i in ids if not store.has(i)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} ids have no mask set in {masks_dir}, e.g. {missing[0]}")
    run_meta = Path(masks_dir) / "samcam_masks.json"
    res = EnhanceResult(spec, Evaluator(spec), Evaluator(spec), rule=rule,
                        mask_run=json.loads(run_meta.read_text()) if run_meta.exists() else {})  # fmt: skip
    for image_id in tqdm(ids, desc="enhance", unit="img", disable=not progress):
        gt = read_label(Path(gt_dir) / f"{image_id}.png", spec)
        label = load_pseudo_label(pseudo_dir, image_id, fmt, threshold, spec, shape=gt.shape)
        ms = store.read(image_id, label.shape)
        enhanced = merge(label, ms, spec.n_classes, rule).label
        res.before.add(image_id, gt, label)
        res.after.add(image_id, gt, enhanced)
        res.n_masks.append(len(ms))
        if out_labels is not None:
            write_label(Path(out_labels) / f"{image_id}.png", enhanced, spec)
    return res


def git_commit(path: str | os.PathLike = ".") -> str | None:
    """The checkout's commit (with ``-dirty`` when it has changes), or ``None`` outside git."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=path, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_results(res: EnhanceResult, out_dir: str | os.PathLike, **extra: Any) -> dict[str, Any]:
    """Write ``per_class.csv``, ``per_image.csv``, ``confusion_{before,after}.csv`` and ``summary.json``."""
    out = Path(out_dir)
    names = list(res.spec.class_names)
    write_text(out / "per_class.csv", res.per_class().to_csv(index=False))
    write_text(out / "per_image.csv", res.per_image().to_csv(index=False))
    for tag, ev in (("before", res.before), ("after", res.after)):
        conf = pd.DataFrame(ev.conf, index=names, columns=[*names, "void_prediction"])
        write_text(out / f"confusion_{tag}.csv", conf.to_csv(index_label="gt\\pred"))
    summary = {**extra, **res.summary(), "samcam_commit": git_commit(Path(__file__).parent),
               "written": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    write_text(out / "summary.json", json.dumps(summary, indent=1, default=float) + "\n")
    return summary


def gallery_rows(ids: list[str], pseudo_dir, masks_dir, gt_dir, images_dir, fmt: str = "png", threshold: float | None = None,
                 rule: MergeRule = MergeRule(), spec: DatasetSpec = VOC, titles: dict[str, str] | None = None) -> list[dict]:  # fmt: skip
    """Rows (image | CAM label | SAM masks | enhanced | ground truth) for :func:`samcam.figures.gallery`."""
    from .datasets import read_image

    store = MaskStore(masks_dir)
    rows = []
    for image_id in ids:
        gt = read_label(Path(gt_dir) / f"{image_id}.png", spec)
        label = load_pseudo_label(pseudo_dir, image_id, fmt, threshold, spec, shape=gt.shape)
        ms = store.read(image_id, gt.shape)
        image = read_image(Path(images_dir) / f"{image_id}.jpg") if images_dir and (Path(images_dir) / f"{image_id}.jpg").exists() else None
        rows.append({"title": (titles or {}).get(image_id, image_id), "image": image, "CAM label": label, "SAM masks": ms,
                     "enhanced": merge(label, ms, spec.n_classes, rule).label, "ground truth": gt})  # fmt: skip
    return rows
