"""Seconds per image of the two SAM refinement modes, same images, same model, one run (CPU).

    python benchmarks/bench_modes.py [--n 2]

everything: samcam's fast "segment everything" generator at 32×32 + the paper's merge rule;
prompted: one image embedding + one box prompt per pseudo-label component (samcam.prompted).
Both include the image embedding. Writes results/benchmarks/modes_vit_t_cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root, results, write  # noqa: E402


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2)
    return ap


def writes(argv: list[str]) -> list[Path]:
    """What a run with ``argv`` writes (``samcam reproduce`` checks it against the step's outputs)."""
    parser().parse_args(argv)
    return results(NAME)


NAME = "modes_vit_t_cpu"


def main() -> None:
    a = parser().parse_args()
    from segment_anything import SamPredictor

    from samcam.data.spaces import VOC
    from samcam.io import read_ids, read_image, read_label
    from samcam.refine.merge import merge
    from samcam.refine.prompted import refine
    from samcam.sam.model import MaskGenerator, build_sam

    root = data_root()
    ids = read_ids(root / "voc2012/ImageSets/Segmentation/train_with_images.txt")[: a.n]
    model = build_sam("vit_t", device="cpu")
    gen = MaskGenerator(model, "fast")
    predictor = SamPredictor(model)
    rows = []
    for image_id in ids:
        image = read_image(root / "voc2012/JPEGImages" / f"{image_id}.jpg")
        label = read_label(root / "pseudo_labels/transcam" / f"{image_id}.png", VOC)
        t0 = time.perf_counter()
        merge(label, gen.generate(image), VOC.n_classes)
        t1 = time.perf_counter()
        predictor.set_image(image)
        refine(predictor, label, VOC.n_classes)
        t2 = time.perf_counter()
        rows.append({"id": image_id, "everything_s": t1 - t0, "prompted_s": t2 - t1})
        print(rows[-1], flush=True)
    ev = sum(r["everything_s"] for r in rows) / len(rows)
    pr = sum(r["prompted_s"] for r in rows) / len(rows)
    md = ["# Seconds per image: everything-mode + paper rule vs prompted (MobileSAM, CPU)", "",
          "| image | everything (fast generator 32×32 + merge) s | prompted (box) s |", "|---|---|---|"]  # fmt: skip
    md += [f"| {r['id']} | {r['everything_s']:.1f} | {r['prompted_s']:.1f} |" for r in rows]
    md += ["", f"Mean: everything {ev:.1f} s, prompted {pr:.1f} s per image: prompted is **{ev / pr:.0f}×** cheaper."]
    write(NAME, {"rows": rows, "everything_s": ev, "prompted_s": pr, "ratio": ev / pr}, "\n".join(md))


if __name__ == "__main__":
    main()
