"""Predict with a trained :class:`~samcam.seg.model.SegNet` and score it: the standard confusion-matrix mIoU.

Single scale by default (the whole image at its own size); ``scales`` and ``flip`` give the usual
multi-scale + flip inference (softmax probabilities averaged at image size).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from samcam.data.spaces import VOC, DatasetSpec
from samcam.io import find_image, json_loads, read_input, read_labelled_image, sha256_file, write_label, write_text
from samcam.metrics import Evaluator
from samcam.outputs import write_table

from .model import SegNet
from .recipe import PAD_VALUE, scaled_shape
from .train import load_model, pick_device

MULTI_SCALES: tuple[float, ...] = (0.75, 1.0, 1.25)
STRIDE = 32  # the backbone's output stride
#: the shortest side a scale may shrink an image to: half an output cell (eval-seg --scales 1e-300 scored 1 × 1 rescales)
MIN_SIDE = STRIDE // 2


@torch.inference_mode()
def predict_probs(model: SegNet, image: np.ndarray, scales: Sequence[float] = (1.0,), flip: bool = False) -> torch.Tensor:
    """Mean softmax ``n_classes × H × W`` over ``scales`` (and their horizontal flips) for an ``H × W × 3`` uint8 image."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H × W × 3 image, got shape {image.shape}")
    dev = next(model.parameters()).device
    h, w = image.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().to(dev)
    total = torch.zeros((model.n_classes, h, w), device=dev)
    n = 0
    for s in scales:
        xs = x if s == 1.0 else F.interpolate(x, size=scaled_shape((h, w), s), mode="bilinear", align_corners=False)
        batch = torch.cat([xs, xs.flip(-1)]) if flip else xs
        sh, sw = batch.shape[-2:]
        ph, pw = -sh % STRIDE, -sw % STRIDE  # pad to the network stride, as training pads crops
        logits = model(F.pad(batch, (0, pw, 0, ph), value=PAD_VALUE))[..., :sh, :sw]
        if flip:
            logits = torch.stack([logits[0], logits[1].flip(-1)])
        if s != 1.0:
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        if not bool(torch.isfinite(logits).all()):  # weights that pass every check can still compute NaN
            raise NonFiniteOutput("the network's output is not finite (NaN or infinite): its weights are not usable")
        total += logits.softmax(1).sum(0)
        n += logits.shape[0]
    return total / n


class NonFiniteOutput(ValueError):
    """A network whose output holds NaN or an infinity (a batch-norm variance below 0, weights that
    overflow): its argmax would be scored as if it were a prediction."""


def predict(model: SegNet, image: np.ndarray, scales: Sequence[float] = (1.0,), flip: bool = False) -> np.ndarray:
    """The ``H × W`` uint8 label map (argmax of :func:`predict_probs`)."""
    return predict_probs(model, image, scales, flip).argmax(0).to(torch.uint8).cpu().numpy()


def evaluate(model: SegNet, images_dir: str | os.PathLike, gt_dir: str | os.PathLike, ids: Sequence[str],
             spec: DatasetSpec = VOC, scales: Sequence[float] = (1.0,), flip: bool = False,
             save_dir: str | os.PathLike | None = None, progress: bool | None = None) -> Evaluator:  # fmt: skip
    """Score ``model`` on ``ids`` against the ground truth in ``gt_dir``; optionally write palette PNG predictions."""

    images_dir, gt_dir = Path(images_dir), Path(gt_dir)
    for d in (images_dir, gt_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"folder not found: {d}")
    if not ids:
        raise ValueError("no evaluation ids")
    import contextlib

    from samcam.outputs import claim_output

    model.eval()
    ev = Evaluator(spec)
    with contextlib.ExitStack() as claimed:
        if save_dir is not None:  # a folder of samcam's own predictions: never a user's label folder
            claimed.enter_context(claim_output(save_dir, "eval-seg-predictions", {"images": images_dir, "gt": gt_dir},
                                               {"scales": list(scales), "flip": flip, "dataset": spec.name,
                                                "model_sha256": _state_sha256(model)}))  # fmt: skip
        _score(model, images_dir, gt_dir, ids, spec, scales, flip, save_dir, progress, ev)
    return ev


def _state_sha256(model) -> str:
    """A fingerprint of a model's weights: predictions of other weights never join a folder."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _score(model, images_dir, gt_dir, ids, spec, scales, flip, save_dir, progress, ev) -> None:
    from samcam.progress import progress_bar

    for i in progress_bar(ids, desc="eval-seg", unit="img", progress=progress):
        img_path = find_image(images_dir, i)
        image, gt = read_labelled_image(img_path, gt_dir / f"{i}.png", spec, "ground-truth")
        for s in scales:  # a scale that shrinks an image below half an output cell scores a few pixels' guess, stretched
            if s < 1 and min(scaled_shape(image.shape[:2], s)) < MIN_SIDE:
                raise ValueError(f"{img_path}: at scale {s:g} its {image.shape[0]} × {image.shape[1]} pixels become "
                                 f"{' × '.join(map(str, scaled_shape(image.shape[:2], s)))}, a side below {MIN_SIDE} pixels "
                                 f"(half the network's stride); use a larger scale")  # fmt: skip
        try:
            pred = predict(model, image, scales, flip)
        except NonFiniteOutput as e:
            raise NonFiniteOutput(f"{e} (on {img_path})") from None
        ev.add(i, gt, pred)
        if save_dir is not None:
            write_label(Path(save_dir) / f"{i}.png", pred, spec)


def _finite_or_none(v: float) -> float | None:
    """A score as strict JSON holds it: ``None`` (null) where it is undefined (NaN: nothing to score)."""
    return float(v) if np.isfinite(v) else None


def evaluate_checkpoint(checkpoint: str | os.PathLike, images_dir: str | os.PathLike, gt_dir: str | os.PathLike,
                        ids: Sequence[str], scales: Sequence[float] = (1.0,), flip: bool = False,
                        save_dir: str | os.PathLike | None = None, device: str | None = None,
                        progress: bool | None = None, checkpoint_sha256: str | None = None) -> tuple[Evaluator, dict[str, Any]]:  # fmt: skip
    """Load a checkpoint and :func:`evaluate` it; returns the evaluator and a JSON-ready summary
    (``checkpoint_sha256``: the file's SHA-256 where the caller already has it). An unfinished run is
    refused (as a classifier's or an affinity head's is): its score is no row's."""
    model, recipe, meta = load_model(checkpoint)
    if not meta["complete"]:
        raise ValueError(f"{checkpoint}: an unfinished training run (step {meta['step']} of {meta.get('total_steps')}); "
                         "rerun train-seg to finish it")  # fmt: skip
    model.to(pick_device(device))
    t0 = time.perf_counter()
    try:
        ev = evaluate(model, images_dir, gt_dir, ids, VOC, scales, flip, save_dir, progress)
    except NonFiniteOutput as e:
        raise ValueError(f"{checkpoint}: {e}") from None
    s = ev.scores()
    from samcam.outputs import fingerprint_files

    summary = {
        "checkpoint": str(Path(checkpoint).resolve()), "checkpoint_sha256": checkpoint_sha256 or sha256_file(checkpoint), "labels_dir": meta["labels_dir"], "recipe": recipe.to_dict(),
        "step": meta["step"], "complete": meta["complete"], "n_images": len(ev.image_ids), "scales": list(scales),
        "scored_on": fingerprint_files({i: Path(gt_dir) / f"{i}.png" for i in ev.image_ids}),  # the val images' ids and ground truth, by content
        "flip": flip, "seconds": time.perf_counter() - t0, "threads": torch.get_num_threads(), "miou": _finite_or_none(s.miou), "pixel_accuracy": _finite_or_none(s.pixel_accuracy),
        "iou": {name: _finite_or_none(v) for name, v in zip(VOC.class_names, s.iou)},  # None: a class absent from GT and predictions
    }  # fmt: skip
    return ev, summary


def check_evaluation_target(path: str | os.PathLike | None, checkpoint: str | os.PathLike, checkpoint_sha256: str | None = None) -> None:
    """An evaluation file is replaced only by an evaluation of the same checkpoint: ``path`` absent, or
    a summary :func:`evaluate_checkpoint` wrote for ``checkpoint`` (by its SHA-256; a summary that
    predates it is replaced: a moved run folder leaves no other sign); else ``ValueError`` naming it
    (another run's ``eval.json`` was replaced, and its run then ranked by this score)."""
    if path is None or not os.path.lexists(path):
        return
    try:
        old = json_loads(read_input(path, "evaluation"))
    except ValueError:
        old = None
    if not isinstance(old, dict) or "iou" not in old or "checkpoint" not in old:
        raise ValueError(f"{path}: exists and is not an evaluation samcam wrote; choose another file")
    if "checkpoint_sha256" in old and old["checkpoint_sha256"] != (checkpoint_sha256 or sha256_file(checkpoint)):
        raise ValueError(f"{path}: holds the evaluation of another checkpoint ({old['checkpoint']}); choose another file, or remove it")


def write_results(ev: Evaluator, summary: dict[str, Any], json_path: str | os.PathLike | None = None,
                  csv_path: str | os.PathLike | None = None) -> None:  # fmt: skip
    """Write the summary JSON and the per-class CSV (atomically); the JSON replaces only an evaluation
    of the same checkpoint (:func:`check_evaluation_target`)."""
    if json_path:
        check_evaluation_target(json_path, summary["checkpoint"], summary["checkpoint_sha256"])
        write_text(json_path, json.dumps(summary, indent=1, allow_nan=False) + "\n")  # strict JSON: a NaN would be written bare
    if csv_path:
        write_table(csv_path, ev.per_class_table())
