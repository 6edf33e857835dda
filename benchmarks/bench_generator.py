"""Official SamAutomaticMaskGenerator vs samcam's FastMaskGenerator, same model, same images, one run.

    python benchmarks/bench_generator.py [--n 4] [--points-per-side 32] [--model vit_t] [--device cpu|cuda]
                                         [--checkpoint FILE] [--data ROOT] [--out DIR]

Part 1 times whole ``generate`` calls (image embedding included) image by image, after an untimed
warm-up of each, alternating which generator goes first so that drift in the machine's speed hits both, and checks that the masks
match: equal counts, each mask's best IoU with a mask of the other set (both ways), and how many
are pixel-identical. Part 2 times what a user runs: the whole ``samcam masks`` command (start-up,
model load, JPEGs in, compact mask files out) over the same images, and checks its files hold the
masks of part 1. Writes generator_<model>_p<pps>_<device>.{json,md} into ``--out`` (default
results/benchmarks/). On a GPU (``--device cuda``) each timing waits for the GPU's work to finish, the
warm-up starts the CUDA context, and the record names the GPU; the command of part 2 runs as
``python -m samcam.cli`` with this checkout on ``PYTHONPATH``, so the package need not be installed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, REPO, data_root, results, write  # noqa: E402


def best_iou(a, b) -> np.ndarray:
    """For each mask of ``a``, its best IoU with a mask of ``b``."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(len(a))
    fa = a.masks.reshape(len(a), -1).astype(np.float32)
    fb = b.masks.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = a.area[:, None] + b.area[None, :] - inter
    return (inter / np.maximum(union, 1)).max(axis=1)


def identical(a, b) -> int:
    """How many masks of ``a`` are matched one to one by a pixel-identical mask of ``b``."""
    from collections import Counter

    return sum((Counter(m.tobytes() for m in a.masks) & Counter(m.tobytes() for m in b.masks)).values())


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4, help="number of VOC train images (the first of train_with_images.txt)")
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--model", default="vit_t")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:K")
    ap.add_argument("--checkpoint", help="checkpoint file (default: the verified one in samcam's cache)")
    ap.add_argument("--data", type=Path, help="data root holding voc2012/ (default $SAMCAM_DATA or ../shared/data)")
    ap.add_argument("--out", type=Path, default=OUT, help="folder for the .json/.md results (default results/benchmarks)")
    return ap


def _name(a: argparse.Namespace) -> str:
    return f"generator_{a.model}_p{a.points_per_side}_{a.device}"


def writes(argv: list[str]) -> list[Path]:
    """What a run with ``argv`` writes (``samcam reproduce`` checks it against the step's outputs)."""
    a = parser().parse_args(argv)
    return results(_name(a), a.out)


def main() -> None:
    a = parser().parse_args()

    import torch

    from samcam.io import read_ids, read_image
    from samcam.sam.mask_files import MaskStore
    from samcam.sam.model import MaskGenerator, build_sam

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"bench_generator: --device {a.device}, but torch {torch.__version__} sees no GPU")
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    voc = (a.data or data_root()) / "voc2012"
    ids = read_ids(voc / "ImageSets" / "Segmentation" / "train_with_images.txt")[: a.n]
    model = build_sam(a.model, a.checkpoint, device=a.device)
    gens = {g: MaskGenerator(model, g, points_per_side=a.points_per_side) for g in ("official", "fast")}
    warm = read_image(voc / "JPEGImages" / f"{ids[0]}.jpg")
    for g in gens:  # untimed: thread pools, kernels and (on a GPU) the CUDA context start before the first timing
        MaskGenerator(model, g, points_per_side=2).generate(warm)
    rows, fast_sets = [], {}
    for k, image_id in enumerate(ids):
        image = read_image(voc / "JPEGImages" / f"{image_id}.jpg")
        out, secs = {}, {}
        for g in ["official", "fast"] if k % 2 == 0 else ["fast", "official"]:
            sync()
            t0 = time.perf_counter()
            out[g] = gens[g].generate(image)
            sync()
            secs[g] = time.perf_counter() - t0
        fast_sets[image_id] = out["fast"]
        iou = np.concatenate([best_iou(out["official"], out["fast"]), best_iou(out["fast"], out["official"])])
        rows.append({"id": image_id, "size": list(image.shape[:2]), "official_s": secs["official"], "fast_s": secs["fast"],
                     "official_masks": len(out["official"]), "fast_masks": len(out["fast"]),
                     "min_best_iou": float(iou.min()) if len(iou) else 1.0, "identical_masks": identical(out["official"], out["fast"])})  # fmt: skip
        print(rows[-1], flush=True)
    del gens, model

    with tempfile.TemporaryDirectory() as tmp:  # part 2: the whole command, as a user runs it
        id_file = Path(tmp) / "ids.txt"
        id_file.write_text("\n".join(ids) + "\n")
        cmd = [sys.executable, "-m", "samcam.cli", "masks", "--images", str(voc / "JPEGImages"), "--ids", str(id_file),
               "--out", str(Path(tmp) / "masks"), "--model", a.model, "--device", a.device, "--points-per-side", str(a.points_per_side)]  # fmt: skip
        if a.checkpoint:
            cmd += ["--checkpoint", str(a.checkpoint)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        t0 = time.perf_counter()
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        if done.returncode:
            sys.exit(f"bench_generator: {' '.join(cmd)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        command_s = time.perf_counter() - t0
        store = MaskStore(Path(tmp) / "masks")
        same_as_part1 = all(identical(ms, fast_sets[i]) == len(fast_sets[i]) == len(ms) for i in ids for ms in [store.read(i)])

    off = sum(r["official_s"] for r in rows)
    fast = sum(r["fast_s"] for r in rows)
    n = len(rows)
    md = [f"# Mask generator: official vs fast ({a.model}, {a.points_per_side}×{a.points_per_side} grid, {a.device})", "",
          "Whole `generate` calls, image embedding included, alternating which generator runs first.", "",
          "| image | size | official s | fast s | ratio | masks official / fast | pixel-identical | min best IoU (both ways) |",
          "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        md.append(f"| {r['id']} | {r['size'][0]}×{r['size'][1]} | {r['official_s']:.1f} | {r['fast_s']:.1f} | {r['official_s'] / r['fast_s']:.2f}× | "
                  f"{r['official_masks']} / {r['fast_masks']} | {r['identical_masks']} | {r['min_best_iou']:.4f} |")  # fmt: skip
    md += ["", f"Total: official {off:.1f} s, fast {fast:.1f} s: **{off / fast:.2f}×** faster ({off / n:.1f} vs {fast / n:.1f} s per image); "
           f"per-image ratios {min(r['official_s'] / r['fast_s'] for r in rows):.2f}×–{max(r['official_s'] / r['fast_s'] for r in rows):.2f}×.", "",
           f"The whole command `samcam masks --images … --ids <{n} ids> --out … --device {a.device}` (start-up, model load, JPEGs in, compact files out): "
           f"**{command_s:.1f} s**, {command_s / n:.1f} s per image, against {off:.1f} s for the official generator's `generate` calls alone ({off / command_s:.2f}×); "
           f"its files hold {'the same' if same_as_part1 else 'DIFFERENT'} masks as the fast generator above."]  # fmt: skip
    write(_name(a),
          {"rows": rows, "ratio": off / fast, "command_s": command_s, "command_same_masks": same_as_part1,
           "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}}, "\n".join(md), a.out)  # fmt: skip


if __name__ == "__main__":
    main()
