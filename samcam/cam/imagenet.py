"""A training-free CAM source: EfficientNet-Lite0's ImageNet classifier with each VOC class given a
group of ImageNet classes (:data:`IMAGENET_TO_VOC`); the class's CAM is the probability-weighted sum
of its group's CAMs. ImageNet has no *person* class: people are found through what they wear."""

from __future__ import annotations

import numpy as np
import torch

from samcam.cam.infer import multiscale_cam, to_tensor
from samcam.data.spaces import VOC

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


def imagenet_net():
    """EfficientNet-Lite0 with its ImageNet head, for grouped CAMs."""
    from samcam.cam.nets import efficientnet_lite

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
