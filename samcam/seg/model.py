"""A small segmentation network: EfficientNet-Lite backbone + LR-ASPP head (Howard et al., 2019).

The backbone is the ImageNet EfficientNet-Lite of :func:`samcam.cam.efficientnet_lite` (stride 32,
or 16 with its last stage dilated as DeepLab does; ReLU6, input scaling ``(x − 127) / 128``). The head
takes the last features (after the backbone's ``1 × 1`` head conv), gates them with a global-pooled sigmoid branch, upsamples to the
stride-8 features and adds a linear classifier of those low-level features. Logits are upsampled
bilinearly to the input size. Inputs are float RGB in 0..255, ``B × 3 × H × W``; any ``H, W``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from samcam.cam.nets import efficientnet_lite
from samcam.registry import lookup
from samcam.seg.recipe import BACKBONES, Recipe



class LiteFeatures(nn.Module):
    """The blocks of an ``efficientnet_lite_pytorch.EfficientNet``, returning stride-8 and stride-32 maps."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        stride, self.low_index, self.low_channels = 2, -1, 0  # the stem has stride 2
        for i, block in enumerate(net._blocks):
            s = block._depthwise_conv.stride
            stride *= int(s[0] if isinstance(s, (tuple, list)) else s)
            if stride == 8:
                self.low_index, self.low_channels = i, int(block._block_args.output_filters)
        if self.low_index < 0:
            raise ValueError("backbone has no stride-8 stage")
        self.high_channels = int(net._conv_head.out_channels)
        self.frozen: list[nn.Module] = []

    def freeze_early(self) -> None:
        """Freeze the stem and the stride-2/4 blocks (weights and batch-norm statistics): a cheaper backward."""
        net, stride = self.net, 2
        self.frozen = [net._conv_stem, net._bn0]
        for block in net._blocks:
            s = block._depthwise_conv.stride
            stride *= int(s[0] if isinstance(s, (tuple, list)) else s)
            if stride > 4:
                break
            self.frozen.append(block)
        for m in self.frozen:
            m.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> LiteFeatures:
        super().train(mode)
        for m in self.frozen:
            m.eval()
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        rate = net._global_params.drop_connect_rate
        low = x
        for i, block in enumerate(net._blocks):
            x = block(x, drop_connect_rate=rate * i / len(net._blocks) if rate else None)
            if i == self.low_index:
                low = x
        return low, net._swish(net._bn1(net._conv_head(x)))


class LRASPPHead(nn.Module):
    """LR-ASPP: ``cbr(high) · sigmoid(conv(pool(high)))`` upsampled, classified, plus a low-level classifier."""

    def __init__(self, low_channels: int, high_channels: int, n_classes: int, inter: int = 128) -> None:
        super().__init__()
        self.cbr = nn.Sequential(nn.Conv2d(high_channels, inter, 1, bias=False), nn.BatchNorm2d(inter), nn.ReLU(inplace=True))
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_channels, inter, 1), nn.Sigmoid())
        self.low_classifier = nn.Conv2d(low_channels, n_classes, 1)
        self.high_classifier = nn.Conv2d(inter, n_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        x = self.cbr(high) * self.gate(high)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.low_classifier(low) + self.high_classifier(x)


class SegNet(nn.Module):
    """EfficientNet-Lite + LR-ASPP; ``forward(images 0..255) → logits B × n_classes × H × W``."""

    def __init__(self, backbone: str = "lite0", n_classes: int = 21, pretrained: bool = True, head_channels: int = 128,
                 freeze_early: bool = False, output_stride: int = 32) -> None:  # fmt: skip
        super().__init__()
        lookup(BACKBONES, backbone, "backbone")
        cam_net = efficientnet_lite(backbone, pretrained=pretrained, output_stride=output_stride)
        self.backbone = LiteFeatures(cam_net.backbone.net)
        if freeze_early:
            self.backbone.freeze_early()
        self.head = LRASPPHead(self.backbone.low_channels, self.backbone.high_channels, n_classes, head_channels)
        self.register_buffer("mean", cam_net.mean.clone(), persistent=False)
        self.register_buffer("std", cam_net.std.clone(), persistent=False)
        self.backbone_name = backbone
        self.n_classes = n_classes

    @classmethod
    def from_recipe(cls, recipe: Recipe, n_classes: int, pretrained: bool = True) -> SegNet:
        """The network a recipe describes (backbone, head width, frozen early blocks, output stride)."""
        return cls(recipe.backbone, n_classes, pretrained=pretrained, head_channels=recipe.head_channels,
                   freeze_early=recipe.freeze_early, output_stride=recipe.output_stride)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        low, high = self.backbone((images - self.mean) / self.std)
        logits = self.head(low, high)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(trainable pretrained backbone parameters, new head parameters)."""
        return [p for p in self.backbone.parameters() if p.requires_grad], list(self.head.parameters())
