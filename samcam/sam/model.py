"""Build SAM models and "segment everything" mask generators, for every checkpoint.

``vit_h``, ``vit_l``, ``vit_b`` are built by the ``segment-anything`` package, ``vit_t`` (MobileSAM) by
``mobilesam-mirror`` (module ``mobile_sam``). Both produce modules with the same interface, so the one
generator code path of ``segment-anything`` (``SamAutomaticMaskGenerator``) serves all four, and so
does samcam's faster generator (:mod:`samcam.fast_amg`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from samcam.registry import lookup
from samcam.sam.masks import MaskSet

#: SAM model types: the package whose ``sam_model_registry`` builds each (MobileSAM for ``vit_t``).
MODEL_TYPES: dict[str, str] = {"vit_h": "segment_anything", "vit_l": "segment_anything", "vit_b": "segment_anything", "vit_t": "mobile_sam"}

#: The official automatic-mask-generator defaults (segment-anything's SamAutomaticMaskGenerator).
AMG_DEFAULTS: dict[str, Any] = {
    "points_per_side": 32,
    "points_per_batch": 64,
    "pred_iou_thresh": 0.88,
    "stability_score_thresh": 0.95,
    "stability_score_offset": 1.0,
    "box_nms_thresh": 0.7,
    "crop_n_layers": 0,
    "crop_nms_thresh": 0.7,
    "crop_overlap_ratio": 512 / 1500,
    "crop_n_points_downscale_factor": 1,
    "min_mask_region_area": 0,
}


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu`` (:func:`samcam.pipeline.workers.torch_device`)."""
    from samcam.pipeline.workers import torch_device

    return str(torch_device(None, default="auto"))


def _registry(model_type: str) -> Callable[..., Any]:
    import importlib
    import warnings

    package = lookup(MODEL_TYPES, model_type, "model type")
    with warnings.catch_warnings():  # mobile_sam re-registers timm names and imports deprecated paths
        warnings.simplefilter("ignore")
        return importlib.import_module(package).sam_model_registry[model_type]


def build_sam(model_type: str = "vit_t", checkpoint: str | os.PathLike | None = None, device: str | None = None):
    """A SAM model of ``model_type`` with weights loaded strictly, in eval mode on ``device``.

    With ``checkpoint=None`` the known checkpoint is fetched (or found in the cache) and verified. A
    checkpoint whose keys or shapes do not fit ``model_type`` raises ``ValueError`` naming the file.
    """

    from samcam.io import check_state, load_checkpoint
    from samcam.sam.weights import resolve

    path, _ = resolve(model_type, checkpoint)
    model = _registry(model_type)(checkpoint=None)
    state = load_checkpoint(path)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    check_state(state, path, f"{model_type} weights", "a corrupt checkpoint")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[:3]
        raise ValueError(f"{path}: checkpoint does not match model type {model_type} ({' '.join(first)[:400]})") from e
    return model.to(device or default_device()).eval()


def amg_settings(**overrides: Any) -> dict[str, Any]:
    """The official defaults with ``overrides`` applied (unknown names raise ``TypeError``)."""
    unknown = set(overrides) - set(AMG_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown generator settings: {', '.join(sorted(unknown))}")
    return {**AMG_DEFAULTS, **overrides}


def _official_generator(model, settings: dict[str, Any]):
    from segment_anything import SamAutomaticMaskGenerator

    return SamAutomaticMaskGenerator(model, output_mode="binary_mask", **settings)


def _fast_generator(model, settings: dict[str, Any]):
    from samcam.sam.fast_amg import FastMaskGenerator

    return FastMaskGenerator(model, **settings)


#: "Segment everything" generators: name -> builder (model, settings) -> an object with ``generate(image) -> records``.
GENERATORS: dict[str, Callable[[Any, dict[str, Any]], Any]] = {"fast": _fast_generator, "official": _official_generator}


#: the long side SAM's image encoder resizes every image to (segment-anything's ResizeLongestSide)
SAM_SIDE = 1024


#: the smallest image side SAM is run on: one of its image encoder's patches (16 pixels of the resized
#: image). A smaller image is enlarged more than 64 times, so its every mask is a blur of a few pixels
#: (a 1 × 1 image gave 8 masks of its one pixel).
MIN_SAM_SIDE = 16


def check_sam_size(shape: tuple[int, ...], source: object) -> None:
    """``ValueError`` naming ``source`` when an image of ``shape`` (H, W, ...) is too thin for SAM (resized
    to a :data:`SAM_SIDE` long side as SAM resizes it, rounded, its short side would be 0 pixels, and
    SAM's own error would name no image) or too small (a side below :data:`MIN_SAM_SIDE` pixels)."""
    h, w = int(shape[0]), int(shape[1])
    scale = SAM_SIDE / max(h, w, 1)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    if min(nh, nw) < 1:
        raise ValueError(f"{source}: {h}×{w} pixels is too thin for SAM (resized to its {SAM_SIDE}-pixel long side: {nh}×{nw})")
    if min(h, w) < MIN_SAM_SIDE:
        raise ValueError(f"{source}: {h}×{w} pixels is too small for SAM (each side at least {MIN_SAM_SIDE} pixels, one patch of its encoder)")


class MaskGenerator:
    """``generate(image) -> MaskSet`` with either the official or samcam's fast generator."""

    def __init__(self, model, generator: str = "fast", **settings: Any) -> None:
        build = lookup(GENERATORS, generator, "generator")
        self.settings = amg_settings(**settings)
        self.generator = generator
        self._impl = build(model, self.settings)

    def generate(self, image: np.ndarray) -> MaskSet:
        """Masks of an ``H × W × 3`` uint8 RGB image."""
        import torch

        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H × W × 3 uint8 RGB image, got {image.shape} {image.dtype}")
        with torch.inference_mode():
            records = self._impl.generate(image)
        return MaskSet.from_records(records, shape=image.shape[:2])

    @property
    def device(self) -> str:
        """The device the model runs on (``cuda:0``, ``cpu``)."""
        return str(self._impl.predictor.device)


def build_generator(
    model_type: str = "vit_t",
    checkpoint: str | os.PathLike | None = None,
    device: str | None = None,
    generator: str = "fast",
    **settings: Any,
) -> MaskGenerator:
    """Model + generator in one call: ``build_generator("vit_t", points_per_side=8).generate(img)``."""
    return MaskGenerator(build_sam(model_type, checkpoint, device), generator, **settings)


def checkpoint_info(model_type: str, checkpoint: str | os.PathLike | None) -> dict[str, str]:
    """Provenance for a mask run: model type, checkpoint file name and SHA-256."""
    from samcam.sam.weights import resolve

    path, sha = resolve(model_type, checkpoint)
    return {"model_type": model_type, "checkpoint": Path(path).name, "checkpoint_sha256": sha}
