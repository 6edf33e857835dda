"""Datasets: class lists and palettes, VOC trees, label-map I/O, and image-level labels.

Nothing downstream hard-codes 21 classes: every function that needs the class count takes a
:class:`DatasetSpec` (``VOC`` or ``COCO``).  Label maps are ``uint8`` arrays of class indices with
``255`` meaning *void* (ignored by evaluation).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from samcam.registry import lookup

IGNORE_INDEX = 255


def color_map(n: int = 256) -> np.ndarray:
    """The standard PASCAL VOC colour map (``n`` × 3, uint8), built from the bits of each index."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


@dataclass(frozen=True)
class DatasetSpec:
    """A semantic-segmentation label space: class names (index 0 = background) and a palette."""

    name: str
    class_names: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX
    palette: np.ndarray = field(default_factory=lambda: color_map(256), repr=False, compare=False)

    @property
    def n_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.class_names)

    def class_index(self, name: str) -> int:
        """Index of a class by name; ``KeyError`` with the known names otherwise."""
        try:
            return self.class_names.index(name)
        except ValueError:
            raise KeyError(f"{name!r} is not a {self.name} class; known: {', '.join(self.class_names)}") from None


VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

COCO_CLASSES: tuple[str, ...] = (
    "background", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

VOC = DatasetSpec("voc", VOC_CLASSES)
COCO = DatasetSpec("coco", COCO_CLASSES)
DATASETS: dict[str, DatasetSpec] = {"voc": VOC, "coco": COCO}


def get_dataset(name: str) -> DatasetSpec:
    """Look up a dataset spec by name (``voc`` or ``coco``)."""
    return lookup(DATASETS, name, "dataset", fold_case=True)


# ----------------------------------------------------------------------------- label maps


def check_label_values(label: np.ndarray, spec: DatasetSpec, path: str | os.PathLike = "<array>") -> None:
    """Raise ``ValueError`` naming ``path`` if ``label`` has values outside the classes and void.

    The usual case costs one maximum (or a comparison pass when void occurs); the offending values
    are counted only when there are some."""
    label = np.asarray(label)
    top = label.max(initial=0)
    if top < spec.n_classes or (top == spec.ignore_index and bool(np.all((label < spec.n_classes) | (label == spec.ignore_index)))):
        if label.size == 0 or label.min() >= 0:
            return
    values = np.unique(label)
    values = values[(values < 0) | ((values >= spec.n_classes) & (values != spec.ignore_index))]
    bad = values
    if bad.size:
        raise ValueError(
            f"{path}: label values {bad.tolist()} outside 0..{spec.n_classes - 1} "
            f"(and {spec.ignore_index} = void) for dataset {spec.name}"
        )


def colorize(label: np.ndarray, spec: DatasetSpec = VOC) -> np.ndarray:
    """An RGB (H × W × 3 uint8) rendering of a label map in the dataset palette."""
    return spec.palette[np.asarray(label, dtype=np.uint8)]


# ----------------------------------------------------------------------------- VOC tree


# ----------------------------------------------------------------------------- image-level labels


