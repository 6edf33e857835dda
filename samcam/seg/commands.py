"""Subcommand builders for ``samcam train-seg`` and ``samcam eval-seg`` (registered in ``samcam.cli``).

Each takes an ``argparse.ArgumentParser``, adds its arguments and returns ``run(args) -> int``, as
the other builders of :mod:`samcam.cli`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from samcam.cli import DEVICE, POSITIVE_INT, SEED, THREADS, _number, ids_option

from .recipe import OPTIMIZERS, Recipe

Run = Callable[[argparse.Namespace], int]


def _recipe_args(p: argparse.ArgumentParser) -> None:
    d = Recipe()
    g = p.add_argument_group("recipe (stored in the checkpoint; a resumed run must use the same)")
    g.add_argument("--backbone", default=d.backbone, choices=["lite0", "lite1", "lite2"], help=f"EfficientNet-Lite variant (default {d.backbone})")
    g.add_argument("--crop", type=_number(int, 32, 4096), default=d.crop, help=f"square crop size in pixels (default {d.crop})")
    g.add_argument("--scale-min", type=_number(float, 0.01, 8.0), default=d.scale_min, help=f"random scale range, low end (default {d.scale_min})")
    g.add_argument("--scale-max", type=_number(float, 0.01, 8.0), default=d.scale_max, help=f"random scale range, high end (default {d.scale_max})")
    g.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    g.add_argument("--batch-size", type=_number(int, 2, 4096), default=d.batch_size, help=f"at least 2 (batch norm), default {d.batch_size}")
    g.add_argument("--epochs", type=POSITIVE_INT, default=d.epochs, help=f"default {d.epochs}")
    g.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS, help=f"default {d.optimizer}")
    g.add_argument("--lr", type=_number(float, 0.0, 10.0), default=d.lr, help=f"backbone learning rate, poly-decayed (default {d.lr})")
    g.add_argument("--head-lr-mult", type=_number(float, 0.0, 1000.0), default=d.head_lr_mult, help=f"head learning rate = lr × this (default {d.head_lr_mult})")
    g.add_argument("--weight-decay", type=_number(float, 0.0, 1.0), default=d.weight_decay, help=f"default {d.weight_decay}")
    g.add_argument("--poly-power", type=_number(float, 0.0, 100.0), default=d.poly_power, help=f"default {d.poly_power}")
    g.add_argument("--seed", type=SEED, default=d.seed, help=f"default {d.seed}")
    g.add_argument("--head-channels", type=_number(int, 1, 4096), default=d.head_channels, help=f"LR-ASPP width (default {d.head_channels})")
    g.add_argument("--train-early", action="store_true", help="also train the stem and stride-2/4 blocks (frozen by default)")


def recipe_from_args(a: argparse.Namespace) -> Recipe:
    return Recipe(backbone=a.backbone, crop=a.crop, scale_min=a.scale_min, scale_max=a.scale_max, flip=not a.no_flip,
                  batch_size=a.batch_size, epochs=a.epochs, optimizer=a.optimizer, lr=a.lr, head_lr_mult=a.head_lr_mult,
                  weight_decay=a.weight_decay, poly_power=a.poly_power, seed=a.seed,
                  head_channels=a.head_channels, freeze_early=not a.train_early)  # fmt: skip


def train_seg(p: argparse.ArgumentParser) -> Run:
    """``samcam train-seg``: train a segmentation network on images + a pseudo-label folder (resumable)."""
    p.add_argument("--images", required=True, help="image folder (<id>.jpg)")
    p.add_argument("--labels", required=True, help="pseudo-label folder (<id>.png, values 0..20, 255 ignored)")
    ids_option(p, "the training images")
    p.add_argument("--out", required=True, help="run folder; its last.pt is resumed when present")
    p.add_argument("--device", type=DEVICE, help="cuda or cpu (default: cuda if present)")
    p.add_argument("--max-steps", type=POSITIVE_INT, help="stop after this many steps in all (the run can be resumed)")
    p.add_argument("--threads", type=THREADS, help="torch CPU threads")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")
    _recipe_args(p)

    def run(a: argparse.Namespace) -> int:
        import torch

        from samcam.outputs import check_output

        from .train import train

        check_output(a.out, a.images, a.labels, a.ids)
        if a.threads:
            torch.set_num_threads(a.threads)
        r = train(a.images, a.labels, a.ids.ids, a.out, recipe_from_args(a), device=a.device,
                  max_steps=a.max_steps, progress=a.progress or None)  # fmt: skip
        per_epoch = f", {sum(r.epoch_seconds) / len(r.epoch_seconds):.1f} s/epoch" if r.epoch_seconds else ""
        state = "complete" if r.complete else "stopped early (rerun to resume)"
        print(f"step {r.step}/{r.total_steps}, {state}{per_epoch}, peak RSS {r.peak_rss_mib:.0f} MiB -> {r.out}")
        return 0

    return run


MAX_SCALE = 4.0
"""The largest inference scale: 4× a VOC image is about 2000 × 2000 pixels."""


def _scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"scales must be comma-separated numbers, got {text!r}") from None
    if not scales or not all(0 < s <= MAX_SCALE for s in scales):  # NaN fails every comparison
        raise argparse.ArgumentTypeError(f"scales must lie in (0, {MAX_SCALE:g}], got {text!r}")
    return scales


def eval_seg(p: argparse.ArgumentParser) -> Run:
    """``samcam eval-seg``: predict on val images and score against ground truth (confusion-matrix mIoU)."""
    from .evaluate import MULTI_SCALES

    p.add_argument("--checkpoint", required=True, help="a train-seg checkpoint (<run>/last.pt)")
    p.add_argument("--images", required=True, help="image folder (<id>.jpg)")
    p.add_argument("--gt", required=True, help="ground-truth label folder (<id>.png)")
    ids_option(p, "the evaluation images")
    p.add_argument("--scales", type=_scales, default=(1.0,), help="comma-separated inference scales (default 1.0)")
    p.add_argument("--flip", action="store_true", help="also average the horizontal flip")
    p.add_argument("--multi-scale", action="store_true", help=f"shorthand for --scales {','.join(map(str, MULTI_SCALES))} --flip")
    p.add_argument("--save-predictions", help="write palette PNG predictions (<id>.png) into this folder")
    p.add_argument("--json", help="write a summary (mIoU, per-class IoU, recipe) to this JSON file")
    p.add_argument("--csv", help="write the per-class table to this CSV file")
    p.add_argument("--device", type=DEVICE, help="cuda or cpu (default: cuda if present)")
    p.add_argument("--threads", type=THREADS, help="torch CPU threads")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")

    def run(a: argparse.Namespace) -> int:
        import torch

        from samcam.outputs import check_outputs

        from .evaluate import evaluate_checkpoint, write_results

        check_outputs([a.save_predictions, a.json, a.csv], [a.images, a.gt, a.ids, a.checkpoint])
        if a.threads:
            torch.set_num_threads(a.threads)
        scales, flip = (MULTI_SCALES, True) if a.multi_scale else (a.scales, a.flip)
        ev, summary = evaluate_checkpoint(a.checkpoint, a.images, a.gt, a.ids.ids, scales, flip,
                                          a.save_predictions, a.device, progress=a.progress or None)  # fmt: skip
        write_results(ev, summary, a.json, a.csv)
        how = f"scales {','.join(map(str, scales))}" + (" + flip" if flip else "")
        print(f"val mIoU {100 * summary['miou']:.2f} over {summary['n_images']} images ({how}) <- {a.checkpoint}")
        return 0

    return run
