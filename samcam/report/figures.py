"""Figures shared by the notebooks: per-class IoU bars, per-image change, galleries of label maps."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from samcam.data.spaces import VOC, DatasetSpec, colorize
from samcam.sam.masks import MaskSet


def _plt():
    import matplotlib

    if not os.environ.get("MPLBACKEND") and "ipykernel" not in str(matplotlib.get_backend()).lower():
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a figure atomically (PNG)."""
    from samcam.io import atomic_path

    path = Path(path)
    with atomic_path(path, suffix=".png.tmp") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return path


def per_class_iou(per_class: pd.DataFrame, title: str = "", labels: tuple[str, str] = ("before", "after")):
    """Grouped bars of per-class IoU (%) before and after."""
    import seaborn as sns

    plt = _plt()
    long = per_class.melt(id_vars="class", value_vars=["iou_before", "iou_after"], var_name="labels", value_name="IoU (%)")
    long["labels"] = long["labels"].map({"iou_before": labels[0], "iou_after": labels[1]})
    long["IoU (%)"] *= 100
    fig, ax = plt.subplots(figsize=(12, 4))
    sns.barplot(data=long, x="class", y="IoU (%)", hue="labels", ax=ax, palette=["#9aa5b1", "#d9480f"])
    ax.set_xlabel("")
    ax.tick_params(axis="x", rotation=60)
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(title="", loc="lower right")
    fig.tight_layout()
    return fig


def miou_change(per_image: pd.DataFrame, title: str = ""):
    """Histogram of the per-image mIoU change (percentage points)."""
    import seaborn as sns

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    delta = 100 * per_image["miou_delta"].dropna()
    sns.histplot(delta, bins=40, ax=ax, color="#1c7ed6")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("per-image mIoU change (points)")
    ax.set_title(title or f"{(delta > 0).sum()} images better, {(delta < 0).sum()} worse, {(delta == 0).sum()} unchanged")
    fig.tight_layout()
    return fig


def masks_rgb(ms: MaskSet, image: np.ndarray | None = None, seed: int = 0, alpha: float = 0.6) -> np.ndarray:
    """Masks painted in random colours (largest first, so small masks stay visible) over ``image``."""
    h, w = ms.shape
    base = np.zeros((h, w, 3), np.float32) if image is None else image.astype(np.float32) / 255
    colours = np.random.default_rng(seed).random((len(ms), 3))
    out = base.copy()
    for i in np.argsort(-ms.area, kind="stable"):
        m = ms.masks[i]
        out[m] = (1 - alpha) * base[m] + alpha * colours[i]
    return (out * 255).astype(np.uint8)


def gallery(rows: Sequence[dict], columns: Sequence[str], spec: DatasetSpec = VOC, cell: float = 2.6):
    """A grid: one row per dict, one column per key in ``columns``.

    Values are RGB images (H × W × 3), label maps (H × W, drawn in the palette) or :class:`MaskSet`
    (drawn with :func:`masks_rgb`); a row's ``"title"`` labels its first cell.
    """
    plt = _plt()
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(cell * len(columns), cell * 0.8 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, col in enumerate(columns):
            ax = axes[r][c]
            v = row.get(col)
            if isinstance(v, MaskSet):
                v = masks_rgb(v, row.get("image"))
            elif isinstance(v, np.ndarray) and v.ndim == 2:
                v = colorize(v, spec)
            if v is not None:
                ax.imshow(v)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col)
            if c == 0 and row.get("title"):
                ax.set_ylabel(row["title"], fontsize=8)
    fig.tight_layout()
    return fig


def legend_classes(spec: DatasetSpec = VOC, classes: Sequence[int] | None = None):
    """A palette legend for the given class indices (all if ``None``)."""
    from matplotlib.patches import Patch

    plt = _plt()
    classes = range(spec.n_classes) if classes is None else classes
    fig, ax = plt.subplots(figsize=(8, 0.6))
    ax.axis("off")
    ax.legend(handles=[Patch(color=spec.palette[c] / 255, label=spec.class_names[c]) for c in classes], ncol=7, loc="center", fontsize=7, frameon=False)
    return fig
