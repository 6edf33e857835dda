"""CAM -> label (samcam.cam.label), checked against hand-written expectations and numpy by hand."""

import numpy as np
import pytest

from samcam.cam.label import cam_to_label, maps_to_label, power_background, scores_to_label, with_key_lookup


def test_scores_to_label_by_hand():
    scores = np.array([[[0.1, 0.5]], [[0.3, 0.2]], [[0.2, 0.9]]])
    out = scores_to_label(scores, [0, 8, 15])
    assert out.tolist() == [[8, 15]] and out.dtype == np.uint8
    assert scores_to_label(np.zeros((3, 1, 2)), [4, 8, 15]).tolist() == [[4, 4]]  # ties: the first map


def test_scores_to_label_class_value_bounds():
    s = np.zeros((1, 2, 2))
    assert scores_to_label(s, [20]).tolist() == [[20, 20]] * 2  # 20 = n_classes - 1 is allowed
    assert scores_to_label(s, [0]).tolist() == [[0, 0]] * 2
    assert scores_to_label(s, [5], n_classes=6).tolist() == [[5, 5]] * 2
    for bad, n in (([21], 21), ([-1], 21), ([6], 6)):
        with pytest.raises(ValueError, match=rf"^class values \[{bad[0]}\] outside 0\.\.{n - 1}$"):
            scores_to_label(s, bad, n_classes=n)
    with pytest.raises(ValueError, match=r"^class values \[0, 21\] outside 0\.\.20$"):
        scores_to_label(np.zeros((2, 1, 1)), [0, 21])  # only the maximum is out: still refused
    with pytest.raises(ValueError, match=r"^class values \[-1, 3\] outside 0\.\.20$"):
        scores_to_label(np.zeros((2, 1, 1)), [-1, 3])  # only the minimum is out


def test_scores_to_label_shape_and_nan_errors():
    with pytest.raises(ValueError, match=r"^scores of shape \(2, 3\) do not fit 2 class values$"):
        scores_to_label(np.zeros((2, 3)), [0, 1])
    with pytest.raises(ValueError, match=r"^scores of shape \(2, 1, 1\) do not fit 3 class values$"):
        scores_to_label(np.zeros((2, 1, 1)), [0, 1, 2])
    with pytest.raises(ValueError, match=r"^score maps contain NaN$"):
        scores_to_label(np.array([[[0.0, np.nan]]]), [0])


def test_scores_to_label_takes_float_and_nested_lut():
    out = scores_to_label(np.array([[[0.0]], [[1.0]]]), np.array([[0.0], [7.0]]))
    assert out.tolist() == [[7]] and out.dtype == np.uint8


def test_cam_to_label_follows_irn_by_hand():
    cams = np.array([[[0.1, 0.6, 0.3]], [[0.05, 0.4, 0.8]]], np.float64)
    assert cam_to_label(cams, [2, 10], 0.35).tolist() == [[0, 3, 11]]
    assert cam_to_label(cams, [2, 10], 0.05).tolist() == [[3, 3, 11]]  # 0.1 > 0.05; 0.05 ties background
    assert cam_to_label(cams, [2, 10], 0.9).tolist() == [[0, 0, 0]]
    low = cam_to_label(np.array([[[0.3000001]]], np.float64), [0], 0.3)  # float32 both sides: 0.3000001 > 0.3
    assert low.tolist() == [[1]] and low.dtype == np.uint8


def test_cam_to_label_key_bounds():
    one = np.ones((1, 1, 1))
    assert cam_to_label(one, [0], 0.5).tolist() == [[1]]
    assert cam_to_label(one, [19], 0.5).tolist() == [[20]]  # the last foreground class
    assert cam_to_label(one, [4], 0.5, n_classes=6).tolist() == [[5]]
    for keys, n in (([20], 21), ([-1], 21), ([5], 6)):
        with pytest.raises(ValueError, match=rf"^CAM keys \[{keys[0]}\] outside the foreground classes 0\.\.{n - 2}$"):
            cam_to_label(one, keys, 0.5, n_classes=n)
    with pytest.raises(ValueError, match=r"^CAM keys \[0, 20\] outside"):
        cam_to_label(np.ones((2, 1, 1)), [0, 20], 0.5)
    with pytest.raises(ValueError, match=r"^CAM keys \[-1, 3\] outside"):
        cam_to_label(np.ones((2, 1, 1)), [-1, 3], 0.5)
    with pytest.raises(ValueError, match=r"^CAMs must be K × H × W, got shape \(2, 2\)$"):
        cam_to_label(np.ones((2, 2)), [0, 1], 0.5)
    assert cam_to_label(np.zeros((0, 2, 3)), [], 0.5).tolist() == [[0, 0, 0]] * 2


def test_cam_to_label_accepts_float_keys_from_files():
    assert cam_to_label(np.ones((1, 1, 1)), np.array([6.0]), 0.5).tolist() == [[7]]


def test_maps_to_label_by_hand():
    maps = {11: np.array([[0.2, 0.9]]), 3: np.array([[0.7, 0.1]])}
    out = maps_to_label(maps, 0.5, (1, 2))
    assert out.tolist() == [[4, 12]] and out.dtype == np.uint8
    empty = maps_to_label({}, 0.5, (2, 3))
    assert empty.tolist() == [[0, 0, 0]] * 2 and empty.dtype == np.uint8
    assert maps_to_label({4: np.ones((1, 1))}, 0.5, (1, 1), n_classes=6).tolist() == [[5]]
    with pytest.raises(ValueError, match="outside the foreground classes 0..4"):
        maps_to_label({5: np.ones((1, 1))}, 0.5, (1, 1), n_classes=6)
    with pytest.raises(ValueError, match=r"^the map of class 7 is 2 × 3 beside class 2's 4 × 5; an image's class maps share its size$"):
        maps_to_label({2: np.ones((4, 5)), 7: np.ones((2, 3)), 9: np.ones((4, 5))}, 0.5, (4, 5))  # numpy's wording said no sizes


def test_comparisons_are_in_float32_as_irn_stores_cams():
    # f32(0.1) = 0.10000000149...; 0.1000000020 rounds to it in float32: a tie, and ties go to background
    assert cam_to_label(np.array([[[0.1000000020]]]), [0], 0.1).tolist() == [[0]]
    # 0.1000000001 is above 0.1 in float64 but equal to f32(0.1) in float32: background again
    assert cam_to_label(np.array([[[0.1000000001]]]), [0], 0.1).tolist() == [[0]]
    assert cam_to_label(np.array([[[0.1000001]]]), [0], 0.1).tolist() == [[1]]


@pytest.mark.parametrize("t", [-0.01, 1.01, float("nan"), 5])
def test_thresholds_outside_zero_one_are_refused(t):
    from samcam.cam.label import check_threshold

    with pytest.raises(ValueError, match=rf"^background threshold {t} outside \[0, 1\]$"):
        cam_to_label(np.ones((1, 1, 1)), [0], t)
    for ok in (0.0, 1.0, 0.5):
        check_threshold(ok)
    assert cam_to_label(np.ones((1, 1, 1)), [0], 1.0).tolist() == [[0]]  # a tie at 1.0: background
    assert cam_to_label(np.zeros((1, 1, 1)), [0], 0.0).tolist() == [[0]]


def test_power_background_by_hand():
    cams = np.array([[[0.5, 1.5, -0.5]], [[0.2, 0.1, -1.0]]], np.float64)  # K = 2, 1 × 3; values outside [0, 1]
    bg = power_background(cams, 2.0)
    assert bg.dtype == np.float32 and bg.shape == (1, 3)
    np.testing.assert_allclose(bg, [[0.25, 0.0, 1.0]])  # (1 - 0.5)², 1 - 1.5 clipped to 0, 1 + 0.5 clipped to 1
    empty = power_background(np.zeros((0, 2, 3), np.float32), 3.0)  # no CAMs: background everywhere
    assert empty.shape == (2, 3) and empty.dtype == np.float32 and (empty == 1.0).all()


def test_with_key_lookup_is_integer_class_values():
    lookup = with_key_lookup(np.array([[6.0], [0.0]]))
    assert lookup.dtype == np.int64 and lookup.tolist() == [0, 7, 1]
