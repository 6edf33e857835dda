"""Every table and summary of samcam.metrics checked cell by cell against hand computations."""

import warnings

import numpy as np
import pandas as pd
import pytest

from samcam.data.spaces import DatasetSpec
from samcam.metrics import (
    Comparison,
    Evaluator,
    average_precision,
    evaluate_arrays,
    format_table,
    official_image_scores,
    scores,
)

TINY = DatasetSpec("tiny", ("background", "a", "b"))
NAN = float("nan")

# two images; the hand counts below are per class (TP, FP, FN) with 255 in gt ignored
GT1, PRED1 = np.array([[0, 0, 1, 1]]), np.array([[0, 1, 1, 1]])
GT2, PRED2 = np.array([[2, 2, 255, 0]]), np.array([[2, 0, 2, 0]])
AFTER1, AFTER2 = np.array([[0, 0, 1, 1]]), np.array([[2, 2, 0, 0]])


def _iou(tp, fp, fn):
    return tp / (tp + fp + fn) if tp + fp + fn else NAN


def test_scores_by_hand_with_no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0/0 must be handled, not warned about
        s = scores(evaluate_arrays([("1", GT1, PRED1), ("2", GT2, PRED2)], TINY).conf)
    # background: TP 2, FP 1 (gt b -> bg), FN 1 (gt bg -> a); a: TP 2, FP 1, FN 0; b: TP 1, FP 0, FN 1
    np.testing.assert_allclose(s.iou, [2 / 4, 2 / 3, 1 / 2])
    np.testing.assert_allclose(s.precision, [2 / 3, 2 / 3, 1.0])
    np.testing.assert_allclose(s.recall, [2 / 3, 1.0, 1 / 2])
    assert s.miou == pytest.approx((2 / 4 + 2 / 3 + 1 / 2) / 3)
    assert s.mean_precision == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert s.mean_recall == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)
    assert s.pixel_accuracy == pytest.approx(5 / 7) and s.n_pixels == 7


def test_scores_of_single_pixels_and_empty_matrices():
    conf = np.zeros((3, 4), np.int64)
    conf[1, 1] = 1  # one pixel of class a, right
    conf[2, 3] = 1  # one pixel of class b predicted void
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = scores(conf)
        empty = scores(np.zeros((3, 4), np.int64))
    assert np.isnan(s.iou[0]) and np.isnan(s.precision[0]) and np.isnan(s.recall[0])
    assert s.iou[1] == 1.0 and s.recall[1] == 1.0 and s.precision[1] == 1.0
    assert s.iou[2] == 0.0 and s.recall[2] == 0.0 and np.isnan(s.precision[2])
    assert s.miou == 0.5 and s.mean_precision == 1.0 and s.mean_recall == 0.5 and s.pixel_accuracy == 0.5
    for v in (empty.miou, empty.mean_precision, empty.mean_recall, empty.pixel_accuracy):
        assert isinstance(v, float) and np.isnan(v)
    assert empty.n_pixels == 0


def test_evaluator_tables_cell_by_cell():
    ev = evaluate_arrays([("1", GT1, PRED1), ("2", GT2, PRED2)], TINY)
    assert ev.conf.dtype == np.int64 and ev.image_ids == ["1", "2"]
    expected = pd.DataFrame({"class": ["background", "a", "b"], "iou": [2 / 4, 2 / 3, 1 / 2], "precision": [2 / 3, 2 / 3, 1.0],
                             "recall": [2 / 3, 1.0, 0.5], "gt_pixels": [3, 2, 2], "pred_pixels": [3, 3, 1]})
    pd.testing.assert_frame_equal(ev.per_class_table(), expected, check_dtype=False)
    rows = ev.per_image_table()
    # image 1: bg TP1 FN1 -> 1/2, a TP2 FP1 -> 2/3, b absent; image 2: bg TP1 FP1 -> 1/2, a absent, b TP1 FN1 -> 1/2
    expected = pd.DataFrame({"id": ["1", "2"], "miou": [(1 / 2 + 2 / 3) / 2, 1 / 2], "background": [1 / 2, 1 / 2],
                             "a": [2 / 3, NAN], "b": [NAN, 1 / 2]})
    pd.testing.assert_frame_equal(rows, expected)
    with pytest.raises(ValueError, match=r"^per-image rows were not kept \(keep_per_image=False\)$"):
        Evaluator(TINY, keep_per_image=False).per_image_table()
    assert list(Evaluator(TINY).per_image_table().columns) == ["id", "miou", "background", "a", "b"]
    assert len(Evaluator(TINY).per_image_table()) == 0


def test_evaluator_uses_the_spec_ignore_index():
    spec = DatasetSpec("ign0", ("background", "a", "b"), ignore_index=2)
    ev = Evaluator(spec)
    ev.add("x", np.array([[2, 1]]), np.array([[1, 1]]))  # the gt 2 is void here
    assert ev.conf.tolist() == [[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]


def test_comparison_tables_cell_by_cell():
    before = evaluate_arrays([("1", GT1, PRED1), ("2", GT2, PRED2)], TINY)
    after = evaluate_arrays([("1", GT1, AFTER1), ("2", GT2, AFTER2)], TINY)
    cmp = Comparison(before, after)
    assert cmp.ids == ["1", "2"] and cmp.spec is TINY
    # after: image 1 perfect; image 2: gt [b, b, void, bg] pred [b, b, bg, bg] -> every class perfect
    a_iou = [1.0, 1.0, 1.0]
    b_iou = [2 / 4, 2 / 3, 1 / 2]
    expected = pd.DataFrame({"class": ["background", "a", "b"], "iou_before": b_iou, "iou_after": a_iou,
                             "iou_delta": np.subtract(a_iou, b_iou), "precision_before": [2 / 3, 2 / 3, 1.0],
                             "precision_after": [1.0, 1.0, 1.0], "recall_before": [2 / 3, 1.0, 0.5], "recall_after": [1.0, 1.0, 1.0]})
    pd.testing.assert_frame_equal(cmp.per_class(), expected)
    assert cmp.summary() == pytest.approx({
        "n_images": 2, "miou_before": np.mean(b_iou), "miou_after": 1.0, "miou_gain": 1.0 - np.mean(b_iou),
        "precision_before": (2 / 3 + 2 / 3 + 1) / 3, "precision_after": 1.0, "recall_before": (2 / 3 + 1 + 1 / 2) / 3, "recall_after": 1.0,
        "pixel_accuracy_before": 5 / 7, "pixel_accuracy_after": 1.0})
    rows = cmp.per_image()
    assert list(rows.columns) == ["id", "miou_before", "miou_after", "miou_delta", "before:background", "after:background",
                                  "before:a", "after:a", "before:b", "after:b"]
    np.testing.assert_allclose(rows["miou_before"], [(1 / 2 + 2 / 3) / 2, 1 / 2])
    np.testing.assert_allclose(rows["miou_after"], [1.0, 1.0])
    np.testing.assert_allclose(rows["miou_delta"], [1 - (1 / 2 + 2 / 3) / 2, 1 / 2])
    np.testing.assert_allclose(rows["after:b"], [NAN, 1.0])
    np.testing.assert_allclose(rows["before:a"], [2 / 3, NAN])
    with pytest.raises(ValueError, match="^before and after were scored over different ids$"):
        Comparison(before, evaluate_arrays([("1", GT1, AFTER1)], TINY))


def test_format_table_exact_text():
    ev = evaluate_arrays([("1", GT1, PRED1), ("2", GT2, PRED2)], TINY)
    ev.add("3", np.array([[0]]), np.array([[0]]))
    assert format_table(ev) == "\n".join([
        # bg: TP 3 FP 1 FN 1 -> 3/5, precision and recall 3/4; pixel accuracy 6/8
        "class          IoU    prec  recall",
        "background   60.00   75.00   75.00",
        "a            66.67   66.67  100.00",
        "b            50.00  100.00   50.00",
        "pixel accuracy: 75.00",
        "mIoU: 58.89"])
    empty = Evaluator(TINY)
    empty.add("x", np.array([[0]]), np.array([[0]]))
    assert format_table(empty, digits=1).splitlines()[2] == "a" + " " * 16 + "-" + " " * 7 + "-" + " " * 7 + "-"
    assert format_table(empty, digits=1).splitlines()[-1] == "mIoU: 100.0"


def test_official_statistic_full_dictionaries():
    # one foreground class of one pixel: T=1, P=2, TP=1
    r = official_image_scores(np.array([[1, 1, 0]]), np.array([[1, 0, 0]]), 3)
    assert r == pytest.approx({"mIoU": 1 / 2, "mprecision": 1 / 2, "mrecall": 1.0}, abs=1e-9)
    # the highest class absent from both prediction and gt, predictions of class n (void-like) ignored
    r = official_image_scores(np.array([[1, 3, 0, 1]]), np.array([[1, 1, 0, 0]]), 4)
    assert r == pytest.approx({"mIoU": 1 / 3, "mprecision": 1 / 2, "mrecall": 1 / 2}, abs=1e-9)
    nan = official_image_scores(np.array([[1]]), np.array([[0]]), 3)
    assert set(nan) == {"mIoU", "mprecision", "mrecall"} and all(np.isnan(v) for v in nan.values())
    with pytest.raises(ValueError, match=r"^prediction shape \(1, 2\) differs from ground-truth shape \(1, 3\)$"):
        official_image_scores(np.zeros((1, 2)), np.zeros((1, 3)), 3)


def test_average_precision_ties_and_dtype():
    # ties are ranked in input order (stable): positives first here
    ap = average_precision(np.array([[0.5], [0.5], [0.1]]), np.array([[1], [0], [1]]))
    assert ap.dtype == np.float64 and ap[0] == pytest.approx((1 / 1 + 2 / 3) / 2)
    ap = average_precision(np.array([[0.5], [0.5], [0.1]]), np.array([[0], [1], [1]]))
    assert ap[0] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert np.isnan(average_precision(np.array([[0.3]]), np.array([[0]]))[0])


@pytest.mark.parametrize("gt_dtype,pred_dtype", [(np.uint8, np.int64), (np.int64, np.uint8), (np.int32, np.int16)])
def test_confusion_matrix_of_wider_integer_maps(gt_dtype, pred_dtype):
    from samcam.metrics import confusion_matrix

    gt, pred = np.array([[0, 1, 255], [2, 2, 1]], gt_dtype), np.array([[0, 1, 1], [2, 255, 0]], pred_dtype)
    # rows gt 0..2, columns pred 0..2 and void: gt 0->0, 1->1, 2->2, 2->void, 1->0; the void gt pixel is ignored
    assert confusion_matrix(gt, pred, 3).tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]]


@pytest.mark.parametrize("which,values,msg", [
    ("gt", [[0, 256]], "ground-truth values outside 0..255"), ("gt", [[-1, 0]], "ground-truth values outside 0..255"),
    ("pred", [[0, 300]], "prediction values outside 0..255"), ("pred", [[0, -2]], "prediction values outside 0..255"),
    ("gt", [[0, 3]], r"ground-truth values \[3\] outside 0\.\.2"), ("pred", [[0, 4]], r"prediction values \[4\] outside 0\.\.2"),
    ("gt", [[7, 3]], r"ground-truth values \[3, 7\] outside 0\.\.2")])
def test_confusion_matrix_range_errors_name_the_values(which, values, msg):
    from samcam.metrics import confusion_matrix

    arr, ok = np.array(values, np.int64), np.zeros((1, 2), np.int64)
    with pytest.raises(ValueError, match=f"^{msg}$"):
        confusion_matrix(arr, ok, 3) if which == "gt" else confusion_matrix(ok, arr, 3)
    assert confusion_matrix(np.array([[0, 255]], np.int64), np.array([[255, 0]], np.int64), 3).tolist() == [[0, 0, 0, 1], [0] * 4, [0] * 4]


def test_cost_table_sums_the_recorded_costs(tmp_path):
    """Each row's cost is the sum of the steps it needs, from the records the steps write."""
    import gzip
    import json

    import torch

    from samcam.outputs import add_cost, read_cost
    from samcam.report.tables import cost_table

    names = ["CAM", "CAM + SAM", "CAM + SAM prompted", "CAM + AffinityNet", "CAM + AffinityNet + SAM", "CAM + AffinityNet (CAM + SAM seeds)"]
    rows = {n: tmp_path / f"row{i}" for i, n in enumerate(names)}
    cams = tmp_path / "cams"
    for folder, (secs, n) in zip([cams, *rows.values()], [(20, 10), (1, 10), (3, 10), (15, 10), (12, 10), (2, 10), (9, 10)]):
        folder.mkdir()
        add_cost(folder, secs / 2, n // 2)
        add_cost(folder, secs / 2, n - n // 2)  # a resumed run adds to the first
    c = read_cost(cams)
    assert (c["seconds"], c["images"], c["seconds_per_image"]) == pytest.approx((20, 10, 2.0)) and len(c["devices"]) == 1
    torch.save({"seconds": 300.0}, tmp_path / "clf.pt")
    torch.save({"seconds": 120.0}, tmp_path / "aff.pt")
    torch.save({"seconds": 100.0}, tmp_path / "aff_sam.pt")
    masks = tmp_path / "masks"
    masks.mkdir()
    for i, s in enumerate([1.0, 3.0]):
        (masks / f"m{i}.json.gz").write_bytes(gzip.compress(json.dumps({"format": "samcam-masks/1", "meta": {"seconds": s, "device": "cuda:0"}}).encode()))
    (masks / "._m0.json.gz").write_bytes(b"\x00\x05\x16\x07")  # a macOS AppleDouble file: hidden, no mask set
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"rows": [{"fast_s": 60.0}, {"fast_s": 80.0}]}))
    aff, aff_sam = tmp_path / "aff.pt", tmp_path / "aff_sam.pt"
    recipes = {"CAM": ([], []), "CAM + SAM": (["masks", "CAM + SAM"], []), "CAM + SAM prompted": (["CAM + SAM prompted"], []),
               "CAM + AffinityNet": (["CAM + AffinityNet"], [aff]),
               "CAM + AffinityNet + SAM": (["CAM + AffinityNet", "masks", "CAM + AffinityNet + SAM"], [aff]),
               names[5]: (["masks", "CAM + SAM", names[5]], [aff_sam])}  # fmt: skip
    t = cost_table(rows, recipes, cams, masks, tmp_path / "clf.pt", bench).set_index("labels")
    # per image: CAM 2.0, (CAM labels 0.1, not charged), merge 0.3, prompted 1.5, walk 1.2, second merge 0.2, walk 0.9, CPU masks 70
    assert t.loc["CAM", "cpu_s_per_image"] == pytest.approx(2.0)
    assert t.loc["CAM + SAM", "cpu_s_per_image"] == pytest.approx(2.0 + 70 + 0.3)
    assert t.loc["CAM + SAM prompted", "cpu_s_per_image"] == pytest.approx(2.0 + 1.5)
    assert t.loc["CAM + AffinityNet", "cpu_s_per_image"] == pytest.approx(2.0 + 1.2)
    assert t.loc["CAM + AffinityNet + SAM", "cpu_s_per_image"] == pytest.approx(2.0 + 1.2 + 70 + 0.2)
    assert t.loc[names[5], "cpu_s_per_image"] == pytest.approx(2.0 + 70 + 0.3 + 0.9)
    assert t.loc["CAM", "training_s"] == 300 and t.loc["CAM + AffinityNet + SAM", "training_s"] == 420 and t.loc[names[5], "training_s"] == 400
    assert t.loc["CAM + AffinityNet", "extra_training_s"] == 120 and t.loc["CAM + SAM", "extra_training_s"] == 0
    assert t.loc["CAM + SAM prompted", "extra_cpu_s_per_image"] == pytest.approx(1.5)
    assert t.loc["CAM + SAM", "masks_s_per_image"] == pytest.approx(2.0) and t.loc["CAM + SAM", "masks_device"] == "cuda:0"
    assert t.loc[names[5], "masks_device"] == "cuda:0" and t.loc["CAM", "masks_device"] == ""
    with pytest.raises(ValueError, match="not rows"):
        cost_table(rows, {**recipes, "CAM": (["merge"], [])}, cams, masks)
    with pytest.raises(ValueError, match=r"rows without a cost recipe: \['CAM'\]"):
        cost_table(rows, {k: v for k, v in recipes.items() if k != "CAM"}, cams, masks)
    assert np.isnan(t.loc["CAM + AffinityNet", "masks_s_per_image"])


def test_cost_table_leaves_unknown_costs_unknown(tmp_path):
    """A missing record is NaN, never a number: no classifier checkpoint or no ``seconds`` in it, a
    step run on a GPU (its seconds are not this CPU's), no mask files, no benchmark; a mask file
    without a device says ``?``."""
    import gzip
    import json

    import torch

    from samcam.outputs import add_cost
    from samcam.report.tables import cost_table

    rows = {"CAM": tmp_path / "cam_labels", "CAM + SAM": tmp_path / "merged", "GPU": tmp_path / "gpu"}
    cams = tmp_path / "cams"
    for folder in (cams, *rows.values()):
        folder.mkdir()
    add_cost(cams, 8.0, 4)
    add_cost(rows["CAM + SAM"], 2.0, 4)
    add_cost(rows["GPU"], 1.0, 4, device="cuda:0")
    recipes = {"CAM": ([], []), "CAM + SAM": (["masks", "CAM + SAM"], []), "GPU": (["GPU"], [])}
    empty = tmp_path / "no_masks"
    empty.mkdir()
    t = cost_table(rows, recipes, cams, empty, tmp_path / "absent.pt", tmp_path / "absent.json").set_index("labels")
    assert t.loc["CAM", "cam_s_per_image"] == 2.0 and t.loc["CAM", "cpu_s_per_image"] == 2.0
    assert np.isnan(t.loc["CAM", "training_s"])  # the classifier checkpoint is absent
    assert np.isnan(t.loc["CAM + SAM", "cpu_s_per_image"])  # no benchmark: the CPU cost of SAM is unknown
    assert np.isnan(t.loc["CAM + SAM", "masks_s_per_image"]) and t.loc["CAM + SAM", "masks_device"] == ""
    assert np.isnan(t.loc["GPU", "extra_cpu_s_per_image"])  # a step that ran on a GPU has no CPU cost here
    torch.save({"epoch": 3}, tmp_path / "clf.pt")  # a checkpoint without its seconds
    masks = tmp_path / "masks"
    masks.mkdir()
    (masks / "m.json.gz").write_bytes(gzip.compress(json.dumps({"format": "samcam-masks/1", "meta": {"seconds": 5.0}}).encode()))
    (tmp_path / "bench.json").write_text(json.dumps({"rows": [{"fast_s": 30.0}]}))
    t = cost_table(rows, recipes, cams, masks, tmp_path / "clf.pt", tmp_path / "bench.json").set_index("labels")
    assert np.isnan(t.loc["CAM", "training_s"]) and t.loc["CAM", "extra_training_s"] == 0
    assert t.loc["CAM + SAM", "masks_device"] == "?" and t.loc["CAM + SAM", "masks_s_per_image"] == 5.0
    assert t.loc["CAM + SAM", "cpu_s_per_image"] == pytest.approx(2.0 + 30.0 + 0.5)
    t = cost_table(rows, recipes, cams, masks, None, None).set_index("labels")
    assert np.isnan(t.loc["CAM + SAM", "cpu_s_per_image"]) and np.isnan(t.loc["CAM", "training_s"])
