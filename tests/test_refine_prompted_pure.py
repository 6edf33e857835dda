"""Prompted mode's pure parts: which candidate mask is kept, and who wins an overlap. No SAM needed."""

import numpy as np
import pytest

from samcam.refine.prompted import PromptConfig, components, paint, refine, select_mask


def _candidates():
    """Three candidates for the region rows 0..3 × cols 0..3 (16 px) of an 8 × 8 image:
    0 = the region itself (IoU 1.0), 1 = a quarter of it (IoU 0.25), 2 = the whole image (IoU 0.25)."""
    region = np.zeros((8, 8), bool)
    region[:4, :4] = True
    quarter = np.zeros((8, 8), bool)
    quarter[:2, :2] = True
    return region, np.stack([region, quarter, np.ones((8, 8), bool)])


def test_select_mask_by_overlap_score_and_both():
    region, masks = _candidates()
    scores = np.array([0.5, 0.9, 0.95])
    assert select_mask(masks, scores, region, "overlap") == 0
    assert select_mask(masks, scores, region, "score") == 2
    # both: 1.0*0.5 = 0.5, 0.25*0.9 = 0.225, 0.25*0.95 = 0.2375
    assert select_mask(masks, scores, region, "both") == 0
    assert select_mask(masks, np.array([0.1, 0.9, 0.95]), region, "both") == 2  # 0.1 < 0.2375 > 0.225


def test_select_mask_ties_go_to_the_first_candidate():
    region, masks = _candidates()
    assert select_mask(masks[[1, 2]], np.array([0.3, 0.3]), region, "overlap") == 0  # both IoU 0.25
    assert select_mask(masks, np.array([0.7, 0.7, 0.2]), region, "score") == 0


def test_paint_without_cams_later_region_wins():
    a = np.zeros((4, 4), bool)
    a[:, :3] = True
    b = np.zeros((4, 4), bool)
    b[:, 2:] = True
    out = paint([(3, a), (7, b)], (4, 4))
    assert out[:, :2].tolist() == [[3, 3]] * 4 and (out[:, 2:] == 7).all()
    assert out.dtype == np.uint8


def test_paint_with_cams_higher_score_wins_and_equal_keeps_the_earlier():
    a = np.ones((2, 3), bool)
    b = np.ones((2, 3), bool)
    cams = {3: np.array([[0.9, 0.5, 0.2]] * 2), 7: np.array([[0.1, 0.5, 0.8]] * 2)}
    out = paint([(3, a), (7, b)], (2, 3), cams)
    assert out.tolist() == [[3, 3, 7], [3, 3, 7]]  # 0.5 == 0.5: the earlier class stays
    # a class without a CAM map overwrites as in the paper's order
    out = paint([(3, a), (9, b[:, :] & np.array([[True, False, False]] * 2))], (2, 3), cams)
    assert out.tolist() == [[9, 3, 3], [9, 3, 3]]


class _FakePredictor:
    """Returns fixed multimask candidates; records the prompts it was given."""

    def __init__(self, shape, masks, scores):
        self.original_size = shape
        self.masks, self.scores, self.calls = masks, scores, []

    def predict(self, point_coords=None, point_labels=None, box=None, multimask_output=None):
        self.calls.append({"points": point_coords, "labels": point_labels, "box": box, "multimask": multimask_output})
        return self.masks, self.scores, None


def test_refine_uses_the_selected_candidate_and_its_box():
    label = np.zeros((8, 8), np.uint8)
    label[:4, :4] = 5
    _, masks = _candidates()
    pred = _FakePredictor((8, 8), masks, np.array([0.5, 0.9, 0.95]))
    out = refine(pred, label, 21, config=PromptConfig("box", "overlap", 0))
    assert (out == np.where(masks[0], 5, 0)).all()
    assert pred.calls[0]["box"].tolist() == [0, 0, 3, 3] and pred.calls[0]["multimask"] is True
    out = refine(pred, label, 21, config=PromptConfig("box", "score", 0))
    assert (out == 5).all()  # the whole-image candidate
    # a component below min_area keeps its own pixels and SAM is not asked
    n = len(pred.calls)
    out = refine(pred, label, 21, config=PromptConfig("box", "score", 17))
    assert (out == label).all() and len(pred.calls) == n


def test_refine_prompts_points_at_the_cam_peak_and_negatives_elsewhere():
    label = np.zeros((8, 8), np.uint8)
    label[:4, :4] = 5
    label[6:, 6:] = 9
    cam = np.zeros((8, 8))
    cam[1, 2] = 1.0
    _, masks = _candidates()
    pred = _FakePredictor((8, 8), masks, np.array([0.5, 0.9, 0.95]))
    refine(pred, label, 21, {5: cam}, PromptConfig("box+point+neg", "overlap", 0))
    first = pred.calls[0]
    assert first["points"].tolist()[0] == [2, 1] and first["labels"].tolist() == [1, 0]
    assert components(label, 21)[1].interior.tolist() == first["points"].tolist()[1]


def test_components_boxes_and_interior_points_by_hand():
    label = np.zeros((7, 9), np.uint8)
    label[1:6, 2:7] = 4  # a 5 × 5 square: interior point at its centre (4, 3)
    label[0, 8] = 4  # a diagonal-free single pixel: its own component
    comps = components(label, 21)
    assert [c.box.tolist() for c in comps] == [[8, 0, 8, 0], [2, 1, 6, 5]]  # raster order of first pixels
    assert comps[1].interior.tolist() == [4, 3] and comps[1].mask.sum() == 25 and comps[0].mask.sum() == 1
    diag = np.zeros((3, 3), np.uint8)
    diag[0, 0] = diag[1, 1] = 2
    assert len(components(diag, 21)) == 1  # 8-connectivity


def test_refine_rejects_a_label_of_another_size():
    pred = _FakePredictor((8, 8), np.zeros((3, 8, 8), bool), np.zeros(3))
    with pytest.raises(ValueError, match="differs from the image size"):
        refine(pred, np.zeros((4, 4), np.uint8), 21)


def test_config_and_shape_errors_name_the_choices():
    with pytest.raises(ValueError, match=r"^unknown prompt config field prompts 'boxes'; known: box, point, box\+point, box\+point\+neg, point\+neg$"):
        PromptConfig("boxes")
    with pytest.raises(ValueError, match=r"^unknown prompt config field select 'iou'; known: overlap, score, both$"):
        PromptConfig("box", "iou")
    with pytest.raises(ValueError, match=r"^prompt config field min_area is -1, expected a finite number in \[0, 2147483647\]$"):
        PromptConfig("box", "overlap", -1)
    with pytest.raises(ValueError, match=r"^prompt config field min_area is 1.5, expected an int$"):
        PromptConfig("box", "overlap", 1.5)
    pred = _FakePredictor((8, 8), np.zeros((3, 8, 8), bool), np.zeros(3))
    with pytest.raises(ValueError, match=r"^pseudo label must be 2-D, got shape \(1, 8, 8\)$"):
        refine(pred, np.zeros((1, 8, 8), np.uint8), 21)


def test_components_include_class_one_and_the_last_class():
    label = np.array([[1, 0, 20]], np.uint8)
    assert [c.cls for c in components(label, 21)] == [1, 20]
    assert components(label, 20)[0].cls == 1 and len(components(label, 20)) == 1


def test_prompt_kinds_box_only_and_point_only():
    label = np.zeros((8, 8), np.uint8)
    label[:4, :4] = 5
    _, masks = _candidates()
    pred = _FakePredictor((8, 8), masks, np.array([0.5, 0.9, 0.95]))
    refine(pred, label, 21, config=PromptConfig("box", "overlap", 0))
    assert pred.calls[-1]["points"] is None and pred.calls[-1]["labels"] is None
    refine(pred, label, 21, config=PromptConfig("point", "overlap", 0))
    call = pred.calls[-1]
    assert call["box"] is None and call["labels"].tolist() == [1] and call["points"].dtype == float
    assert call["points"].tolist() == [[2.0, 2.0]] or call["points"].tolist() == [[1.0, 1.0]]  # an interior pixel of the square


def test_min_area_is_inclusive_and_small_components_do_not_stop_the_loop():
    label = np.zeros((8, 8), np.uint8)
    label[0, 7] = 3  # 1 px: below min_area 2, kept as is
    label[4:, :4] = 5  # 16 px
    label[6:, 6:] = 9  # 4 px: exactly min_area 4 -> prompted
    masks = np.zeros((3, 8, 8), bool)
    masks[0, 4:, :] = True
    pred = _FakePredictor((8, 8), masks, np.array([0.9, 0.1, 0.1]))
    out = refine(pred, label, 21, config=PromptConfig("box", "score", 4))
    assert len(pred.calls) == 2  # class 5 and class 9, not the 1-pixel class 3
    assert out[0, 7] == 3 and (out[4:, :] == 9).all() and (out[:4, :7] == 0).all()  # class 9 painted last


def test_single_pixel_overlap_uses_the_true_iou():
    region = np.zeros((4, 4), bool)
    region[1, 1] = True
    two = region.copy()
    two[1, 2] = True
    assert select_mask(np.stack([two, region]), np.array([0.0, 0.0]), region, "overlap") == 1  # IoU 1/2 vs 1


def test_refine_resolves_overlaps_with_the_cams():
    label = np.zeros((4, 4), np.uint8)
    label[:, :2] = 3
    label[:, 2:] = 7
    masks = np.ones((3, 4, 4), bool)  # every prompt returns the whole image
    pred = _FakePredictor((4, 4), masks, np.array([1.0, 0.0, 0.0]))
    cams = {3: np.tile([0.9, 0.9, 0.1, 0.1], (4, 1)), 7: np.tile([0.2, 0.2, 0.8, 0.8], (4, 1))}
    out = refine(pred, label, 21, cams, PromptConfig("box", "score", 0))
    assert (out == label).all()
    assert (refine(pred, label, 21, None, PromptConfig("box", "score", 0)) == 7).all()
