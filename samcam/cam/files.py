"""IRN's CAM file layout (``<id>.npy``: a dict with ``keys`` and ``high_res``), written atomically and read without executing pickled code."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from samcam.data.safe_pickle import load_object_npy
from samcam.io import MAX_INPUT_BYTES, atomic_path, check_pixels


def save_cam(path: str | os.PathLike, keys: np.ndarray, high_res: np.ndarray, cam: np.ndarray | None = None) -> None:
    """Write IRN's CAM dict (``keys`` 0-based, ``high_res`` K × H × W, optional stride-4 ``cam``) atomically."""
    d = {"keys": np.asarray(keys, dtype=np.int64), "high_res": np.asarray(high_res, dtype=np.float32)}
    if cam is not None:
        d["cam"] = np.asarray(cam, dtype=np.float32)
    with atomic_path(path, suffix=".npy.tmp") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, d, allow_pickle=True)


def load_cam(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Read an IRN-layout CAM ``.npy`` safely; ``ValueError`` naming the file when it is not one, when
    a key is not a whole number (``0.9`` is not truncated to class 0), or, with ``shape`` (the image's
    H, W) given, when its maps have another size."""
    path = Path(path)
    d = load_object_npy(path)
    if not isinstance(d, dict) or "keys" not in d or "high_res" not in d:
        raise ValueError(f"{path}: not an IRN CAM file (expected a dict with 'keys' and 'high_res')")
    keys = class_keys(d["keys"], path)
    high = score_maps(d["high_res"], path, "high_res")
    if high.ndim != 3 or high.shape[0] != keys.size:
        raise ValueError(f"{path}: high_res shape {high.shape} does not fit {keys.size} keys")
    if 0 in high.shape[1:]:
        raise ValueError(f"{path}: CAM maps of size {high.shape[1]}×{high.shape[2]} (empty)")
    if shape is not None and high.shape[1:] != tuple(shape):
        raise ValueError(f"{path}: CAM size {high.shape[1:]} differs from its image size {tuple(shape)}")
    return {**d, "keys": keys, "high_res": high}


#: the most class keys a file may list (VOC has 20 classes, COCO 80)
MAX_KEYS = 1000


#: how far a score may stray outside [0, 1] (float rounding of a normalised map)
SCORE_SLACK = 1e-3


def score_maps(value: object, source: str | os.PathLike, what: str = "CAM") -> np.ndarray:
    """``value`` (score maps read from a file) as float32; ``ValueError`` naming ``source`` unless it
    is a NumPy array of floating-point scores, all finite and in [0, 1] (give or take :data:`SCORE_SLACK`). Nested lists are refused, not converted: a pickle
    of a few MB can repeat one list object into tens of GB of numbers."""
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{source}: {what} is a {type(value).__name__}, expected a NumPy array of scores")
    if value.dtype.kind != "f":  # 0..255 bytes or counts would be compared with a threshold in [0, 1] as they stand
        raise ValueError(f"{source}: {what} holds {value.dtype} values, expected scores in [0, 1] as floating-point numbers")
    if value.ndim >= 2:  # a map is as large as an image may be: checked before the scores are converted or scanned
        check_pixels(value.shape[-2], value.shape[-1], f"{source}: {what}")
    if value.size * 4 > MAX_INPUT_BYTES:  # and all maps together as large as an input file may be, as float32
        raise ValueError(f"{source}: {what} holds {value.size} scores, over the {MAX_INPUT_BYTES >> 30} GiB an input may take as float32")
    if value.dtype.kind == "f" and value.dtype.itemsize > 4 and value.size:
        with np.errstate(invalid="ignore"):
            big = np.nanmax(np.abs(np.where(np.isinf(value), 0, value)))
        if big > np.finfo(np.float32).max:
            raise ValueError(f"{source}: {what} holds {big:.3g}, out of the float32 range the scores are read in")
    out = value.astype(np.float32, copy=False)
    if not np.isfinite(out).all():
        raise ValueError(f"{source}: {what} holds values that are not finite numbers (NaN or ±inf)")
    if out.size and not (out.min() >= -SCORE_SLACK and out.max() <= 1 + SCORE_SLACK):
        raise ValueError(f"{source}: {what} holds scores from {out.min():.4g} to {out.max():.4g}, expected [0, 1] "
                         "(scores normalised per class, as IRN's high_res; a threshold compares with them)")  # fmt: skip
    return out


def class_keys(keys, source: str | os.PathLike, what: str = "CAM keys") -> np.ndarray:
    """``keys`` (class indices from a file) as int64, or a ``ValueError`` naming ``source`` when one is
    not a whole number (``0.9`` or ``14.7`` is never truncated), is negative, or is repeated; a list
    must be flat and short (:data:`MAX_KEYS`), never a nest to be expanded."""
    if not isinstance(keys, np.ndarray):
        if not isinstance(keys, (list, tuple)) or len(keys) > MAX_KEYS or not all(isinstance(k, (int, float, str, np.generic)) for k in keys):
            raise ValueError(f"{source}: {what} are a {type(keys).__name__} that is not a flat list of at most {MAX_KEYS} class indices")
    elif keys.size > MAX_KEYS:
        raise ValueError(f"{source}: {what} list {keys.size} entries, more than {MAX_KEYS} classes")
    raw = np.asarray(keys).ravel()
    if raw.dtype.kind in "bUSO" and raw.size and not (raw.dtype.kind == "O" and all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in raw)):
        raise ValueError(f"{source}: {what} {raw.tolist()[:8]} are {raw.dtype} values, not class indices")
    if raw.dtype.kind not in "iub":
        try:
            as_float = raw.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: {what} of {raw.dtype} values; expected whole class indices") from None
        if not np.all(np.isfinite(as_float)) or not np.array_equal(as_float, np.round(as_float)):
            raise ValueError(f"{source}: {what} {raw.tolist()[:8]} are not whole class indices")
    out = raw.astype(np.int64)
    if out.size and out.min() < 0:
        raise ValueError(f"{source}: {what} {out.tolist()[:8]} include a negative class index")
    if np.unique(out).size != out.size:
        raise ValueError(f"{source}: {what} {out.tolist()[:8]} name a class twice")
    return out
