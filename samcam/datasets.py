"""Datasets: class lists and palettes, VOC trees, label-map I/O, and image-level labels.

Nothing downstream hard-codes 21 classes: every function that needs the class count takes a
:class:`DatasetSpec` (``VOC`` or ``COCO``).  Label maps are ``uint8`` arrays of class indices with
``255`` meaning *void* (ignored by evaluation).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .atomic import atomic_path
from .safe_pickle import load_object_npy

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
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


# ----------------------------------------------------------------------------- label maps


def read_label(path: str | os.PathLike, spec: DatasetSpec | None = None) -> np.ndarray:
    """Read a label PNG as a ``uint8`` array of class indices.

    Palette (mode ``P``) and grayscale (mode ``L``) PNGs hold indices directly; an RGB colour label
    is mapped back through the dataset palette.  With ``spec`` given, values other than
    ``0..n_classes-1`` and ``255`` raise ``ValueError`` naming the file.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            mode = im.mode
            arr = np.array(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"label file not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path}: unreadable label image ({e})") from e
    if mode in ("RGB", "RGBA"):
        arr = _rgb_to_index(arr[..., :3], (spec or VOC).palette, path)
    elif mode not in ("P", "L"):
        raise ValueError(f"{path}: label image has mode {mode}; expected a palette (P) or grayscale (L) PNG")
    arr = arr.astype(np.uint8, copy=False)
    if spec is not None:
        check_label_values(arr, spec, path)
    return arr


def _rgb_to_index(rgb: np.ndarray, palette: np.ndarray, path: Path) -> np.ndarray:
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    pal_code = (palette[:, 0].astype(np.int64) << 16) | (palette[:, 1].astype(np.int64) << 8) | palette[:, 2]
    lut = {int(c): i for i, c in reversed(list(enumerate(pal_code)))}
    uniq, inv = np.unique(code, return_inverse=True)
    try:
        idx = np.array([lut[int(u)] for u in uniq], dtype=np.uint8)
    except KeyError as e:
        raise ValueError(f"{path}: RGB label colour {int(e.args[0]):06x} is not in the palette") from None
    return idx[inv].reshape(code.shape)


def check_label_values(label: np.ndarray, spec: DatasetSpec, path: str | os.PathLike = "<array>") -> None:
    """Raise ``ValueError`` naming ``path`` if ``label`` has values outside the classes and void."""
    values = np.unique(label)
    bad = values[(values >= spec.n_classes) & (values != spec.ignore_index)]
    if bad.size:
        raise ValueError(
            f"{path}: label values {bad.tolist()} outside 0..{spec.n_classes - 1} "
            f"(and {spec.ignore_index} = void) for dataset {spec.name}"
        )


def write_label(path: str | os.PathLike, label: np.ndarray, spec: DatasetSpec = VOC) -> None:
    """Write ``label`` as a palette PNG with ``spec``'s palette, atomically."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"{path}: a label map must be 2-D, got shape {label.shape}")
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise ValueError(f"{path}: label values must fit in 0..255")
        label = label.astype(np.uint8)
    im = Image.fromarray(label, mode="P")
    im.putpalette(spec.palette.reshape(-1).tolist())
    with atomic_path(path, suffix=".png.tmp") as tmp:
        im.save(tmp, format="PNG")


def colorize(label: np.ndarray, spec: DatasetSpec = VOC) -> np.ndarray:
    """An RGB (H × W × 3 uint8) rendering of a label map in the dataset palette."""
    return spec.palette[np.asarray(label, dtype=np.uint8)]


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as H × W × 3 uint8 RGB (grayscale, palette and RGBA are converted)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path}: unreadable image ({e})") from e


def read_ids(path: str | os.PathLike) -> list[str]:
    """Read an id list (one id per line; blank lines and ``#`` comments skipped)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"id list not found: {path}") from None
    return [s.split()[0] for s in (ln.strip() for ln in lines) if s and not s.startswith("#")]


# ----------------------------------------------------------------------------- VOC tree


class VocTree:
    """A PASCAL VOC 2012 folder in its standard layout.

    ``root`` holds ``JPEGImages/``, ``SegmentationClass/``, ``ImageSets/Segmentation/<split>.txt``
    and optionally ``Annotations/``.  With ``root=None`` the ``SAMCAM_VOC_ROOT`` variable is used.
    """

    ENV = "SAMCAM_VOC_ROOT"

    def __init__(self, root: str | os.PathLike | None = None, spec: DatasetSpec = VOC) -> None:
        if root is None:
            root = os.environ.get(self.ENV)
            if not root:
                raise ValueError(f"no VOC root given and ${self.ENV} is not set")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"VOC root is not a folder: {self.root}")
        self.spec = spec

    def ids(self, split: str = "train") -> list[str]:
        """Ids of ``ImageSets/Segmentation/<split>.txt``."""
        return read_ids(self.root / "ImageSets" / "Segmentation" / f"{split}.txt")

    def image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        return self.root / "SegmentationClass" / f"{image_id}.png"

    def read_image(self, image_id: str) -> np.ndarray:
        """The RGB image of ``image_id``; ``FileNotFoundError`` naming the file if absent."""
        return read_image(self.image_path(image_id))

    def read_gt(self, image_id: str) -> np.ndarray:
        """The ground-truth label map of ``image_id`` (values checked against the class range)."""
        return read_label(self.label_path(image_id), self.spec)

    def read_pair(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Image and ground truth, checked to have the same size."""
        image, gt = self.read_image(image_id), self.read_gt(image_id)
        if image.shape[:2] != gt.shape:
            raise ValueError(
                f"{self.label_path(image_id)}: label size {gt.shape} differs from image size "
                f"{image.shape[:2]} ({self.image_path(image_id)})"
            )
        return image, gt

    def image_labels_xml(self, image_id: str) -> np.ndarray:
        """Image-level labels from ``Annotations/<id>.xml``."""
        return labels_from_xml(self.root / "Annotations" / f"{image_id}.xml", self.spec)


# ----------------------------------------------------------------------------- image-level labels


def labels_from_mask(mask: np.ndarray, spec: DatasetSpec = VOC) -> np.ndarray:
    """Foreground classes present in a label map (sorted indices ≥ 1; void and background excluded)."""
    present = np.flatnonzero(np.bincount(np.asarray(mask).ravel(), minlength=256)[: spec.n_classes])
    return present[present > 0]


def labels_from_xml(path: str | os.PathLike, spec: DatasetSpec = VOC) -> np.ndarray:
    """Foreground classes named by the ``<object><name>`` entries of a VOC annotation XML."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file not found: {path}") from None
    except ET.ParseError as e:
        raise ValueError(f"{path}: malformed annotation XML ({e})") from e
    names = [(o.findtext("name") or "").strip() for o in root.iter("object")]
    try:
        return np.array(sorted({spec.class_index(n) for n in names}), dtype=np.int64)
    except KeyError as e:
        raise ValueError(f"{path}: {e.args[0]}") from None


def _decode_irn_key(key: object) -> str:
    """IRN stores ids as integers (2007000032); turn them back into '2007_000032'."""
    if isinstance(key, (int, np.integer)):
        s = str(int(key))
        return f"{s[:4]}_{s[4:]}"
    return str(key)


def load_cls_labels(path: str | os.PathLike, spec: DatasetSpec = VOC) -> dict[str, np.ndarray]:
    """Read IRN's ``cls_labels.npy``: id → sorted foreground class indices (1-based).

    The file is a pickled ``dict`` (id → 0/1 vector over the foreground classes).  It is loaded with
    :func:`samcam.safe_pickle.load_object_npy`, a restricted unpickler that admits only NumPy arrays,
    scalars and builtins, so an untrusted file cannot execute code.
    """
    path = Path(path)
    obj = load_object_npy(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict of id -> label vector, got {type(obj).__name__}")
    out: dict[str, np.ndarray] = {}
    for key, vec in obj.items():
        vec = np.asarray(vec).ravel()
        if vec.size != spec.n_classes - 1:
            raise ValueError(f"{path}: label vector of {key} has {vec.size} entries, expected {spec.n_classes - 1}")
        out[_decode_irn_key(key)] = np.flatnonzero(vec > 0.5) + 1
    return out


def one_hot(classes: Iterable[int], spec: DatasetSpec = VOC) -> np.ndarray:
    """A 0/1 float vector over the foreground classes (length ``n_classes - 1``)."""
    vec = np.zeros(spec.n_classes - 1, dtype=np.float32)
    for c in classes:
        if not 1 <= int(c) < spec.n_classes:
            raise ValueError(f"class index {c} outside 1..{spec.n_classes - 1}")
        vec[int(c) - 1] = 1.0
    return vec


def require_files(paths: Sequence[Path], what: str) -> None:
    """Raise ``FileNotFoundError`` listing the first missing paths (``what`` names their kind)."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(f"{len(missing)} {what} missing: {shown}{more}")


#: COCO panoptic category id → VOC class index, for the 20 VOC classes (COCO "couch" is VOC "sofa",
#: "tv" is "tvmonitor", "motorcycle" is "motorbike", "airplane" is "aeroplane", "dining table" is
#: "diningtable", "potted plant" is "pottedplant"). Every other COCO category (things and stuff) is
#: VOC background; COCO's 0 ("unlabeled") is void (255).
COCO_TO_VOC: dict[int, int] = {
    5: 1, 2: 2, 16: 3, 9: 4, 44: 5, 6: 6, 3: 7, 17: 8, 62: 9, 21: 10,
    67: 11, 18: 12, 19: 13, 4: 14, 1: 15, 64: 16, 20: 17, 63: 18, 7: 19, 72: 20,
}  # fmt: skip


def coco_panoptic_to_voc(mask: np.ndarray) -> np.ndarray:
    """A COCO semantic mask (panoptic category ids, 0 = unlabeled) in VOC's label space."""
    lut = np.zeros(256, dtype=np.uint8)
    lut[0] = IGNORE_INDEX
    for coco_id, voc_id in COCO_TO_VOC.items():
        lut[coco_id] = voc_id
    return lut[np.asarray(mask, dtype=np.uint8)]
