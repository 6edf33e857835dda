"""Pipeline step: a second dataset. COCO images with VOC classes, project CAMs vs prompted SAM.

COCO's semantic masks (panoptic category ids) are mapped to VOC's label space
(:func:`samcam.data.coco.coco_panoptic_to_voc`); images without any VOC class are left out. For each
split the step writes the mapped ground truth, the CAMs of the image's VOC classes, the CAM labels and
their prompted refinement, all into flat folders under ``work`` (COCO ids are unique across splits),
and returns the ids it used. Every sub-step resumes.
"""

from __future__ import annotations

import os
from pathlib import Path

from samcam.cam.nets import CamNet
from samcam.data.coco import coco_panoptic_to_voc
from samcam.data.spaces import VOC
from samcam.data.voc import labels_from_mask
from samcam.io import image_index, read_label, write_label
from samcam.pipeline.cam import cams_to_labels, extract_cams
from samcam.pipeline.prompted import refine_folder
from samcam.refine.prompted import PromptConfig

#: the folders under ``work`` that :func:`coco_check` fills, by what they hold
FOLDERS = {"ground truth": "gt", "CAM labels": "cam_labels", "prompted (box)": "prompted"}


def coco_check(root: str | os.PathLike, splits: list[str], net: CamNet, threshold: float, prompts: PromptConfig,
               work: str | os.PathLike, limit: int | None = None, device: str | None = None) -> dict:  # fmt: skip
    """Run the check on the first ``limit`` images with a VOC class of each split; returns
    ``{"ids": [...], "seconds_per_image": float | None, "folders": {name: Path}}``.

    The images of all splits are linked into ``work/images`` so that every step sees one folder."""
    root, work = Path(root), Path(work)
    labels: dict = {}
    for split in splits:
        index = image_index(root / "images" / split)
        found = {}
        for p in sorted((root / "semantic_segmentation" / "masks" / split).glob("*.png")):
            if p.stem not in index:
                continue
            target = work / "gt" / p.name
            gt = read_label(target) if target.exists() else coco_panoptic_to_voc(read_label(p))
            classes = labels_from_mask(gt, VOC)
            if classes.size:
                if not target.exists():
                    write_label(target, gt)
                found[p.stem] = classes
        for i in sorted(found)[:limit] if limit else sorted(found):
            link = work / "images" / index[i].name
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(index[i].resolve())
            labels[i] = found[i]
    ids = sorted(labels)
    extract_cams(net, image_index(work / "images"), labels, work / "cams", progress=False)
    cams_to_labels(work / "cams", work / "cam_labels", threshold, ids, progress=False)
    r = refine_folder(work / "images", work / "cam_labels", work / "prompted", ids, prompts, device=device, progress=False)
    return {"ids": ids, "seconds_per_image": r.seconds_per_item, "folders": {k: work / v for k, v in FOLDERS.items()}}
