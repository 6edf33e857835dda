"""Training a multi-label classifier on image-level labels only (the WSSS setting), for CAMs.

``train_classifier`` fine-tunes a :class:`samcam.cam.CamNet` (the classifier head, and optionally the
backbone) with the multi-label soft-margin loss on random crops and flips, from a fixed seed. Batch
norm statistics stay frozen (small batches). A checkpoint is written atomically after every epoch and
a run resumes from it. ``evaluate_map`` scores classification mAP on held-out images.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from samcam.cam.infer import to_tensor
from samcam.cam.nets import build_camnet, frozen_bn
from samcam.io import load_checkpoint
from samcam.training import descend, save_epoch, set_poly_lr


@dataclass
class TrainConfig:
    backbone: str = "efficientnet-lite0"
    epochs: int = 6
    batch_size: int = 16
    crop: int = 320
    lr_head: float = 1e-2
    lr_backbone: float = 1e-3
    train_backbone: bool = True
    seed: int = 0
    n_classes: int = 20
    output_stride: int = 32


@dataclass
class TrainResult:
    checkpoint: Path
    seconds: float
    losses: list[float] = field(default_factory=list)


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


def _random_window(features: torch.Tensor, cells: int, rng: np.random.Generator) -> torch.Tensor:
    """Global average of a random ``cells × cells`` window of a random one of the two feature maps
    (image, mirror image): the frozen-backbone counterpart of a random crop and flip."""
    f = features[rng.integers(len(features))].float()
    _, h, w = f.shape
    ch, cw = min(cells, h), min(cells, w)
    y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    return f[:, y0 : y0 + ch, x0 : x0 + cw].mean((1, 2))


def train_classifier(
    images: list[np.ndarray],
    labels: np.ndarray,
    out: str | os.PathLike,
    config: TrainConfig = TrainConfig(),
    progress: bool | None = None,
    ids: list[str] | None = None,
) -> TrainResult:
    """Fine-tune on ``images`` (RGB uint8) with 0/1 ``labels`` (N × K); checkpoint to ``out``.

    With ``train_backbone`` false only the head learns: the frozen backbone's features of every
    image (resized to ``1.15 · crop`` short side) and of its mirror image are computed once, and each
    step averages a random ``crop / output_stride``-cell window of them — the same augmentation as a
    random crop and flip, without a backbone pass per step. Resumes from ``out`` if it holds an
    unfinished run with the same configuration. ``ids`` (one per image) are recorded in the
    checkpoint, and a resume on another id list or image count is refused.
    """
    from samcam.progress import progress_bar

    out = Path(out)
    if ids is not None and len(ids) != len(images):
        raise ValueError(f"{len(ids)} ids for {len(images)} images")
    data_record = {"n_images": len(images), "ids": list(ids) if ids is not None else None}
    torch.manual_seed(config.seed)
    net = build_camnet(config.backbone, config.n_classes, output_stride=config.output_stride)
    params = [{"params": net.classifier.parameters(), "lr": config.lr_head}]
    if config.train_backbone:
        params.append({"params": [p for n, p in net.named_parameters() if not n.startswith("classifier")], "lr": config.lr_backbone})
    else:
        for n, p in net.named_parameters():
            p.requires_grad = n.startswith("classifier")
    opt = torch.optim.SGD(params, momentum=0.9, weight_decay=1e-4)
    start_epoch, losses, before = 0, [], 0.0
    if out.exists():
        ck = load_checkpoint(out)
        if ck.get("config") != vars(config) and {"output_stride": 32, **ck.get("config", {})} != vars(config):
            raise ValueError(f"{out} holds a run with another configuration ({ck.get('config')}); choose another path")
        other_ids = ck.get("ids") is not None and ids is not None and list(ck["ids"]) != list(ids)
        if "n_images" in ck and (ck["n_images"] != len(images) or other_ids):
            raise ValueError(f"{out} holds a run on other images ({ck['n_images']} images, ids {'recorded' if ck.get('ids') else 'not recorded'}); choose another path")
        net.load_state_dict(ck["state_dict"])
        if "optimizer" in ck:
            opt.load_state_dict(ck["optimizer"])
        start_epoch, losses = ck["epoch"], list(ck.get("losses", []))
        before = float(ck.get("seconds", 0.0))
    t0 = time.perf_counter()  # the cost of training includes the features of a frozen backbone
    data = [_resize_short(im, int(config.crop * 1.15)) for im in images]
    if config.train_backbone:
        def logits(idx, rng):
            return net(torch.stack([_random_crop(data[i], config.crop, rng) for i in idx]))
    else:  # frozen backbone: features of each image and its mirror image once, then windows of them
        with torch.inference_mode():
            data = [net.features(torch.stack([x, x.flip(-1)])).half() for x in
                    progress_bar(data, desc="backbone features", unit="img", progress=progress)]  # fmt: skip
        cells = max(1, config.crop // config.output_stride)

        def logits(idx, rng):
            return net.classifier(torch.stack([_random_window(data[i], cells, rng) for i in idx])[:, :, None, None]).flatten(1)

    y = torch.as_tensor(labels, dtype=torch.float32)
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
            epoch_loss.append(descend(opt, F.multilabel_soft_margin_loss(logits(idx, rng), y[idx])))
            bar.set_postfix(loss=f"{np.mean(epoch_loss):.4f}")
        losses.append(float(np.mean(epoch_loss)))
        state = {"backbone": config.backbone, "config": vars(config), "epoch": epoch + 1, "losses": losses, "state_dict": net.state_dict(), **data_record}
        save_epoch(out, state, opt, epoch + 1 == config.epochs, before + time.perf_counter() - t0)
    return TrainResult(out, time.perf_counter() - t0, losses)


