"""Official SamAutomaticMaskGenerator vs samcam's FastMaskGenerator, same model, same images, one run.

    python benchmarks/bench_generator.py [--n 2] [--points-per-side 32] [--model vit_t]

Times whole ``generate`` calls (image embedding included, as a user sees it), alternating which
generator goes first, and checks that the masks match (count, and each official mask's best IoU
with a fast one). Writes results/benchmarks/generator.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root, write  # noqa: E402


def best_iou(a, b) -> np.ndarray:
    """For each mask of ``a``, its best IoU with a mask of ``b``."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(len(a))
    fa = a.masks.reshape(len(a), -1).astype(np.float32)
    fb = b.masks.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = a.area[:, None] + b.area[None, :] - inter
    return (inter / np.maximum(union, 1)).max(axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2, help="number of VOC train images")
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--model", default="vit_t")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()

    from samcam.io import read_ids, read_image
    from samcam.sam.model import MaskGenerator, build_sam

    voc = data_root() / "voc2012"
    ids = read_ids(voc / "ImageSets" / "Segmentation" / "train_with_images.txt")[: a.n]
    model = build_sam(a.model, device=a.device)
    gens = {g: MaskGenerator(model, g, points_per_side=a.points_per_side) for g in ("official", "fast")}
    rows = []
    for k, image_id in enumerate(ids):
        image = read_image(voc / "JPEGImages" / f"{image_id}.jpg")
        order = ["official", "fast"] if k % 2 == 0 else ["fast", "official"]
        out, secs = {}, {}
        for g in order:
            t0 = time.perf_counter()
            out[g] = gens[g].generate(image)
            secs[g] = time.perf_counter() - t0
        iou = best_iou(out["official"], out["fast"])
        rows.append({"id": image_id, "official_s": secs["official"], "fast_s": secs["fast"], "official_masks": len(out["official"]),
                     "fast_masks": len(out["fast"]), "min_best_iou": float(iou.min()) if len(iou) else 1.0})  # fmt: skip
        print(rows[-1], flush=True)
    off = sum(r["official_s"] for r in rows)
    fast = sum(r["fast_s"] for r in rows)
    md = [f"# Mask generator: official vs fast ({a.model}, {a.points_per_side}×{a.points_per_side} grid, {a.device})", "",
          "| image | official s | fast s | ratio | masks official / fast | min best IoU |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        md.append(f"| {r['id']} | {r['official_s']:.1f} | {r['fast_s']:.1f} | {r['official_s'] / r['fast_s']:.2f}× | {r['official_masks']} / {r['fast_masks']} | {r['min_best_iou']:.4f} |")
    md += ["", f"Total: official {off:.1f} s, fast {fast:.1f} s: **{off / fast:.2f}×** faster ({off / len(rows):.1f} vs {fast / len(rows):.1f} s per image)."]
    write(f"generator_{a.model}_p{a.points_per_side}_{a.device}", {"rows": rows, "ratio": off / fast, "settings": vars(a)}, "\n".join(md))


if __name__ == "__main__":
    main()
