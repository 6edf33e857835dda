"""The report tables, cell by cell, against a pixel count done here (never the metrics code's own
confusion matrix): several evaluators that differ in most classes, so a column filled from the
wrong evaluator, a shifted class row or a swapped precision/recall shows."""

import numpy as np
import pytest

from samcam.data.spaces import VOC
from samcam.metrics import Evaluator

CLASSES = [0, 3, 8, 15]  # background and three objects; the other VOC classes occur nowhere


def _maps(seed: int, n_images: int = 2, shape=(9, 13)):
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n_images):
        gt = rng.choice(CLASSES, shape).astype(np.uint8)
        gt[0, :4] = 255  # void ground truth: not scored
        pred = np.where(rng.random(shape) < 0.6, gt, rng.choice(CLASSES, shape)).astype(np.uint8)
        pred[-1, :3] = 255  # unlabelled predictions: a miss for their true class, claimed by none
        pairs.append((gt, pred))
    return pairs


def _evaluators():
    evs, pixels = {}, {}
    for name, seed in [("CAM", 1), ("CAM + SAM", 2), ("other", 3)]:
        ev = Evaluator(VOC)
        pairs = _maps(seed)
        for k, (gt, pred) in enumerate(pairs):
            ev.add(f"im{k}", gt, pred)
        evs[name] = ev
        pixels[name] = (np.concatenate([g.ravel() for g, _ in pairs]), np.concatenate([p.ravel() for _, p in pairs]))
    return evs, pixels


def _by_hand(gt, pred):
    """Per class: true positives, ground-truth pixels, claimed pixels, claimed on background (void
    ground truth left out), each a count of pixels."""
    valid = gt != 255
    rows = {}
    for c in range(VOC.n_classes):
        rows[c] = {"tp": np.sum(valid & (gt == c) & (pred == c)), "object": np.sum(valid & (gt == c)),
                   "claimed": np.sum(valid & (pred == c)), "on_background": np.sum(valid & (gt == 0) & (pred == c))}  # fmt: skip
    return rows


def _ratio(a, b):
    return a / b if b else np.nan


def test_score_tables_cell_by_cell():
    from samcam.report.tables import score_tables

    evs, pixels = _evaluators()
    summary, per_class = score_tables(evs)
    assert list(summary["labels"]) == list(evs) and list(per_class.columns) == list(evs)
    assert list(per_class.index) == list(VOC.class_names)
    for name, (gt, pred) in pixels.items():
        h = _by_hand(gt, pred)
        iou = np.array([_ratio(r["tp"], r["object"] + r["claimed"] - r["tp"]) for r in h.values()])
        precision = np.array([_ratio(r["tp"], r["claimed"]) for r in h.values()])
        recall = np.array([_ratio(r["tp"], r["object"]) for r in h.values()])
        assert np.isfinite(iou).sum() == len(CLASSES)
        for c, cls in enumerate(VOC.class_names):
            cell = per_class.loc[cls, name]
            if np.isnan(iou[c]):
                assert np.isnan(cell), (name, cls)
            else:
                assert abs(cell - 100 * iou[c]) <= 0.05 + 1e-9, (name, cls, cell, 100 * iou[c])  # one decimal
        row = summary.set_index("labels").loc[name]
        assert row["images"] == 2
        for col, want in [("miou", np.nanmean(iou)), ("precision", np.nanmean(precision)), ("recall", np.nanmean(recall))]:
            assert abs(row[col] - 100 * want) <= 0.005 + 1e-9, (name, col, row[col], 100 * want)  # two decimals
    # the evaluators differ, so no column could stand in for another
    occurring = [VOC.class_names[c] for c in CLASSES]
    for a in evs:
        for b in evs:
            if a != b:
                assert (per_class.loc[occurring, a] != per_class.loc[occurring, b]).sum() >= 3, (a, b)


def test_error_table_cell_by_cell():
    from samcam.report.tables import error_table

    evs, pixels = _evaluators()
    summary, per_class = error_table(evs)
    assert list(per_class.index) == list(VOC.class_names[1:])
    for name, (gt, pred) in pixels.items():
        h = _by_hand(gt, pred)
        fg = range(1, VOC.n_classes)
        partial = {c: h[c]["object"] - h[c]["tp"] for c in fg}
        false = {c: h[c]["claimed"] - h[c]["tp"] for c in fg}
        obj = sum(h[c]["object"] for c in fg)
        for c in fg:
            for col, count in [("partial_pct", partial[c]), ("false_pct", false[c])]:
                cell, want = per_class.loc[VOC.class_names[c], (name, col)], 100 * _ratio(count, h[c]["object"])
                assert (np.isnan(cell) and np.isnan(want)) or abs(cell - want) <= 0.05 + 1e-9, (name, c, col, cell, want)
        row = summary.set_index("labels").loc[name]
        assert row["partial_mpx"] == pytest.approx(sum(partial.values()) / 1e6)
        assert row["false_mpx"] == pytest.approx(sum(false.values()) / 1e6)
        for col, count in [("partial_pct", sum(partial.values())), ("false_pct", sum(false.values())),
                           ("false_on_background_pct", sum(h[c]["on_background"] for c in fg))]:  # fmt: skip
            assert abs(row[col] - 100 * count / obj) <= 0.005 + 1e-9, (name, col)
