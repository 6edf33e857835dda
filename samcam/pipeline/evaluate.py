"""Pipeline step: score a folder of predicted labels against a ground-truth folder with :class:`samcam.metrics.Evaluator`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samcam.data.spaces import DatasetSpec
from samcam.io import read_label, refuse_one_file
from samcam.metrics import Evaluator


def _read_pair(pred_dir: Path, gt_dir: Path, image_id: str, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    pred_path = pred_dir / f"{image_id}.png"
    gt_path = gt_dir / f"{image_id}.png"
    refuse_one_file(pred_path, gt_path, "prediction", "the ground truth")  # a link to the ground truth scores 100
    pred = read_label(pred_path, spec)
    gt = read_label(gt_path, spec)
    if pred.shape != gt.shape:
        raise ValueError(f"{pred_path}: prediction size {pred.shape} differs from ground truth {gt_path} {gt.shape}")
    return gt, pred


def evaluate_folders(
    pred_dir,
    gt_dir,
    spec: DatasetSpec,
    ids: list[str] | None = None,
    workers: int = 4,
    progress: bool | None = None,
) -> Evaluator:
    """Score ``pred_dir/<id>.png`` against ``gt_dir/<id>.png`` with the standard protocol.

    With ``ids=None`` every ``.png`` in ``pred_dir`` is evaluated. A missing file for a listed id is a
    ``FileNotFoundError`` naming it; files are decoded by a small thread pool (PNG decoding releases
    the GIL), each file read once. ``ValueError`` when no pixel is scored (all ground truth void).
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from samcam.io import folder_ids
    from samcam.progress import progress_bar

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    ids = folder_ids(pred_dir, ".png", "prediction", ids)
    folder_ids(gt_dir, ".png", "ground-truth", ids)
    ev = Evaluator(spec)
    bar = progress_bar(total=len(ids), desc="eval", unit="img", progress=progress)
    window = 8 * max(1, workers)  # decoded pairs waiting at most: bounded memory
    pending: deque = deque()

    def drain(keep: int) -> None:
        while len(pending) > keep:
            image_id, future = pending.popleft()
            gt, pred = future.result()
            ev.add(image_id, gt, pred)
            bar.update()

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for image_id in ids:
            pending.append((image_id, pool.submit(_read_pair, pred_dir, gt_dir, image_id, spec)))
            drain(window)
        drain(0)
    bar.close()
    if not ev.conf.any():  # every ground-truth pixel void: no score exists (a NaN printed as one would pass for a result)
        raise ValueError(f"{gt_dir}: every pixel of the {len(ids)} ground-truth labels scored is void ({spec.ignore_index}); "
                         "the mIoU is undefined")  # fmt: skip
    return ev
