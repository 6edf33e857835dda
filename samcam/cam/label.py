"""Class score maps -> pseudo label: the one home of "background score, argmax, index lookup".

Every CAM format becomes a label the same way: a background score map is stacked under the class
maps, the argmax is taken per pixel, and the winning index is mapped to a class value through a
lookup table. The formats differ only in the background score (a constant threshold for IRN/PSA/L2G,
``1 - max`` for CLIP-ES, ``(1 - max)^α`` for AffinityNet, a learned map for SIPE) and in how the keys
are numbered.
"""

from __future__ import annotations

import numpy as np


def scores_to_label(scores: np.ndarray, lut: np.ndarray, n_classes: int = 21) -> np.ndarray:
    """``lut[argmax(scores, axis=0)]`` as uint8; ``scores`` is ``K × H × W``, ``lut`` its K class values.

    Ties go to the lower index (background first), as numpy's argmax. ``ValueError`` when a class
    value falls outside ``0..n_classes-1`` or a score is NaN (a NaN would win every argmax).
    """
    scores = np.asarray(scores)
    lut = np.asarray(lut).astype(np.int64).ravel()
    if scores.ndim != 3 or scores.shape[0] != lut.size:
        raise ValueError(f"scores of shape {scores.shape} do not fit {lut.size} class values")
    if lut.size and (lut.min() < 0 or lut.max() >= n_classes):
        raise ValueError(f"class values {lut.tolist()} outside 0..{n_classes - 1}")
    if np.isnan(scores).any():
        raise ValueError("score maps contain NaN")
    return lut[np.argmax(scores, axis=0)].astype(np.uint8)


def check_threshold(threshold: float) -> None:
    """A background score is a number in [0, 1], the range of normalised CAMs; ``ValueError`` otherwise."""
    if not (0.0 <= float(threshold) <= 1.0):
        raise ValueError(f"background threshold {threshold} outside [0, 1]")


def cam_to_label(high_res: np.ndarray, keys: np.ndarray, threshold: float, n_classes: int = 21) -> np.ndarray:
    """IRN's ``cam_eval_thres`` rule: a constant background score ``threshold`` under the class maps
    ``high_res`` (``K × H × W``) of the 0-based foreground ``keys``; 0 is background, key ``k`` is ``k + 1``."""
    check_threshold(threshold)
    high_res = np.asarray(high_res, np.float32)
    keys = np.asarray(keys).astype(np.int64).ravel()
    if high_res.ndim != 3:
        raise ValueError(f"CAMs must be K × H × W, got shape {high_res.shape}")
    if keys.size and (keys.min() < 0 or keys.max() > n_classes - 2):
        raise ValueError(f"CAM keys {keys.tolist()} outside the foreground classes 0..{n_classes - 2}")
    bg = np.full((1, *high_res.shape[1:]), threshold, np.float32)
    return scores_to_label(np.concatenate([bg, high_res]), with_key_lookup(keys), n_classes)


def maps_to_label(maps: dict[int, np.ndarray], threshold: float, shape: tuple[int, int], n_classes: int = 21) -> np.ndarray:
    """:func:`cam_to_label` for ``{0-based class: map}``; no maps at all gives an all-background ``shape``.
    ``ValueError`` for maps of two sizes."""
    if not maps:
        return np.zeros(shape, np.uint8)
    keys = sorted(maps)
    sizes = {k: np.shape(maps[k]) for k in keys}
    odd = next((k for k in keys if sizes[k] != sizes[keys[0]]), None)
    if odd is not None:
        raise ValueError(f"the map of class {odd} is {' × '.join(map(str, sizes[odd]))} beside class {keys[0]}'s "
                         f"{' × '.join(map(str, sizes[keys[0]]))}; an image's class maps share its size")  # fmt: skip
    return cam_to_label(np.stack([maps[k] for k in keys]), np.array(keys), threshold, n_classes)


def power_background(cams: np.ndarray, alpha: float) -> np.ndarray:
    """AffinityNet's background score ``(1 − max_k M_k)^α`` of CAMs ``K × H × W`` in [0, 1] (with
    no CAMs, 1 everywhere): a large α weakens the background, a small one strengthens it."""
    cams = np.asarray(cams, np.float32)
    peak = cams.max(0) if len(cams) else np.zeros(cams.shape[1:], np.float32)
    return np.power(np.clip(1.0 - peak, 0.0, 1.0), alpha, dtype=np.float32)


def with_key_lookup(keys: np.ndarray) -> np.ndarray:
    """The class values of ``[background, *keys]`` for 0-based foreground ``keys``: ``[0, k + 1, …]``."""
    return np.concatenate([[0], np.asarray(keys).astype(np.int64).ravel() + 1])

