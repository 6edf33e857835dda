"""Pipeline steps of AffinityNet (:mod:`samcam.refine.affinity`): train the affinity head on CAM
seeds (or on the seeds of a hard pseudo label), then random-walk every image's CAMs into a pseudo
label; and the same walk on ground-truth affinities, as a diagnostic. Resumable, atomic, with progress.

The backbone is frozen, so its three feature levels and each image's cell seeds are computed once
per training image and kept in memory (float16); an epoch then only runs the head. Augmentation is
a random window of the feature grid (``crop`` cells at output stride 8) and a horizontal flip of
features and seeds.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from samcam.refine.affinity import (
    IGNORE,
    AffinityConfig,
    AffinityHead,
    affinity_loss,
    cell_seeds,
    ground_truth_walk,
    label_seeds,
    pair_affinities,
    pair_labels,
    propagate_alphas,
)
from samcam.cam.nets import EFFICIENTNETS
from samcam.config import check_settings, setting
from samcam.data.spaces import VOC, DatasetSpec
from samcam.outputs import StepResult
from samcam.training import TrainResult, resume_state
from samcam.refine.crf import CRFConfig


@dataclass(frozen=True)
class AffinityTrainConfig:
    """Training settings (the paper: 8 epochs, batch 8, 448 px crops, lr 0.1 with the new layers at
    10×, weight decay 5e-4, a poly schedule of power 0.9, seeds refined by a dense CRF with PSA's
    kernels). The backbone is frozen here, so only the head's rate ``lr × head_lr_mult`` is used.

    ``momentum`` 0 is how PSA's optimiser ran: its ``PolyOptimizer`` passes the weight decay into
    ``torch.optim.SGD``'s momentum slot (``SGD(params, lr, weight_decay)``), so SGD used momentum
    5e-4 and the per-group weight decay. Not done here: PSA's colour jitter and pixel-offset crops
    (the frozen backbone's features are computed once per image)."""

    backbone: str = setting("efficientnet-lite0", choices=EFFICIENTNETS, help="frozen ImageNet backbone")
    epochs: int = setting(8, 1, 10_000, "epochs")
    batch_size: int = setting(8, 1, 4096, "images per step")
    crop: int = setting(56, 1, 256, "training window in stride-8 cells (56 = 448 px)")
    lr: float = setting(0.1, 0.0, 10.0, "base learning rate (poly-decayed)", open_lo=True)
    weight_decay: float = setting(5e-4, 0.0, 1.0, "weight decay")
    seed: int = setting(0, 0, 2**32 - 1, "seed of the windows and the sample order")
    low_alpha: float = 4.0  # seed powers: set on the command line by --threshold or --low/--high-alpha
    high_alpha: float = 32.0
    radius: int = setting(5, 2, 32, "pair radius in cells")
    head_lr_mult: float = setting(10.0, 0.0, 1000.0, "the head's rate is lr × this (PSA: 10)", open_lo=True)
    crf: bool = setting(True, flag="--no-crf", help="CAM seeds without PSA's dense CRF")
    momentum: float = setting(0.0, 0.0, 0.999, "SGD momentum (0, as PSA's optimiser ran)")

    def __post_init__(self) -> None:
        check_settings(self, "affinity training")
        AffinityConfig(low_alpha=self.low_alpha, high_alpha=self.high_alpha, radius=self.radius)
        if self.crop < 2 * self.radius:
            raise ValueError(f"crop ({self.crop} cells) must be at least twice the radius ({self.radius}) to hold pairs")


@dataclass(frozen=True)
class AffinityTrainResult(TrainResult):
    """``feature_seconds``: the part of ``seconds`` spent on backbone features and seeds."""

    feature_seconds: float = 0.0


def backbone(name: str):
    """The frozen ImageNet backbone of an affinity network (output stride 16)."""
    from samcam.cam.nets import build_camnet

    net = build_camnet(name, output_stride=16)
    for p in net.parameters():
        p.requires_grad = False
    return net.eval()


@torch.inference_mode()
def levels_of(net, image: np.ndarray, source: object = "image") -> list[torch.Tensor]:
    """The backbone's three feature levels of one RGB image, each ``C × h × w``; ``ValueError``
    naming ``source`` for an image too small for the backbone."""
    from samcam.cam.infer import sized, to_tensor
    from samcam.cam.nets import feature_levels

    with sized(source, *image.shape[:2]):
        return [x[0] for x in feature_levels(net, to_tensor(image))]


def _window(levels: list[torch.Tensor], seeds: np.ndarray, crop: int, rng: np.random.Generator):
    """A random window of ``crop`` cells (even-aligned, so the stride-16 levels stay aligned) and a
    random horizontal flip, of the levels and the cell seeds alike."""
    h, w = seeds.shape
    ch, cw = min(crop, h), min(crop, w)
    ch, cw = max(2, ch - ch % 2), max(2, cw - cw % 2)  # even: a window holds whole stride-16 cells
    y0 = 2 * rng.integers(0, (h - ch) // 2 + 1)
    x0 = 2 * rng.integers(0, (w - cw) // 2 + 1)
    out = []
    for lv in levels:
        f = max(1, round(h / lv.shape[-2]))
        out.append(lv[:, y0 // f : (y0 + ch + f - 1) // f, x0 // f : (x0 + cw + f - 1) // f].float())
    s = seeds[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        out, s = [x.flip(-1) for x in out], s[:, ::-1]
    return out, np.ascontiguousarray(s)


#: what a train-affinity record holds by content since samcam recorded it (a checkpoint made before has neither)
CONTENT_KEYS = ("seeds_sha256", "images_sha256")
#: where a record's seeds were read (relative to the checkpoint): compared only in a record without CONTENT_KEYS;
#: in one with them, which of the two was given (a copy of the inputs elsewhere, or a moved checkpoint, resumes)
SEED_PATHS = ("cams", "seed_labels")


def ids_sha256(ids: list[str]) -> str:
    """The hash of an ordered id list, as an affinity checkpoint's record keeps it (``ids_sha256``)."""
    import hashlib

    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def train_affinity(
    images: dict[str, Path],
    cams: str | os.PathLike | None,
    ids: list[str],
    out: str | os.PathLike,
    config: AffinityTrainConfig = AffinityTrainConfig(),
    progress: bool | None = None,
    seed_labels: str | os.PathLike | None = None,
) -> AffinityTrainResult:
    """Train the affinity head on the seeds of ``ids`` and write the checkpoint ``out`` atomically
    after every epoch; a run resumes from ``out`` when its configuration and inputs match, and is
    refused otherwise. The seeds come from the CAM files (:func:`samcam.refine.affinity.cell_seeds`,
    the paper) or, with ``seed_labels``, from that folder of ``<id>.png`` pseudo labels
    (:func:`samcam.refine.affinity.label_seeds`; ``cams`` is then not read). Seed labels must hold
    classes 0..20 or 255, and an image without any confident cell is refused.
    The checkpoint ``out`` is locked while it trains (:func:`samcam.outputs.lock_file_output`).
    """
    from samcam.outputs import lock_file_output

    with lock_file_output(out):
        from samcam.progress import progress_bar

        from samcam.cam.files import load_cam
        from samcam.io import load_checkpoint, load_weights, read_image, read_label
        from samcam.training import MARKS, descend, save_epoch, set_poly_lr

        from samcam.outputs import differences, fingerprint_files, record_path
        from samcam.training import check_kind

        out = Path(out)
        cams = Path(cams) if seed_labels is None else None  # seeds from labels read no CAM file
        if seed_labels is None:
            missing = [i for i in ids if not (cams / f"{i}.npy").is_file()]
            if missing:
                raise FileNotFoundError(f"{cams}: no CAM file for {len(missing)} ids, e.g. {missing[0]}.npy")
        else:
            seed_labels = Path(seed_labels)
            missing = [i for i in ids if not (seed_labels / f"{i}.png").is_file()]
            if missing:
                raise FileNotFoundError(f"{seed_labels}: no seed label for {len(missing)} ids, e.g. {missing[0]}.png")
        if out.is_dir():
            raise IsADirectoryError(f"{out}: is a folder; --out is the checkpoint file to write")
        seeds_from = {i: cams / f"{i}.npy" for i in ids} if seed_labels is None else {i: seed_labels / f"{i}.png" for i in ids}
        record = {"config": asdict(config), "ids": len(ids), "ids_sha256": ids_sha256(ids),
                  "cams": None if cams is None else record_path(cams, out.parent),
                  "seed_labels": None if seed_labels is None else record_path(seed_labels, out.parent),
                  # what the head learns from, by content: a rerun on other seeds or images is another run, never a resume
                  "seeds_sha256": fingerprint_files(seeds_from), "images_sha256": fingerprint_files({i: images[i] for i in ids})}  # fmt: skip
        start, losses, before, ck = 0, [], 0.0, None
        if out.exists():  # checked before any feature is computed: a finished or foreign run costs only the hashing of its inputs
            ck = load_checkpoint(out)
            check_kind(ck, out, "train-affinity", "choose another path")
            if ck.get("head") != AffinityHead.version:
                raise ValueError(f"{out}: an affinity head of an earlier samcam (without PSA's final ELU); choose another path")
            old, now = ck.get("record"), record
            if isinstance(old, dict) and all(k in old for k in CONTENT_KEYS):  # by content: not where the inputs lie
                old, now = ({k: v is not None if k in SEED_PATHS else v for k, v in r.items()} for r in (old, record))
            else:  # made before samcam recorded the content: the paths are compared
                now = {k: v for k, v in record.items() if k not in CONTENT_KEYS}
            if old != now:
                what = differences(old, now) if isinstance(old, dict) else "it records no run"
                raise ValueError(f"{out} holds another affinity run ({what}); choose another path")
            start, _ = _epochs_of(ck, out)
            load_weights(_head_of(ck, out), ck.get("state_dict"), out, "affinity head weights")  # finite and fitting, before any feature
            losses, before = list(ck.get("losses") or []), float(ck.get("seconds", 0.0))
            if start >= config.epochs:
                return AffinityTrainResult(out, 0, start, 0.0, tuple(losses))
        torch.manual_seed(config.seed)
        net = backbone(config.backbone)
        crf = CRFConfig() if config.crf else None
        t0 = time.perf_counter()
        feats, seeds = [], []
        for image_id in progress_bar(ids, desc="affinity features and seeds", unit="img", progress=progress):
            image = read_image(images[image_id])
            lv = levels_of(net, image, images[image_id])
            grid = tuple(lv[0].shape[-2:])
            if seed_labels is None:
                d = load_cam(cams / f"{image_id}.npy", image.shape[:2])
                try:
                    s = cell_seeds(d["high_res"], d["keys"], grid, config.low_alpha, config.high_alpha, image, crf)
                except ValueError as e:
                    raise ValueError(f"{cams / (image_id + '.npy')}: {e}") from None
            else:
                path = seed_labels / f"{image_id}.png"
                label = read_label(path)
                if label.shape != image.shape[:2]:
                    raise ValueError(f"{path}: label of {label.shape[1]}×{label.shape[0]} px for an image of {image.shape[1]}×{image.shape[0]}")
                bad = np.setdiff1d(np.unique(label), [*range(21), IGNORE])
                if bad.size:
                    raise ValueError(f"{path}: values {bad.tolist()[:5]} outside the classes 0..20 and 255")
                s = label_seeds(label, grid)
                if (s == IGNORE).all():
                    raise ValueError(f"{path}: no cell of the label is one class (nothing to learn from)")
            feats.append([x.half() for x in lv])
            seeds.append(s)
        feature_seconds = time.perf_counter() - t0
        head = AffinityHead([x.shape[0] for x in feats[0]])
        lr = config.lr * config.head_lr_mult
        opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
        if ck is not None:
            load_weights(head, ck.get("state_dict"), out, "affinity head weights")
            if "optimizer" in ck:
                opt.load_state_dict(ck["optimizer"])
        steps_per_epoch = int(np.ceil(len(ids) / config.batch_size))
        total = config.epochs * steps_per_epoch
        for epoch in range(start, config.epochs):
            rng = np.random.default_rng(config.seed * 1000 + epoch)
            order = rng.permutation(len(ids))
            epoch_loss = []
            bar = progress_bar(range(steps_per_epoch), desc=f"affinity epoch {epoch + 1}/{config.epochs}", progress=progress)
            for step in bar:
                set_poly_lr(opt, lr, epoch * steps_per_epoch + step, total)
                loss = 0.0
                for i in order[step * config.batch_size : (step + 1) * config.batch_size]:
                    lv, s = _window(feats[i], seeds[i], config.crop, rng)
                    f = head([x[None] for x in lv])[0]
                    labels = {k: torch.from_numpy(v) for k, v in pair_labels(s, config.radius).items()}
                    loss = loss + affinity_loss(pair_affinities(f, config.radius), labels)[0]
                epoch_loss.append(descend(opt, loss / len(order[step * config.batch_size : (step + 1) * config.batch_size])))
                bar.set_postfix(loss=f"{np.mean(epoch_loss):.4f}")
            losses.append(float(np.mean(epoch_loss)))
            state = {MARKS["train-affinity"][0]: MARKS["train-affinity"][1], "head": AffinityHead.version, "backbone": config.backbone, "record": ck["record"] if ck else record,
                     "epoch": epoch + 1, "losses": losses, "in_channels": [x.shape[0] for x in feats[0]], "state_dict": head.state_dict(),
                     "trained_ids": sorted(ids)}  # which images it learnt from: a background power is chosen on others  # fmt: skip
            save_epoch(out, state, opt, epoch + 1 == config.epochs, before + time.perf_counter() - t0)
        return AffinityTrainResult(out, config.epochs - start, start, time.perf_counter() - t0, tuple(losses), feature_seconds)


def load_affinity(checkpoint: str | os.PathLike):
    """``(backbone net, head, checkpoint dict)`` of a finished :func:`train_affinity` checkpoint."""
    from samcam.config import recorded_config
    from samcam.io import load_checkpoint, load_weights

    from samcam.training import check_kind

    ck = load_checkpoint(checkpoint)
    check_kind(ck, checkpoint, "train-affinity")
    if ck.get("head") != AffinityHead.version:
        raise ValueError(f"{checkpoint}: an affinity head of an earlier samcam (without PSA's final ELU); retrain it with train-affinity")
    epoch, epochs = _epochs_of(ck, checkpoint)
    if epoch < epochs:
        raise ValueError(f"{checkpoint}: training stopped after epoch {epoch} of {epochs}; rerun train-affinity to finish it")
    recorded_config(AffinityTrainConfig, ck["record"]["config"], str(checkpoint))  # every field as the option was checked
    if ck["record"]["config"].get("radius") is None:  # the walk's radius must be the training's: recorded, never a default
        raise ValueError(f"{checkpoint}: the training radius recorded in this affinity checkpoint is None; retrain it with train-affinity")
    resume_state(ck, checkpoint)  # its losses and seconds: finite numbers
    head = _head_of(ck, checkpoint)
    load_weights(head, ck.get("state_dict"), checkpoint, "affinity head weights")
    name = ck.get("backbone")
    try:
        if not isinstance(name, str):
            raise ValueError(f"backbone {name!r} is not a name")
        net = backbone(name)
    except ValueError as e:
        raise ValueError(f"{checkpoint}: {e}") from None
    return net, head.eval(), ck


def _head_of(ck: dict, path: str | os.PathLike) -> AffinityHead:
    """An untrained head of the checkpoint's shape; ``ValueError`` naming ``path`` when its
    ``in_channels`` are not whole numbers ≥ 1 fitting the head's levels."""
    channels = ck.get("in_channels")
    if not (isinstance(channels, list) and channels and all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels)):
        raise ValueError(f"{path}: in_channels {channels!r} of a samcam affinity checkpoint are not whole numbers ≥ 1")
    try:
        return AffinityHead(channels)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _epochs_of(ck: dict, path: str | os.PathLike) -> tuple[int, int]:
    """``(finished epochs, epochs of the run)`` of an affinity checkpoint; ``ValueError`` naming
    ``path`` when either field is missing or not a whole number with 0 ≤ finished ≤ epochs ≥ 1."""
    epoch = ck.get("epoch")
    epochs = ((ck.get("record") or {}).get("config") or {}).get("epochs") if isinstance(ck.get("record"), dict) else None
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool)
    if not (whole(epoch) and whole(epochs) and 0 <= epoch <= epochs and epochs >= 1):
        raise ValueError(f"{path}: a samcam affinity checkpoint with epoch {epoch!r} of {epochs!r}; expected whole numbers, 0 ≤ epoch ≤ epochs")
    return epoch, epochs


def affinity_labels(
    images: dict[str, Path],
    cams: str | os.PathLike,
    ids: list[str],
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    config: AffinityConfig = AffinityConfig(radius=None),
    progress: bool | None = None,
) -> StepResult:
    """``out/<id>.png``: each image's CAMs propagated by the random walk on its affinities (the
    result's seconds cover features, walk and label)."""
    from samcam.cam.files import load_cam
    from samcam.io import common_folder, read_image, sha256_file
    from samcam.outputs import claim_output

    cams = Path(cams)
    config, walk, ck = _walker(checkpoint, config)

    def walked(image_id: str):
        image = read_image(images[image_id])
        d = load_cam(cams / f"{image_id}.npy", image.shape[:2])
        t0 = time.perf_counter()
        label = walk(image, d, cams / f"{image_id}.npy", (config.alpha,), images[image_id])[0]
        return label, time.perf_counter() - t0

    with claim_output(out, "affinity", {"cams": cams, "checkpoint": checkpoint, "images": common_folder(images.values())},
                     {"config": asdict(config), "checkpoint_sha256": sha256_file(checkpoint)}):  # fmt: skip
        return _write_labels(out, ids, "affinity", progress, walked)


def _walker(checkpoint: str | os.PathLike, config: AffinityConfig):
    """``(config, walk, checkpoint dict)`` for a finished affinity checkpoint: the config with the head's training
    radius (a different radius is refused), and ``walk(image, cam, cam_path, alphas, source)``, the labels
    of one image's CAM file contents at each background power (errors name ``cam_path``, or the image
    file ``source`` where it is too small for the backbone)."""
    net, head, ck = load_affinity(checkpoint)
    trained = ck["record"]["config"]["radius"]
    if config.radius is None:
        config = replace(config, radius=trained)
    elif config.radius != trained:
        raise ValueError(f"{checkpoint}: trained with radius {trained}; the walk needs the same radius, not {config.radius}")

    def walk(image: np.ndarray, cam: dict, cam_path: Path, alphas, source: object = "image") -> list[np.ndarray]:
        with torch.inference_mode():
            f = head([x[None] for x in levels_of(net, image, source)])[0]
        try:
            return propagate_alphas(cam["high_res"], cam["keys"], f, config, alphas)
        except ValueError as e:
            raise ValueError(f"{cam_path}: {e}") from None

    return config, walk, ck


def alpha_sweep(
    images: dict[str, Path],
    cams: str | os.PathLike,
    gt: str | os.PathLike,
    ids: list[str],
    checkpoint: str | os.PathLike,
    alphas,
    config: AffinityConfig = AffinityConfig(radius=None),
    spec: DatasetSpec = VOC,
    progress: bool | None = None,
):
    """mIoU and error pixels (:func:`samcam.pipeline.cam.sweep_table`, one row per ``alpha``) of the
    AffinityNet labels of ``ids`` at each background power of the walk, each image's features and
    walk computed once (``config.alpha`` is not used). ``best`` marks the highest mIoU: a power
    chosen on these images' ground truth, so ``ids`` must be held-out images, never the ids whose
    labels are scored."""
    from samcam.cam.files import load_cam
    from samcam.io import folder_ids, read_image, read_label
    from samcam.metrics import Evaluator
    from samcam.pipeline.cam import sweep_table
    from samcam.progress import progress_bar

    alphas = [float(a) for a in alphas]
    for a in alphas:
        AffinityConfig(alpha=a)  # each power in (0, MAX_POWER]
    if len(set(alphas)) != len(alphas):
        raise ValueError(f"a background power is listed twice in {alphas}")
    cams, gt = Path(cams), Path(gt)
    folder_ids(gt, ".png", "ground-truth", ids)  # every file there before any walk
    config, walk, ck = _walker(checkpoint, config)
    trained = set(ck.get("trained_ids") or [])  # a checkpoint made before samcam kept the list has only its hash
    seen = [i for i in ids if i in trained]
    if seen or ck["record"].get("ids_sha256") == ids_sha256(ids):
        raise ValueError(f"{checkpoint}: its head was trained on {len(seen) or len(ids)} of these {len(ids)} ids (e.g. {(seen or ids)[0]}); "
                         "a background power is chosen on held-out images")  # fmt: skip
    evs = [Evaluator(spec, keep_per_image=False) for _ in alphas]
    for image_id in progress_bar(ids, desc="walk at each alpha", unit="img", progress=progress):
        image = read_image(images[image_id])
        g = read_label(gt / f"{image_id}.png", spec)
        if g.shape != image.shape[:2]:
            raise ValueError(f"{gt / (image_id + '.png')}: ground truth of {g.shape[1]}×{g.shape[0]} px for an image of {image.shape[1]}×{image.shape[0]}")
        path = cams / f"{image_id}.npy"
        for ev, label in zip(evs, walk(image, load_cam(path, image.shape[:2]), path, alphas, images[image_id])):
            ev.add(image_id, g, label)
    return sweep_table(alphas, evs, key="alpha")


def read_alpha_sweep(path: str | os.PathLike) -> float:
    """The background power with the highest mIoU (the first of ties, as the table's ``best``) in an
    :func:`alpha_sweep` table (``samcam affinity-sweep --csv``); ``ValueError`` naming the file when
    it is not such a table: no rows, an ``alpha`` or ``miou`` that is not a finite number, an mIoU
    outside 0..1, a power outside (0, MAX_POWER] or listed twice."""
    import pandas as pd

    from samcam.io import read_csv

    df = read_csv(path, "alpha sweep table")
    if not {"alpha", "miou"} <= set(df.columns) or df.empty:
        raise ValueError(f"{path}: not an alpha sweep table (rows with columns alpha and miou are needed)")
    values = df[["alpha", "miou"]].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    if not np.isfinite(values).all() or not ((values[:, 1] >= 0) & (values[:, 1] <= 1)).all():
        raise ValueError(f"{path}: alpha and miou must be finite numbers, miou in 0..1")
    if len(set(values[:, 0])) != len(values):
        raise ValueError(f"{path}: a background power is listed twice")
    alpha = float(values[int(np.argmax(values[:, 1])), 0])
    try:
        AffinityConfig(alpha=alpha)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return alpha


def _write_labels(out: str | os.PathLike, ids: list[str], desc: str, progress: bool | None, make) -> StepResult:
    """The labelling loop of a claimed output folder: ``make(id) -> (label, seconds)`` for every id
    not yet done, written as ``out/<id>.png``, the seconds added to the folder's cost record."""
    from samcam.io import write_label
    from samcam.outputs import finish_step, pending
    from samcam.progress import progress_bar

    todo = pending(ids, out)
    seconds = 0.0
    for image_id in progress_bar(todo, desc=desc, unit="img", progress=progress):
        label, spent = make(image_id)
        seconds += spent
        write_label(Path(out) / f"{image_id}.png", label)
    return finish_step(out, ids, todo, seconds)


def ground_truth_walk_labels(
    cams: str | os.PathLike,
    gt: str | os.PathLike,
    ids: list[str],
    out: str | os.PathLike,
    config: AffinityConfig = AffinityConfig(),
    progress: bool | None = None,
    spec: DatasetSpec = VOC,
) -> StepResult:
    """``out/<id>.png``: each image's CAMs walked on affinities taken from its ground truth
    (:func:`samcam.refine.affinity.ground_truth_walk`). **Uses ground truth**: an upper bound on
    what the walk can do with a perfect affinity, never a pseudo label."""
    from samcam.cam.files import load_cam
    from samcam.io import read_label
    from samcam.outputs import claim_output

    cams, gt = Path(cams), Path(gt)
    if config.radius is None:
        config = replace(config, radius=5)
    def walked(image_id: str):
        label = read_label(gt / f"{image_id}.png", spec)  # values outside the classes and void are named, as by every reader of ground truth
        d = load_cam(cams / f"{image_id}.npy", label.shape)
        t0 = time.perf_counter()
        try:
            pred = ground_truth_walk(d["high_res"], d["keys"], label, config)
        except ValueError as e:
            raise ValueError(f"{cams / (image_id + '.npy')}: {e}") from None
        return pred, time.perf_counter() - t0

    with claim_output(out, "affinity-ground-truth", {"cams": cams, "gt": gt}, {"config": asdict(config), "uses_ground_truth": True}):
        return _write_labels(out, ids, "walk on ground-truth affinity", progress, walked)
