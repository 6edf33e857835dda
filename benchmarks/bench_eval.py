"""Standard mIoU: samcam's vectorised confusion matrix vs a naive per-class Python loop, one run.

    python benchmarks/bench_eval.py

Both score the official TransCAM pseudo labels over the 1464 VOC train ids (arrays read once,
before timing; the end-to-end ``evaluate_folders`` time, reading included, is reported too).
Writes results/benchmarks/eval.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root, results, write  # noqa: E402


def naive_miou(pairs, n_classes: int = 21) -> float:
    tp = np.zeros(n_classes)
    fp = np.zeros(n_classes)
    fn = np.zeros(n_classes)
    for gt, pred in pairs:
        valid = gt != 255
        for c in range(n_classes):
            g = (gt == c) & valid
            p = (pred == c) & valid
            tp[c] += np.sum(g & p)
            fp[c] += np.sum(~g & p)
            fn[c] += np.sum(g & ~p)
    return float(np.nanmean(tp / (tp + fp + fn)))


def parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=__doc__.splitlines()[0])


def writes(argv: list[str]) -> list[Path]:
    """What a run with ``argv`` writes (``samcam reproduce`` checks it against the step's outputs)."""
    parser().parse_args(argv)
    return results("eval")


def main() -> None:
    parser().parse_args()
    from samcam.data.spaces import VOC
    from samcam.io import read_ids, read_label
    from samcam.metrics import Evaluator
    from samcam.pipeline.evaluate import evaluate_folders

    root = data_root()
    voc = root / "voc2012"
    ids = read_ids(voc / "ImageSets" / "Segmentation" / "train.txt")
    t0 = time.perf_counter()
    ev_folders = evaluate_folders(root / "pseudo_labels" / "transcam", voc / "SegmentationClass", VOC, ids)
    end_to_end = time.perf_counter() - t0
    pairs = [(read_label(voc / "SegmentationClass" / f"{i}.png"), read_label(root / "pseudo_labels" / "transcam" / f"{i}.png")) for i in ids]

    t0 = time.perf_counter()
    ev = Evaluator(VOC)
    for i, (g, p) in zip(ids, pairs):
        ev.add(i, g, p)
    fast_miou = ev.scores().miou
    fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow_miou = naive_miou(pairs)
    slow = time.perf_counter() - t0
    assert abs(fast_miou - slow_miou) < 1e-12 and abs(ev_folders.scores().miou - fast_miou) < 1e-12
    md = f"""# Evaluation speed: 1464 VOC train images (TransCAM labels, mIoU {100 * fast_miou:.2f})

| implementation | seconds (arrays in memory) | images/s |
|---|---|---|
| naive per-class loop | {slow:.2f} | {len(ids) / slow:.0f} |
| samcam `Evaluator` (one bincount per image, per-image rows kept) | {fast:.2f} | {len(ids) / fast:.0f} |

Ratio: **{slow / fast:.1f}×**. End to end (`evaluate_folders`: reading 2 × 1464 PNGs with 4 threads + scoring): {end_to_end:.2f} s."""
    write("eval", {"images": len(ids), "naive_s": slow, "samcam_s": fast, "ratio": slow / fast, "end_to_end_s": end_to_end, "miou": fast_miou}, md)


if __name__ == "__main__":
    main()
