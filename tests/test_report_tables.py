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


def test_table_rounding_and_no_warnings_on_absent_classes():
    """The per-class tables keep one decimal and the summaries two, exactly as ``round`` gives them;
    a class claimed but absent from the ground truth (x / 0) and one absent from both (0 / 0) give
    NaN cells without a numpy warning."""
    import warnings

    from samcam.report.tables import error_table, score_tables

    evs, pixels = _evaluators()
    gt, pred = _maps(4, 1)[0]
    pred[2, :5] = 9  # class 9 occurs in no ground truth: its false share divides by zero objects
    evs["claims 9"] = Evaluator(VOC)
    evs["claims 9"].add("im0", gt, pred)
    pixels["claims 9"] = (gt.ravel(), pred.ravel())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary, per_class = score_tables(evs)
        esummary, eper_class = error_table(evs)
    for name, (g, p) in pixels.items():
        h = _by_hand(g, p)
        fg = range(1, VOC.n_classes)
        obj = sum(h[c]["object"] for c in fg)
        iou = [_ratio(r["tp"], r["object"] + r["claimed"] - r["tp"]) for r in h.values()]
        for c, cls in enumerate(VOC.class_names):
            want = round(100 * iou[c], 1) if not np.isnan(iou[c]) else np.nan
            assert per_class.loc[cls, name] == want or (np.isnan(want) and np.isnan(per_class.loc[cls, name])), (name, cls)
        row = esummary.set_index("labels").loc[name]
        assert row["images"] == len(evs[name].image_ids)
        assert row["miou"] == round(100 * np.nanmean(iou), 2)  # the error summary's mIoU: %, two decimals
        assert row["partial_mpx"] == sum(h[c]["object"] - h[c]["tp"] for c in fg) / 1e6  # not rounded
        assert row["false_mpx"] == sum(h[c]["claimed"] - h[c]["tp"] for c in fg) / 1e6
        assert row["false_pct"] == round(100 * sum(h[c]["claimed"] - h[c]["tp"] for c in fg) / obj, 2)
        for c in fg:
            false = h[c]["claimed"] - h[c]["tp"]
            # of no object pixels: infinite where the class was claimed, undefined where it was not
            want = round(100 * false / h[c]["object"], 1) if h[c]["object"] else (np.inf if false else np.nan)
            cell = eper_class.loc[VOC.class_names[c], (name, "false_pct")]
            assert cell == want or (np.isnan(want) and np.isnan(cell)), (name, c, cell, want)
    assert eper_class.loc[VOC.class_names[9], ("claims 9", "false_pct")] == np.inf
    assert np.isnan(eper_class.loc[VOC.class_names[9], ("CAM", "false_pct")])
    assert list(esummary.columns) == ["labels", "images", "miou", "partial_mpx", "partial_pct", "false_mpx", "false_pct", "false_on_background_pct"]
    assert list(summary.columns) == ["labels", "images", "miou", "precision", "recall"]


def _summary(folder, method, before, after, n, **extra):
    import json

    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"method": method, "miou_before": before, "miou_after": after,
                                                     "miou_gain": after - before, "n_images": n, **extra}))  # fmt: skip


def test_paper_table_rows_cell_by_cell(tmp_path):
    """Every paper method has a row, in the registry's order, then the other runs; run rows carry
    their summary's numbers in %, the prompted ablation's box row, the mask settings and the rule."""
    import pandas as pd

    from samcam.cam.methods import METHODS
    from samcam.report.tables import NOT_RUN_REASON, collect, paper_table, prompted_miou, to_markdown

    masks = {"model_type": "vit_t", "settings": {"points_per_side": 32}}
    _summary(tmp_path / "voc" / "TransCAM", "TransCAM", 0.6012, 0.6534, 1464, masks=masks, rule={"name": "paper"}, measured_on="train")
    _summary(tmp_path / "voc" / "Mine", "Mine", 0.30, 0.35, 7)
    _summary(tmp_path / "coco" / "Other", "Other", 0.1, 0.2, 3)  # another dataset: not in the voc table
    (tmp_path / "prompted" / "TransCAM").mkdir(parents=True)
    pd.DataFrame({"configuration": ["point", "box"], "miou": [41.5, 44.25]}).to_csv(tmp_path / "prompted" / "TransCAM" / "ablation.csv", index=False)
    assert [s["method"] for s in collect(tmp_path)] == ["Mine", "TransCAM"] and [s["method"] for s in collect(tmp_path, "coco")] == ["Other"]
    assert prompted_miou(tmp_path, "TransCAM") == 44.25 and prompted_miou(tmp_path, "TransCAM", "point") == 41.5
    assert prompted_miou(tmp_path, "TransCAM", "mask") is None and prompted_miou(tmp_path, "Mine") is None
    df = paper_table(tmp_path)
    assert df["method"].tolist() == [*METHODS, "Mine"]
    assert df.set_index("method")["status"].to_dict() == {**{m: "not run" for m in METHODS if m != "TransCAM"}, "TransCAM": "run", "Mine": "run"}
    for m in METHODS:
        if m != "TransCAM":
            assert df.set_index("method").loc[m, "reason"] == NOT_RUN_REASON[m]
    t = df.set_index("method").loc["TransCAM"]
    assert (t["miou_before"], t["miou_after"], t["gain"]) == pytest.approx((60.12, 65.34, 5.22))
    assert t["miou_prompted"] == 44.25 and t["n_images"] == 1464 and t["measured_on"] == "train" and t["reason"] == ""
    assert t["sam_model"] == "vit_t" and t["points_per_side"] == 32 and t["rule"] == "paper"
    mine = df.set_index("method").loc["Mine"]
    assert mine["miou_before"] == pytest.approx(30.0) and mine["measured_on"] == "" and pd.isna(mine["sam_model"]) and pd.isna(mine["rule"])
    text = to_markdown(df).splitlines()
    header = [c.strip() for c in text[0].strip("|").split("|")]
    assert header == ["method", "status", "miou_before", "miou_after", "gain", "miou_prompted", "n_images", "sam_model", "points_per_side",
                      "rule", "measured_on", "reason"]  # fmt: skip
    cells = {line.strip("|").split("|")[0].strip(): [c.strip() for c in line.strip("|").split("|")] for line in text[2:]}
    assert cells["TransCAM"] == ["TransCAM", "run", "60.12", "65.34", "5.22", "44.25", "1464", "vit_t", "32", "paper", "train", ""]
    assert cells["CLIMS"] == ["CLIMS", "not run", "", "", "", "", "", "", "", "", "", NOT_RUN_REASON["CLIMS"]]
    assert cells["Mine"][2:7] == ["30.00", "35.00", "5.00", "", "7"]


def test_table_figure_draws_the_run_rows():
    import pandas as pd

    from samcam.report.tables import table_figure

    df = pd.DataFrame([{"method": "A", "status": "run", "miou_before": 40.0, "miou_after": 46.5},
                       {"method": "B", "status": "not run"},
                       {"method": "C", "status": "run", "miou_before": 50.0, "miou_after": 48.0}])  # fmt: skip
    fig = table_figure(df)
    ax = fig.axes[0]
    bars = [(round(p.get_x() + p.get_width() / 2, 6), p.get_height()) for p in ax.patches]
    assert sorted(bars) == [(-0.2, 40.0), (0.2, 46.5), (0.8, 50.0), (1.2, 48.0)]
    assert [t.get_text() for t in ax.texts] == ["+6.5", "-2.0"] and [t.get_position() for t in ax.texts] == [(0.2, 47.0), (1.2, 48.5)]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "C"] and ax.get_ylim() == (0, 100) and ax.get_ylabel() == "mIoU (%)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["pseudo labels", "+ SAM (paper's rule)"]
