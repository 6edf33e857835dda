"""CAM inference: multi-scale + flip CAMs (IRN's recipe), Grad-CAM, classification scores. Tensors/arrays in, arrays out."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from samcam.cam.nets import CamNet

SCALES: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)


@contextlib.contextmanager
def sized(source: object, h: int, w: int, scale: float = 1.0):
    """A network's own error for an input smaller than its kernels (EfficientNet-Lite0 below about
    13 px: "Kernel size can't be greater than actual input size") said as a ``ValueError`` naming the
    image, its size and the scale; any other error passes unchanged. Every network samcam runs on an
    image (CAMs, the affinity backbone) runs inside it."""
    try:
        yield
    except RuntimeError as e:
        if "input size" not in str(e):
            raise
        raise ValueError(f"{source}: {h}×{w} pixels is too small for this network at scale {scale:g} "
                         f"({str(e).splitlines()[0]})") from None  # fmt: skip


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``H × W × 3`` uint8 → ``1 × 3 × H × W`` float (0..255)."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()


@torch.inference_mode()
def multiscale_cam(net: CamNet, image: np.ndarray, classes: Sequence[int], scales: Sequence[float] = SCALES, flip: bool = True,
                   normalize: bool = True, source: object = "image") -> np.ndarray:  # fmt: skip
    """IRN-style CAMs of the given 0-based ``classes``: ``len(classes) × H × W`` float32, each divided
    by its maximum (in [0, 1]) unless ``normalize`` is false. ``source`` names the image in the error
    for one too small for the network."""
    h, w = image.shape[:2]
    if len(classes) == 0:
        return np.zeros((0, h, w), np.float32)
    dev = net_device(net)
    x = to_tensor(image).to(dev)
    total = torch.zeros((len(classes), h, w), device=dev)
    for s in scales:
        xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        batch = torch.cat([xs, xs.flip(-1)]) if flip else xs
        with sized(source, h, w, s):
            cam = net.cams(batch, classes)
        if flip:
            cam = cam[:1] + cam[1:].flip(-1)
        total += F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False)[0]
    total = F.relu(total)
    if normalize:
        total /= total.amax(dim=(1, 2), keepdim=True) + 1e-5
    return total.cpu().numpy().astype(np.float32)


def net_device(net: nn.Module) -> torch.device:
    """Where ``net``'s weights are (inputs follow them); CPU for a network without parameters."""
    params = net.parameters() if hasattr(net, "parameters") else iter(())
    return next(params, torch.empty(0)).device


def grad_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017) for any classifier: ``ReLU(Σ_c mean(∂y_k/∂A_c) A_c)`` at ``layer``.

    ``x``: ``1 × 3 × H × W`` model input; returns ``len(classes) × h × w`` at the layer's resolution.
    """
    acts: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, i, o: acts.append(o))
    try:
        with torch.enable_grad():
            logits = model(x)
            a = acts[-1]
            maps = []
            for k in classes:
                (g,) = torch.autograd.grad(logits[0, k], a, retain_graph=True)
                maps.append(F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))[0])
    finally:
        handle.remove()
    return torch.stack(maps).detach() if maps else torch.zeros((0, *acts[-1].shape[2:]))


@torch.inference_mode()
def predict_scores(net: CamNet, images: list[np.ndarray], sources: Sequence[object] | None = None) -> np.ndarray:
    """Sigmoid class scores (N × K), each image at full resolution; ``sources`` name the images in the
    error for one too small for the network."""
    net.eval()
    dev = net_device(net)
    scores = []
    for k, im in enumerate(images):
        with sized(sources[k] if sources is not None else f"image {k}", *im.shape[:2], 1.0):
            scores.append(torch.sigmoid(net(to_tensor(im).to(dev)))[0].cpu().numpy())
    return np.stack(scores)
