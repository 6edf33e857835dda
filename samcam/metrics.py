"""Pseudo-label quality: the standard WSSS confusion-matrix protocol, and the official repo's statistic.

The standard protocol (IRN, and every WSSS paper's "pseudo-label mIoU"): one confusion matrix is
accumulated over the whole split; ground-truth pixels equal to 255 (void) are ignored; for each class
``IoU = TP / (TP + FP + FN)``; mIoU is the mean over the classes that occur (in ground truth or
prediction) — all 21 for a VOC split, background included.

A prediction of 255 (some methods mark uncertain pixels so) on a valid ground-truth pixel counts as a
miss for the true class (a false negative) and as no class's false positive.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from samcam.data.spaces import IGNORE_INDEX, DatasetSpec


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, n_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """``n × (n+1)`` int64 counts: rows are ground-truth classes, columns predicted classes.

    The extra last column counts predictions of ``ignore_index`` (void). Raises ``ValueError`` if the
    shapes differ or either map holds other values outside ``0..n-1``.

    One ``np.bincount`` over ``gt·256 + pred`` (uint8 maps) gives the full 256 × 256 table; the range
    checks and the void handling then run on that small table, not on the pixels.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    if gt.dtype != np.uint8 or pred.dtype != np.uint8:
        for name, arr in (("ground-truth", gt), ("prediction", pred)):
            if arr.size and (arr.min() < 0 or arr.max() > 255):
                raise ValueError(f"{name} values outside 0..255")
        gt, pred = gt.astype(np.uint8), pred.astype(np.uint8)
    idx = gt.reshape(-1).astype(np.int32) << 8
    idx |= pred.reshape(-1)
    full = np.bincount(idx, minlength=1 << 16).reshape(256, 256)
    full[ignore_index] = 0  # void ground truth is ignored
    bad_gt = np.flatnonzero(full[n_classes:].sum(axis=1)) + n_classes
    if bad_gt.size:
        raise ValueError(f"ground-truth values {bad_gt.tolist()} outside 0..{n_classes - 1}")
    cols = full[:n_classes].sum(axis=0)
    cols[ignore_index] = 0
    bad_pred = np.flatnonzero(cols[n_classes:]) + n_classes
    if bad_pred.size:
        raise ValueError(f"prediction values {bad_pred.tolist()} outside 0..{n_classes - 1}")
    return np.concatenate([full[:n_classes, :n_classes], full[:n_classes, ignore_index : ignore_index + 1]], axis=1).astype(np.int64)


@dataclass
class Scores:
    """Scores derived from one confusion matrix."""

    iou: np.ndarray  # per class; NaN where the class occurs in neither gt nor prediction
    precision: np.ndarray
    recall: np.ndarray
    miou: float
    mean_precision: float
    mean_recall: float
    pixel_accuracy: float
    n_pixels: int


def scores(conf: np.ndarray) -> Scores:
    """IoU, precision, recall per class and their means (over occurring classes) from a confusion matrix."""
    conf = np.asarray(conf, dtype=np.float64)
    n = conf.shape[0]
    tp = np.diag(conf[:, :n])
    gt_total = conf.sum(axis=1)  # TP + FN (void predictions included as misses)
    pred_total = conf[:, :n].sum(axis=0)  # TP + FP
    union = gt_total + pred_total - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        precision = np.where(pred_total > 0, tp / pred_total, np.nan)
        recall = np.where(gt_total > 0, tp / gt_total, np.nan)
    total = conf.sum()
    nanmean = lambda a: float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")  # noqa: E731
    return Scores(
        iou=iou,
        precision=precision,
        recall=recall,
        miou=nanmean(iou),
        mean_precision=nanmean(precision),
        mean_recall=nanmean(recall),
        pixel_accuracy=float(tp.sum() / total) if total else float("nan"),
        n_pixels=int(total),
    )


def error_pixels(conf: np.ndarray) -> dict[str, np.ndarray]:
    """The paper's two error kinds, counted in pixels per foreground class from a confusion matrix
    (rows ground truth, columns prediction; a last column of unlabelled predictions is allowed):

    ``partial``  pixels of object class ``c`` not labelled ``c`` (the missed part of the object);
    ``false``    pixels labelled ``c`` whose true class is another one;
    ``false_on_background``  the part of ``false`` whose true class is background.

    Also ``object`` (ground-truth pixels of ``c``) and ``claimed`` (pixels labelled ``c``). Arrays
    over classes 1..n−1 (background has no row: its misses are the other classes' false pixels); a
    pixel of class ``a`` labelled ``b`` counts once as partial for ``a`` and once as false for ``b``.
    """
    conf = np.asarray(conf, np.int64)
    n = conf.shape[0]
    tp = np.diag(conf[:, :n])
    obj, claimed = conf.sum(1), conf[:, :n].sum(0)
    return {"partial": (obj - tp)[1:], "false": (claimed - tp)[1:], "false_on_background": conf[0, 1:n],
            "object": obj[1:], "claimed": claimed[1:]}  # fmt: skip


def error_rates(conf: np.ndarray) -> dict[str, float]:
    """The paper's error kinds over all foreground classes, in % of the ground-truth object pixels:
    ``partial_pct``, ``false_pct`` and ``false_on_background_pct`` (:func:`error_pixels`, summed)."""
    e = error_pixels(conf)
    obj = int(e["object"].sum())
    return {f"{k}_pct": 100 * float(e[k].sum()) / obj if obj else float("nan") for k in ("partial", "false", "false_on_background")}


class Evaluator:
    """Accumulates one confusion matrix over a split and keeps per-image rows.

    >>> ev = Evaluator(VOC)                       # doctest: +SKIP
    >>> for i in ids: ev.add(i, gt[i], pred[i])   # doctest: +SKIP
    >>> ev.scores().miou                          # doctest: +SKIP
    """

    def __init__(self, spec: DatasetSpec, keep_per_image: bool = True) -> None:
        self.spec = spec
        self.conf = np.zeros((spec.n_classes, spec.n_classes + 1), dtype=np.int64)
        self.keep_per_image = keep_per_image
        self.image_ids: list[str] = []
        self.image_iou: list[np.ndarray] = []

    def add(self, image_id: str, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """Add one image; returns its own confusion matrix."""
        c = confusion_matrix(gt, pred, self.spec.n_classes, self.spec.ignore_index)
        self.conf += c
        if self.keep_per_image:
            self.image_ids.append(image_id)
            self.image_iou.append(scores(c).iou)
        return c

    def scores(self) -> Scores:
        return scores(self.conf)

    def per_class_table(self):
        """A pandas DataFrame: class, IoU, precision, recall (fractions), gt and predicted pixel counts."""
        import pandas as pd

        s = self.scores()
        n = self.spec.n_classes
        return pd.DataFrame(
            {
                "class": list(self.spec.class_names),
                "iou": s.iou,
                "precision": s.precision,
                "recall": s.recall,
                "gt_pixels": self.conf.sum(axis=1),
                "pred_pixels": self.conf[:, :n].sum(axis=0),
            }
        )

    def per_image_table(self):
        """A pandas DataFrame with one row per image: id, mIoU, and per-class IoU columns."""
        import pandas as pd

        if not self.keep_per_image:
            raise ValueError("per-image rows were not kept (keep_per_image=False)")
        iou = np.array(self.image_iou).reshape(len(self.image_ids), self.spec.n_classes)
        with warnings.catch_warnings():  # images whose classes all have an empty union give NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            miou = np.nanmean(iou, axis=1) if len(iou) else np.zeros(0)
        df = pd.DataFrame(iou, columns=list(self.spec.class_names))
        df.insert(0, "miou", miou)
        df.insert(0, "id", self.image_ids)
        return df


def evaluate_arrays(pairs: Iterable[tuple[str, np.ndarray, np.ndarray]], spec: DatasetSpec) -> Evaluator:
    """Evaluate an iterable of ``(id, gt, pred)`` and return the filled :class:`Evaluator`."""
    ev = Evaluator(spec)
    for image_id, gt, pred in pairs:
        ev.add(image_id, gt, pred)
    return ev


def official_image_scores(pred: np.ndarray, gt: np.ndarray, n_classes: int) -> dict[str, float]:
    """The per-image statistic of the paper's official code (``Processor.evaluate`` in cskyl/SAM_WSSS).

    For each *foreground* class present in the image's ground truth, in ascending order, it adds that
    class's true, predicted and true-positive pixel counts to running totals ``T``, ``P``, ``TP`` and
    appends the *running* ratios ``TP/(T+P-TP)``, ``TP/P``, ``TP/T``; the image's "mIoU", "mprecision"
    and "mrecall" are the means of those cumulative lists (the official code then rounds to 3 places,
    which this function does not).  It differs from the standard protocol in three ways: background is
    left out; each list entry pools all classes so far instead of scoring one class; and it is a
    per-image average, not a split-level confusion matrix.  Use it only to compare with numbers that
    code produced (its ``*_summary.csv``); report :class:`Evaluator` numbers otherwise.
    Images without foreground ground truth give NaN.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    valid = gt < 255
    g = gt[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    true = np.bincount(g, minlength=n_classes)[:n_classes]
    predicted = np.bincount(p[p < n_classes], minlength=n_classes)[:n_classes]
    tp = np.bincount(g[g == p], minlength=n_classes)[:n_classes]
    present = np.flatnonzero(true[1:] > 0) + 1
    if present.size == 0:
        return {"mIoU": float("nan"), "mprecision": float("nan"), "mrecall": float("nan")}
    T, P, TP = np.cumsum(true[present]), np.cumsum(predicted[present]), np.cumsum(tp[present])
    eps = 1e-10
    return {
        "mIoU": float(np.mean(TP / (T + P - TP + eps))),
        "mprecision": float(np.mean(TP / (P + eps))),
        "mrecall": float(np.mean(TP / (T + eps))),
    }


def format_table(ev: Evaluator, digits: int = 2) -> str:
    """A plain-text per-class table (percentages) ending with the ``mIoU: NN.NN`` line."""
    s = ev.scores()
    width = max(len(n) for n in ev.spec.class_names)
    lines = [f"{'class':<{width}}  {'IoU':>6}  {'prec':>6}  {'recall':>6}"]
    for name, i, p, r in zip(ev.spec.class_names, s.iou, s.precision, s.recall):
        fmt = lambda v: f"{100 * v:6.{digits}f}" if np.isfinite(v) else f"{'-':>6}"  # noqa: E731
        lines.append(f"{name:<{width}}  {fmt(i)}  {fmt(p)}  {fmt(r)}")
    lines.append(f"pixel accuracy: {100 * s.pixel_accuracy:.{digits}f}")
    lines.append(f"mIoU: {100 * s.miou:.{digits}f}")
    return "\n".join(lines)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-class average precision (mean of precision at each positive, ranked by score); NaN for a
    class without positives."""
    ap = np.full(scores.shape[1], np.nan)
    for k in range(scores.shape[1]):
        y = labels[np.argsort(-scores[:, k], kind="stable"), k] > 0
        if y.any():
            hits = np.cumsum(y)
            ap[k] = float(np.mean(hits[y] / (np.flatnonzero(y) + 1)))
    return ap


@dataclass
class Comparison:
    """Scores of the same images before and after a refinement (e.g. SAM + the paper's rule).

    Pure: built from two :class:`Evaluator` objects filled over the same ids in the same order.
    """

    before: Evaluator
    after: Evaluator

    def __post_init__(self) -> None:
        if self.before.image_ids != self.after.image_ids:
            raise ValueError("before and after were scored over different ids")

    @property
    def spec(self) -> DatasetSpec:
        return self.before.spec

    @property
    def ids(self) -> list[str]:
        return self.before.image_ids

    def per_class(self):
        """IoU, precision and recall per class, before and after (fractions), and the IoU change."""
        import pandas as pd

        b, a = self.before.scores(), self.after.scores()
        return pd.DataFrame({
            "class": list(self.spec.class_names),
            "iou_before": b.iou, "iou_after": a.iou, "iou_delta": a.iou - b.iou,
            "precision_before": b.precision, "precision_after": a.precision,
            "recall_before": b.recall, "recall_after": a.recall,
        })  # fmt: skip

    def per_image(self):
        """One row per image: mIoU before, after and its change, and every class's IoU before and after."""
        import pandas as pd

        b, a = self.before.per_image_table(), self.after.per_image_table()
        df = pd.DataFrame({"id": b["id"], "miou_before": b["miou"], "miou_after": a["miou"]})
        df["miou_delta"] = df["miou_after"] - df["miou_before"]
        cols = {f"{tag}:{name}": t[name] for name in self.spec.class_names for tag, t in (("before", b), ("after", a))}
        return pd.concat([df, pd.DataFrame(cols)], axis=1)

    def summary(self) -> dict[str, float | int]:
        """Split-level numbers (fractions): mIoU, mean precision and recall, pixel accuracy, before and after."""
        b, a = self.before.scores(), self.after.scores()
        return {
            "n_images": len(self.ids),
            "miou_before": b.miou, "miou_after": a.miou, "miou_gain": a.miou - b.miou,
            "precision_before": b.mean_precision, "precision_after": a.mean_precision,
            "recall_before": b.mean_recall, "recall_after": a.mean_recall,
            "pixel_accuracy_before": b.pixel_accuracy, "pixel_accuracy_after": a.pixel_accuracy,
        }  # fmt: skip

