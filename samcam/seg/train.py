"""Train :class:`~samcam.seg.model.SegNet` on images + a pseudo-label folder; seeded and resumable.

A run lives in one folder: ``last.pt`` (written atomically after every epoch and when a run stops
early) holds the model, the optimizer, the global step, the recipe, the training ids and fingerprints
of the labels and the images. Rerunning the same command continues from it; a checkpoint made with
another recipe, other ids, labels or images is refused, naming what differs. Sample ``i`` of epoch ``e`` depends only on ``(seed, e, i)`` and the torch generator is
reseeded each step, so an interrupted and resumed run follows the uninterrupted one.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from samcam.data.spaces import COCO, VOC, DatasetSpec
from samcam.io import find_image, read_labelled_image
from samcam.training import MARKS, TrainResult, check_kind, descend, save_checkpoint, set_poly_lr

from .model import SegNet
from .recipe import (
    IGNORE,
    Recipe,
    augment,
    draw_params,
    epoch_order,
    sample_rng,
)

CHECKPOINT = "last.pt"
#: what train-seg --eval-gt writes into the run folder beside the checkpoint (the layout samcam.seg.report.collect reads)
EVAL_JSON, PREDICTIONS = "eval.json", "pred"
FORMAT = MARKS["train-seg"][1]  # the mark of a segmentation checkpoint (samcam.training.checkpoint_kind)


@dataclass
class TrainData:
    """Images (``H × W × 3`` uint8) and labels (``H × W`` uint8) held in memory, in id order."""

    ids: list[str]
    images: list[np.ndarray]
    labels: list[np.ndarray]
    fingerprint: str  # SHA-256 over the ids and the label files' bytes
    images_fingerprint: str | None = None  # the image files' content (samcam.outputs.fingerprint_files), by id


def load_data(images_dir: str | os.PathLike, labels_dir: str | os.PathLike, ids: list[str], spec: DatasetSpec = VOC) -> TrainData:
    """Read every image and label of ``ids``; a missing, unreadable or mis-sized file raises naming it."""
    from samcam.outputs import fingerprint_files

    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    if not ids:
        raise ValueError("no training ids")
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"folder not found: {d}")
    fingerprint = labels_fingerprint(labels_dir, ids)
    images, labels, files = [], [], {}
    for i in ids:
        files[i] = find_image(images_dir, i)
        img, lab = read_labelled_image(files[i], labels_dir / f"{i}.png", spec)
        images.append(img)
        labels.append(lab)
    if all((lab == IGNORE).all() for lab in labels):
        raise ValueError(f"{labels_dir}: every label pixel of the {len(ids)} training images is void ({IGNORE}); there is nothing to learn from")
    return TrainData(list(ids), images, labels, fingerprint, fingerprint_files(files))


def labels_fingerprint(labels_dir: str | os.PathLike, ids: list[str]) -> str:
    """What a run records of its training labels (``TrainData.fingerprint``): the SHA-256 over each id
    and its label file's bytes, in order. ``FileNotFoundError`` naming a missing label file."""
    h = hashlib.sha256()
    for i in ids:
        path = Path(labels_dir) / f"{i}.png"
        if not path.is_file():
            raise FileNotFoundError(f"label file not found: {path}")
        h.update(i.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def make_batch(data: TrainData, recipe: Recipe, epoch: int, positions: range) -> tuple[torch.Tensor, torch.Tensor]:
    """The augmented batch at ``positions`` of ``epoch``: images ``B × 3 × c × c`` float, labels ``B × c × c`` long."""
    order = epoch_order(len(data.ids), recipe.seed, epoch)
    imgs, labs = [], []
    for pos in positions:
        k = int(order[pos])
        params = draw_params(data.labels[k].shape, recipe, sample_rng(recipe.seed, epoch, pos))
        img, lab = augment(data.images[k], data.labels[k], params, recipe.crop)
        imgs.append(img)
        labs.append(lab)
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float()
    y = torch.from_numpy(np.stack(labs)).long()
    return x, y


def build_optimizer(model: SegNet, recipe: Recipe) -> torch.optim.Optimizer:
    backbone, head = model.param_groups()
    groups = [{"params": backbone, "lr_mult": 1.0}, {"params": head, "lr_mult": recipe.head_lr_mult}]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay)
    return torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)


def pick_device(device: str | None = None) -> torch.device:
    """``device``, or ``cuda`` where a GPU is visible, else ``cpu`` (:func:`samcam.pipeline.workers.torch_device`)."""
    from samcam.pipeline.workers import torch_device

    return torch_device(device, default="auto")


def _whole(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by :func:`train` (tensors and plain values only), its recipe and
    class count checked: ``ValueError`` naming the file for a missing or out-of-range field."""
    from samcam.io import load_checkpoint

    path = Path(path)
    ck = load_checkpoint(path)
    check_kind(ck, path, "train-seg")
    try:
        Recipe.from_dict(ck["recipe"])
        n = ck["n_classes"]
        if not _whole(n) or n < 1:
            raise ValueError(f"n_classes is {n!r}, expected a whole number ≥ 1")
        spaces = {s.name: s.n_classes for s in (VOC, COCO)}
        if "dataset" in ck and spaces.get(ck["dataset"]) != n:
            raise ValueError(f"dataset {ck['dataset']!r} with {n} classes is not one of {spaces}")
        for key in ("n_train", "step", "total_steps"):  # every field train() writes, checked before any work
            if not (_whole(ck[key]) and ck[key] >= (1 if key == "n_train" else 0)):
                raise ValueError(f"{key} is {ck[key]!r}, expected a whole number ≥ {1 if key == 'n_train' else 0}")
        if ck["step"] > ck["total_steps"]:
            raise ValueError(f"step {ck['step']} is beyond total_steps {ck['total_steps']}")
        for key, kind in (("history", dict), ("complete", bool), ("labels_dir", str), ("labels_fingerprint", str)):
            if not isinstance(ck[key], kind):
                raise ValueError(f"{key} is a {type(ck[key]).__name__}, expected a {'mapping' if kind is dict else kind.__name__}")
        if ck["complete"] != (ck["step"] == ck["total_steps"]):  # what train() saves: complete exactly at its last step
            raise ValueError(f"complete is {ck['complete']} at step {ck['step']} of {ck['total_steps']}")
        if not ck["labels_dir"].isprintable():  # it is printed in messages: a terminal escape would act on the terminal
            raise ValueError(f"labels_dir {ck['labels_dir'][:80]!r} is not one line of printable text")
        if not re.fullmatch(r"[0-9a-f]{64}", ck["labels_fingerprint"]):
            raise ValueError(f"labels_fingerprint {ck['labels_fingerprint'][:80]!r} is not the SHA-256 train-seg writes")
        # fields of a later samcam (a checkpoint made before has none): the ids, the images and their content
        ids = ck.get("ids", [])
        if not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)) or ("ids" in ck and len(ids) != ck["n_train"]):
            raise ValueError(f"ids {str(ids)[:80]} is not a list of the {ck['n_train']} training ids")
        if not (isinstance(ck.get("images_dir", ""), str) and ck.get("images_dir", "").isprintable()):
            raise ValueError(f"images_dir {str(ck['images_dir'])[:80]!r} is not one line of printable text")
        if "images_fingerprint" in ck and not (isinstance(ck["images_fingerprint"], str) and re.fullmatch(r"sha256:[0-9a-f]{64}", ck["images_fingerprint"])):
            raise ValueError(f"images_fingerprint {str(ck['images_fingerprint'])[:80]!r} is not the fingerprint train-seg writes")
        for key in ("losses", "epoch_seconds"):  # one finite number ≥ 0 per finished epoch
            values = ck["history"].get(key, [])
            if not (isinstance(values, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in values)):
                raise ValueError(f"history.{key} {str(values)[:80]} is not a list of finite numbers ≥ 0")
    except KeyError as e:
        raise ValueError(f"{path}: a samcam segmentation checkpoint without its {e.args[0]} field") from None
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: bad field in a samcam segmentation checkpoint ({e})") from None
    return ck


def load_model(path: str | os.PathLike) -> tuple[SegNet, Recipe, dict[str, Any]]:
    """(model in eval mode, its recipe, the checkpoint's metadata) from a checkpoint file; its
    weights checked by :func:`samcam.io.load_weights` (finite, fitting the recipe's network)."""
    from samcam.io import load_weights

    ck = read_checkpoint(path)
    recipe = Recipe.from_dict(ck["recipe"])
    model = SegNet.from_recipe(recipe, ck["n_classes"], pretrained=False)
    load_weights(model, ck.get("model"), path, "segmentation weights")
    meta = {k: v for k, v in ck.items() if k not in ("model", "optimizer")}
    return model.eval(), recipe, meta


def check_resumable(ck: dict[str, Any], recipe: Recipe, data: TrainData, path: Path) -> None:
    """Raise ``ValueError`` (one line, naming ``path`` and each thing that differs: the recipe's fields,
    the ids, the labels, the images) unless ``ck`` was made with this recipe on these data. A checkpoint
    made before samcam recorded the ids and the images is compared on what it holds."""
    from samcam.outputs import differences
    from samcam.training import ids_change

    theirs, why = Recipe.from_dict(ck["recipe"]), []
    if theirs != recipe:
        why.append(f"another recipe ({differences(theirs.to_dict(), recipe.to_dict())})")
    if "ids" in ck and ck["ids"] != data.ids:  # then the labels and the images of other ids differ too: the ids are the cause
        why.append(f"other ids ({ids_change(ck['ids'], data.ids)})")
    elif ck["n_train"] != len(data.ids):
        why.append(f"other ids ({ck['n_train']} -> {len(data.ids)} ids)")
    else:
        if ck["labels_fingerprint"] != data.fingerprint:  # over the ids and the labels: with the same ids, the labels
            why.append(f"other labels (from {ck['labels_dir']})" + ("" if "ids" in ck else " or another id list"))
        if ck.get("images_fingerprint", data.images_fingerprint) != data.images_fingerprint:
            why.append(f"other images (it was trained on those of {ck.get('images_dir')})")
    if why:
        raise ValueError(f"{path} was made with {'; '.join(why)}; use another --out or delete it")


@dataclass(frozen=True)
class SegTrainResult(TrainResult):
    """``done``/``skipped`` count optimiser steps (this call's, and those of the run it resumed)."""

    total_steps: int = 0
    epoch_seconds: tuple[float, ...] = ()
    peak_rss_mib: float = 0.0

    @property
    def step(self) -> int:
        """The global step the checkpoint is at."""
        return self.done + self.skipped

    @property
    def complete(self) -> bool:
        return self.step == self.total_steps


def peak_rss_mib() -> float:
    """This process's peak resident memory (``ru_maxrss``, KiB on Linux) in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train(images_dir: str | os.PathLike, labels_dir: str | os.PathLike, ids: list[str], out: str | os.PathLike,
          recipe: Recipe | None = None, *, spec: DatasetSpec = VOC, device: str | None = None,
          max_steps: int | None = None, progress: bool | None = None, pretrained: bool = True) -> SegTrainResult:  # fmt: skip
    """Train (or continue training) into ``out/last.pt``; stop after ``max_steps`` global steps if given.
    The run folder is locked while it trains (:func:`samcam.outputs.lock_output`): a second run into it
    is refused at once, never resumed from the first one's checkpoint beside it."""
    from samcam.outputs import lock_output, refuse_foreign

    # a new run starts in a new or empty folder, never beside a user's files (said before the lock file is
    # made); a run's folder, with its last.pt, also holds what eval-seg wrote there
    if Path(out).is_dir() and not (Path(out) / CHECKPOINT).exists():
        refuse_foreign(out, (CHECKPOINT,))
    recipe = recipe or Recipe()
    data = load_data(images_dir, labels_dir, ids, spec)  # bad data is said before the run folder (and its lock) is made
    if len(data.ids) < recipe.batch_size:
        raise ValueError(f"{len(data.ids)} training images are fewer than one batch of {recipe.batch_size}")
    with lock_output(out):
        return _train(data, images_dir, labels_dir, Path(out), recipe, spec, device, max_steps, progress, pretrained)


def _train(data: TrainData, images_dir: str | os.PathLike, labels_dir: str | os.PathLike, out: Path, recipe: Recipe, spec: DatasetSpec, device: str | None,
           max_steps: int | None, progress: bool | None, pretrained: bool) -> SegTrainResult:  # fmt: skip
    from samcam.progress import progress_bar, show_progress

    from samcam.io import load_weights
    from samcam.outputs import REPO, git_commit

    ck_path = out / CHECKPOINT
    steps_per_epoch = len(data.ids) // recipe.batch_size
    total = steps_per_epoch * recipe.epochs
    dev = pick_device(device)
    ck = read_checkpoint(ck_path) if ck_path.exists() else None
    if ck is not None:  # another run's checkpoint is refused before the network is built
        check_resumable(ck, recipe, data, ck_path)
    torch.manual_seed(recipe.seed)
    model = SegNet.from_recipe(recipe, spec.n_classes, pretrained=pretrained)
    opt = build_optimizer(model, recipe)
    step, history = 0, {"epoch_seconds": [], "losses": []}
    if ck is not None:
        load_weights(model, ck.get("model"), ck_path, "segmentation weights")
        if ck.get("total_steps") != total:
            raise ValueError(f"{ck_path}: made for {ck.get('total_steps')!r} steps, this run has {total}; use another --out or delete it")
        try:
            opt.load_state_dict(ck["optimizer"])
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as e:
            raise ValueError(f"{ck_path}: its optimizer state does not fit this run ({type(e).__name__})") from None
        step, history = ck["step"], ck["history"]
    model.to(dev)
    for state in opt.state.values():  # optimizer moments follow the model's device
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and k != "step":
                state[k] = v.to(dev)

    def save(complete: bool) -> None:
        history["peak_rss_mib"] = max(float(history.get("peak_rss_mib", 0.0)), peak_rss_mib())
        history["device"], history["threads"] = str(dev), torch.get_num_threads()
        if commit not in history.setdefault("commits", []):  # the code that trained it, each version a resumed run ran under
            history["commits"].append(commit)
        ck = {
            "format": FORMAT, "recipe": recipe.to_dict(), "n_classes": spec.n_classes, "dataset": spec.name,
            "labels_dir": str(Path(labels_dir).resolve()), "labels_fingerprint": data.fingerprint,
            # what it learnt from: the ids in their order (a score on them is no held-out score) and the images by content
            "ids": list(data.ids), "images_dir": str(Path(images_dir).resolve()), "images_fingerprint": data.images_fingerprint,
            "n_train": len(data.ids), "step": step, "total_steps": total, "complete": complete, "history": history,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": _to_cpu(opt.state_dict()),
        }  # fmt: skip
        save_checkpoint(ck_path, ck)

    commit = git_commit(REPO)
    stop = total if max_steps is None else min(total, max_steps)
    bar = progress_bar(total=total, initial=step, desc=f"train-seg {out.name}", unit="step", progress=progress)
    log_epochs = progress is None and not show_progress(progress)  # no bar (a log file, nohup): one line per epoch instead
    model.train()
    epoch_loss, epoch_n, t0 = 0.0, 0, time.perf_counter()
    start_step, began = step, t0
    try:
        while step < stop:
            epoch, pos = divmod(step, steps_per_epoch)
            x, y = make_batch(data, recipe, epoch, range(pos * recipe.batch_size, (pos + 1) * recipe.batch_size))
            set_poly_lr(opt, recipe.lr, step, total, recipe.poly_power, mult_key="lr_mult")
            torch.manual_seed(recipe.seed * 1_000_003 + step)  # drop-connect noise depends on the step only
            loss = F.cross_entropy(model(x.to(dev)), y.to(dev), ignore_index=IGNORE)
            if not torch.isfinite(loss):
                raise ValueError(f"training loss became {loss.item()} at step {step} ({out}); lower the learning rate")
            epoch_loss += descend(opt, loss)
            step += 1
            epoch_n += 1
            bar.update(1)
            bar.set_postfix(epoch=f"{epoch + 1}/{recipe.epochs}", loss=f"{loss.item():.3f}")
            if step % steps_per_epoch == 0:
                history["epoch_seconds"].append(time.perf_counter() - t0)
                history["losses"].append(epoch_loss / epoch_n)
                history.setdefault("load_average", []).append(os.getloadavg()[0])  # contention from other jobs
                save(step == total)
                if log_epochs:
                    print(f"train-seg {out}: epoch {step // steps_per_epoch}/{recipe.epochs} (step {step}/{total}), "
                          f"loss {history['losses'][-1]:.4f}, {history['epoch_seconds'][-1]:.1f} s, saved {ck_path.name}",
                          file=sys.stderr, flush=True)  # fmt: skip
                epoch_loss, epoch_n, t0 = 0.0, 0, time.perf_counter()
    finally:  # an interrupt loses at most the current epoch: rerunning resumes from the last checkpoint
        bar.close()
    if step % steps_per_epoch or not ck_path.exists():  # stopped mid-epoch (max_steps), or nothing left to do
        save(step == total)
    return SegTrainResult(ck_path, step - start_step, start_step, time.perf_counter() - began, tuple(history["losses"]), total,
                          tuple(history["epoch_seconds"]), peak_rss_mib())


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj
