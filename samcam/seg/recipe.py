"""The training recipe (stored in every checkpoint), the recipe files that ship with samcam
(``recipes/<name>.yaml``, :func:`read_recipe`: ``train-seg --recipe``) and the recipe's pure augmentations.

Augmentation of one sample: a random scale, then padding to the crop size (image with the value
that the backbone's scaling maps to 0, label with 255 = ignored), a random crop, a random horizontal
flip. :func:`draw_params` draws the parameters from a ``numpy`` generator; :func:`augment` applies
them (arrays in, arrays out), so a sample is a function of ``(seed, epoch, position)`` only.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from samcam.config import check_settings, setting

IGNORE = 255
PAD_VALUE = 127  # the backbone's mean: padded pixels become 0 after (x − 127) / 128
OPTIMIZERS = ("adamw", "sgd")
BACKBONES = ("lite0", "lite1", "lite2")  # EfficientNet-Lite variants (samcam.seg.model builds them)
OUTPUT_STRIDES = (32, 16)


#: the largest seed (numpy's generators take seeds below 2**32... and a typo must not overflow torch's)
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a training run besides its data (each field's range and help are
    those of ``samcam train-seg``'s option, and a checkpoint's recipe is checked against them)."""

    backbone: str = setting("lite0", choices=BACKBONES, help="EfficientNet-Lite variant")
    crop: int = setting(224, 32, 4096, "square crop size in pixels")
    scale_min: float = setting(0.5, 0.01, 8.0, "random scale range, low end")
    scale_max: float = setting(1.5, 0.01, 8.0, "random scale range, high end")
    flip: bool = setting(True, flag="--no-flip", help="no random horizontal flip")
    batch_size: int = setting(8, 2, 4096, "images per step, at least 2 (batch norm)")
    epochs: int = setting(4, 1, 10_000, "epochs")
    optimizer: str = setting("adamw", choices=OPTIMIZERS, help="optimizer")
    lr: float = setting(6e-4, 0.0, 10.0, "backbone learning rate, poly-decayed", open_lo=True)
    head_lr_mult: float = setting(5.0, 0.0, 1000.0, "head learning rate = lr × this", open_lo=True)
    weight_decay: float = setting(1e-2, 0.0, 1.0, "weight decay")
    poly_power: float = setting(0.9, 0.0, 100.0, "power of the poly learning-rate decay")
    seed: int = setting(0, 0, MAX_SEED, "seed of the sample order and augmentations")
    head_channels: int = setting(128, 1, 4096, "LR-ASPP width")
    freeze_early: bool = setting(True, flag="--train-early", help="also train the stem and stride-2/4 blocks (frozen by default: weights and BN statistics)")
    output_stride: int = setting(32, choices=OUTPUT_STRIDES, help="backbone output stride (16 dilates the last stage, as DeepLab)")

    def __post_init__(self) -> None:
        check_settings(self, "recipe")  # a checkpoint's recipe is read back through here: its fields are checked too
        if self.scale_min > self.scale_max:
            raise ValueError(f"recipe scale range must satisfy 0 < scale_min ≤ scale_max: {self.scale_min}, {self.scale_max}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        if not isinstance(d, dict):
            raise ValueError(f"recipe is a {type(d).__name__}, not a mapping")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"recipe has unknown fields {sorted(map(str, unknown))}")
        return cls(**d)


#: recipes that ship with samcam (``<name>.yaml``), each a mapping of :class:`Recipe` fields
RECIPES = Path(__file__).parent / "recipes"


def recipe_names() -> list[str]:
    """The names of the recipes in :data:`RECIPES` (``train-seg --recipe NAME``)."""
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def recipe_file(name: str | os.PathLike) -> Path:
    """A recipe's file: ``name`` itself when it is a path (it has a folder or a suffix), else the
    shipped ``RECIPES/<name>.yaml``; ``FileNotFoundError`` naming the known names otherwise."""
    path = Path(name)
    if not str(name):
        raise ValueError("--recipe is empty; give a recipe file or one of: " + ", ".join(recipe_names()))
    if len(path.parts) > 1 or path.suffix:
        return path
    if str(name) not in recipe_names():
        raise FileNotFoundError(f"no recipe named {str(name)!r}; shipped: {', '.join(recipe_names())} (or give a YAML file's path)")
    return RECIPES / f"{name}.yaml"


def read_recipe(name: str | os.PathLike) -> dict[str, Any]:
    """The fields a recipe file sets (a YAML mapping of :class:`Recipe` fields, checked as a recipe:
    ``ValueError`` naming the file for anything else)."""
    from samcam.io import read_yaml

    path = recipe_file(name)
    values = read_yaml(path, "recipe file")
    if values is None:  # a truncated or emptied file is no recipe; the defaults are asked for by "{}"
        raise ValueError(f"{path}: an empty recipe file; give the fields to set, or {{}} for the defaults")
    try:
        Recipe.from_dict(values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
    return dict(values)


@dataclass(frozen=True)
class AugParams:
    """One sample's augmentation: scale factor, crop offset (in the padded scaled image), flip."""

    scale: float
    y: int
    x: int
    flip: bool


def scaled_shape(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def draw_params(shape: tuple[int, int], recipe: Recipe, rng: np.random.Generator) -> AugParams:
    """Draw the augmentation of an image of ``shape`` (H, W)."""
    scale = float(rng.uniform(recipe.scale_min, recipe.scale_max))
    h, w = scaled_shape(shape, scale)
    y = int(rng.integers(0, max(h - recipe.crop, 0) + 1))
    x = int(rng.integers(0, max(w - recipe.crop, 0) + 1))
    flip = bool(rng.random() < 0.5) if recipe.flip else False
    return AugParams(scale, y, x, flip)


def resize_pair(image: np.ndarray, label: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize an ``H × W × 3`` uint8 image (bilinear) and its ``H × W`` label (nearest) to ``shape``."""
    if image.shape[:2] == tuple(shape):
        return image, label
    size = (shape[1], shape[0])
    img = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    lab = np.asarray(Image.fromarray(label).resize(size, Image.NEAREST))
    return img, lab


def pad_pair(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad bottom/right to at least ``size × size``: image with :data:`PAD_VALUE`, label with 255."""
    h, w = label.shape
    ph, pw = max(size - h, 0), max(size - w, 0)
    if not (ph or pw):
        return image, label
    img = np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=PAD_VALUE)
    lab = np.pad(label, ((0, ph), (0, pw)), constant_values=IGNORE)
    return img, lab


def augment(image: np.ndarray, label: np.ndarray, params: AugParams, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale, pad, crop to ``crop × crop`` and optionally flip an image/label pair."""
    if image.shape[:2] != label.shape:
        raise ValueError(f"image shape {image.shape[:2]} differs from label shape {label.shape}")
    img, lab = resize_pair(image, label, scaled_shape(label.shape, params.scale))
    img, lab = pad_pair(img, lab, crop)
    img = img[params.y : params.y + crop, params.x : params.x + crop]
    lab = lab[params.y : params.y + crop, params.x : params.x + crop]
    if params.flip:
        img, lab = img[:, ::-1], lab[:, ::-1]
    return np.ascontiguousarray(img), np.ascontiguousarray(lab)


def sample_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """The generator of the sample at ``position`` of ``epoch`` (independent of where a run resumed)."""
    return np.random.default_rng([seed, epoch, position])


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled sample order of ``epoch``."""
    return np.random.default_rng([seed, epoch, 1 << 30]).permutation(n)
