"""Training a multi-label classifier on image-level labels only (the WSSS setting), for CAMs.

``train_classifier`` fine-tunes a :class:`samcam.cam.CamNet` (the classifier head, and optionally the
backbone) with the multi-label soft-margin loss on random crops and flips, from a fixed seed. Batch
norm statistics stay frozen (small batches). A checkpoint is written atomically after every epoch and
a run resumes from it.

Two options aim at the CAM's false activation on a small training set (the 558 VOC images here):
``rescale`` draws each sample's scale from a range, as IRN's long-side 320-640 rescaling, instead
of one fixed scale; ``freeze_blocks`` keeps the stem and the first blocks at their ImageNet weights
(fine-tuning from a stage on). ``device`` (e.g. ``cuda``) is where the run computes; it is not part
of the configuration, so a run started on a GPU can be resumed on a CPU.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from samcam.cam.infer import to_tensor
from samcam.cam.nets import EFFICIENTNETS, build_camnet, checkpoint_config, efficientnet_blocks, frozen_bn
from samcam.config import check_settings, setting
from samcam.io import load_checkpoint, load_weights
from samcam.training import TrainResult, check_kind, descend, ids_change, resume_state, save_epoch, set_poly_lr


#: the most blocks of the backbones (Lite1 and Lite2: 21; Lite0: 16): ``freeze_blocks``' range, each
#: backbone's own count checked by :class:`TrainConfig`
MAX_BLOCKS = 21


@dataclass
class TrainConfig:
    backbone: str = setting("efficientnet-lite0", choices=EFFICIENTNETS, help="ImageNet backbone")
    epochs: int = setting(6, 1, 10_000, "epochs")
    batch_size: int = setting(16, 1, 4096, "images per step")
    crop: int = setting(320, 32, 2048, "square training crop in pixels")
    lr_head: float = setting(1e-2, 0.0, 10.0, "head learning rate", open_lo=True)
    lr_backbone: float = setting(1e-3, 0.0, 10.0, "backbone learning rate", open_lo=True)
    train_backbone: bool = setting(True, flag="--head-only", help="train only the classifier head (the backbone stays frozen)")
    seed: int = setting(0, 0, 2**32 - 1, "seed of the sample order and augmentations")
    n_classes: int = 20  # the dataset's (VOC's 20), not an option
    output_stride: int = setting(32, choices=(16, 32), help="16 dilates the last stage (finer CAMs)")
    rescale: tuple[float, float] | None = None  # random scale of each sample (of the original image)
    freeze_blocks: int = setting(0, 0, MAX_BLOCKS, "keep the stem and this many first backbone blocks at their ImageNet weights (0: all train; at most the backbone's blocks)")
    recam: float = setting(0.0, 0.0, 10.0, "weight of ReCAM's softmax cross-entropy on CAM-masked features (0: off; needs the backbone trained)")

    def __post_init__(self) -> None:
        check_settings(self, "classifier training")
        if not (isinstance(self.n_classes, int) and not isinstance(self.n_classes, bool) and 1 <= self.n_classes <= 1000):
            raise ValueError(f"classifier training field n_classes is {self.n_classes!r}, expected a whole number in [1, 1000]")
        if self.rescale is not None:
            lo, hi = self.rescale
            if not (0 < lo <= hi <= 4):
                raise ValueError(f"rescale must satisfy 0 < min ≤ max ≤ 4, not {self.rescale}")
            self.rescale = (float(lo), float(hi))
        if not self.train_backbone and (self.rescale is not None or self.freeze_blocks):
            raise ValueError("rescale and freeze_blocks act on a trained backbone: they cannot be used head only")
        if self.freeze_blocks > (n := efficientnet_blocks(self.backbone) if self.freeze_blocks else 0):
            raise ValueError(f"freeze_blocks is {self.freeze_blocks}, more than the {n} blocks of {self.backbone}; "
                             f"give at most {n} (all of them: the stem and every block stay frozen)")  # fmt: skip
        if self.recam and not self.train_backbone:
            raise ValueError("recam needs the backbone's feature maps: it cannot be used with a frozen backbone (head only)")


def config_differences(recorded: dict, config: TrainConfig) -> str:
    """Where a checkpoint's recorded configuration differs from ``config`` (``config.epochs: 1 -> 2``,
    :func:`samcam.outputs.differences`; empty where it is the same); fields a checkpoint predates
    (``output_stride``, ``rescale``, ``freeze_blocks``, ``recam``) count as their defaults."""
    from samcam.outputs import differences

    rec = {**vars(TrainConfig()), **recorded}
    if rec.get("rescale") is not None:
        rec["rescale"] = tuple(float(v) for v in rec["rescale"])
    return differences(rec, vars(config), "config") if rec != vars(config) else ""


def frozen_parameter(name: str, freeze_blocks: int) -> bool:
    """Whether the parameter ``name`` of an EfficientNet :class:`CamNet` stays frozen with
    ``freeze_blocks``: the stem and the blocks ``0 .. freeze_blocks − 1``."""
    if freeze_blocks <= 0 or not name.startswith("backbone.net."):
        return False
    rest = name[len("backbone.net."):]
    if rest.startswith(("_conv_stem.", "_bn0.")):
        return True
    return rest.startswith("_blocks.") and int(rest.split(".")[1]) < freeze_blocks




def recam_loss(features: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ReCAM's re-activation loss (Chen et al., CVPR 2022), with the classifier shared: for each image
    ``b`` and each class ``k`` it holds, the features are weighted by the class's CAM
    ``ReLU(w_k · f)`` divided by its maximum, averaged over the map and classified again; the loss is
    the softmax cross-entropy of those logits against ``k``, averaged over the (image, class) pairs.
    It penalises a class whose CAM region also looks like other classes (e.g. a boat's water).

    ``features`` B × C × h × w, ``weight`` K × C (× 1 × 1), ``labels`` B × K (0/1)."""
    w = weight.reshape(weight.shape[0], -1)
    cams = F.relu(torch.einsum("kc,bchw->bkhw", w, features))
    cams = cams / (cams.amax(dim=(2, 3), keepdim=True) + 1e-5)
    pooled = torch.einsum("bkhw,bchw->bkc", cams, features) / (features.shape[2] * features.shape[3])
    logits = pooled @ w.t()  # B × K (masked by class k) × K (classes)
    b, k = torch.nonzero(labels > 0.5, as_tuple=True)
    if len(b) == 0:
        return features.sum() * 0.0
    return F.cross_entropy(logits[b, k], k)


def _resize_short(image: np.ndarray, short: int) -> torch.Tensor:
    x = to_tensor(image)
    h, w = x.shape[2:]
    s = short / min(h, w)
    return F.interpolate(x, size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear", align_corners=False)[0]


def _random_crop(x: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    _, h, w = x.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), value=127.0)
        _, h, w = x.shape
    y0, x0 = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    x = x[:, y0 : y0 + size, x0 : x0 + size]
    return x.flip(-1) if rng.random() < 0.5 else x


def _random_scaled_crop(x: torch.Tensor, size: int, rescale: tuple[float, float], rng: np.random.Generator) -> torch.Tensor:
    """A random ``size`` crop (padded with the mean where the image is smaller) of ``x`` (3 × H × W,
    0..255) rescaled by a factor drawn uniformly from ``rescale``, flipped with probability 1/2."""
    s = rng.uniform(*rescale)
    h, w = x.shape[1:]
    x = F.interpolate(x[None], size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear", align_corners=False)[0]
    return _random_crop(x, size, rng)


def _random_window(features: torch.Tensor, cells: int, rng: np.random.Generator) -> torch.Tensor:
    """Global average of a random ``cells × cells`` window of a random one of the two feature maps
    (image, mirror image): the frozen-backbone counterpart of a random crop and flip."""
    f = features[rng.integers(len(features))].float()
    _, h, w = f.shape
    ch, cw = min(cells, h), min(cells, w)
    y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    return f[:, y0 : y0 + ch, x0 : x0 + cw].mean((1, 2))


def _data_sha256(images: Sequence[np.ndarray], labels: np.ndarray) -> str:
    """The SHA-256 of what a classifier learns from: each image's shape and pixels, in order, and the
    0/1 image-level labels (so a resume on other labels, read from another source, is refused)."""
    import hashlib

    h = hashlib.sha256()
    for im in images:
        a = np.ascontiguousarray(im)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(memoryview(a).cast("B"))
    lab = np.ascontiguousarray(np.asarray(labels, np.float32))
    h.update(f"{lab.shape}".encode())
    h.update(memoryview(lab).cast("B"))
    return h.hexdigest()


def train_classifier(
    images: list[np.ndarray],
    labels: np.ndarray,
    out: str | os.PathLike,
    config: TrainConfig = TrainConfig(),
    progress: bool | None = None,
    ids: list[str] | None = None,
    device: str | None = None,
) -> TrainResult:
    """Fine-tune on ``images`` (RGB uint8) with 0/1 ``labels`` (N × K); checkpoint to ``out``.

    With ``train_backbone`` false only the head learns: the frozen backbone's features of every
    image (resized to ``1.15 · crop`` short side) and of its mirror image are computed once, and each
    step averages a random ``crop / output_stride``-cell window of them — the same augmentation as a
    random crop and flip, without a backbone pass per step. Resumes from ``out`` if it holds an
    unfinished run with the same configuration. ``ids`` (one per image) are recorded in the
    checkpoint, with a hash of the images' pixels and the labels (``data_sha256``), and a resume on
    another id list, image count, image contents or labels is refused. ``device``: where to
    compute (default CPU); images and the network move there, the checkpoint holds CPU tensors.
    The checkpoint ``out`` is locked while it trains (:func:`samcam.outputs.lock_file_output`).
    """
    from samcam.outputs import lock_file_output

    with lock_file_output(out):
        from samcam.progress import progress_bar

        out = Path(out)
        if ids is not None and len(ids) != len(images):
            raise ValueError(f"{len(ids)} ids for {len(images)} images")
        data_record = {"n_images": len(images), "ids": list(ids) if ids is not None else None, "data_sha256": _data_sha256(images, labels)}
        torch.manual_seed(config.seed)
        dev = torch.device(device or "cpu")
        net = build_camnet(config.backbone, config.n_classes, output_stride=config.output_stride)
        params = [{"params": net.classifier.parameters(), "lr": config.lr_head}]
        if config.train_backbone:
            for n, p in net.named_parameters():
                p.requires_grad = not frozen_parameter(n, config.freeze_blocks)
            params.append({"params": [p for n, p in net.named_parameters() if not n.startswith("classifier") and p.requires_grad],
                           "lr": config.lr_backbone})  # fmt: skip
        else:
            for n, p in net.named_parameters():
                p.requires_grad = n.startswith("classifier")
        net.to(dev)  # before the optimiser state is loaded, so a resumed state follows the weights' device
        opt = torch.optim.SGD(params, momentum=0.9, weight_decay=1e-4)
        start_epoch, losses, before = 0, [], 0.0
        if out.exists():
            ck = load_checkpoint(out)
            check_kind(ck, out, "train-classifier", "choose another path")
            changed = config_differences(checkpoint_config(ck, out), config)
            if changed:
                raise ValueError(f"{out} holds a run with another configuration ({changed}); choose another path")
            if ck.get("ids") is not None and ids is not None and list(ck["ids"]) != list(ids):
                raise ValueError(f"{out} holds a run on other images (other ids: {ids_change(ck['ids'], ids)}); choose another path")
            if "n_images" in ck and ck["n_images"] != len(images):  # a run or a call without ids: the count tells
                raise ValueError(f"{out} holds a run on other images (n_images: {ck['n_images']!r} -> {len(images)}); choose another path")
            if "data_sha256" in ck and ck["data_sha256"] != data_record["data_sha256"]:  # same ids, other pixels or other image-level labels
                raise ValueError(f"{out} holds a run on other image contents or other image-level labels (another label source); choose another path")
            load_weights(net, ck.get("state_dict"), out, "classifier weights")
            start_epoch = ck.get("epoch")
            if not (isinstance(start_epoch, int) and not isinstance(start_epoch, bool) and 0 <= start_epoch <= config.epochs):
                raise ValueError(f"{out}: a classifier checkpoint at epoch {start_epoch!r}; expected a whole number from 0 to {config.epochs}")
            losses, before = resume_state(ck, out, opt)
        t0 = time.perf_counter()  # the cost of training includes the features of a frozen backbone
        y = torch.as_tensor(labels, dtype=torch.float32, device=dev)
        if config.train_backbone:
            if config.rescale is not None:
                data = [to_tensor(im)[0].to(dev) for im in images]

                def crop(i, rng):
                    return _random_scaled_crop(data[i], config.crop, config.rescale, rng)
            else:
                data = [_resize_short(im, int(config.crop * 1.15)).to(dev) for im in images]

                def crop(i, rng):
                    return _random_crop(data[i], config.crop, rng)

            def loss_of(idx, rng):
                f = net.features(torch.stack([crop(i, rng) for i in idx]))
                loss = F.multilabel_soft_margin_loss(net.classifier(f.mean(dim=(2, 3), keepdim=True)).flatten(1), y[idx])
                return loss + config.recam * recam_loss(f, net.classifier.weight, y[idx]) if config.recam else loss
        else:  # frozen backbone: features of each image and its mirror image once, then windows of them
            data = [_resize_short(im, int(config.crop * 1.15)).to(dev) for im in images]
            with torch.inference_mode():
                data = [net.features(torch.stack([x, x.flip(-1)])).half() for x in
                        progress_bar(data, desc="backbone features", unit="img", progress=progress)]  # fmt: skip
            cells = max(1, config.crop // config.output_stride)

            def loss_of(idx, rng):
                logits = net.classifier(torch.stack([_random_window(data[i], cells, rng) for i in idx])[:, :, None, None]).flatten(1)
                return F.multilabel_soft_margin_loss(logits, y[idx])

        total_steps = config.epochs * int(np.ceil(len(data) / config.batch_size))
        for epoch in range(start_epoch, config.epochs):
            rng = np.random.default_rng(config.seed * 1000 + epoch)
            order = rng.permutation(len(data))
            net.train()
            frozen_bn(net)
            if not config.train_backbone and isinstance(net.backbone, torch.nn.Module):
                net.backbone.eval()  # a frozen backbone: no dropout or drop-connect either
            bar = progress_bar(range(0, len(order), config.batch_size), desc=f"epoch {epoch + 1}/{config.epochs}", progress=progress)
            epoch_loss = []
            for s in bar:
                idx = order[s : s + config.batch_size]
                step = epoch * len(bar) + s // config.batch_size
                set_poly_lr(opt, (config.lr_head, config.lr_backbone), step, total_steps)  # poly schedule, as IRN
                epoch_loss.append(descend(opt, loss_of(idx, rng)))
                bar.set_postfix(loss=f"{np.mean(epoch_loss):.4f}")
            losses.append(float(np.mean(epoch_loss)))
            weights = {k: v.detach().cpu() for k, v in net.state_dict().items()}
            state = {"backbone": config.backbone, "config": vars(config), "epoch": epoch + 1, "losses": losses, "state_dict": weights,
                     "device": str(dev), **data_record}  # fmt: skip
            save_epoch(out, state, opt, epoch + 1 == config.epochs, before + time.perf_counter() - t0)
        return TrainResult(out, config.epochs - start_epoch, start_epoch, time.perf_counter() - t0, tuple(losses))
