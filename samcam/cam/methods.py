"""The WSSS methods whose pseudo labels the paper enhances, and loaders for what their code writes.

The paper's final version enhances **CLIMS, CLIP-ES, EPS, L2G and SIPE**; its repository ships
**TransCAM**'s labels. Each method's public code was read to see what it writes (the notes below);
a loader turns that output into a samcam pseudo label (``uint8``, 0 = background, 1..20 classes,
255 kept where the method marks pixels as ignored). Output formats:

``png``        a label PNG per image (palette or grayscale), e.g. IRN-style ``sem_seg`` / CRF outputs.
``irn_npy``    IRN's CAM dict: ``keys`` (0-based foreground classes) + ``high_res`` (K × H × W);
               label = argmax over [constant background ``threshold``, maps], mapped via ``keys + 1``.
``sipe_npy``   SIPE's dict: ``keys`` includes background (0-based over 21 classes) + ``IS_CAM``;
               label = ``keys[argmax]`` (no threshold: SIPE learns a background map).
``clipes_npy`` CLIP-ES's dict: ``keys`` (0-based foreground) + ``attn_highres``; background score
               ``(1 − max)^1`` (its ``eval_cam.py``), argmax, ``keys + 1``.
``psa_npy``    the PSA/EPS dict ``{class (0-based): H × W map}``; background = ``threshold``.
``l2g_png``    L2G's per-class attention maps ``<id>_<class 0-based>.png`` (0..255 → 0..1);
               background = ``threshold`` (0.25 in its ``gen_gt.py``), argmax.

Every ``.npy`` is read with the restricted unpickler of :mod:`samcam.safe_pickle`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samcam.cam.files import class_keys, load_cam, score_maps
from samcam.cam.label import cam_to_label, maps_to_label, scores_to_label
from samcam.data.safe_pickle import load_object_npy
from samcam.data.spaces import VOC, DatasetSpec
from samcam.io import open_image, read_label
from samcam.registry import lookup


@dataclass(frozen=True)
class Method:
    name: str
    paper: str
    repo: str
    format: str  # the default loader for this method's output
    threshold: float | None  # background threshold its code uses for that output, if any
    produces: str  # what a user runs in the method's repository, and where the files land
    notes: str = ""


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method("CLIMS", "Xie et al., CLIMS: Cross Language Image Matching for WSSS, CVPR 2022", "https://github.com/CVI-SZU/CLIMS",
               "png", None,
               "python run_sample.py --voc12_root VOC2012 --hor ... (IRN pipeline): make_cam writes <cam_out_dir>/<id>.npy "
               "(IRN dict keys/high_res), make_sem_seg_labels writes <sem_seg_out_dir>/<id>.png (the pseudo labels)",
               "IRN-based: CAMs use IRN's cam_eval_thres rule (format irn_npy, threshold 0.15 by IRN's default); "
               "the final labels after IRN's random walk are grayscale PNGs (sem_seg_bg_thres 0.25)."),
        Method("CLIP-ES", "Lin et al., CLIP is Also an Efficient Segmenter, CVPR 2023", "https://github.com/linyq2117/CLIP-ES",
               "clipes_npy", None,
               "python generate_cams_voc12.py --img_root VOC2012/JPEGImages --split_file voc12/train.txt --model ViT-B-16.pt "
               "--cam_out_dir output/voc12/cams  (then eval_cam_with_crf.py writes CRF pseudo masks as PNGs)",
               "npy dict keys/attn_highres, background (1 − max)^1; the CRF PNGs set low-confidence pixels (< 0.95) to 255 (format png)."),
        Method("EPS", "Lee et al., Railroad is not a Train: Saliency as Pseudo-pixel Supervision for WSSS, CVPR 2021",
               "https://github.com/halbielee/EPS", "psa_npy", None,
               "python infer.py --infer_list metadata/voc12/train.txt --out_cam OUT/cam --out_crf OUT/crf ...: "
               "OUT/cam/<id>.npy is a dict {class 0-based: map}; evaluate_npy.py --type npy --t T (or --curve 0.15..0.34)",
               "EPS picks the background score t with evaluate_npy.py --curve on ground truth (a GT-tuned threshold); "
               "pass it as --threshold. Its PNG outputs load with format png."),
        Method("L2G", "Jiang et al., L2G: A Simple Local-to-Global Knowledge Transfer Framework for WSSS, CVPR 2022",
               "https://github.com/PengtaoJiang/L2G", "l2g_png", 0.25,
               "bash test_l2g_voc.sh writes per-class attention maps <att_dir>/<id>_<class>.png; gen_gt_voc.sh (gen_gt.py, "
               "--thr 0.25) writes the pseudo labels <save_path>/<id>.png",
               "Its trained model uses saliency maps; gen_gt.py's background threshold is 0.25. Its final PNGs load with format png."),
        Method("SIPE", "Chen et al., Self-supervised Image-specific Prototype Exploration for WSSS, CVPR 2022",
               "https://github.com/chenqi1126/SIPE", "sipe_npy", None,
               "bash run_voc.sh: make_cam.py writes exp/npy/<id>.npy (dict keys incl. background, IS_CAM); "
               "make_seg_labels.py writes exp/pseudo_label/<id>.png (the IRN-refined pseudo labels)",
               "keys index 21 classes with background 0; labels are keys[argmax] with no threshold."),
        Method("TransCAM", "Li et al., TransCAM: Transformer Attention-based CAM Refinement for WSSS, JVCIR 2023",
               "https://github.com/liruiwen/TransCAM", "png", None,
               "the paper's repository (cskyl/SAM_WSSS) ships the labels: pseudo_labels/transcam/<id>.png (mode L, 0..20)",
               "infer_cam.py of TransCAM also writes PSA-style npy dicts (format psa_npy) and CRF PNGs."),
    ]
}  # fmt: skip


#: method -> where its labels lie in the shared data folder (only the paper's repository's TransCAM labels ship)
SHIPPED: dict[str, str] = {"TransCAM": "pseudo_labels/transcam"}


def default_pseudo_dir(method: str, data: str | os.PathLike) -> Path:
    """The folder of ``method``'s labels in the shared ``data`` folder; ``ValueError`` for a method
    whose labels do not ship (its own code must be run, and its output folder given)."""
    if method not in SHIPPED:
        raise ValueError(f"no {method} labels ship with the data; give the folder its code wrote (pseudo_dir / --pseudo)")
    return Path(data) / SHIPPED[method]


def get_method(name: str) -> Method:
    return lookup(METHODS, name, "method", fold_case=True)


def _npy_dict(path: Path, required: tuple[str, ...]) -> dict:
    d = load_object_npy(path)
    if not isinstance(d, dict) or any(k not in d for k in required):
        raise ValueError(f"{path}: expected a dict with {', '.join(required)}, got {type(d).__name__} {list(d) if isinstance(d, dict) else ''}")
    return d


def format_with_threshold(fmt: str, threshold: float | None) -> "Format":
    """The :class:`Format` named ``fmt``, with its background threshold: given where its maps need
    one (``--threshold``), absent where its files are labels already (a threshold there would be
    silently ignored); ``ValueError`` otherwise."""
    spec_of = lookup(FORMATS, fmt, "format")
    if spec_of.needs_threshold and threshold is None:
        raise ValueError(f"format {fmt} needs a background threshold (--threshold)")
    if not spec_of.needs_threshold and threshold is not None:
        raise ValueError(f"format {fmt} holds labels, not score maps: it takes no background threshold (leave out --threshold)")
    return spec_of


def load_pseudo_label(folder: str | os.PathLike, image_id: str, fmt: str, threshold: float | None = None,
                      spec: DatasetSpec = VOC, shape: tuple[int, int] | None = None) -> np.ndarray:  # fmt: skip
    """The pseudo label of ``image_id`` from a method's output ``folder`` in format ``fmt``.

    ``shape`` (H, W), the image size, is checked against the label when given; it is needed for
    ``psa_npy``/``l2g_png`` images without any class map. Every error names the file.
    """
    folder = Path(folder)
    spec_of = format_with_threshold(fmt, threshold)
    source = folder / spec_of.file.replace("{id}", image_id)
    try:
        label = _load(folder, image_id, spec_of, threshold, spec, shape, source)
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith(str(folder)) else f"{source}: {msg}") from None  # a file it names: named once
    if shape is not None and label.shape != tuple(shape):
        raise ValueError(f"{source}: label size {label.shape} differs from the image size {tuple(shape)}")
    return label


def _png(folder: Path, image_id: str, threshold: float | None, spec: DatasetSpec, source: Path) -> np.ndarray | dict:
    return read_label(source, spec)


def _irn_npy(folder: Path, image_id: str, threshold: float | None, spec: DatasetSpec, source: Path) -> np.ndarray | dict:
    d = load_cam(source)
    return cam_to_label(d["high_res"], d["keys"], threshold, spec.n_classes)


def _sipe_npy(folder: Path, image_id: str, threshold: float | None, spec: DatasetSpec, source: Path) -> np.ndarray | dict:
    d = _npy_dict(source, ("keys", "IS_CAM"))
    keys = class_keys(d["keys"], source, "keys")
    if 0 not in keys:  # SIPE's first map is its learned background: without it every pixel takes a class
        raise ValueError(f"keys {keys.tolist()} lack background (0); SIPE's keys hold it first, with its background map in IS_CAM")
    return scores_to_label(score_maps(d["IS_CAM"], source, "IS_CAM"), keys, spec.n_classes)


def _clipes_npy(folder: Path, image_id: str, threshold: float | None, spec: DatasetSpec, source: Path) -> np.ndarray | dict:
    d = _npy_dict(source, ("keys", "attn_highres"))
    cams = score_maps(d["attn_highres"], source, "attn_highres")
    bg = 1.0 - cams.max(axis=0, keepdims=True)
    return scores_to_label(np.concatenate([bg, cams]), np.concatenate([[0], class_keys(d["keys"], source, "keys") + 1]), spec.n_classes)


def _psa_npy(folder: Path, image_id: str, threshold: float | None, spec: DatasetSpec, source: Path) -> np.ndarray | dict:
    d = load_object_npy(source)
    if not isinstance(d, dict):
        raise ValueError("expected a dict {class: map}")
    keys = class_keys(list(d), source, "class keys")
    return {int(k): score_maps(v, source, f"the map of class {k}") for k, v in zip(keys, d.values())}


def _class_map(im) -> np.ndarray:
    """A grayscale class map's scores in [0, 1], by its bit depth (8 or 16 bits, or a grey palette); any other mode is
    refused (Pillow's ``convert("L")`` would clip 16-bit values at 255 and turn colour into luminance)."""
    if im.mode == "P":  # a grey map stored with a grey palette (a PNG optimiser's choice): its grey levels
        pal = np.asarray(im.getpalette() or [], np.float32).reshape(-1, 3)
        if len(pal) and (pal[:, 0] == pal[:, 1]).all() and (pal[:, 1] == pal[:, 2]).all():
            return np.pad(pal[:, 0], (0, 256 - len(pal)))[np.asarray(im)] / 255.0
        raise ValueError("a class map with a colour palette; expected an 8- or 16-bit grayscale PNG")
    depth = {"L": 255.0, "I;16": 65535.0, "I;16B": 65535.0}.get(im.mode)
    if depth is None:
        raise ValueError(f"a class map in mode {im.mode}; expected an 8- or 16-bit grayscale PNG")
    return np.asarray(im, np.float32) / depth


def _l2g_png(folder: Path, image_id: str, threshold: float | None, spec: DatasetSpec, source: Path) -> np.ndarray | dict:
    """``<id>_<class>.png``, one file per class (``_3`` and ``_03`` are the same class)."""
    import glob

    n = spec.n_classes
    maps, names = {}, {}
    for p in sorted(folder.glob(f"{glob.escape(image_id)}_*")):
        m = re.fullmatch(rf"{re.escape(image_id)}_([0-9]+)\.(png)", p.name, re.IGNORECASE)
        if m:
            if m.group(2) != "png":  # a.PNG would be passed over without a word, its class missing from the label
                raise ValueError(f"{p}: a class map named with '.{m.group(2)}'; samcam reads <id>_<class>.png (rename it)")
            k = int(m.group(1))
            if k > n - 2:  # 0-based foreground classes 0..n-2 (a huge number would overflow later)
                raise ValueError(f"{p}: class {m.group(1)[:20]} outside the foreground classes 0..{n - 2}")
            if k in names:
                raise ValueError(f"{source}: two class maps for class {k}, {names[k]} and {p.name}; keep one")
            names[k] = p.name
            maps[k] = open_image(p, p, _class_map, "class map")
            first = next(iter(maps))
            if maps[k].shape != maps[first].shape:
                (h, w), (h0, w0) = maps[k].shape, maps[first].shape
                raise ValueError(f"{p}: a class map of {h} × {w} pixels beside {names[first]} of {h0} × {w0}; an image's class maps share its size")
    return maps


@dataclass(frozen=True)
class Format:
    """A method's output format: the file an image's output is in (``{id}`` stands for the image id),
    whether a background threshold is needed, and the reader, which returns a label, or for formats
    of per-class maps the maps ``{0-based class: H × W}`` (thresholded by :func:`load_pseudo_label`)."""

    file: str
    needs_threshold: bool
    read: Callable[[Path, str, float | None, DatasetSpec, Path], np.ndarray | dict]


#: Output formats (the module docstring says what each holds).
FORMATS: dict[str, Format] = {
    "png": Format("{id}.png", False, _png),
    "irn_npy": Format("{id}.npy", True, _irn_npy),
    "sipe_npy": Format("{id}.npy", False, _sipe_npy),
    "clipes_npy": Format("{id}.npy", False, _clipes_npy),
    "psa_npy": Format("{id}.npy", True, _psa_npy),
    "l2g_png": Format("{id}_<class>.png", True, _l2g_png),
}


def _load(folder: Path, image_id: str, fmt: Format, threshold: float | None, spec: DatasetSpec, shape, source: Path) -> np.ndarray:
    out = fmt.read(folder, image_id, threshold, spec, source)
    if isinstance(out, np.ndarray):
        return out
    if not out and shape is None:
        raise FileNotFoundError(f"{source}: no class maps found (and no image size to fall back to)")
    return maps_to_label(out, threshold, shape, spec.n_classes)


