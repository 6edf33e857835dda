"""IRN's CAM file layout (``<id>.npy``: a dict with ``keys`` and ``high_res``), written atomically and read without executing pickled code."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from samcam.data.safe_pickle import load_object_npy
from samcam.io import atomic_path


def save_cam(path: str | os.PathLike, keys: np.ndarray, high_res: np.ndarray, cam: np.ndarray | None = None) -> None:
    """Write IRN's CAM dict (``keys`` 0-based, ``high_res`` K × H × W, optional stride-4 ``cam``) atomically."""
    d = {"keys": np.asarray(keys, dtype=np.int64), "high_res": np.asarray(high_res, dtype=np.float32)}
    if cam is not None:
        d["cam"] = np.asarray(cam, dtype=np.float32)
    with atomic_path(path, suffix=".npy.tmp") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, d, allow_pickle=True)


def load_cam(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an IRN-layout CAM ``.npy`` safely; ``ValueError`` naming the file when it is not one."""
    path = Path(path)
    d = load_object_npy(path)
    if not isinstance(d, dict) or "keys" not in d or "high_res" not in d:
        raise ValueError(f"{path}: not an IRN CAM file (expected a dict with 'keys' and 'high_res')")
    keys = np.asarray(d["keys"]).astype(np.int64).ravel()
    high = np.asarray(d["high_res"], dtype=np.float32)
    if high.ndim != 3 or high.shape[0] != keys.size:
        raise ValueError(f"{path}: high_res shape {high.shape} does not fit {keys.size} keys")
    return {**d, "keys": keys, "high_res": high}
