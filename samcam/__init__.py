"""samcam: SAM-enhanced CAM pseudo labels for weakly supervised semantic segmentation.

A reproducibility package for Chen, Mai, Li, Chao (2023), *Segment Anything Model (SAM) Enhanced
Pseudo Labels for Weakly Supervised Semantic Segmentation*. One folder per concept of the paper
(``ARCHITECTURE.md`` draws the data flow):

- :mod:`samcam.io`        -- every file in and out: atomic writes, id lists, images, label maps
- :mod:`samcam.data`      -- label spaces (VOC, COCO), the VOC tree, image-level labels, safe pickles
- :mod:`samcam.cam`       -- CAM networks, multi-scale CAMs, CAM -> label, WSSS methods' outputs
- :mod:`samcam.sam`       -- SAM checkpoints, models, mask generators, mask-set formats
- :mod:`samcam.refine`    -- SAM + pseudo label: the paper's merge rule, prompted refinement
- :mod:`samcam.metrics`   -- confusion-matrix mIoU, before/after comparison, average precision
- :mod:`samcam.pipeline`  -- one file per step: folders in, folders out (progress, resume, atomic)
- :mod:`samcam.report`    -- tables and figures
- :mod:`samcam.reproduce` -- papermill notebooks; :mod:`samcam.cli` -- the ``samcam`` command

The names below are the public API; they are imported on first use, so ``import samcam`` is fast
and does not load torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

#: public name -> module that defines it
_API: dict[str, str] = {
    **dict.fromkeys(["read_ids", "read_image", "read_label", "write_label", "atomic_path", "write_text", "data_root"], "samcam.io"),
    **dict.fromkeys(["VOC", "COCO", "DatasetSpec", "get_dataset", "colorize", "IGNORE_INDEX"], "samcam.data.spaces"),
    **dict.fromkeys(["VocTree", "labels_from_mask", "labels_from_xml", "load_cls_labels", "one_hot", "image_labels"], "samcam.data.voc"),
    **dict.fromkeys(["COCO_TO_VOC", "coco_panoptic_to_voc"], "samcam.data.coco"),
    **dict.fromkeys(["confusion_matrix", "scores", "Evaluator", "Comparison", "average_precision", "official_image_scores"], "samcam.metrics"),
    **dict.fromkeys(["build_camnet", "CamNet"], "samcam.cam.nets"),
    **dict.fromkeys(["multiscale_cam", "grad_cam"], "samcam.cam.infer"),
    **dict.fromkeys(["cam_to_label", "scores_to_label"], "samcam.cam.label"),
    **dict.fromkeys(["load_cam", "save_cam"], "samcam.cam.files"),
    **dict.fromkeys(["METHODS", "get_method", "load_pseudo_label"], "samcam.cam.methods"),
    **dict.fromkeys(["MaskSet"], "samcam.sam.masks"),
    **dict.fromkeys(["MaskStore"], "samcam.sam.mask_files"),
    **dict.fromkeys(["build_sam", "build_generator"], "samcam.sam.model"),
    **dict.fromkeys(["MergeRule", "merge"], "samcam.refine.merge"),
    **dict.fromkeys(["PromptConfig", "refine"], "samcam.refine.prompted"),
    **dict.fromkeys(["evaluate_folders"], "samcam.pipeline.evaluate"),
    **dict.fromkeys(["merge_folders"], "samcam.pipeline.merge"),
    **dict.fromkeys(["enhance_method"], "samcam.pipeline.enhance"),
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'samcam' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
