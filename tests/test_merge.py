import numpy as np
import pytest
from conftest import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from merge_reference import merge_loop

from samcam.refine.merge import RULES, MergeRule, merge
from samcam.sam.masks import MaskSet


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


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=label_and_masks(), rule=st.sampled_from(list(RULES)))
def test_vectorised_merge_equals_loop_reference(data, rule):
    label, masks, k = data
    expected = merge_loop(label, list(masks), k, rule)
    np.testing.assert_array_equal(merge(label, masks, k, rule).label, expected)


@settings(max_examples=examples(150), deadline=None)
@given(data=label_and_masks(), majority=st.sampled_from([0.3, 0.5, 0.7]), coverage=st.sampled_from([0.5, 0.85, 1.0]))
def test_thresholds_are_parameters(data, majority, coverage):
    label, masks, k = data
    expected = merge_loop(label, list(masks), k, "max_iou_imp2", majority, coverage)
    got = merge(label, masks, k, MergeRule.named("max_iou_imp2", majority, coverage)).label
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=examples(100), deadline=None)
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


# ----------------------------------------------------------------------------- lean mask forms
# The merge of run-length masks (what compact files decode to) and of bit-packed masks (what amg.py
# folders are read into) must give exactly the loop reference's label, and the same numbers.


def _forms(masks):
    from pycocotools import mask as mask_utils

    from samcam.sam.masks import MaskRuns, PackedMasks

    n, h, w = masks.shape
    yield "runs C", MaskRuns.from_masks(masks, "C")
    yield "runs F", MaskRuns.from_masks(masks, "F")
    yield "packed", PackedMasks.from_masks(masks)
    if n:  # the compact file's path: COCO strings decoded to runs without a dense array
        rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
        yield "coco", MaskRuns.from_coco([r["counts"].decode("ascii") for r in rles], (h, w))


def _by_hand(label, masks, k):
    """Intersections, mask areas and class areas counted directly from the pixels."""
    inter = np.array([[int((m & (label == c)).sum()) if c else 0 for c in range(k)] for m in masks], dtype=np.int64).reshape(len(masks), k)
    return inter, masks.reshape(len(masks), label.size).sum(axis=1), np.array([(label == c).sum() for c in range(k)])


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=label_and_masks(), rule=st.sampled_from(list(RULES)))
def test_every_mask_form_equals_loop_reference(data, rule):
    label, masks, k = data
    expected = merge_loop(label, list(masks), k, rule)
    inter, area, class_area = _by_hand(label, masks, k)
    owners = merge(label, masks, k, rule).owner
    for name, form in _forms(masks):
        res = merge(label, form, k, rule)
        np.testing.assert_array_equal(res.label, expected, err_msg=name)
        assert res.label.dtype == np.uint8 and res.label.shape == label.shape, name
        np.testing.assert_array_equal(res.intersections, inter, err_msg=name)
        np.testing.assert_array_equal(res.mask_area, area, err_msg=name)
        np.testing.assert_array_equal(res.class_area, class_area, err_msg=name)
        np.testing.assert_array_equal(res.owner, owners, err_msg=name)


@settings(max_examples=examples(120), deadline=None)
@given(data=label_and_masks(), majority=st.sampled_from([0.3, 0.5, 0.7]), coverage=st.sampled_from([0.5, 0.85, 1.0]))
def test_lean_forms_take_the_thresholds(data, majority, coverage):
    label, masks, k = data
    expected = merge_loop(label, list(masks), k, "max_iou_imp2", majority, coverage)
    for name, form in _forms(masks):
        got = merge(label, form, k, MergeRule.named("max_iou_imp2", majority, coverage)).label
        np.testing.assert_array_equal(got, expected, err_msg=name)


@pytest.mark.parametrize("seed", range(4))
def test_lean_forms_on_image_sized_blobs(seed):
    """Masks and classes as blobs on a larger, non-square image: runs cross columns, counts need
    several characters, classes overlap masks partly (both tests of the rule decide)."""
    rng = np.random.default_rng(seed)
    h, w, k = 61, 83, 6
    yy, xx = np.mgrid[:h, :w]
    blob = lambda: ((yy - rng.integers(0, h)) / rng.integers(3, 30)) ** 2 + ((xx - rng.integers(0, w)) / rng.integers(3, 40)) ** 2 < 1
    label = np.zeros((h, w), np.uint8)
    for c in rng.choice(np.arange(1, k), 3, replace=False):
        label[blob()] = c
    label[blob() & (rng.random((h, w)) < 0.5)] = 255
    masks = np.array([blob() for _ in range(25)] + [label == label.max(), np.ones((h, w), bool), np.zeros((h, w), bool)])
    for rule in RULES:
        expected = merge_loop(label, list(masks), k, rule)
        assert expected.any()
        for name, form in _forms(masks):
            np.testing.assert_array_equal(merge(label, form, k, rule).label, expected, err_msg=f"{rule} {name}")


def test_lean_forms_check_the_size():
    from samcam.sam.masks import MaskRuns, PackedMasks

    masks = np.zeros((1, 2, 2), bool)
    for form in (MaskRuns.from_masks(masks), PackedMasks.from_masks(masks)):
        with pytest.raises(ValueError, match=r"mask size \(2, 2\) differs from label size \(2, 3\)"):
            merge(np.zeros((2, 3), np.uint8), form, 21)
    # no masks at all: every class keeps its CAM pixels (max_iou_imp2), whatever the stored size
    label = np.array([[0, 3, 3]], np.uint8)
    for form in (MaskRuns((0, 0), [], [], [0]), PackedMasks((0, 0), np.zeros((0, 0), np.uint8))):
        np.testing.assert_array_equal(merge(label, form, 21).label, label)


@settings(max_examples=examples(60), deadline=None)
@given(data=label_and_masks())
def test_intersection_table_takes_padded_or_plain_bits(data):
    from samcam.refine.merge import intersection_table, pack

    label, masks, k = data
    inter, _, _ = _by_hand(label, masks, k)
    plain = np.packbits(masks.reshape(len(masks), label.size), axis=1)  # no padding to 64-bit words
    assert pack(masks).shape[1] % 8 == 0
    for packed in (None, pack(masks), plain):
        np.testing.assert_array_equal(intersection_table(masks, label, k, packed), inter)


def test_rule_parameters_are_validated():
    for kwargs, msg in (({"majority": -0.1}, "majority -0.1 outside"), ({"majority": 1.5}, "majority 1.5 outside"),
                        ({"coverage": 5.0}, "coverage 5.0 outside"), ({"name": "best"}, "unknown merge rule 'best'")):
        with pytest.raises(ValueError, match=msg):
            MergeRule(**kwargs)
    assert MergeRule(majority=0.0, coverage=1.0).coverage == 1.0 and MergeRule(coverage=None).coverage is None


def _fields_by_hand(label, masks, n, rule):
    """Every field of MergeResult from its definition, with the plain loop's order for the owners
    (background's intersections are not needed by the rule and not compared)."""
    inter = np.array([[int((m & (label == k)).sum()) for k in range(n)] for m in masks], dtype=np.int64).reshape(len(masks), n)
    area = np.array([int(m.sum()) for m in masks], dtype=np.int64)
    class_area = np.array([int((label == k).sum()) for k in range(n)])
    owner = np.zeros(len(masks), int)
    for c in range(1, n):
        if not class_area[c]:
            continue
        for i in range(len(masks)):
            if owner[i]:
                continue
            take = inter[i, c] > rule.majority * area[i] or (rule.coverage is not None and inter[i, c] / class_area[c] >= rule.coverage)
            if take:
                owner[i] = c
    return inter, area, class_area, owner


@pytest.mark.parametrize("form", ["dense", "runs_C", "runs_F", "packed"])
@pytest.mark.parametrize("seed", range(6))
def test_merge_result_fields_by_hand(form, seed):
    from samcam.sam.masks import MaskRuns, PackedMasks

    rng = np.random.default_rng(seed)
    h, w, n = int(rng.integers(1, 9)), int(rng.integers(1, 9)), 5
    label = rng.integers(0, n, (h, w)).astype(np.uint8)
    label[rng.random((h, w)) < 0.1] = 255
    masks = rng.random((int(rng.integers(0, 7)), h, w)) < rng.random()
    rule = MergeRule.named(["max_iou", "max_iou_imp", "max_iou_imp2"][seed % 3], 0.25 + 0.1 * (seed % 4), 0.6)
    given = {"dense": masks, "runs_C": MaskRuns.from_masks(masks, "C") if len(masks) else masks,
             "runs_F": MaskRuns.from_masks(masks, "F") if len(masks) else masks,
             "packed": PackedMasks.from_masks(masks) if len(masks) else masks}[form]
    res = merge(label, given, n, rule)
    inter, area, class_area, owner = _fields_by_hand(label, masks, n, rule)
    assert res.intersections[:, 1:].tolist() == inter[:, 1:].tolist() and res.mask_area.tolist() == area.tolist()
    assert res.class_area.tolist() == class_area.tolist() and res.owner.tolist() == owner.tolist()
    assert (res.label == merge_loop(label, masks, n, rule.name, rule.majority, rule.coverage or 0.85)).all()


def test_majority_boundary_and_single_pixel_images():
    label = np.array([[1, 1, 0, 0]], np.uint8)
    mask = np.ones((1, 1, 4), bool)  # |S ∩ C| = 2 = 0.5·|S|: not more than half
    assert merge(label, mask, 3, MergeRule("max_iou_imp", majority=0.5, coverage=None)).owner.tolist() == [0]
    assert merge(label, mask, 3, MergeRule("max_iou_imp", majority=0.49, coverage=None)).owner.tolist() == [1]
    quarter = np.array([[1, 0, 0, 0]], np.uint8)  # |S ∩ C| = 1 = 0.25·|S|
    assert merge(quarter, mask, 3, MergeRule("max_iou_imp", majority=0.25, coverage=None)).owner.tolist() == [0]
    assert merge(quarter, mask, 3, MergeRule("max_iou_imp", majority=0.24, coverage=None)).owner.tolist() == [1]
    one = np.array([[2]], np.uint8)
    for masks in (np.zeros((0, 1, 1), bool), np.ones((1, 1, 1), bool), np.zeros((1, 1, 1), bool)):
        res = merge(one, masks, 3)
        assert res.label.tolist() == [[2]] and res.class_area.tolist() == [0, 0, 1]
    assert merge(np.zeros((1, 1), np.uint8), np.ones((1, 1, 1), bool), 3).label.tolist() == [[0]]


def test_rule_names_give_their_rules():
    assert MergeRule.named("max_iou", 0.4, 0.9) == MergeRule("max_iou", 0.4, None, False)
    assert MergeRule.named("max_iou_imp", 0.4, 0.9) == MergeRule("max_iou_imp", 0.4, None, True)
    assert MergeRule.named("max_iou_imp2", 0.4, 0.9) == MergeRule("max_iou_imp2", 0.4, 0.9, True)
    with pytest.raises(ValueError, match=r"^unknown merge rule 'x'; known: max_iou, max_iou_imp, max_iou_imp2$"):
        MergeRule.named("x")


def test_explain_table_by_hand():
    from samcam.refine.merge import explain

    label = np.array([[1, 1, 2, 0]], np.uint8)
    masks = np.array([[[1, 1, 0, 0]], [[0, 0, 1, 1]], [[0, 0, 0, 1]]], bool)
    res = merge(label, masks, 3)
    df = explain(res, "max_iou_imp2", ("bg", "cat", "dog"))
    assert list(df.columns) == ["mask", "area", "|S∩cat|", "cat: >0.5 inside", "cat: covers ≥0.85", "|S∩dog|",
                                "dog: >0.5 inside", "dog: covers ≥0.85", "taken by"]
    assert df["area"].tolist() == [2, 2, 1] and df["|S∩cat|"].tolist() == [2, 0, 0] and df["|S∩dog|"].tolist() == [0, 1, 0]
    assert df["cat: >0.5 inside"].tolist() == [True, False, False] and df["dog: >0.5 inside"].tolist() == [False, False, False]
    assert df["dog: covers ≥0.85"].tolist() == [False, True, False] and df["taken by"].tolist() == ["cat", "dog", "-"]
    plain = explain(res, MergeRule("max_iou", coverage=None, keep_uncovered=False))
    assert "taken by" in plain and not any("covers" in c for c in plain.columns) and "|S∩1|" in plain


@pytest.mark.parametrize("form", ["dense", "runs", "packed"])
def test_an_image_without_pixels(form):
    from samcam.sam.masks import MaskRuns, PackedMasks

    masks = np.zeros((2, 0, 4), bool)
    given = {"dense": masks, "runs": MaskRuns.from_masks(masks), "packed": PackedMasks.from_masks(masks)}[form]
    res = merge(np.zeros((0, 4), np.uint8), given, 3)
    assert res.label.shape == (0, 4) and res.label.dtype == np.uint8
    assert res.owner.tolist() == [0, 0] and res.mask_area.tolist() == [0, 0] and res.intersections.shape == (2, 3)
    assert res.class_area.tolist() == [0, 0, 0]
