"""AffinityNet (samcam.refine.affinity): each piece against a brute-force computation from the paper's
definitions, then the pipeline steps and the commands on a few real images."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from samcam.refine.affinity import (
    IGNORE,
    AffinityConfig,
    AffinityHead,
    affinity_loss,
    pair_affinities,
    pair_labels,
    pair_offsets,
    propagate,
    random_walk,
    seed_label,
    transition_matrix,
    with_background,
)


def _all_pairs(h, w, radius):
    """Every unordered pair of grid cells with 0 < distance² < radius², by enumeration."""
    cells = list(itertools.product(range(h), range(w)))
    return [(a, b) for a, b in itertools.combinations(cells, 2) if 0 < (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 < radius**2]


@pytest.mark.parametrize("radius", [2, 3, 5])
def test_pair_offsets_cover_each_neighbour_pair_once(radius):
    off = pair_offsets(radius)
    both = {tuple(o) for o in off} | {(-o[0], -o[1]) for o in off}
    disc = {(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1) if 0 < dy * dy + dx * dx < radius * radius}
    assert both == disc and len(off) == len(disc) // 2


def test_pair_labels_and_affinities_match_enumeration():
    rng = np.random.default_rng(0)
    h, w, r = 6, 7, 3
    seeds = rng.choice([0, 3, 7, IGNORE], size=(h, w)).astype(np.uint8)
    f = torch.rand(5, h, w, dtype=torch.float64)
    labels = pair_labels(seeds, r)
    aff = pair_affinities(f, r).numpy()
    pairs = _all_pairs(h, w, r)
    assert len(aff) == len(pairs) == len(labels["fg"])
    # the same multiset of (affinity, kind) as enumerating all pairs
    kind = np.select([labels["fg"], labels["bg"], labels["neg"]], [1, 2, 3], 0)
    expected = []
    for a, b in pairs:
        sa, sb = seeds[a], seeds[b]
        k = 0 if IGNORE in (sa, sb) else (3 if sa != sb else (1 if sa > 0 else 2))
        expected.append((round(float(np.exp(-(f[:, a[0], a[1]] - f[:, b[0], b[1]]).abs().mean().item())), 9), k))
    assert sorted(zip(np.round(aff, 9).tolist(), kind.tolist())) == sorted(expected)


def test_loss_is_the_papers_weighted_cross_entropy():
    aff = torch.tensor([0.9, 0.5, 0.2, 0.7, 0.1], dtype=torch.float64)
    fg = torch.tensor([1, 1, 0, 0, 0], dtype=torch.bool)
    bg = torch.tensor([0, 0, 0, 1, 0], dtype=torch.bool)
    neg = torch.tensor([0, 0, 1, 0, 1], dtype=torch.bool)
    loss, parts = affinity_loss(aff, {"fg": fg, "bg": bg, "neg": neg})
    eps = 1e-5
    want_fg = -(np.log(0.9 + eps) + np.log(0.5 + eps)) / 2
    want_bg = -np.log(0.7 + eps)
    want_neg = -(np.log(1 + eps - 0.2) + np.log(1 + eps - 0.1)) / 2
    assert float(loss) == pytest.approx(want_fg / 4 + want_bg / 4 + want_neg / 2, rel=1e-9)
    assert parts["neg"] == pytest.approx(want_neg / 2, rel=1e-9)
    # an empty set adds nothing
    none = torch.zeros(5, dtype=torch.bool)
    assert float(affinity_loss(aff, {"fg": fg, "bg": none, "neg": none})[0]) == pytest.approx(want_fg / 4, rel=1e-9)


def test_seeds_follow_the_two_background_powers():
    # one class (key 6 -> label 7); peaks chosen on each side of the two background scores
    peak = np.array([[0.9, 0.3, 0.1, 0.02]], np.float32)
    cams = peak[None]  # 1 × 1 × 4
    seeds = seed_label(cams, np.array([6]), low_alpha=4, high_alpha=32)
    # 0.9: fg (0.1^4 < 0.9); 0.3: fg (0.7^4 = 0.24 < 0.3); 0.1: low says bg (0.9^4 = 0.66), high says
    # fg (0.9^32 = 0.034 < 0.1) -> neutral; 0.02: bg under both
    assert seeds.tolist() == [[7, 7, IGNORE, 0]]
    bg = with_background(cams, 16.0)
    assert bg[0, 0, 1] == pytest.approx(0.7**16, rel=1e-5)


def _dense_transition(f, radius, beta):
    c, h, w = f.shape
    n = h * w
    A = np.eye(n)
    for (i, a), (j, b) in itertools.combinations(enumerate(itertools.product(range(h), range(w))), 2):
        if (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 < radius**2:
            A[i, j] = A[j, i] = np.exp(-np.abs(f[:, a[0], a[1]] - f[:, b[0], b[1]]).mean()) ** beta
    return A / A.sum(0, keepdims=True)


def test_transition_matrix_and_walk_against_dense_matrices():
    f = np.random.default_rng(1).random((4, 5, 6))
    T = transition_matrix(f, 3, 8.0)
    dense = _dense_transition(f, 3, 8.0)
    assert np.allclose(T.toarray(), dense, atol=1e-6)
    assert np.allclose(T.toarray().sum(0), 1.0)
    scores = np.random.default_rng(2).random((3, 5, 6)).astype(np.float32)
    walked = random_walk(scores, T, 5)
    want = scores.reshape(3, -1) @ np.linalg.matrix_power(dense, 5)
    assert np.allclose(walked.reshape(3, -1), want, atol=1e-5)
    assert np.array_equal(random_walk(scores, T, 0), scores)


def test_walk_completes_a_partial_cam_and_removes_a_false_one():
    """The paper's point: activation spreads inside a region of alike features (a partial CAM is
    completed) but not across a boundary where features differ, and an activation in the
    background is averaged away by the background around it."""
    h, w = 16, 16
    feats = np.zeros((2, h, w), np.float32)
    feats[0, 4:12, 2:10] = 5.0  # the object: cells 4..11 × 2..9, unlike the background
    obj = np.zeros((h, w), bool)
    obj[4:12, 2:10] = True
    cams = np.zeros((1, 8 * h, 8 * w), np.float32)
    cams[0, 8 * 4 : 8 * 9, 8 * 2 : 8 * 10] = 1.0  # partial: rows 4..8 of the object's 4..11
    cams[0, 8 * 13 : 8 * 15, 8 * 12 : 8 * 14] = 1.0  # false: a 2 × 2-cell blob in the background
    keys = np.array([11])
    cell = propagate(cams, keys, torch.from_numpy(feats), AffinityConfig(alpha=16, beta=8, steps=256))[4::8, 4::8]
    assert (cell[obj] == 12).all()  # the object is filled from its part
    assert (cell[~obj] == 0).all()  # the false blob is gone and nothing leaks out
    before = propagate(cams, keys, torch.from_numpy(feats), AffinityConfig(steps=0))[4::8, 4::8]
    assert (before[obj] == 12).mean() == pytest.approx(5 / 8) and (before[~obj] == 12).sum() == 4


def test_propagate_refuses_keys_outside_the_label_space():
    with pytest.raises(ValueError, match="outside the foreground"):
        propagate(np.zeros((1, 8, 8), np.float32), np.array([20]), torch.zeros(2, 1, 1))


@pytest.mark.parametrize(("bad", "message"), [({"alpha": 0}, "alpha must be a positive number, not 0"),
                                               ({"beta": float("nan")}, "beta must be a positive number, not nan"),
                                               ({"low_alpha": 40}, r"low_alpha \(40\) must be below high_alpha \(32.0\)"),
                                               ({"low_alpha": 32}, "must be below high_alpha"), ({"radius": 1}, "radius must be in 2..32"),
                                               ({"radius": 33}, "radius must be in 2..32 feature cells, not 33"),
                                               ({"steps": -1}, "steps must be ≥ 0, not -1")])  # fmt: skip
def test_config_refuses_bad_values(bad, message):
    with pytest.raises(ValueError, match=message):
        AffinityConfig(**bad)


def test_config_accepts_its_boundaries():
    AffinityConfig(radius=2, steps=0, alpha=0.5, beta=0.5, low_alpha=0.5, high_alpha=0.6)
    AffinityConfig(radius=32)
    AffinityConfig(radius=None)


def test_seeds_and_pair_labels_of_the_first_class():
    """Class 1 (key 0, aeroplane) is foreground like any other class."""
    seeds = seed_label(np.array([[[0.9, 0.02]]], np.float32), np.array([0]))
    assert seeds.dtype == np.uint8 and seeds.tolist() == [[1, 0]]
    lab = pair_labels(np.array([[1, 1]], np.uint8), 2)
    assert [v.tolist() for v in (lab["fg"], lab["bg"], lab["neg"])] == [[True], [False], [False]]


def test_pairs_on_a_grid_smaller_than_the_radius():
    """Offsets longer than the grid give no pairs, not wrapped-around or negative-size slices."""
    seeds = np.array([[1, 0], [0, 1]], np.uint8)
    got = pair_labels(seeds, 5)
    want = _all_pairs(2, 2, 5)
    assert sum(int(v.sum()) for v in got.values()) == len(want)
    assert pair_affinities(torch.rand(4, 2, 2), 5).numel() == len(want)


def test_upsample_to_by_hand():
    from samcam.refine.affinity import _upsample_to

    x = torch.tensor([[[[0.0, 4.0], [8.0, 12.0]]]])
    # 2× bilinear with half-pixel centres: [a, b] -> [a, .75a + .25b, .25a + .75b, b]; then the grid of
    # 5 × 5 gets its last row and column repeated from the edge
    row = lambda a, b: [a, 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b, b]  # noqa: E731
    top, bottom = row(0.0, 4.0), row(8.0, 12.0)
    rows = [[0.75 * t + 0.25 * b for t, b in zip(top, bottom)], [0.25 * t + 0.75 * b for t, b in zip(top, bottom)]]
    four = [top, *rows, bottom]
    want = [r + [r[-1]] for r in four] + [bottom + [bottom[-1]]]
    np.testing.assert_allclose(_upsample_to(x, 5, 5)[0, 0].numpy(), want)
    np.testing.assert_allclose(_upsample_to(x, 3, 4)[0, 0].numpy(), [top, rows[0], rows[1]])  # cut, not padded
    np.testing.assert_allclose(_upsample_to(x, 4, 5)[0, 0].numpy(), [r + [r[-1]] for r in four])  # width only


def test_head_is_bias_free_convolutions_then_a_mix():
    """The head by hand: ELU of a bias-free 1×1 convolution per level, the coarse level upsampled,
    concatenated, then a bias-free 1×1 mixing convolution."""
    from samcam.refine.affinity import _upsample_to

    torch.manual_seed(0)
    head = AffinityHead([3, 5, 7])
    levels = [torch.rand(1, 3, 4, 6), torch.rand(1, 5, 4, 6), torch.rand(1, 7, 2, 3)]
    parts = [torch.nn.functional.elu(torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x)) for conv, x in zip(head.levels, levels)]
    parts[2] = _upsample_to(parts[2], 4, 6)
    want = torch.einsum("oc,bchw->bohw", head.mix.weight[:, :, 0, 0], torch.cat(parts, 1))
    assert all(c.bias is None for c in [*head.levels, head.mix])
    torch.testing.assert_close(head(levels), want)


def test_walk_keeps_float32_and_propagate_accepts_the_last_class():
    f = np.random.default_rng(3).random((2, 3, 3)).astype(np.float32)
    walked = random_walk(np.random.default_rng(4).random((2, 3, 3)).astype(np.float32), transition_matrix(f, 2, 8.0), 2)
    assert walked.dtype == np.float32
    cams = np.zeros((1, 8, 8), np.float32)
    cams[0, :4] = 1.0
    label = propagate(cams, np.array([19]), torch.zeros(2, 2, 2), AffinityConfig(radius=2, steps=0))
    assert label[0, 0] == 20 and label[-1, -1] == 0
    with pytest.raises(ValueError, match=r"CAM keys \[20\] outside the foreground classes 0..19"):
        propagate(cams, np.array([20]), torch.zeros(2, 2, 2), AffinityConfig(radius=2))
    with pytest.raises(ValueError, match="the walk needs a radius"):
        propagate(cams, np.array([3]), torch.zeros(2, 2, 2), AffinityConfig(radius=None))


def test_propagate_upsamples_with_half_pixel_centres():
    """Back to image size as the CAMs were pooled: ``align_corners=False`` bilinear. One row of 8
    pixels pooled to 2 cells, background α 1: cell 0 has fg 0.58, bg 0.42; cell 1 fg 0, bg 1. The
    fg/bg crossing is at t* = 1 − 1/(2·0.58) ≈ 0.138 between the cells: half-pixel positions
    (x + ½)/4 − ½ = 0, 0, .125, .375, … put 3 pixels before it; corner-aligned ones (x/7) 1, nearest 4."""
    cams = np.zeros((1, 1, 8), np.float32)
    cams[0, 0, :4] = 0.58
    label = propagate(cams, np.array([0]), torch.zeros(1, 1, 2), AffinityConfig(radius=2, steps=0, alpha=1.0))
    assert label.tolist() == [[1, 1, 1, 0, 0, 0, 0, 0]]
