"""Batch steps around CAMs: image-level labels for a split, CAM extraction, CAM → label, sweeps.

Every output file is written atomically and ids already done are skipped (resume).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .cam import SCALES, CamNet, cam_to_label, load_cam, multiscale_cam, save_cam
from .datasets import VOC, DatasetSpec, VocTree, labels_from_mask, load_cls_labels, read_image, read_label, write_label
from .metrics import Evaluator

LABEL_SOURCES = ("gt", "cls_labels", "xml")


def image_labels(tree: VocTree, ids: list[str], source: str = "gt", cls_labels: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Foreground classes (1-based) of each id from ground-truth masks, IRN's ``cls_labels.npy`` or
    the VOC annotation XMLs. Only which classes occur is used, never where (the WSSS setting)."""
    if source == "gt":
        return {i: labels_from_mask(tree.read_gt(i), tree.spec) for i in ids}
    if source == "xml":
        return {i: tree.image_labels_xml(i) for i in ids}
    if source == "cls_labels":
        if cls_labels is None:
            raise ValueError("--labels cls_labels needs the path of cls_labels.npy (--cls-labels)")
        table = load_cls_labels(cls_labels, tree.spec)
        missing = [i for i in ids if i not in table]
        if missing:
            raise KeyError(f"{cls_labels}: no labels for {len(missing)} ids, e.g. {missing[0]}")
        return {i: table[i] for i in ids}
    raise ValueError(f"unknown label source {source!r}; known: {', '.join(LABEL_SOURCES)}")


def extract_cams(
    net: CamNet,
    images: dict[str, Path],
    labels: dict[str, np.ndarray],
    out: str | os.PathLike,
    scales=SCALES,
    progress: bool = True,
) -> int:
    """Write ``out/<id>.npy`` (IRN layout) for every id of ``labels`` that has none yet; returns the count."""
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [i for i in labels if not (out / f"{i}.npy").exists()]
    for image_id in tqdm(todo, desc="cams", unit="img", disable=not progress):
        keys = np.asarray(labels[image_id], dtype=np.int64) - 1
        save_cam(out / f"{image_id}.npy", keys, multiscale_cam(net, read_image(images[image_id]), keys.tolist(), scales))
    return len(todo)


def cams_to_labels(cams: str | os.PathLike, out: str | os.PathLike, threshold: float, ids: list[str] | None = None,
                   spec: DatasetSpec = VOC, note: str | None = None, progress: bool = True) -> int:  # fmt: skip
    """``out/<id>.png`` from ``cams/<id>.npy`` at background threshold ``threshold``; records the
    threshold (and ``note``, e.g. that it was tuned on ground truth) in ``out/samcam_labels.json``."""
    from tqdm.auto import tqdm

    from .atomic import write_text

    cams, out = Path(cams), Path(out)
    ids = ids if ids is not None else sorted(p.stem for p in cams.glob("*.npy"))
    out.mkdir(parents=True, exist_ok=True)
    info = {"source": str(cams), "threshold": threshold, "rule": "IRN cam_eval_thres (constant background score, argmax)"}
    if note:
        info["note"] = note
    write_text(out / "samcam_labels.json", json.dumps(info, indent=1) + "\n")
    todo = [i for i in ids if not (out / f"{i}.png").exists()]
    for image_id in tqdm(todo, desc="cam2label", unit="img", disable=not progress):
        d = load_cam(cams / f"{image_id}.npy")
        write_label(out / f"{image_id}.png", cam_to_label(d["high_res"], d["keys"], threshold), spec)
    return len(todo)


def threshold_sweep(cams: str | os.PathLike, gt: str | os.PathLike, ids: list[str], thresholds, spec: DatasetSpec = VOC):
    """mIoU of CAM labels at each background threshold (each CAM file read once).

    The best row is marked ``gt_tuned``: choosing a threshold this way uses ground truth, a known leak
    in the WSSS literature; report it as such.
    """
    import pandas as pd

    thresholds = [float(t) for t in thresholds]
    evs = [Evaluator(spec, keep_per_image=False) for _ in thresholds]
    for image_id in ids:
        d = load_cam(Path(cams) / f"{image_id}.npy")
        g = read_label(Path(gt) / f"{image_id}.png", spec)
        for t, ev in zip(thresholds, evs):
            ev.add(image_id, g, cam_to_label(d["high_res"], d["keys"], t))
    df = pd.DataFrame({"threshold": thresholds, "miou": [ev.scores().miou for ev in evs]})
    df["gt_tuned"] = df["miou"] == df["miou"].max()
    return df
