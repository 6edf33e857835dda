"""Pipeline step: turn a WSSS method's output folder (any format of :mod:`samcam.cam.methods`) into palette PNG labels."""

from __future__ import annotations

import os
import time
from pathlib import Path

from samcam.cam.methods import format_with_threshold, load_pseudo_label
from samcam.data.spaces import VOC, DatasetSpec
from samcam.io import write_label
from samcam.outputs import StepResult, claim_output, finish_step, pending


def export_labels(folder: str | os.PathLike, out: str | os.PathLike, ids: list[str], fmt: str,
                  threshold: float | None = None, spec: DatasetSpec = VOC, progress: bool | None = None) -> StepResult:  # fmt: skip
    """Write ``out/<id>.png`` (palette) for each id from a method's output folder; ids done are
    skipped, and the format and threshold are recorded (a rerun with others is refused)."""
    from samcam.progress import progress_bar

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"method output folder not found: {folder}")
    format_with_threshold(fmt, threshold)  # before the output folder is made
    with claim_output(out, "labels", {"input": folder}, {"format": fmt, "threshold": threshold, "dataset": spec.name}):
        todo = pending(ids, out)
        t0 = time.perf_counter()
        for image_id in progress_bar(todo, desc="labels", unit="img", progress=progress):
            write_label(Path(out) / f"{image_id}.png", load_pseudo_label(folder, image_id, fmt, threshold, spec), spec)
        return finish_step(out, ids, todo, time.perf_counter() - t0)
