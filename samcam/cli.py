"""The ``samcam`` command: one subcommand per pipeline step.

Each subcommand is a thin wrapper: it parses arguments and calls the module that owns the step.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from samcam import __version__
from samcam.config import number

#: name → (help, fn): ``fn(parser)`` adds the subcommand's arguments and returns its ``run(args)``.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], Callable[[argparse.Namespace], int]]]] = {}


def command(name: str, help: str):
    """Register ``fn(parser) -> run(args)`` as subcommand ``name``."""

    def deco(fn):
        COMMANDS[name] = (help, fn)
        return fn

    return deco


def _alpha_threshold(uses: tuple[int, ...]):
    """An argparse type: a CAM threshold from which background powers are derived
    (:func:`samcam.refine.affinity.alphas_for_threshold`: ``(α/4, α, 2α)``), strictly inside (0, 1),
    and low enough that the powers the command ``uses`` (their indices) are at most
    :data:`samcam.refine.affinity.MAX_POWER`."""

    def parse(text: str) -> float:
        from samcam.refine.affinity import MAX_POWER, alphas_for_threshold

        v = _number(float, 1e-6, 1 - 1e-6)(text)  # NaN and 1 alike: outside the one range said (the powers need 0 < t < 1)
        used = max(alphas_for_threshold(v)[i] for i in uses)
        if used > MAX_POWER:
            raise argparse.ArgumentTypeError(f"{text} gives a background power of {used:.4g}, above {MAX_POWER:g}; use a larger threshold")
        return v

    return parse


_number = number  # the argparse number type (samcam.config: one home with the config fields' ranges)


FRACTION = _number(float, 0.0, 1.0)
#: valid ranges of the mask generator's settings (samcam.sam.model.AMG_DEFAULTS); the upper bounds keep
#: a typo from asking for billions of points or crops (the official defaults: 32 per side, 64 per batch, no crops)
AMG_RANGES: dict[str, tuple[float | None, float | None]] = {
    "points_per_side": (1, 256), "points_per_batch": (1, 4096), "pred_iou_thresh": (0.0, 1.0),
    "stability_score_thresh": (0.0, 1.0), "stability_score_offset": (0.0, None), "box_nms_thresh": (0.0, 1.0),
    "crop_n_layers": (0, 4), "crop_nms_thresh": (0.0, 1.0), "crop_overlap_ratio": (0.0, 1.0),
    "crop_n_points_downscale_factor": (1, 64), "min_mask_region_area": (0, None),
}
POSITIVE_INT = _number(int, 1)


#: ``--seed``: a whole number numpy and torch both take (below 2**32)
SEED = _number(int, 0, 2**32 - 1)


def DEVICE(text: str) -> str:
    """An argparse type for ``--device``: one device of this machine (``cpu``, ``mps``, ``cuda[:N]``),
    checked as ``--devices`` entries are (:func:`samcam.pipeline.workers.parse_devices`), before any
    output is made; torch is imported only for a CUDA or MPS name."""
    from samcam.pipeline.workers import parse_devices

    try:
        devices = parse_devices(text, "--device")
    except ValueError as e:
        raise argparse.ArgumentTypeError(re.sub(r"^--devices? [^:]*: ", "", str(e)).replace("cuda:0,cuda:1 or cpu,cpu", "cuda:0 or cpu")) from None
    if len(devices) != 1:
        raise argparse.ArgumentTypeError("one device (for several, --devices)")
    return devices[0]


def THREADS(text: str) -> int:
    """An argparse type for ``--threads``: a whole number from 1 to what ``--workers`` allows
    (:func:`samcam.pipeline.workers.resolve_workers`), so a typo never asks for 100000 threads."""
    from samcam.pipeline.workers import resolve_workers

    try:
        return resolve_workers(POSITIVE_INT(text), "--threads")
    except ValueError as e:
        raise argparse.ArgumentTypeError(re.sub(r"^--threads [^:]*: ", "", str(e))) from None


class IdFile(str):
    """An id-list argument (``--ids``, ``--eval-ids``): its path, so output checks see the file, and
    its ids, read once when a command first asks (:func:`samcam.io.read_ids`: names only, checked)."""

    @functools.cached_property
    def ids(self) -> list[str]:
        from samcam.io import read_ids

        return read_ids(self)


def ids_option(p: argparse.ArgumentParser, help: str, required: bool = True, flag: str = "--ids") -> None:
    """Declare an id-list option (every command's ``--ids`` is declared here): an :class:`IdFile`."""
    p.add_argument(flag, required=required, type=IdFile, metavar="IDS", help=f"id list (a text file, one id per line): {help}")


def ids_of(path: IdFile | None) -> list[str] | None:
    """The ids of an optional id-list option; ``None`` when it was not given."""
    return path.ids if path is not None else None


def refuse_trained(id_file: IdFile, trained: Iterable[str], what: str, why: str) -> None:
    """``ValueError`` naming the id list ``id_file`` when any of its ids is among ``trained``, the ids a
    network learnt from (``what``, in words): a score on them is no held-out score, and would be read
    and ranked as one (cam-eval, train-seg's --eval-ids, eval-seg)."""
    trained = set(trained)
    seen = [i for i in id_file.ids if i in trained]
    if seen:
        raise ValueError(f"{id_file}: {len(seen)} of its {len(id_file.ids)} ids are {what} (e.g. {seen[0]}); {why}")


#: why an image folder may not be a label folder (:func:`refuse_one_folder`)
LABELS_AS_IMAGES = "its label maps would be read as the images; give the image folder (<id>.jpg) to --images"


def refuse_one_folder(first: tuple[str, str | os.PathLike | None], others: Sequence[tuple[str, str | os.PathLike | None]],
                      why: str = LABELS_AS_IMAGES) -> None:  # fmt: skip
    """``ValueError`` when the folder of ``first`` (an option and its path) is the folder of one of
    ``others``, resolved (a link, ``..`` or a bind mount alike: :func:`os.path.samefile`): one folder
    given as two inputs of different kinds (images and their labels or ground truth, predictions and
    ground truth) would be read as both. Every command taking two such inputs checks them here;
    options not given, or paths not there, are left to their readers."""
    flag, path = first
    if path is None or not os.path.exists(path):
        return
    for other_flag, other in others:
        if other is not None and os.path.exists(other) and os.path.samefile(path, other):
            raise ValueError(f"{flag} {path} and {other_flag} {other} are one folder: {why}")


def device_option(p: argparse.ArgumentParser) -> None:
    """``--device``: the one device a command computes on (declared here for every command)."""
    p.add_argument("--device", type=DEVICE, help="where to compute: cuda[:N] or cpu (default: cuda if present)")


def devices_options(p: argparse.ArgumentParser, what: str = "") -> None:
    """``--devices`` (one worker process per device) and ``--threads`` (per worker), for the commands
    that split their ids over devices; ``what``: the mode they apply to, where a command has several."""
    p.add_argument("--devices", help=f"{what}one worker process per device, e.g. cuda:0,cuda:1 (each takes a disjoint part of the ids)")
    threads_option(p, "torch CPU threads (per worker with --devices)")


def threads_option(p: argparse.ArgumentParser, help: str = "torch CPU threads") -> None:
    """``--threads`` (:data:`THREADS`: restored when the command ends, see :func:`main`)."""
    p.add_argument("--threads", type=THREADS, help=help)


def dataset_option(p: argparse.ArgumentParser) -> None:
    """``--dataset``: the label space (:data:`samcam.data.spaces.DATASETS`, any case)."""
    p.add_argument("--dataset", default="voc", help="label space: voc (default) or coco")


def sam_options(p: argparse.ArgumentParser) -> None:
    """``--model`` and ``--checkpoint`` of SAM (:data:`samcam.sam.model.MODEL_TYPES`, :mod:`samcam.sam.weights`)."""
    from samcam.sam.model import MODEL_TYPES

    p.add_argument("--model", default="vit_t", choices=MODEL_TYPES, help="SAM model type (default vit_t = MobileSAM)")
    p.add_argument("--checkpoint", help="SAM checkpoint file; default: the verified official one, fetched into the cache")


def classifier_options(p: argparse.ArgumentParser) -> None:
    """``--checkpoint`` and ``--model`` of a CAM classifier (:data:`samcam.cam.nets.BACKBONES`)."""
    from samcam.cam.nets import BACKBONES

    p.add_argument("--checkpoint", required=True, help="classifier checkpoint (samcam train-classifier, or IRN res50_cam.pth for resnet50-irn)")
    p.add_argument("--model", default="efficientnet-lite0", choices=BACKBONES, help="classifier backbone of the checkpoint (default efficientnet-lite0)")


#: ``--thresholds``' default: the background thresholds of a sweep (IRN's range, in steps of 0.05)
THRESHOLDS = "0.05:0.60:0.05"


# ----------------------------------------------------------------------------- eval


@command("eval", "score pseudo labels against ground truth (standard confusion-matrix mIoU)")
def _eval(p: argparse.ArgumentParser):
    p.add_argument("--pred", required=True, help="folder of predicted label PNGs (<id>.png)")
    p.add_argument("--gt", required=True, help="folder of ground-truth label PNGs")
    ids_option(p, "the ids to score; default: every .png in --pred", required=False)
    dataset_option(p)
    p.add_argument("--csv", help="write the per-class table to this CSV file")
    p.add_argument("--per-image-csv", help="write per-image rows (id, mIoU, per-class IoU) to this CSV")

    def run(a: argparse.Namespace) -> int:
        from samcam.data.spaces import get_dataset
        from samcam.outputs import check_outputs, write_table
        from samcam.metrics import format_table
        from samcam.pipeline.evaluate import evaluate_folders

        spec = get_dataset(a.dataset)
        ids = ids_of(a.ids)
        check_outputs([a.csv, a.per_image_csv], [a.pred, a.gt, a.ids], files=[a.csv, a.per_image_csv], tables={a.csv: ("class", "iou"), a.per_image_csv: ("id", "miou")})  # tables: a folder's path is refused
        refuse_one_folder(("--pred", a.pred), [("--gt", a.gt)], "the labels would be scored against themselves (100)")
        ev = evaluate_folders(a.pred, a.gt, spec, ids)
        where = f"the {len(ids)} ids of {a.ids}" if ids is not None else f"every prediction in {a.pred}"
        print(f"evaluated {len(ev.image_ids)} images ({where})")
        if a.csv:
            write_table(a.csv, ev.per_class_table())
        if a.per_image_csv:
            write_table(a.per_image_csv, ev.per_image_table())
        print(format_table(ev))
        return 0

    return run


# ----------------------------------------------------------------------------- weights


@command("weights", "list SAM checkpoints, fetch one (SHA-256 verified), or print its cached path")
def _weights(p: argparse.ArgumentParser):
    p.add_argument("action", choices=["list", "fetch", "path"], help="list known checkpoints, fetch one, or print its cached path")
    p.add_argument("name", nargs="?", help="checkpoint name: vit_t, vit_b, vit_l, vit_h")

    def run(a: argparse.Namespace) -> int:
        from samcam.sam import weights

        if a.action == "list" and a.name:
            raise ValueError(f"weights list takes no checkpoint name (given {a.name!r}); it lists every checkpoint")
        if a.action == "list":
            print(f"cache: {weights.home()}")
            for ck in weights.CHECKPOINTS.values():
                state = "cached" if weights.cached_path(ck.name) else "-"
                print(f"{ck.name:6} {ck.filename:22} {ck.size / 2**20:8.1f} MiB  sha256 {ck.sha256[:12]}…  {state}")
            return 0
        if not a.name:
            raise ValueError(f"weights {a.action} needs a checkpoint name")
        path = weights.fetch(a.name) if a.action == "fetch" else weights.cached_path(a.name)
        if path is None:
            file = weights.home() / weights.get_checkpoint(a.name).filename
            if file.exists():  # there, but not the file it should be
                raise ValueError(f"{file}: not the verified {a.name} checkpoint (size or SHA-256 differs); remove it and run: samcam weights fetch {a.name}")
            raise FileNotFoundError(f"{a.name} is not cached (no {file}); run: samcam weights fetch {a.name}")
        print(path)
        return 0

    return run


# ----------------------------------------------------------------------------- masks


def _add_amg_args(p: argparse.ArgumentParser) -> None:
    from samcam.sam.model import AMG_DEFAULTS, GENERATORS

    sam_options(p)
    p.add_argument("--generator", default="fast", choices=GENERATORS, help="samcam's fast generator or the official one")
    device_option(p)
    for key, value in AMG_DEFAULTS.items():
        lo, hi = AMG_RANGES[key]
        p.add_argument(f"--{key.replace('_', '-')}", type=_number(type(value), lo, hi), default=value, help=f"default {value}")


def _amg_kwargs(a: argparse.Namespace) -> dict:
    from samcam.sam.model import AMG_DEFAULTS

    return {k: getattr(a, k) for k in AMG_DEFAULTS}


@command("masks", "generate SAM 'segment everything' masks for a folder of images (resumable)")
def _masks(p: argparse.ArgumentParser):
    from samcam.sam.mask_files import FORMATS as MASK_FORMATS

    p.add_argument("--images", required=True, help="folder of images (<id>.jpg or .png)")
    p.add_argument("--out", required=True, help="mask folder (created; ids already there are skipped)")
    ids_option(p, "the images to process; default: every image in --images", required=False)
    p.add_argument("--format", default="compact", choices=MASK_FORMATS, help="compact (<id>.json.gz, RLE) or official (amg.py folders)")
    p.add_argument("--shard", help="I/N: process every N-th id starting at I (0-based); auto: this task's part of a SLURM job array")
    devices_options(p)
    _add_amg_args(p)

    def run(a: argparse.Namespace) -> int:
        from samcam.outputs import check_folder_output
        from samcam.pipeline.masks import parse_shard, run_masks
        from samcam.pipeline.workers import parse_devices

        shard, devices = parse_shard(a.shard), parse_devices(a.devices, threads=a.threads)
        check_folder_output(a.out, a.ids)  # run_masks checks the images and the checkpoint; the id list is the command's
        if a.threads:
            import torch

            torch.set_num_threads(a.threads)
        s = run_masks(a.images, a.out, ids_of(a.ids), a.model, a.checkpoint, a.format, shard, a.generator, a.device,
                      devices=devices, threads=a.threads, **_amg_kwargs(a))  # fmt: skip
        print(s.line("images"))
        return 0

    return run


# ----------------------------------------------------------------------------- merge


@command("merge", "label SAM masks with pseudo labels (the paper's rules); writes palette PNGs")
def _merge(p: argparse.ArgumentParser):
    from samcam.pipeline.workers import DEFAULT_WORKERS_CAP, MAX_WORKERS_PER_CORE
    from samcam.refine.merge import COVERAGE, DEFAULT_RULE, MAJORITY, RULES

    p.add_argument("--pseudo", required=True, help="folder of pseudo-label PNGs (<id>.png)")
    p.add_argument("--masks", required=True, help="folder of mask sets (compact or official layout, auto-detected)")
    p.add_argument("--out", required=True, help="output folder (ids already there are skipped)")
    p.add_argument("--rule", default=DEFAULT_RULE, choices=RULES, help=f"merge rule (default {DEFAULT_RULE})")
    p.add_argument("--majority", type=FRACTION, default=MAJORITY, help=f"take S if |S∩C| > majority·|S| (default {MAJORITY})")
    p.add_argument("--coverage", type=FRACTION, default=COVERAGE, help=f"max_iou_imp2: also take S if |S∩C|/|C| ≥ coverage (default {COVERAGE})")
    ids_option(p, "the labels to merge; default: every .png in --pseudo", required=False)
    p.add_argument("--workers", type=POSITIVE_INT, help=f"processes (default: the cores available to this process, at most {DEFAULT_WORKERS_CAP}; at most {MAX_WORKERS_PER_CORE} per core)")
    p.add_argument("--missing-masks", default="error", choices=["error", "keep-cam"], help="an id without masks: error (default) or keep its CAM label")
    dataset_option(p)

    def run(a: argparse.Namespace) -> int:
        from samcam.data.spaces import get_dataset
        from samcam.pipeline.merge import merge_folders
        from samcam.refine.merge import MergeRule

        if not RULES[a.rule][0]:
            refuse_unused(p, a, ("coverage",), f"with --rule {a.rule} (only {', '.join(r for r, (test, _) in RULES.items() if test)} tests coverage)")
        rule = MergeRule.named(a.rule, a.majority, a.coverage)
        s = merge_folders(a.pseudo, a.masks, a.out, get_dataset(a.dataset), rule, ids_of(a.ids), a.workers, a.missing_masks)
        print(f"{s.merged} merged, {s.kept_cam} kept their CAM label (no masks), {s.skipped} already there -> {s.out}")
        return 0

    return run


# ----------------------------------------------------------------------------- CAMs


def _labels_args(p: argparse.ArgumentParser) -> None:
    from samcam.data.voc import DEFAULT_LABEL_SOURCE, LABEL_SOURCES

    p.add_argument("--voc", help="VOC root (JPEGImages/, SegmentationClass/, ...); default $SAMCAM_VOC_ROOT")
    p.add_argument("--labels", default=DEFAULT_LABEL_SOURCE, choices=LABEL_SOURCES, help="image-level labels from ground-truth masks (which classes occur), IRN's cls_labels.npy, or Annotations XML")
    p.add_argument("--cls-labels", help="path of IRN's cls_labels.npy (for --labels cls_labels)")


@command("train-classifier", "fine-tune a multi-label CAM classifier on image-level labels only")
def _train(p: argparse.ArgumentParser):
    from samcam.config import add_options

    from samcam.pipeline.train_classifier import TrainConfig

    ids_option(p, "the training images")
    p.add_argument("--out", required=True, help="checkpoint file to write (resumes if it exists)")
    ids_option(p, "held-out images: report classification mAP on them", required=False, flag="--eval-ids")
    add_options(p, TrainConfig)
    p.add_argument("--rescale", nargs=2, type=_number(float, 0.05, 4.0), metavar=("MIN", "MAX"),
                   help="draw each sample's scale (of the original image) from [MIN, MAX], as IRN's long-side rescaling "
                        "(default: one fixed scale, short side 1.15 x crop)")  # fmt: skip
    device_option(p)
    _labels_args(p)

    def run(a: argparse.Namespace) -> int:
        import numpy as np

        from samcam.cam.infer import predict_scores
        from samcam.cam.nets import build_camnet
        from samcam.data.voc import VocTree
        from samcam.config import from_args
        from samcam.outputs import check_file_output
        from samcam.metrics import average_precision
        from samcam.pipeline.train_classifier import TrainConfig, train_classifier

        check_file_output(a.out, VocTree.given_root(a.voc), a.ids, a.eval_ids, a.cls_labels)
        if not a.train_backbone:
            refuse_unused(p, a, ("lr_backbone",), "with --head-only (the backbone stays frozen)")
        tree = VocTree(a.voc)
        cfg = from_args(TrainConfig, a, rescale=tuple(a.rescale) if a.rescale else None)
        ids = a.ids.ids
        labels, y = _image_classes(tree, a.ids, a, "images", "a classifier learns from images with objects")
        if a.eval_ids:  # said before the training, not after it
            refuse_trained(a.eval_ids, ids, f"training images of --ids {a.ids}", "train-classifier scores held-out images")
            _, yv = _image_classes(tree, a.eval_ids, a, "held-out images", "a classifier is scored on images with objects")
        res = train_classifier([tree.read_image(i) for i in ids], y, a.out, cfg, ids=ids, device=_device(a.device))
        shown = [round(x, 4) for x in res.losses]
        shown = shown if len(shown) <= 8 else [*shown[:3], "...", *shown[-3:]]
        print(f"trained {a.backbone} on {len(ids)} images in {res.seconds:.0f} s; loss per epoch {shown} -> {res.out}")
        if a.eval_ids:
            ev_ids = a.eval_ids.ids
            net = build_camnet(a.backbone, checkpoint=a.out).to(_device(a.device))
            ap = average_precision(predict_scores(net, [tree.read_image(i) for i in ev_ids], [tree.image_path(i) for i in ev_ids]), yv)
            print(f"held-out classification mAP over {len(ev_ids)} images: {100 * np.nanmean(ap):.2f}")
        return 0

    return run


@command("cam", "compute multi-scale CAMs (IRN .npy layout) for the image classes")
def _cam(p: argparse.ArgumentParser):
    p.add_argument("--images", required=True, help="folder of images (<id>.jpg)")
    p.add_argument("--out", required=True, help="folder for <id>.npy CAM files (ids already there are skipped)")
    classifier_options(p)
    ids_option(p, "the images; default: every image that has labels", required=False)
    device_option(p)
    devices_options(p)
    _labels_args(p)

    def run(a: argparse.Namespace) -> int:
        from samcam.cam.nets import build_camnet
        from samcam.data.voc import VocTree, image_labels, label_source_path
        from samcam.io import image_index
        from samcam.outputs import check_folder_output
        from samcam.pipeline.cam import extract_cams
        from samcam.pipeline.masks import select_ids
        from samcam.pipeline.workers import parse_devices

        check_folder_output(a.out, a.images, VocTree.given_root(a.voc), a.checkpoint, a.ids)
        devices = parse_devices(a.devices, threads=a.threads)
        if devices and a.device:
            raise ValueError("give --device or --devices, not both")
        if a.threads:
            import torch

            torch.set_num_threads(a.threads)
        tree = VocTree(a.voc)
        refuse_one_folder(("--images", a.images), [("the ground truth of --voc", tree.gt_dir)])
        index = image_index(a.images)
        ids = select_ids(index, ids_of(a.ids), (0, 1), a.images)
        net = build_camnet(a.model, checkpoint=a.checkpoint).to(_device(a.device))
        provenance = {"labels": a.labels}  # the label file or folder is an input, recorded by its content (label_source)
        s = extract_cams(net, index, image_labels(tree, ids, a.labels, a.cls_labels), a.out, provenance=provenance, devices=devices, threads=a.threads,
                         label_source=label_source_path(tree, a.labels, a.cls_labels))  # fmt: skip
        print(s.line("CAM files"))
        return 0

    return run


@command("cam-eval", "score a classifier on held-out images: classification mAP and its CAMs' mIoU and error pixels per threshold")
def _cam_eval(p: argparse.ArgumentParser):
    classifier_options(p)
    ids_option(p, "held-out images with ground truth (never the ids whose labels you score)")
    p.add_argument("--thresholds", default=THRESHOLDS, help=f"START:STOP:STEP background thresholds (default {THRESHOLDS})")
    p.add_argument("--csv", help="write the table here (one row per threshold; mAP in every row)")
    device_option(p)
    _labels_args(p)

    def run(a: argparse.Namespace) -> int:
        import numpy as np

        from samcam.cam.infer import predict_scores
        from samcam.cam.nets import build_camnet
        from samcam.data.voc import VocTree
        from samcam.io import sha256_file
        from samcam.outputs import SCORED_NETWORK, check_file_output, check_table_target, fingerprint_files, write_table
        from samcam.metrics import average_precision
        from samcam.pipeline.cam import score_cams

        check_file_output(a.csv, VocTree.given_root(a.voc), a.ids, a.checkpoint, a.cls_labels, table=("map", "threshold"))
        ts = _threshold_range(a.thresholds)
        tree = VocTree(a.voc)
        ids = a.ids.ids
        refuse_trained(a.ids, _trained_ids(a.checkpoint), f"images the classifier {a.checkpoint} was trained on", "cam-eval scores held-out images")
        labels, y = _image_classes(tree, a.ids, a, "held-out images", "a classifier is scored on images with objects")
        net = build_camnet(a.model, checkpoint=a.checkpoint).to(_device(a.device))
        network = sha256_file(a.checkpoint, what="classifier checkpoint")
        check_table_target(a.csv, network, "classifier")  # before the scoring
        m_ap = 100 * float(np.nanmean(average_precision(predict_scores(net, [tree.read_image(i) for i in ids], [tree.image_path(i) for i in ids]), y)))
        images = {i: tree.image_path(i) for i in ids}
        df = score_cams(net, images, tree.root / "SegmentationClass", labels, ts, spec=tree.spec)
        df.insert(0, "map", m_ap)
        print(shown_table(df.drop(columns="map")))
        best = df.loc[df.miou.idxmax()]
        print(f"classification mAP {m_ap:.2f}; best threshold on these {len(ids)} images {best.threshold:g}: "
              f"CAM mIoU {100 * best.miou:.2f}, false activation {best.false_pct:.1f} % of object pixels")  # fmt: skip
        if a.csv:  # with what it scored: cam-select compares candidates scored on the same images and ground truth only
            write_table(a.csv, df.assign(scored_on=fingerprint_files({i: tree.label_path(i) for i in labels}), **{SCORED_NETWORK: network}))
        return 0

    return run


def _image_classes(tree, id_file: IdFile, a: argparse.Namespace, what: str, why: str):
    """The image-level labels of ``id_file``'s ids (``--labels``/``--cls-labels`` of ``a``) and their
    one-hot matrix; ``ValueError`` naming the list when no image has an object class (no positive of
    any class: nothing to learn, and neither an average precision nor a CAM error rate exists)."""
    import numpy as np

    from samcam.data.voc import image_labels, one_hot

    ids = id_file.ids
    labels = image_labels(tree, ids, a.labels, a.cls_labels)
    y = np.stack([one_hot(labels[i], tree.spec) for i in ids])
    if not y.any():
        raise ValueError(f"{id_file}: none of its {len(ids)} {what} has an object class in its labels ({a.labels}); {why}")
    return labels, y


def _trained_ids(checkpoint: str) -> set[str]:
    """The ids a samcam classifier checkpoint records it was trained on (none for IRN's ``res50_cam.pth``,
    or a checkpoint that does not exist: building the network names that)."""
    from samcam.io import load_checkpoint

    if not Path(checkpoint).is_file():
        return set()
    ck = load_checkpoint(checkpoint)
    ids = ck.get("ids") if isinstance(ck, dict) else None
    return {i for i in ids if isinstance(i, str)} if isinstance(ids, list) else set()


@command("cam-select", "choose a classifier among candidates by their held-out cam-eval tables (the CAM search protocol)")
def _cam_select(p: argparse.ArgumentParser):
    p.add_argument("--evals", nargs="+", required=True, metavar="NAME=CSV", help="each candidate's name and its cam-eval --csv table")
    p.add_argument("--out", required=True, help="summary table to write (.csv): one row per candidate, the chosen one marked")

    def run(a: argparse.Namespace) -> int:
        import pandas as pd

        from samcam.outputs import check_file_output, write_table
        from samcam.pipeline.cam import best_rows, read_cam_eval, select_classifier

        evals, tables = {}, {}
        for item in a.evals:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise ValueError(f"--evals {item!r}: expected NAME=CSV")
            if not name.isprintable():  # a candidate's name is printed and written into the table
                raise ValueError(f"--evals {item!r}: the candidate name holds control or format characters")
            if name in evals:
                raise ValueError(f"--evals: candidate {name!r} given twice")
            same = tables.setdefault(Path(path).resolve(), name)
            if same != name:  # one table under two names: two candidates that are one
                raise ValueError(f"--evals: {path} is the table of candidate {same!r} and of {name!r}; give each candidate its own table")
            evals[name] = read_cam_eval(path)
        check_file_output(a.out, *[item.partition("=")[2] for item in a.evals], table=("candidate", "map"))
        chosen, threshold = select_classifier(evals)
        rows = []
        for name, b in best_rows(evals).items():
            rows.append({"candidate": name, "map": float(b["map"]), "threshold": float(b["threshold"]), "miou": float(b["miou"]),
                         "partial_pct": float(b["partial_pct"]), "false_pct": float(b["false_pct"]), "chosen": name == chosen})  # fmt: skip
        summary = pd.DataFrame(rows)
        write_table(a.out, summary)
        print(shown_table(summary))
        print(f"chosen: {chosen} at threshold {threshold:g}")
        return 0

    return run


def _device(name: str | None):
    """A torch device from ``--device``; when absent, a GPU where one is visible, else the CPU, as for
    every step (:func:`samcam.pipeline.workers.torch_device`)."""
    from samcam.pipeline.workers import torch_device

    return torch_device(name, default="auto")


@command("cam2label", "turn CAM files into pseudo labels at a background threshold (IRN's rule); optional sweep")
def _cam2label(p: argparse.ArgumentParser):
    p.add_argument("--cams", required=True, help="folder of <id>.npy CAM files (IRN layout)")
    p.add_argument("--out", help="folder for <id>.png pseudo labels")
    p.add_argument("--threshold", type=FRACTION, help="background score (IRN's cam_eval_thres; 0.15 is IRN's default for its ResNet-50)")
    ids_option(p, "the CAMs to use; default: every CAM file", required=False)
    p.add_argument("--sweep-gt", help="ground-truth folder: report mIoU over --thresholds (the best is GT-tuned: a leak, marked so)")
    p.add_argument("--thresholds", default=THRESHOLDS, help=f"START:STOP:STEP for --sweep-gt (default {THRESHOLDS})")
    p.add_argument("--sweep-csv", help="write the sweep table here")
    p.add_argument("--note", help="a note stored with the labels (e.g. 'threshold tuned on ground truth')")
    p.add_argument("--images", help="image folder: check that every CAM has its image's size")

    def run(a: argparse.Namespace) -> int:

        from samcam.io import folder_ids, image_index, image_size
        from samcam.outputs import check_outputs, write_table
        from samcam.pipeline.cam import cams_to_labels, threshold_sweep

        if not a.out and not a.sweep_gt:
            raise ValueError("give --out (labels at --threshold), --sweep-gt (a threshold sweep), or both")
        ids = ids_of(a.ids)
        check_outputs([a.out, a.sweep_csv], [a.cams, a.sweep_gt, a.images, a.ids], files=[a.sweep_csv], tables={a.sweep_csv: ("threshold", "miou")})
        if not a.sweep_gt:
            refuse_unused(p, a, ("thresholds", "sweep_csv"), "without --sweep-gt (the sweep scores against that ground truth)")
        if a.out and a.threshold is None:
            raise ValueError("--out needs --threshold")
        if a.out:  # the labels first: a folder that refuses them (made from other CAMs) stops the command before the sweep writes
            sizes = None
            if a.images:
                index = image_index(a.images)
                need = folder_ids(a.cams, ".npy", "CAM", ids)
                missing = [i for i in need if i not in index]
                if missing:
                    raise FileNotFoundError(f"{a.images}: no image for {len(missing)} CAM files, e.g. {missing[0]}")
                sizes = {i: image_size(index[i]) for i in need}
            print(cams_to_labels(a.cams, a.out, a.threshold, ids, note=a.note, sizes=sizes).line("labels"))
        if a.sweep_gt:
            ts = _threshold_range(a.thresholds)
            df = threshold_sweep(a.cams, a.sweep_gt, folder_ids(a.cams, ".npy", "CAM", ids), ts)
            print(shown_table(df))
            best = df.loc[df.miou.idxmax()]
            print(f"best threshold {best.threshold:g}: mIoU {100 * best.miou:.2f} (GT-tuned: chosen on ground truth)")
            if a.sweep_csv:
                write_table(a.sweep_csv, df)
        return 0

    return run


#: the most thresholds one sweep scores (each is a pass over every CAM); steps of 0.001 over 0..1
MAX_THRESHOLDS = 1001


def _threshold_range(text: str) -> list[float]:
    """``START:STOP:STEP`` -> the thresholds from START to STOP inclusive, each in [0, 1]."""
    try:
        start, stop, step = (float(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"--thresholds must look like START:STOP:STEP (e.g. {THRESHOLDS}), got {text!r}") from None
    if not (0 <= start <= stop <= 1) or not 1e-6 <= step < float("inf"):  # kept to 6 decimals: a finer STEP repeats them
        raise ValueError(f"--thresholds {text}: need 0 <= START <= STOP <= 1 and a finite STEP >= 0.000001")
    if (stop - start) / step > MAX_THRESHOLDS - 1:
        raise ValueError(f"--thresholds {text}: more than {MAX_THRESHOLDS} thresholds; use a STEP of at least {(stop - start) / (MAX_THRESHOLDS - 1):.3g}")
    return [round(start + k * step, 6) for k in range(int((stop - start) / step + 1e-9) + 1)]


# ----------------------------------------------------------------------------- methods, notebooks


@command("labels", "turn a WSSS method's output (PNG labels, CAM .npy files, ...) into samcam pseudo labels")
def _labels(p: argparse.ArgumentParser):
    from samcam.cam.methods import FORMATS, METHODS

    p.add_argument("--method", required=True, help=f"one of {', '.join(METHODS)} (its registry entry names the format)")
    p.add_argument("--input", required=True, help="the folder the method's code wrote")
    p.add_argument("--out", required=True, help="folder for <id>.png palette labels")
    ids_option(p, "the labels to process")
    p.add_argument("--format", choices=FORMATS, help="override the registry's format")
    p.add_argument("--threshold", type=FRACTION, help="background threshold (CAM formats)")

    def run(a: argparse.Namespace) -> int:
        from samcam.cam.methods import FORMATS, get_method
        from samcam.outputs import check_folder_output
        from samcam.pipeline.labels import export_labels

        m = get_method(a.method)
        check_folder_output(a.out, a.input, a.ids)
        fmt = a.format or m.format
        default = m.threshold if FORMATS[fmt].needs_threshold else None  # the registry's, for a format of score maps only
        s = export_labels(a.input, a.out, ids_of(a.ids), fmt, a.threshold if a.threshold is not None else default)
        print(s.line("labels"))
        return 0

    return run


@command("demo", "run the demo notebook on scikit-image's photos (offline) into results/demo")
def _demo(p: argparse.ArgumentParser):
    p.add_argument("--points-per-side", type=_number(int, *AMG_RANGES["points_per_side"]), default=32,
                   help="SAM's point grid per image side in everything mode (default 32, the official setting)")
    p.add_argument("--out", default="results/demo", help="output folder (a relative path is taken from the checkout; not results/runs/)")

    def run(a: argparse.Namespace) -> int:
        from samcam.outputs import check_output
        from samcam.reproduce import RUNS, execute, resolve

        from samcam.pipeline.demo import check_demo_folder

        out_dir = resolve(a.out)
        check_output(out_dir)  # never into samcam's own sources (the notebooks, the package)
        check_demo_folder(out_dir)  # nor beside a user's files (before papermill writes the executed notebook there)
        executed = RUNS / "demo.ipynb" if out_dir == resolve("results/demo") else out_dir / "demo.ipynb"
        out = execute("demo.ipynb", executed, {"out_dir": str(out_dir), "points_per_side": a.points_per_side})
        print(f"executed notebook: {out}\nfigure: {out_dir / 'demo_gallery.png'}")
        return 0

    return run


@command("reproduce", "run the configured steps (notebooks via papermill, samcam commands, benchmark scripts) whose outputs are not current")
def _reproduce(p: argparse.ArgumentParser):
    p.add_argument("--config", help="reproduce YAML (default notebooks/reproduce.yml)")
    p.add_argument("--only", nargs="*", help="step names to run")
    p.add_argument("--force", action="store_true", help="run steps even when current")
    p.add_argument("--long", action="store_true", help="run the long steps too (masks, classifier, CAMs, ...; each marked with its expected time)")
    p.add_argument("--list", "--dry-run", action="store_true", help="show the plan (each step, its outputs, whether it would run and why) and stop")
    p.add_argument("--allow-dirty", action="store_true", help="run on a checkout with uncommitted changes outside results/ (a trial: the stamps name the -dirty commit)")

    def run(a: argparse.Namespace) -> int:
        from samcam.reproduce import DEFAULT_CONFIG, describe, plan, reproduce

        config = a.config or DEFAULT_CONFIG
        if a.list:
            for step, state, runs_now in plan(config, a.only, a.force, long=a.long):
                print(describe(step, state, runs_now))
            return 0
        reproduce(config, a.only, a.force, log=lambda line: print(line, flush=True), long=a.long, allow_dirty=a.allow_dirty)
        return 0

    return run


# ----------------------------------------------------------------------------- refine


def refuse_unused(p: argparse.ArgumentParser, a: argparse.Namespace, dests: Sequence[str], why: str) -> None:
    """``ValueError`` naming the first option of ``dests`` that was given (even at its default value:
    :attr:`Parser.given`) or holds a value other than its default: it does not apply (``why``), and
    an option silently ignored would make a user think it acted."""
    for dest in dests:
        if dest in getattr(p, "given", ()) or getattr(a, dest, None) != p.get_default(dest):
            flag = next((o for act in p._actions if act.dest == dest for o in act.option_strings), f"--{dest.replace('_', '-')}")
            raise ValueError(f"{flag} does not apply {why}")


@command("refine", "refine pseudo labels with SAM: prompted by the labels' own regions, or everything-mode + the paper's rule")
def _refine(p: argparse.ArgumentParser):
    from samcam.config import add_options, from_args
    from samcam.refine.prompted import PromptConfig

    p.add_argument("--mode", default="prompted", choices=["prompted", "everything"],
                   help="prompted: SAM prompted by each label's own regions (default); everything: SAM's masks + the paper's rule")
    p.add_argument("--pseudo", required=True, help="folder of pseudo labels (<id>.png; a method's own format: samcam labels first)")
    p.add_argument("--out", required=True, help="output folder (ids already there are skipped)")
    ids_option(p, "the labels to process")
    p.add_argument("--images", help="image folder (prompted mode)")
    p.add_argument("--masks", help="mask-set folder (everything mode)")
    p.add_argument("--cams", help="CAM .npy folder (IRN layout): peaks for point prompts, and overlap decisions")
    add_options(p.add_argument_group("prompts (prompted mode)"), PromptConfig)
    devices_options(p, "prompted mode: ")
    sam_options(p)
    device_option(p)

    def run(a: argparse.Namespace) -> int:
        from dataclasses import fields

        ids = ids_of(a.ids)
        if a.mode == "everything":
            from samcam.data.spaces import VOC
            from samcam.pipeline.merge import merge_folders
            from samcam.refine.merge import MergeRule

            refuse_unused(p, a, ("images", "cams", "devices", "threads", "model", "checkpoint", "device", *(f.name for f in fields(PromptConfig))),
                          "to --mode everything (the paper's rule on the --masks given)")  # fmt: skip
            if not a.masks:
                raise ValueError("--mode everything needs --masks")
            s = merge_folders(a.pseudo, a.masks, a.out, VOC, MergeRule(), ids)
            print(f"{s.merged} merged, {s.skipped} already there -> {s.out}")
            return 0
        from samcam.pipeline.prompted import refine_folder
        from samcam.pipeline.workers import parse_devices

        refuse_unused(p, a, ("masks",), "to --mode prompted (SAM is prompted on --images; --masks is everything mode's)")
        if not a.images:
            raise ValueError("--mode prompted needs --images")
        refuse_one_folder(("--images", a.images), [("--pseudo", a.pseudo)])
        devices = parse_devices(a.devices, threads=a.threads)
        if a.threads:
            import torch

            torch.set_num_threads(a.threads)
        r = refine_folder(a.images, a.pseudo, a.out, ids, from_args(PromptConfig, a), a.cams, a.model, a.checkpoint, a.device,
                          devices=devices, threads=a.threads)  # fmt: skip
        print(r.line("images refined"))
        return 0

    return run


@command("train-affinity", "train AffinityNet's affinity head on the seeds of CAM files (resumable, seeded)")
def _train_affinity(p: argparse.ArgumentParser):
    from samcam.config import add_options
    from samcam.pipeline.affinity import AffinityTrainConfig
    from samcam.refine.affinity import MAX_POWER

    d = AffinityTrainConfig()
    p.add_argument("--images", required=True, help="folder of images (<id>.jpg)")
    seeds = p.add_mutually_exclusive_group(required=True)
    seeds.add_argument("--cams", help="folder of <id>.npy CAM files (IRN layout) of the training images: the paper's seeds")
    seeds.add_argument("--seed-labels", help="folder of <id>.png pseudo labels to take the seeds from instead (e.g. CAM + SAM)")
    ids_option(p, "the training images (train images only)")
    p.add_argument("--out", required=True, help="checkpoint file to write (resumes if it exists)")
    p.add_argument("--low-alpha", type=_number(float, 0.0, MAX_POWER, open_lo=True), help=f"seed background power for confident foreground (default {d.low_alpha:g})")
    p.add_argument("--high-alpha", type=_number(float, 0.0, MAX_POWER, open_lo=True), help=f"seed background power for confident background (default {d.high_alpha:g})")
    p.add_argument("--threshold", type=_alpha_threshold((0, 2)),
                   help="the CAM's background threshold: sets the seed powers by the rule alpha = ln t / ln(1 - t), low alpha/4, high 2 alpha")
    add_options(p, AffinityTrainConfig)

    def run(a: argparse.Namespace) -> int:
        from samcam.config import from_args
        from samcam.io import image_index
        from samcam.outputs import check_file_output
        from samcam.pipeline.affinity import train_affinity
        from samcam.pipeline.masks import select_ids
        from samcam.refine.affinity import alphas_for_threshold

        check_file_output(a.out, a.images, a.cams, a.ids, a.seed_labels)
        if a.threshold is not None and (a.low_alpha is not None or a.high_alpha is not None):
            raise ValueError("--threshold sets --low-alpha and --high-alpha; give either the threshold or the powers")
        if a.seed_labels and (a.threshold is not None or a.low_alpha is not None or a.high_alpha is not None or not a.crf):
            raise ValueError("--seed-labels takes the seeds from labels: --threshold, --low-alpha, --high-alpha and --no-crf apply to CAM seeds only")
        refuse_one_folder(("--images", a.images), [("--seed-labels", a.seed_labels)])
        index = image_index(a.images)
        ids = select_ids(index, ids_of(a.ids), (0, 1), a.images)
        low, high = alphas_for_threshold(a.threshold)[::2] if a.threshold is not None else (d.low_alpha if a.low_alpha is None else a.low_alpha, d.high_alpha if a.high_alpha is None else a.high_alpha)
        cfg = from_args(AffinityTrainConfig, a, low_alpha=low, high_alpha=high)
        r = train_affinity(index, a.cams, ids, a.out, cfg, seed_labels=a.seed_labels)
        print(f"trained the affinity head on {len(ids)} images in {r.seconds:.0f} s ({r.feature_seconds:.0f} s of it backbone features); "
              f"loss per epoch {[round(x, 4) for x in r.losses]} -> {r.out}")  # fmt: skip
        return 0

    return run


def _image_index_of(images: str, ids: list[str]) -> dict:
    """The image index of ``images``; ``FileNotFoundError`` naming the folder when an id has no image."""
    from samcam.io import image_index

    index = image_index(images)
    missing = [i for i in ids if i not in index]
    if missing:
        raise FileNotFoundError(f"{images}: no image for {len(missing)} ids, e.g. {missing[0]}")
    return index


@command("affinity", "AffinityNet's random walk: CAM files -> pseudo labels with a trained affinity head")
def _affinity(p: argparse.ArgumentParser):
    from samcam.config import add_options
    from samcam.refine.affinity import MAX_POWER, AffinityConfig

    d = AffinityConfig()
    p.add_argument("--images", help="folder of images (<id>.jpg); needed with --checkpoint")
    p.add_argument("--cams", required=True, help="folder of <id>.npy CAM files (IRN layout)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="affinity checkpoint (samcam train-affinity)")
    which.add_argument("--gt-affinity", metavar="GT", help="walk on affinities from this ground-truth folder instead (a diagnostic upper bound; uses ground truth)")
    p.add_argument("--out", required=True, help="folder for <id>.png pseudo labels (ids already there are skipped)")
    ids_option(p, "the CAMs to use; default: every CAM file", required=False)
    power = p.add_mutually_exclusive_group()
    power.add_argument("--alpha", type=_number(float, 0.0, MAX_POWER, open_lo=True), help=f"background power (1 - max CAM)^alpha (default {d.alpha:g})")
    add_options(p, AffinityConfig, only=("beta", "steps"))
    power.add_argument("--threshold", type=_alpha_threshold((1,)), help="the CAM's background threshold: sets --alpha = ln t / ln(1 - t)")
    p.add_argument("--radius", type=_number(int, 2, 32), help="pair radius in cells (default: the radius the head was trained with; 5 with --gt-affinity)")

    def run(a: argparse.Namespace) -> int:
        from samcam.io import folder_ids
        from samcam.outputs import check_folder_output
        from samcam.pipeline.affinity import affinity_labels, ground_truth_walk_labels
        from samcam.refine.affinity import alphas_for_threshold

        check_folder_output(a.out, a.images, a.cams, a.checkpoint, a.gt_affinity, a.ids)
        ids = folder_ids(a.cams, ".npy", "CAM", ids_of(a.ids))
        alpha = alphas_for_threshold(a.threshold)[1] if a.threshold is not None else (d.alpha if a.alpha is None else a.alpha)
        cfg = AffinityConfig(alpha=alpha, beta=a.beta, steps=a.steps, radius=a.radius)
        if a.gt_affinity:
            if a.images:
                raise ValueError("--images is not used with --gt-affinity (the walk needs no image)")
            r = ground_truth_walk_labels(a.cams, a.gt_affinity, ids, a.out, cfg)
            print(r.line("labels walked on ground-truth affinity (uses ground truth: a diagnostic)"))
            return 0
        if not a.images:
            raise ValueError("--images is needed with --checkpoint (the affinity head reads each image)")
        index = _image_index_of(a.images, ids)
        r = affinity_labels(index, a.cams, ids, a.checkpoint, a.out, cfg)
        print(r.line("labels"))
        return 0

    return run


@command("affinity-sweep", "choose the walk's background power on held-out images: mIoU and error pixels of AffinityNet labels at each power")
def _affinity_sweep(p: argparse.ArgumentParser):
    from samcam.config import add_options
    from samcam.refine.affinity import MAX_POWER, AffinityConfig

    p.add_argument("--images", required=True, help="folder of images (<id>.jpg)")
    p.add_argument("--cams", required=True, help="folder of <id>.npy CAM files (IRN layout) of held-out images")
    p.add_argument("--gt", required=True, help="their ground-truth folder (<id>.png)")
    p.add_argument("--checkpoint", required=True, help="affinity checkpoint (samcam train-affinity)")
    ids_option(p, "held-out images (never the ids whose labels you score); default: every CAM file", required=False)
    p.add_argument("--alphas", nargs="+", required=True, type=_number(float, 0.0, MAX_POWER, open_lo=True), help="background powers to walk at")
    add_options(p, AffinityConfig, only=("beta", "steps"))
    p.add_argument("--csv", help="write the table here (one row per power; the best marked)")

    def run(a: argparse.Namespace) -> int:
        from samcam.io import folder_ids, sha256_file
        from samcam.outputs import SCORED_NETWORK, check_file_output, check_table_target, write_table
        from samcam.pipeline.affinity import alpha_sweep

        check_file_output(a.csv, a.images, a.cams, a.gt, a.checkpoint, a.ids, table=("alpha", "miou"))
        network = sha256_file(a.checkpoint, what="affinity checkpoint")
        check_table_target(a.csv, network, "affinity head")
        refuse_one_folder(("--images", a.images), [("--gt", a.gt)])
        ids = folder_ids(a.cams, ".npy", "CAM", ids_of(a.ids))
        index = _image_index_of(a.images, ids)
        df = alpha_sweep(index, a.cams, a.gt, ids, a.checkpoint, a.alphas, AffinityConfig(radius=None, beta=a.beta, steps=a.steps))
        print(shown_table(df))
        best = df.loc[df.miou.idxmax()]
        print(f"best background power on these {len(ids)} images: {best.alpha:g} (mIoU {100 * best.miou:.2f}, "
              f"false {best.false_pct:.1f} %, partial {best.partial_pct:.1f} % of object pixels)")  # fmt: skip
        if a.csv:
            write_table(a.csv, df.assign(**{SCORED_NETWORK: network}))
        return 0

    return run


# ----------------------------------------------------------------------------- segmentation


@command("train-seg", "train a segmentation network on images + a pseudo-label folder (resumable, seeded)")
def _train_seg(p: argparse.ArgumentParser):
    from samcam.seg.commands import train_seg

    return train_seg(p)


@command("eval-seg", "score a trained segmentation network on val images (confusion-matrix mIoU)")
def _eval_seg(p: argparse.ArgumentParser):
    from samcam.seg.commands import eval_seg

    return eval_seg(p)


@command("seg-search", "tabulate a recipe search: every finished train-seg run of a folder (recipe, steps, cost, val mIoU)")
def _seg_search(p: argparse.ArgumentParser):
    from samcam.seg.commands import seg_search

    return seg_search(p)


# ----------------------------------------------------------------------------- entry point


#: errors that bad input or the machine raise (a missing or corrupt file, a full disk, too little
#: memory, a decompression bomb, a failed notebook, a runtime error of torch): one line, exit 2
INPUT_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, EOFError, LookupError, MemoryError, RuntimeError)


#: the classes of a notebook cell's error that are faults of code (samcam's or the notebook's); any
#: other (ValueError, FileNotFoundError, samcam's HashMismatchError, PIL's, torch's out of memory, …)
#: is the input's or the machine's
CODE_ERRORS = frozenset({"TypeError", "AttributeError", "NameError", "UnboundLocalError", "AssertionError", "ZeroDivisionError",
                         "NotImplementedError", "SyntaxError", "IndentationError", "ImportError", "ModuleNotFoundError", "RecursionError"})


def _input_error(e: BaseException) -> bool:
    """Whether ``e`` is a failure of the input or the machine rather than a fault of samcam's code."""
    import zlib

    if isinstance(getattr(e, "ename", None), str):  # a notebook cell's error: judged by its own class
        return e.ename not in CODE_ERRORS
    if isinstance(e, (*INPUT_ERRORS, zlib.error)):
        return True
    mod = type(e).__module__ or ""
    return type(e).__name__ == "DecompressionBombError" or mod.startswith(("papermill", "PIL", "csv", "yaml"))


def _one_line(e: BaseException) -> str:
    """``e``'s message on one line (a KeyError's key unquoted; a MemoryError's empty message said)."""
    if isinstance(e, KeyError) and e.args:
        text = str(e.args[0])
    elif isinstance(e, MemoryError):
        text = f"out of memory{f' ({e})' if str(e) else ''}; try fewer images, smaller settings or a larger machine"
    else:
        text = str(e) or type(e).__name__
    return " ".join(ln.strip() for ln in text.splitlines() if ln.strip())[:2000]


class _StoreOnce(argparse._StoreAction):
    """argparse's ``store``, refusing an option given twice: the first value would be dropped without a
    word (``--threshold 0.2 --threshold 0.9`` ran at 0.9; a config's command list, too)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if self.dest in parser.given:
            parser.error(f"argument {'/'.join(self.option_strings) or self.dest}: given twice; give it once")
        if any(isinstance(v, str) and not v.strip() for v in (values if isinstance(values, list) else [values])):
            # an unset shell variable ($OUT) would otherwise mean "nothing" or the current folder
            parser.error(f"argument {'/'.join(self.option_strings) or self.dest}: empty; give a value")
        parser.given.add(self.dest)
        super().__call__(parser, namespace, values, option_string)


def shown_table(df) -> str:
    """A table of scores as a command prints it: mIoU in percent and the percent columns (``*_pct``,
    ``map``) to 2 decimals; the settings (a threshold, a background power) as they are, so that 1e-300
    is not shown as 0.0 nor 0.125 as 0.12."""
    pct = {c: 2 for c in df.columns if c.endswith("_pct") or c == "map"}
    return (df.assign(miou=100 * df.miou) if "miou" in df.columns else df).round({"miou": 2, **pct}).to_string(index=False)


def one_line(text: str) -> str:
    """An argparse type for text a record keeps (a provenance note, a command): one printable line,
    not blank (a multi-line value would be a record's two lines)."""
    if not text.strip() or not text.isprintable():
        raise argparse.ArgumentTypeError(f"{text!r} is not one line of printable text")
    return text


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``samcam <command>: error: <what>`` and exit code 2, and every
    option taken once (:class:`_StoreOnce`). The scripts of scripts/ parse with it too."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})  # --ou is not --out: a config names options in full
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)
        self.given: set[str] = set()  # the options this parse has taken (a subcommand's parser parses its part anew)

    def parse_known_args(self, args=None, namespace=None):
        self.given = set()
        return super().parse_known_args(args, namespace)

    def parse_args(self, args=None, namespace=None):
        """argparse's, with arguments no option takes refused by the subcommand that was given them
        (``samcam refine: error: unrecognized arguments: --format``), not by ``samcam`` itself."""
        ns, extra = self.parse_known_args(args, namespace)
        if extra:
            subs = next((a.choices for a in self._actions if isinstance(a, argparse._SubParsersAction)), {})
            subs.get(getattr(ns, "command", None), self).error(f"unrecognized arguments: {' '.join(extra)}")
        return ns

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``argv``, only the subcommand that ``argv`` names gets its arguments
    (adding some imports heavy modules, e.g. torch), so that ``samcam merge``/``eval`` start fast."""
    parser = Parser(prog="samcam", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"samcam {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    wanted = None if argv is None else next((a for a in argv if not a.startswith("-")), None)
    for name, (help, fn) in COMMANDS.items():
        sp = sub.add_parser(name, help=help, description=help)
        if argv is None or name == wanted:
            sp.set_defaults(_run=fn(sp))
    return parser


def reference() -> str:
    """The command reference (``docs/cli.md``) as Markdown, read off the parser itself: each command's
    purpose and, per option group, each option with what it takes (required, its default, its range or
    choices) and its help. ``scripts/cli_reference.py`` writes it; a test keeps the committed file equal."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    out = ["# samcam command reference", "",
           "Generated from the parser by `python scripts/cli_reference.py` (a test keeps it current); "
           "`samcam <command> --help` prints the same per command.", ""]  # fmt: skip
    out += [f"- [`samcam {name}`](#samcam-{name}): {sp.description}" for name, sp in sub.choices.items()]
    for name, sp in sub.choices.items():
        out += ["", f"## samcam {name}", "", f"{sp.description}."]
        for group in sp._action_groups:
            actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
            if not actions:
                continue
            out += ["", f"**{group.title}**", "", "| option | takes | help |", "|---|---|---|"]
            for a in actions:
                takes = []
                if a.nargs == 0:
                    takes.append("a switch")
                else:
                    mv = a.metavar or a.dest.upper()
                    takes.append(" ".join(mv) if isinstance(mv, tuple) else mv)
                    if a.nargs in ("+", "*"):
                        takes[-1] += " …"
                    if a.choices is not None:
                        takes.append("one of " + ", ".join(map(str, a.choices)))
                    elif getattr(a.type, "interval", None):
                        takes.append(f"in {a.type.interval}")
                    if a.required:
                        takes.append("required")
                    elif a.default not in (None, argparse.SUPPRESS):
                        takes.append(f"default {a.default!r}")
                out.append(f"| `{', '.join(a.option_strings) or a.dest}` | {cell('; '.join(takes))} | {cell(a.help or '')} |")
    return "\n".join(out) + "\n"


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C: worker pools shut down, atomic outputs stay whole


def _stdout_closed() -> bool:
    """Whether stdout's reader has gone (a flush fails with a broken pipe, or, where stdout is unbuffered
    (``PYTHONUNBUFFERED``) and nothing is left to flush, its pipe reports an error); if so, stdout is
    pointed at the null device so that nothing more is written to it, at exit either."""
    import os
    import select

    try:
        sys.stdout.flush()
        fd = sys.stdout.fileno()
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        closed = any(event & select.POLLERR for _, event in poll.poll(0))  # a pipe's write end without a reader
    except BrokenPipeError:
        closed = True
    except (OSError, ValueError, AttributeError):  # no file behind stdout (a capture in tests or a notebook)
        return False
    if closed:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return closed


def main(argv: Sequence[str] | None = None) -> int:
    import importlib
    import signal

    try:
        args = build_parser(sys.argv[1:] if argv is None else argv).parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error already printed in one line
        return e.code if isinstance(e.code, int) else 2
    if argv is None:  # the command itself, not a call from Python code
        signal.signal(signal.SIGTERM, _terminate)
    from samcam.progress import reset_notes

    reset_notes()  # each note once per command
    # a command's --threads is that command's: torch's thread count is process state, and a caller that runs
    # several commands in one process (a notebook, the tests) gets its own back (torch's CPU sums depend on it)
    if getattr(args, "threads", None):  # the command sets torch's thread count: torch's own, read before it does
        importlib.import_module("torch")  # (the command imports it anyway)
    threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    try:
        code = int(args._run(args) or 0)
        if sys.stdout is not None:  # None where stdout was closed (`>&-`): print writes nowhere, and nothing is buffered
            sys.stdout.flush()  # what is still buffered goes now: a reader that left is said here, not as an "Exception ignored" at exit
        return code
    except KeyboardInterrupt:
        print(f"samcam {args.command}: interrupted; finished outputs are kept, rerun to resume", file=sys.stderr)
        return 130
    except BrokenPipeError as e:
        if _stdout_closed():  # the reader of stdout left (`samcam reproduce --list | head -1`): no error, as any Unix tool
            return 141  # 128 + SIGPIPE, what a shell reports for a tool its pipe stopped
        print(f"samcam {args.command}: error: {_one_line(e)}", file=sys.stderr)  # another pipe (a worker's): an error
        return 2
    except Exception as e:
        if args.debug:
            raise
        if _input_error(e):
            print(f"samcam {args.command}: error: {_one_line(e)}", file=sys.stderr)
        else:  # a fault of samcam's own code: said so, with the way to see where
            print(f"samcam {args.command}: error: internal error: {type(e).__name__}: {_one_line(e)} (rerun with --debug for the traceback)",
                  file=sys.stderr)  # fmt: skip
        return 2
    finally:
        if threads is not None and sys.modules["torch"].get_num_threads() != threads:
            sys.modules["torch"].set_num_threads(threads)


if __name__ == "__main__":
    sys.exit(main())
