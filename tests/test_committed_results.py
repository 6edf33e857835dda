"""The committed results are re-derived from what is committed beside them and compared (issue 20):
the paper table from the method summaries, each method row by merging its pseudo labels with the
committed masks and scoring both, and the claims table by scoring each row's committed labels. A
result written by older code, or edited by hand, fails here."""

import json

import numpy as np
import pandas as pd
import pytest

from samcam.data.spaces import VOC
from samcam.io import REPO, read_ids
from samcam.outputs import resolve_recorded

RESULTS = REPO / "results"
SUMMARIES = sorted((RESULTS / "voc").glob("*/summary.json"))


@pytest.mark.integration
@pytest.mark.parametrize("summary", SUMMARIES, ids=[p.parent.name for p in SUMMARIES])
def test_a_method_row_is_rederived_from_its_labels_and_the_committed_masks(summary, voc_root, tmp_path):
    """Merge the row's pseudo labels with its masks by the recorded rule and score both folders:
    every score of summary.json comes back exactly (the confusion matrices are integer counts)."""
    from samcam.pipeline.enhance import enhance_method
    from samcam.refine.merge import MergeRule

    s = json.loads(summary.read_text())
    pseudo, masks = (resolve_recorded(s[k], summary.parent) for k in ("pseudo_dir", "masks_dir"))
    if not pseudo.is_dir():
        pytest.skip(f"{s['pseudo_dir']} is absent here (the data root or the committed labels)")
    assert s["format"] == "png" and s["dataset"] == "voc"
    ids = read_ids(voc_root / "ImageSets/Segmentation/train_with_images.txt")
    rule = MergeRule(**s["rule"])
    res = enhance_method(pseudo, masks, voc_root / "SegmentationClass", ids, tmp_path / "enhanced", rule, progress=False)
    got = res.summary()
    assert got["n_images"] == s["n_images"] == len(ids)
    for key in ("miou_before", "miou_after", "miou_gain", "precision_before", "precision_after", "recall_before", "recall_after",
                "pixel_accuracy_before", "pixel_accuracy_after"):  # fmt: skip
        assert got[key] == pytest.approx(s[key], rel=1e-12, abs=1e-12), key


def _claims_tables():
    return sorted(RESULTS.glob("claims/*/table.csv"))


@pytest.mark.integration
@pytest.mark.parametrize("table", _claims_tables(), ids=[p.parent.name for p in _claims_tables()])
def test_the_claims_table_is_rederived_from_its_committed_labels(table, voc_root):
    """Score each row's committed labels (results/claims/<cam>/labels/<row folder>) and compare the
    summary and per-class tables with the committed CSVs to their printed digits."""
    from samcam.pipeline.evaluate import evaluate_folders
    from samcam.report.tables import CLAIMS_ROWS, error_table, score_tables

    committed = pd.read_csv(table).set_index("labels")
    ids = read_ids(voc_root / "ImageSets/Segmentation/train_with_images.txt")
    assert set(committed.index) <= set(CLAIMS_ROWS)
    evs = {name: evaluate_folders(table.parent / "labels" / CLAIMS_ROWS[name], voc_root / "SegmentationClass", VOC, ids) for name in committed.index}
    errors, per_class_errors = error_table(evs)
    _, per_class_iou = score_tables(evs)
    errors = errors.set_index("labels")
    for col in ("images", "miou", "partial_pct", "false_pct", "false_on_background_pct"):  # two decimals, as written
        np.testing.assert_array_equal(errors[col].to_numpy(), committed[col].to_numpy(), err_msg=col)
    for col in ("partial_mpx", "false_mpx"):  # unrounded in the table; its CSV keeps every digit pandas writes
        np.testing.assert_allclose(errors[col].to_numpy(), committed[col].to_numpy(), rtol=1e-12, err_msg=col)
    iou = pd.read_csv(table.parent / "per_class_iou.csv", index_col="class")
    np.testing.assert_array_equal(per_class_iou[iou.columns].to_numpy(), iou.to_numpy())
    err = pd.read_csv(table.parent / "per_class_errors.csv", header=[0, 1], index_col=0)
    np.testing.assert_array_equal(per_class_errors.to_numpy(), err.to_numpy())


def test_the_paper_table_is_rederived_from_the_method_summaries():
    """results/table_pseudo_label_miou.{md,csv} are what notebook 03 makes of the committed summaries
    (and the prompted ablation), character for character."""
    from samcam.report.tables import paper_table, to_markdown

    table = paper_table(RESULTS)
    assert to_markdown(table) == (RESULTS / "table_pseudo_label_miou.md").read_text()
    assert table.to_csv(index=False) == (RESULTS / "table_pseudo_label_miou.csv").read_text()
