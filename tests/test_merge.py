import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from merge_reference import merge_loop
from samcam.masks import MaskSet
from samcam.merge import RULES, MergeRule, merge


@st.composite
def label_and_masks(draw):
    h = draw(st.integers(1, 12))
    w = draw(st.integers(1, 12))
    k = draw(st.integers(2, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    style = draw(st.sampled_from(["random", "blocks", "background", "void"]))
    if style == "random":
        label = rng.integers(0, k, (h, w))
    elif style == "blocks":
        label = np.repeat(rng.integers(0, k, (h, 1)), w, axis=1)
    elif style == "background":
        label = np.zeros((h, w), int)
    else:
        label = np.where(rng.random((h, w)) < 0.3, 255, rng.integers(0, k, (h, w)))
    n = draw(st.integers(0, 8))
    kinds = draw(st.lists(st.sampled_from(["random", "empty", "full", "class", "rect"]), min_size=n, max_size=n))
    masks = []
    for kind in kinds:
        if kind == "random":
            masks.append(rng.random((h, w)) < rng.random())
        elif kind == "empty":
            masks.append(np.zeros((h, w), bool))
        elif kind == "full":
            masks.append(np.ones((h, w), bool))
        elif kind == "class":  # a mask equal to (or growing) one class region: exercises both tests
            m = label == rng.integers(0, k)
            masks.append(m | (rng.random((h, w)) < 0.1))
        else:
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            m = np.zeros((h, w), bool)
            m[y0 : y0 + rng.integers(1, h + 1), x0 : x0 + rng.integers(1, w + 1)] = True
            masks.append(m)
    return label.astype(np.uint8), np.array(masks, dtype=bool).reshape(n, h, w), k


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=label_and_masks(), rule=st.sampled_from(RULES))
def test_vectorised_merge_equals_loop_reference(data, rule):
    label, masks, k = data
    expected = merge_loop(label, list(masks), k, rule)
    np.testing.assert_array_equal(merge(label, masks, k, rule).label, expected)


@settings(max_examples=150, deadline=None)
@given(data=label_and_masks(), majority=st.sampled_from([0.3, 0.5, 0.7]), coverage=st.sampled_from([0.5, 0.85, 1.0]))
def test_thresholds_are_parameters(data, majority, coverage):
    label, masks, k = data
    expected = merge_loop(label, list(masks), k, "max_iou_imp2", majority, coverage)
    got = merge(label, masks, k, MergeRule.named("max_iou_imp2", majority, coverage)).label
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=100, deadline=None)
@given(data=label_and_masks(), seed=st.integers(0, 1000))
def test_result_does_not_depend_on_mask_order(data, seed):
    label, masks, k = data
    perm = np.random.default_rng(seed).permutation(len(masks))
    np.testing.assert_array_equal(merge(label, masks, k).label, merge(label, masks[perm], k).label)


def test_documented_consequences():
    label = np.array([[1, 1, 0, 0], [1, 1, 0, 255]], np.uint8)
    # a mask mostly on background, covering the class's right column: no class takes it
    bg_mask = np.array([[0, 1, 1, 1], [0, 1, 1, 1]], bool)
    res = merge(label, bg_mask[None], 3)
    # CAM foreground covered only by an untaken mask becomes background; 255 becomes 0
    np.testing.assert_array_equal(res.label, [[1, 0, 0, 0], [1, 0, 0, 0]])
    assert res.owner.tolist() == [0]
    # max_iou has no CAM fallback: without masks nothing survives
    assert merge(label, np.zeros((0, 2, 4), bool), 3, "max_iou").label.max() == 0
    # imp2's coverage test takes a large mask that covers ≥85% of a small class
    big = np.ones((2, 4), bool)
    assert merge(label, big[None], 3, "max_iou_imp2").label.tolist() == [[1] * 4] * 2
    assert merge(label, big[None], 3, "max_iou_imp").label.tolist() == [[0] * 4] * 2


def test_later_class_overwrites_and_masks_are_taken_once():
    label = np.array([[1, 1, 2, 2]], np.uint8)
    m_all = np.ones((1, 4), bool)
    res = merge(label, MaskSet(m_all[None]), 3)
    assert res.owner.tolist() == [1]  # class 1 takes it (coverage 100%); class 2 cannot
    # class 2 keeps only pixels no *available* mask covers: none were available, so all of C
    assert res.label.tolist() == [[1, 1, 2, 2]]


def test_bad_input():
    with pytest.raises(ValueError, match=r"mask size \(2, 2\) differs from label size \(2, 3\)"):
        merge(np.zeros((2, 3), np.uint8), np.zeros((1, 2, 2), bool), 21)
    with pytest.raises(ValueError, match="unknown merge rule"):
        merge(np.zeros((2, 3), np.uint8), np.zeros((0, 2, 3), bool), 21, "best")
