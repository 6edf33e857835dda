import numpy as np
import pytest

from samcam import cli
from samcam.data.spaces import DatasetSpec
from samcam.io import write_label
from samcam.metrics import Evaluator, confusion_matrix, official_image_scores, scores

TINY = DatasetSpec("tiny", ("background", "a", "b"))


def test_iou_by_hand():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 255]])
    s = scores(confusion_matrix(gt, pred, 3))
    # class 0: TP 1, FP 1 (gt 2 -> 0), FN 1 (gt 0 -> 1): 1/3 ; class 1: TP 2, FP 1, FN 1 (void pred): 2/4
    # class 2: TP 1, FP 0 (the 2 on void gt is ignored), FN 1: 1/2
    np.testing.assert_allclose(s.iou, [1 / 3, 2 / 4, 1 / 2])
    assert s.miou == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)
    assert s.n_pixels == 7 and s.pixel_accuracy == pytest.approx(4 / 7)
    np.testing.assert_allclose(s.precision, [1 / 2, 2 / 3, 1.0])
    np.testing.assert_allclose(s.recall, [1 / 2, 2 / 3, 1 / 2])


def test_absent_class_is_left_out_of_the_mean():
    s = scores(confusion_matrix(np.array([[0, 1]]), np.array([[0, 1]]), 3))
    assert np.isnan(s.iou[2]) and s.miou == 1.0


def test_shape_and_range_errors():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)
    with pytest.raises(ValueError, match=r"prediction values \[7\]"):
        confusion_matrix(np.zeros((1, 2)), np.array([[0, 7]]), 3)


def test_split_matrix_is_sum_of_images_and_per_image_rows():
    rng = np.random.default_rng(0)
    ev = Evaluator(TINY)
    total = np.zeros((3, 4), np.int64)
    for k in range(5):
        gt, pred = rng.integers(0, 3, (6, 7)), rng.integers(0, 3, (6, 7))
        total += ev.add(f"im{k}", gt, pred)
    np.testing.assert_array_equal(ev.conf, total)
    rows = ev.per_image_table()
    assert list(rows.columns[:2]) == ["id", "miou"] and len(rows) == 5


def test_official_statistic_is_cumulative():
    gt = np.array([[1, 1, 2, 2, 0, 255]])
    pred = np.array([[1, 0, 2, 1, 0, 2]])
    r = official_image_scores(pred, gt, 3)
    # class 1: T=2 P=2 TP=1 -> IoU 1/3; then cumulative with class 2: T=4 P=3 TP=2 -> 2/5
    assert r["mIoU"] == pytest.approx((1 / 3 + 2 / 5) / 2, abs=1e-9)
    assert r["mrecall"] == pytest.approx((1 / 2 + 2 / 4) / 2, abs=1e-9)
    assert np.isnan(official_image_scores(pred, np.zeros_like(gt), 3)["mIoU"])


def test_cli_eval_prints_miou_last(tmp_path, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    write_label(tmp_path / "p" / "x.png", np.array([[0, 1], [1, 1]], np.uint8))
    write_label(tmp_path / "g" / "x.png", np.array([[0, 1], [1, 0]], np.uint8))
    assert cli.main(["eval", "--pred", str(tmp_path / "p"), "--gt", str(tmp_path / "g"), "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("evaluated 1 images")
    assert out[-1] == "mIoU: 58.33"  # (1/2 + 2/3) / 2
    assert (tmp_path / "t.csv").read_text().startswith("class,iou")


def test_cli_eval_missing_prediction_names_it(tmp_path, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "ids.txt").write_text("nope\n")
    assert cli.main(["eval", "--pred", str(tmp_path / "p"), "--gt", str(tmp_path), "--ids", str(tmp_path / "ids.txt")]) == 2
    assert "nope.png" in capsys.readouterr().err


@pytest.mark.integration
def test_transcam_official_labels_score_70_14(data_root, voc_root, capsys):
    ids = voc_root / "ImageSets" / "Segmentation" / "train.txt"
    args = ["eval", "--pred", str(data_root / "pseudo_labels" / "transcam"), "--gt", str(voc_root / "SegmentationClass"), "--ids", str(ids)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("evaluated 1464 images")
    assert out[-1] == "mIoU: 70.14"
    rows = {ln.split()[0]: ln.split() for ln in out[2:-2]}
    assert rows["background"][1] == "89.74"
    assert rows["chair"][1] == "35.39"


def test_error_pixels_against_direct_counting():
    """Partial and false pixels per class, counted pixel by pixel, against the confusion-matrix route."""
    from samcam.metrics import error_pixels

    rng = np.random.default_rng(3)
    gt = rng.choice([0, 1, 2, 5, 255], size=(40, 50)).astype(np.uint8)
    pred = rng.choice([0, 1, 2, 7, 255], size=(40, 50)).astype(np.uint8)
    n = 21
    e = error_pixels(confusion_matrix(gt, pred, n))
    valid = gt != 255
    for c in range(1, n):
        assert e["partial"][c - 1] == np.sum(valid & (gt == c) & (pred != c))
        assert e["false"][c - 1] == np.sum(valid & (pred == c) & (gt != c))
        assert e["false_on_background"][c - 1] == np.sum(valid & (pred == c) & (gt == 0))
        assert e["object"][c - 1] == np.sum(valid & (gt == c))
        assert e["claimed"][c - 1] == np.sum(valid & (pred == c))
    # the split-level rates: the counts over every foreground class, in % of the object pixels
    from samcam.metrics import error_rates

    fg = valid & (gt > 0)
    r = error_rates(confusion_matrix(gt, pred, n))
    assert r["partial_pct"] == pytest.approx(100 * np.sum(fg & (pred != gt)) / fg.sum())
    assert r["false_pct"] == pytest.approx(100 * np.sum(valid & (pred > 0) & (pred != 255) & (pred != gt)) / fg.sum())
    assert r["false_on_background_pct"] == pytest.approx(100 * np.sum(valid & (gt == 0) & (pred > 0) & (pred != 255)) / fg.sum())
    empty = error_rates(confusion_matrix(np.zeros((3, 3), np.uint8), np.ones((3, 3), np.uint8), n))
    assert all(np.isnan(v) for v in empty.values())  # no object pixels: no rate, not a huge number


def test_error_table_percentages(tmp_path):
    from samcam.data.spaces import VOC
    from samcam.report.tables import error_table

    gt = np.zeros((10, 10), np.uint8)
    gt[:, :5] = 3  # 50 object pixels of class 3
    pred = np.zeros_like(gt)
    pred[:, :3] = 3  # 20 of them missed (partial)
    pred[:, 8:] = 3  # 20 background pixels claimed (false)
    ev = Evaluator(VOC)
    ev.add("a", gt, pred)
    summary, per_class = error_table({"x": ev})
    row = summary.iloc[0]
    assert row["partial_pct"] == pytest.approx(40.0) and row["false_pct"] == pytest.approx(40.0)
    assert row["false_on_background_pct"] == pytest.approx(40.0) and row["partial_mpx"] == pytest.approx(20e-6)
    assert per_class.loc[VOC.class_names[3], ("x", "partial_pct")] == pytest.approx(40.0)
