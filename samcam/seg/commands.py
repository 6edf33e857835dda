"""Subcommand builders for ``samcam train-seg``, ``eval-seg`` and ``seg-search`` (registered in ``samcam.cli``).

Each takes an ``argparse.ArgumentParser``, adds its arguments and returns ``run(args) -> int``, as
the other builders of :mod:`samcam.cli`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from samcam.cli import POSITIVE_INT, device_option, ids_option, refuse_one_folder, refuse_trained, threads_option
from samcam.config import add_options, from_args

from .recipe import Recipe, read_recipe, recipe_file, recipe_names

Run = Callable[[argparse.Namespace], int]


def _recipe_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("recipe (stored in the checkpoint; a resumed run must use the same)")
    g.add_argument("--recipe", help=f"a recipe file (YAML mapping of the fields below) or a shipped one: {', '.join(recipe_names())} "
                                    "(the recipe search's choice, results/seg/search); options given beside it override its fields")  # fmt: skip
    add_options(g, Recipe, given_only=True)


def recipe_from_args(a: argparse.Namespace) -> Recipe:
    """The recipe of ``--recipe`` (else the defaults) with the fields given as options in its place."""
    return from_args(Recipe, a, base=read_recipe(a.recipe) if a.recipe is not None else None)


def train_seg(p: argparse.ArgumentParser) -> Run:
    """``samcam train-seg``: train a segmentation network on images + a pseudo-label folder (resumable)."""
    p.add_argument("--images", required=True, help="image folder (<id>.jpg)")
    p.add_argument("--labels", required=True, help="pseudo-label folder (<id>.png, values 0..20, 255 ignored)")
    ids_option(p, "the training images")
    p.add_argument("--out", required=True, help="run folder; its last.pt is resumed when present")
    device_option(p)
    p.add_argument("--max-steps", type=POSITIVE_INT, help="stop after this many steps in all (the run can be resumed)")
    threads_option(p)
    p.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")
    ev = p.add_argument_group("evaluation once the run is complete (as eval-seg, single scale, into the run folder: "
                              "eval.json and pred/<id>.png, the layout of samcam.seg.report)")  # fmt: skip
    ev.add_argument("--eval-gt", help="ground-truth label folder (<id>.png) of the evaluation images")
    ids_option(ev, "the evaluation images (with --eval-gt)", required=False, flag="--eval-ids")
    ev.add_argument("--record", help="also write the evaluated run's record here (JSON: recipe, training history, scores, commit, "
                                     "machine; no weights), what `samcam.seg.report` tables read where the run folder is not kept")  # fmt: skip
    _recipe_args(p)

    def run(a: argparse.Namespace) -> int:
        from pathlib import Path

        import torch

        from samcam.outputs import check_folder_output, check_output, check_outputs

        from .train import CHECKPOINT, EVAL_JSON, PREDICTIONS, train

        if (a.eval_gt is None) != (a.eval_ids is None):
            raise ValueError("--eval-gt and --eval-ids go together")
        if a.record is not None and a.eval_gt is None:
            raise ValueError("--record needs --eval-gt and --eval-ids (a record holds the evaluation)")
        recipe = recipe_from_args(a)
        given = (a.images, a.labels, a.ids, a.eval_gt, a.eval_ids, recipe_file(a.recipe) if a.recipe is not None else None)
        check_folder_output(a.out, *given)
        refuse_one_folder(("--images", a.images), [("--labels", a.labels), ("--eval-gt", a.eval_gt)])
        for written in (EVAL_JSON, PREDICTIONS) if a.eval_gt is not None else ():
            check_output(Path(a.out) / written, *given)  # the predictions never over the ground truth or the labels
        if a.record is not None:
            from .report import check_record_target

            from .train import labels_fingerprint

            check_outputs([a.record, a.out], given, files=[a.record])
            check_record_target(a.record, recipe.to_dict(), labels_fingerprint(a.labels, a.ids.ids))  # before hours of training, not after them
        if a.eval_gt is not None:  # the evaluation's files are there before hours of training, not found missing after them
            from samcam.io import find_image, folder_ids

            # a score of training images is no val score: it would rank in seg-search as one
            refuse_trained(a.eval_ids, a.ids.ids, f"training images of --ids {a.ids}", "train-seg scores held-out images")
            folder_ids(a.eval_gt, ".png", "ground-truth label", a.eval_ids.ids)
            for i in a.eval_ids.ids:
                find_image(a.images, i)
        if a.threads:
            torch.set_num_threads(a.threads)
        r = train(a.images, a.labels, a.ids.ids, a.out, recipe, device=a.device,
                  max_steps=a.max_steps, progress=a.progress or None)  # fmt: skip
        per_epoch = f", {sum(r.epoch_seconds) / len(r.epoch_seconds):.1f} s/epoch" if r.epoch_seconds else ""
        state = "complete" if r.complete else "stopped early (rerun to resume)"
        print(f"step {r.step}/{r.total_steps}, {state}{per_epoch}, peak RSS {r.peak_rss_mib:.0f} MiB -> {r.out}")
        if a.eval_gt is not None and not r.complete:
            print("not evaluated yet: the run is not complete (rerun to resume; it is evaluated once it is)")
        if a.eval_gt is not None and r.complete:
            from .evaluate import evaluate_checkpoint, write_results

            out = Path(a.out)
            ev, summary = evaluate_checkpoint(out / CHECKPOINT, a.images, a.eval_gt, a.eval_ids.ids, save_dir=out / PREDICTIONS,
                                              device=a.device, progress=a.progress or None)  # fmt: skip
            write_results(ev, summary, out / EVAL_JSON)
            print(f"{_val_line(summary, (1.0,), False, out / CHECKPOINT)} -> {out / EVAL_JSON}")
            if a.record is not None:
                from .report import write_record

                write_record(out, a.record)
                print(f"run record -> {a.record}")
        return 0

    return run


def _val_line(summary: dict, scales, flip: bool, source) -> str:
    how = f"scales {','.join(map(str, scales))}" + (" + flip" if flip else "")
    miou = "undefined (no pixel to score)" if summary["miou"] is None else f"{100 * summary['miou']:.2f}"
    return f"val mIoU {miou} over {summary['n_images']} images ({how}) <- {source}"


MAX_SCALE = 4.0
"""The largest inference scale: 4× a VOC image is about 2000 × 2000 pixels."""


def _scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"scales must be comma-separated numbers, got {text!r}") from None
    if not scales or not all(0 < s <= MAX_SCALE for s in scales):  # NaN fails every comparison
        raise argparse.ArgumentTypeError(f"scales must lie in (0, {MAX_SCALE:g}], got {text!r}")
    if len(set(scales)) != len(scales):
        raise argparse.ArgumentTypeError(f"scales must differ (a scale given twice would count twice), got {text!r}")
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
    device_option(p)
    threads_option(p)
    p.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")

    def run(a: argparse.Namespace) -> int:
        import torch

        from samcam.io import sha256_file
        from samcam.outputs import check_outputs

        from .evaluate import check_evaluation_target, evaluate_checkpoint, write_results
        from .train import read_checkpoint

        given = [a.images, a.gt, a.ids, a.checkpoint]
        check_outputs([a.save_predictions, a.json, a.csv], given, files=[a.json, a.csv], tables={a.csv: ("class", "iou")})
        refuse_one_folder(("--images", a.images), [("--gt", a.gt)])
        if a.threads:
            torch.set_num_threads(a.threads)
        if a.multi_scale:
            from samcam.cli import refuse_unused

            refuse_unused(p, a, ("scales", "flip"), f"with --multi-scale (it sets --scales {','.join(map(str, MULTI_SCALES))} --flip)")
        scales, flip = (MULTI_SCALES, True) if a.multi_scale else (a.scales, a.flip)
        ids = a.ids.ids  # the id list is checked before the checkpoint, as every command checks it
        sha = sha256_file(a.checkpoint, what="checkpoint")  # once: the target's check and the summary
        check_evaluation_target(a.json, a.checkpoint, sha)  # before the evaluation, not after it
        trained = read_checkpoint(a.checkpoint).get("ids")  # a score on the images the network learnt from is no val score
        if trained is None:
            from samcam.progress import say_once

            say_once("untracked-ids", f"{a.checkpoint} records no training ids (made before train-seg kept them): "
                                      f"whether {a.ids} holds training images is not checked")  # fmt: skip
        else:
            refuse_trained(a.ids, trained, f"images the network {a.checkpoint} was trained on", "eval-seg scores held-out images")
        ev, summary = evaluate_checkpoint(a.checkpoint, a.images, a.gt, ids, scales, flip,
                                          a.save_predictions, a.device, progress=a.progress or None, checkpoint_sha256=sha)  # fmt: skip
        write_results(ev, summary, a.json, a.csv)
        print(_val_line(summary, scales, flip, a.checkpoint))
        return 0

    return run


def seg_search(p: argparse.ArgumentParser) -> Run:
    """``samcam seg-search``: the recipe-search table of a folder of runs (``<config>_s<seed>/``, each
    made by ``train-seg --eval-gt``) as ``table.csv`` and ``table.md``."""
    p.add_argument("--runs", required=True, help="folder of run folders <config>_s<seed>/ (last.pt, eval.json)")
    p.add_argument("--out", required=True, help="folder for table.csv and table.md (new, or holding only these two, which are rewritten)")
    p.add_argument("--configs", nargs="+", help="only these configurations, in this order (default: every finished run)")

    def run(a: argparse.Namespace) -> int:
        from pathlib import Path

        from samcam.outputs import check_folder_output, is_temporary

        from .report import SEARCH_FILES, write_search

        check_folder_output(a.out, a.runs)
        if Path(a.out).is_dir():  # the table is rewritten in place, but never into a folder holding anything else
            other = sorted(p.name for p in Path(a.out).iterdir() if p.name not in SEARCH_FILES and not is_temporary(p.name))
            if other:
                raise ValueError(f"{a.out}: holds files seg-search did not write ({', '.join(other[:3])}); choose another output folder")
        if a.configs is not None and len(set(a.configs)) != len(a.configs):
            raise ValueError(f"--configs names {next(c for c in a.configs if a.configs.count(c) > 1)!r} twice")
        t = write_search(a.runs, a.out, a.configs)
        scored = t.dropna(subset=["val_miou"])
        best = f"; best {scored.loc[scored['val_miou'].idxmax(), 'config']}, val mIoU {scored['val_miou'].max():.2f}" if len(scored) else ""
        print(f"{len(t)} runs{best} -> {a.out}")
        return 0

    return run
