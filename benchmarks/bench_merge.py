"""The paper's merge rule: samcam's vectorised merge vs the plain loop reference, one run.

    python benchmarks/bench_merge.py [--real-limit 558]

(a) synthetic mask sets like SAM's (60 masks, 500×375, 3 classes); (b) the cached real MobileSAM
masks with the official TransCAM labels. Inputs are read before timing; outputs are checked equal.
Writes results/benchmarks/merge.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _common import REPO, data_root, results, write  # noqa: E402
from merge_reference import merge_loop  # noqa: E402


def synthetic(n_images: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    h, w = 375, 500
    yy, xx = np.mgrid[:h, :w]
    for _ in range(n_images):
        label = np.zeros((h, w), np.uint8)
        for c in rng.choice(np.arange(1, 21), 3, replace=False):
            cy, cx, r = rng.integers(60, 315), rng.integers(60, 440), rng.integers(30, 110)
            label[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = c
        masks = np.zeros((60, h, w), bool)
        for k in range(60):
            cy, cx = rng.integers(0, h), rng.integers(0, w)
            ry, rx = rng.integers(5, 120), rng.integers(5, 160)
            masks[k] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        yield label, masks


def time_both(cases):
    from samcam.refine.merge import merge

    t0 = time.perf_counter()
    fast = [merge(label, masks, 21).label for label, masks in cases]
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = [merge_loop(label, list(masks), 21) for label, masks in cases]
    t_slow = time.perf_counter() - t0
    assert all(np.array_equal(a, b) for a, b in zip(fast, slow))
    return t_fast, t_slow


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", type=int, default=20)
    ap.add_argument("--real-limit", type=int, default=558)
    return ap


def writes(argv: list[str]) -> list[Path]:
    """What a run with ``argv`` writes (``samcam reproduce`` checks it against the step's outputs)."""
    parser().parse_args(argv)
    return results("merge")


def main() -> None:
    a = parser().parse_args()
    from samcam.data.spaces import VOC
    from samcam.io import read_ids, read_label
    from samcam.sam.mask_files import MaskStore

    rows = []
    syn = list(synthetic(a.synthetic))
    rows.append(("synthetic: 60 masks, 500×375, 3 classes", len(syn), *time_both(syn)))
    root = data_root()
    ids = read_ids(root / "voc2012" / "ImageSets" / "Segmentation" / "train_with_images.txt")[: a.real_limit]
    store = MaskStore(REPO / "results" / "masks" / "voc12_train_vit_t_p32")
    real = [(read_label(root / "pseudo_labels" / "transcam" / f"{i}.png", VOC), store.read(i).masks) for i in ids]
    n_masks = np.mean([m.shape[0] for _, m in real])
    rows.append((f"real: MobileSAM 32×32 masks (mean {n_masks:.0f}) + TransCAM labels", len(real), *time_both(real)))
    md = ["# Merge speed (rule max_iou_imp2): vectorised vs plain loop, outputs identical", "",
          "| case | images | samcam s | images/s | loop s | images/s | ratio |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, n, f, s in rows:
        md.append(f"| {name} | {n} | {f:.2f} | {n / f:.0f} | {s:.2f} | {n / s:.1f} | **{s / f:.0f}×** |")
    write("merge", {"rows": [dict(case=r[0], images=r[1], samcam_s=r[2], loop_s=r[3], ratio=r[3] / r[2]) for r in rows]}, "\n".join(md))


if __name__ == "__main__":
    main()
