"""The PASCAL VOC tree (images, ground truth, annotation XML) and image-level labels: which classes an image holds, never where."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from samcam.data.safe_pickle import load_object_npy
from samcam.data.spaces import VOC, DatasetSpec
from samcam.io import read_ids, read_image, read_label, read_labelled_image
from samcam.registry import lookup

#: the split the paper's tables score: the VOC 2012 train ids whose JPEGs the shared data folder holds
TRAIN_SPLIT = "train_with_images"


class VocTree:
    """A PASCAL VOC 2012 folder in its standard layout.

    ``root`` holds ``JPEGImages/``, ``SegmentationClass/``, ``ImageSets/Segmentation/<split>.txt``
    and optionally ``Annotations/``.  With ``root=None`` the ``SAMCAM_VOC_ROOT`` variable is used.
    """

    ENV = "SAMCAM_VOC_ROOT"

    def __init__(self, root: str | os.PathLike | None = None, spec: DatasetSpec = VOC, must_exist: bool = True) -> None:
        given = self.given_root(root)
        if given is None:
            raise ValueError(f"no VOC root given and ${self.ENV} is not set")
        self.root = given
        if must_exist and not self.root.is_dir():
            raise FileNotFoundError(f"VOC root is not a folder: {self.root}")
        self.spec = spec

    @classmethod
    def given_root(cls, root: str | os.PathLike | None = None) -> Path | None:
        """The root ``VocTree(root)`` reads: ``root``, else ``$SAMCAM_VOC_ROOT`` (an empty value is
        unset); ``None`` when neither names one. What a command checks its outputs against."""
        if root is None:
            from samcam.io import env_folder

            return env_folder(cls.ENV)
        return Path(root)

    @classmethod
    def shared(cls, data: str | os.PathLike | None = None) -> VocTree:
        """The VOC tree of a shared data folder, ``<data>/voc2012`` (``data``: ``data_root()``, i.e.
        ``$SAMCAM_DATA`` or ``../shared/data``). Not required to exist: its folders are defaults that a
        caller may replace, and a read names the missing file."""
        from samcam.io import data_root

        return cls(Path(data if data is not None else data_root()) / "voc2012", must_exist=False)

    @property
    def images_dir(self) -> Path:
        return self.root / "JPEGImages"

    @property
    def gt_dir(self) -> Path:
        return self.root / "SegmentationClass"

    def split_file(self, split: str = TRAIN_SPLIT) -> Path:
        """``ImageSets/Segmentation/<split>.txt`` (the id list of a split)."""
        return self.root / "ImageSets" / "Segmentation" / f"{split}.txt"

    def ids(self, split: str = "train") -> list[str]:
        """Ids of ``ImageSets/Segmentation/<split>.txt``."""
        return read_ids(self.split_file(split))

    def image_path(self, image_id: str) -> Path:
        return self.images_dir / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        return self.gt_dir / f"{image_id}.png"

    def read_image(self, image_id: str) -> np.ndarray:
        """The RGB image of ``image_id``; ``FileNotFoundError`` naming the file if absent."""
        return read_image(self.image_path(image_id))

    def read_gt(self, image_id: str) -> np.ndarray:
        """The ground-truth label map of ``image_id`` (values checked against the class range)."""
        return read_label(self.label_path(image_id), self.spec)

    def read_pair(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Image and ground truth, checked to have the same size."""
        return read_labelled_image(self.image_path(image_id), self.label_path(image_id), self.spec)

    def image_labels_xml(self, image_id: str) -> np.ndarray:
        """Image-level labels from ``Annotations/<id>.xml``."""
        return labels_from_xml(self.root / "Annotations" / f"{image_id}.xml", self.spec)


def labels_from_mask(mask: np.ndarray, spec: DatasetSpec = VOC) -> np.ndarray:
    """Foreground classes present in a label map (sorted indices ≥ 1; void and background excluded)."""
    present = np.flatnonzero(np.bincount(np.asarray(mask).ravel(), minlength=256)[: spec.n_classes])
    return present[present > 0]


def labels_from_xml(path: str | os.PathLike, spec: DatasetSpec = VOC) -> np.ndarray:
    """Foreground classes named by the ``<object><name>`` entries of a VOC annotation XML."""
    from samcam.io import read_input

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    path = Path(path)
    try:
        data = read_input(path, "annotation XML")  # a regular file within the size limit, never a pipe
        root = fromstring(data, forbid_dtd=True)  # in any encoding: VOC's have no DTD, and entities can expand without end
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file not found: {path}") from None
    except DefusedXmlException:
        raise ValueError(f"{path}: an annotation XML with a DTD or entities; VOC's have neither") from None
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
        if not isinstance(vec, np.ndarray) or vec.dtype.kind not in "biuf":
            raise ValueError(f"{path}: label vector of {key} is {type(vec).__name__} {getattr(vec, 'dtype', '')}, expected a 0/1 array")
        vec = vec.ravel()
        if vec.size != spec.n_classes - 1:
            raise ValueError(f"{path}: label vector of {key} has {vec.size} entries, expected {spec.n_classes - 1}")
        if not np.isin(vec, (0, 1)).all():
            raise ValueError(f"{path}: label vector of {key} holds values other than 0 and 1 ({vec[~np.isin(vec, (0, 1))][:3].tolist()})")
        image_id = _decode_irn_key(key)
        if image_id in out:
            raise ValueError(f"{path}: two label vectors for {image_id} (keys {image_id!r} and {key!r})")
        out[image_id] = np.flatnonzero(vec == 1) + 1
    return out


def one_hot(classes: Iterable[int], spec: DatasetSpec = VOC) -> np.ndarray:
    """A 0/1 float vector over the foreground classes (length ``n_classes - 1``)."""
    vec = np.zeros(spec.n_classes - 1, dtype=np.float32)
    for c in classes:
        if not 1 <= int(c) < spec.n_classes:
            raise ValueError(f"class index {c} outside 1..{spec.n_classes - 1}")
        vec[int(c) - 1] = 1.0
    return vec


def _labels_gt(tree: VocTree, ids: list[str], cls_labels: str | os.PathLike | None) -> dict[str, np.ndarray]:
    return {i: labels_from_mask(tree.read_gt(i), tree.spec) for i in ids}


def _labels_xml(tree: VocTree, ids: list[str], cls_labels: str | os.PathLike | None) -> dict[str, np.ndarray]:
    return {i: tree.image_labels_xml(i) for i in ids}


def _labels_cls(tree: VocTree, ids: list[str], cls_labels: str | os.PathLike | None) -> dict[str, np.ndarray]:
    if cls_labels is None:
        raise ValueError("--labels cls_labels needs the path of cls_labels.npy (--cls-labels)")
    table = load_cls_labels(cls_labels, tree.spec)
    missing = [i for i in ids if i not in table]
    if missing:
        raise KeyError(f"{cls_labels}: no labels for {len(missing)} ids, e.g. {missing[0]}")
    return {i: table[i] for i in ids}


#: Where an image's classes come from: its ground-truth mask, IRN's ``cls_labels.npy``, or its annotation XML.
LABEL_SOURCES = {"gt": _labels_gt, "cls_labels": _labels_cls, "xml": _labels_xml}

#: the source a command reads when --labels is not given
DEFAULT_LABEL_SOURCE = "gt"


def label_source_path(tree: VocTree, source: str = "gt", cls_labels: str | os.PathLike | None = None) -> Path | None:
    """Where :func:`image_labels` reads ``source``'s labels: the ground-truth folder, the annotation
    folder or the ``cls_labels.npy`` file (what a step's record fingerprints, so that a rerun on other
    labels is refused, not mixed in)."""
    lookup(LABEL_SOURCES, source, "label source")
    where = {"gt": tree.gt_dir, "xml": tree.root / "Annotations", "cls_labels": cls_labels}[source]
    return Path(where) if where is not None else None


def image_labels(tree: VocTree, ids: list[str], source: str = "gt", cls_labels: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Foreground classes (1-based) of each id from ground-truth masks, IRN's ``cls_labels.npy`` or
    the VOC annotation XMLs. Only which classes occur is used, never where (the WSSS setting).
    ``cls_labels`` is the file of the ``cls_labels`` source only: given with another, it would be
    silently ignored, so ``ValueError``."""
    read = lookup(LABEL_SOURCES, source, "label source")
    if cls_labels is not None and source != "cls_labels":
        raise ValueError(f"--cls-labels {cls_labels} is read with --labels cls_labels only, not with --labels {source}")
    return read(tree, ids, cls_labels)
