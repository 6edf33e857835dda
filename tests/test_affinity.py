"""AffinityNet (samcam.refine.affinity): each piece against a brute-force computation from the paper's
definitions, then the pipeline steps and the commands on a few real images."""

from __future__ import annotations

import itertools
import re

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


@pytest.mark.parametrize(("bad", "message"), [({"alpha": 0}, r"alpha must be a number in \(0, 256\], not 0"), ({"beta": 257}, r"affinity field beta is 257, expected a finite number in \(0.0, 256.0\]"),
                                               ({"beta": float("nan")}, r"field beta is nan, expected a finite number"), ({"beta": 0.0}, r"field beta is 0.0, expected a finite number in \(0.0, 256.0\]"),
                                               ({"low_alpha": 40}, r"low_alpha \(40\) must be below high_alpha \(32.0\)"),
                                               ({"low_alpha": 32}, "must be below high_alpha"), ({"radius": 1}, "radius must be in 2..32"),
                                               ({"radius": 33}, "radius must be in 2..32 feature cells, not 33"),
                                               ({"steps": -1}, r"affinity field steps is -1, expected a finite number in \[0, 4096\]"),
                                                   ({"steps": 4097}, r"field steps is 4097, expected a finite number in \[0, 4096\]"), ({"steps": 2.0}, "field steps is 2.0, expected an int")])  # fmt: skip
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
    concatenated, then a bias-free 1×1 mixing convolution and an ELU (PSA's ``resnet38_aff``)."""
    from samcam.refine.affinity import _upsample_to

    torch.manual_seed(0)
    head = AffinityHead([3, 5, 7])
    levels = [torch.rand(1, 3, 4, 6), torch.rand(1, 5, 4, 6), torch.rand(1, 7, 2, 3)]
    parts = [torch.nn.functional.elu(torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x)) for conv, x in zip(head.levels, levels)]
    parts[2] = _upsample_to(parts[2], 4, 6)
    want = torch.nn.functional.elu(torch.einsum("oc,bchw->bohw", head.mix.weight[:, :, 0, 0], torch.cat(parts, 1)))
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

def test_head_output_grid_is_the_finest_level():
    head = AffinityHead([3, 5, 7])
    out = head([torch.rand(2, 3, 8, 10), torch.rand(2, 5, 4, 5), torch.rand(2, 7, 4, 5)])
    assert out.shape == (2, 448, 8, 10)
    with pytest.raises(ValueError, match="levels"):
        AffinityHead([3, 5])


def test_feature_levels_of_efficientnet_at_both_strides():
    from samcam.cam.nets import build_camnet, feature_levels

    x = torch.rand(1, 3, 96, 128) * 255
    for stride in (16, 32):
        net = build_camnet("efficientnet-lite0", output_stride=stride)
        with torch.no_grad():
            levels = feature_levels(net, x)
            final = net.features(x)
        assert [tuple(t.shape[2:]) for t in levels[:2]] == [(12, 16), (6, 8)]
        assert tuple(levels[2].shape[2:]) == ((6, 8) if stride == 16 else (3, 4))
        assert torch.allclose(levels[2], final)


def test_feature_levels_of_irn_resnet50_are_its_stages_and_a_net_without_levels_is_named():
    """IRN's layout: stage 2 ends at stride 8, stage 3 at 16 and stage 4 stays at 16 (its last stride
    is 1); the last level is the CAM features."""
    from samcam.cam.nets import CamNet, build_camnet, feature_levels

    torch.manual_seed(0)
    net = build_camnet("resnet50-irn")
    x = torch.rand(1, 3, 64, 96) * 255
    with torch.no_grad():
        levels = feature_levels(net, x)
        final = net.features(x)
    assert [tuple(t.shape[1:]) for t in levels] == [(512, 8, 12), (1024, 4, 6), (2048, 4, 6)]
    assert torch.allclose(levels[2], final)
    with pytest.raises(ValueError, match="^plain has no feature levels"):
        feature_levels(CamNet(torch.nn.Identity(), 3, name="plain"), x)


# ----------------------------------------------------------------------------- pipeline steps on real images


@pytest.mark.slow
def test_train_resume_refuse_and_label(tmp_path, voc_root, gt_cams):
    from samcam.io import image_index, read_label
    from samcam.pipeline.affinity import AffinityTrainConfig, affinity_labels, load_affinity, train_affinity

    cams, ids = gt_cams
    index = image_index(voc_root / "JPEGImages")
    cfg = AffinityTrainConfig(epochs=2, batch_size=2, crop=24)
    ck = tmp_path / "aff.pt"
    res = train_affinity(index, cams, ids, ck, cfg, progress=False)
    assert len(res.losses) == 2 and all(np.isfinite(res.losses)) and res.losses[1] < res.losses[0] * 1.5
    assert (res.out, res.done, res.skipped) == (ck, 2, 0) and 0 < res.feature_seconds <= res.seconds
    # a finished run resumes at its end; another configuration is refused
    again = train_affinity(index, cams, ids, ck, cfg, progress=False)
    assert (again.losses, again.done, again.skipped, again.seconds) == (res.losses, 0, 2, 0.0)
    with pytest.raises(ValueError, match="another affinity run"):
        train_affinity(index, cams, ids, ck, AffinityTrainConfig(epochs=3, batch_size=2, crop=24), progress=False)
    # an unfinished checkpoint cannot label; a finished one can
    state = torch.load(ck, weights_only=False)
    torch.save({**state, "epoch": 1}, tmp_path / "half.pt")
    with pytest.raises(ValueError, match="stopped after epoch 1 of 2"):
        load_affinity(tmp_path / "half.pt")
    r = affinity_labels(index, cams, ids, ck, tmp_path / "labels", AffinityConfig(steps=32), progress=False)
    assert r.done == 3 and r.skipped == 0 and r.seconds_per_item > 0
    for i in ids:
        label = read_label(tmp_path / "labels" / f"{i}.png")
        gt = read_label(voc_root / "SegmentationClass" / f"{i}.png")
        assert label.shape == gt.shape and set(np.unique(label)) <= set(np.unique(gt)) - {255}
    assert affinity_labels(index, cams, ids, ck, tmp_path / "labels", AffinityConfig(steps=32), progress=False).done == 0
    with pytest.raises(ValueError, match="other settings"):
        affinity_labels(index, cams, ids, ck, tmp_path / "labels", AffinityConfig(steps=16), progress=False)


@pytest.mark.slow
def test_missing_cam_file_is_named(tmp_path, voc_root, gt_cams):
    from samcam.io import image_index
    from samcam.pipeline.affinity import train_affinity

    cams, ids = gt_cams
    with pytest.raises(FileNotFoundError, match="no CAM file for 1 ids, e.g. nope.npy"):
        train_affinity(image_index(voc_root / "JPEGImages"), cams, [*ids, "nope"], tmp_path / "a.pt", progress=False)


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_losses(tmp_path, voc_root, gt_cams, monkeypatch):
    import samcam.pipeline.affinity as step
    from samcam.io import image_index

    cams, ids = gt_cams
    index = image_index(voc_root / "JPEGImages")
    cfg = step.AffinityTrainConfig(epochs=2, batch_size=2, crop=16)
    whole = step.train_affinity(index, cams, ids, tmp_path / "whole.pt", cfg, progress=False)
    calls = {"n": 0}
    real = step.affinity_loss

    def dies_in_epoch_two(*a, **k):
        calls["n"] += 1
        if calls["n"] > len(ids):  # every image of epoch 1 went through the loss
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(step, "affinity_loss", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        step.train_affinity(index, cams, ids, tmp_path / "cut.pt", cfg, progress=False)
    assert torch.load(tmp_path / "cut.pt", weights_only=False)["epoch"] == 1
    monkeypatch.setattr(step, "affinity_loss", real)
    resumed = step.train_affinity(index, cams, ids, tmp_path / "cut.pt", cfg, progress=False)
    assert resumed.losses == pytest.approx(whole.losses, rel=1e-6) and (resumed.done, resumed.skipped) == (1, 1)
    a, b = (torch.load(tmp_path / f, weights_only=False)["state_dict"] for f in ("whole.pt", "cut.pt"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_windows_keep_the_two_grids_aligned():
    """A window of the stride-8 grid and of the stride-16 levels covers the same image area, also
    when flipped: a level whose values are its cells' coordinates must land on the seeds' cells."""
    from samcam.pipeline.affinity import _window
    from samcam.refine.affinity import _upsample_to

    h, w = 13, 17  # odd grids: the stride-16 levels have 7 × 9 cells
    yy, xx = np.mgrid[0:h, 0:w]
    seeds = (yy * 100 + xx).astype(np.int64)  # each cell's own coordinates
    coarse = torch.from_numpy(((np.arange(7)[:, None] * 2) * 100 + np.arange(9)[None] * 2).astype(np.float32))[None]
    fine = torch.from_numpy(seeds.astype(np.float32))[None]
    for seed in range(20):
        rng = np.random.default_rng(seed)
        (f8, f16), s = _window([fine, coarse], seeds, 8, rng)
        assert f8.shape[-2:] == s.shape and s.shape[0] % 2 == 0 and s.shape[1] % 2 == 0
        assert torch.equal(f8[0], torch.from_numpy(s.astype(np.float32)))
        # each stride-16 cell holds the coordinates of the top-left of its 2 × 2 stride-8 cells
        top_left = s[::2, ::2] if s[0, 0] % 2 == 0 else s[::2, 1::2]
        assert np.array_equal(f16[0].numpy().astype(np.int64), top_left - (top_left % 100) % 2)
    up = _upsample_to(torch.rand(1, 3, 7, 9), 13, 17)
    assert up.shape == (1, 3, 13, 17)


# ----------------------------------------------------------------------------- PSA's details (issue 25, part 2)


def test_head_initialisation_is_psas():
    """Kaiming-normal level convolutions (std √(2 / fan_in)), Xavier-uniform mix with gain 4
    (bound 4·√(6 / (fan_in + fan_out)))."""
    torch.manual_seed(0)
    head = AffinityHead([512, 1024, 2048])
    for conv, fan_in in zip(head.levels, (512, 1024, 2048)):
        std = np.sqrt(2 / fan_in)
        assert conv.weight.std().item() == pytest.approx(std, rel=0.03)
        # normal, not uniform: a uniform of this std stops at √3·std, a normal of 32k+ draws goes past it
        assert conv.weight.abs().max().item() > 1.2 * np.sqrt(3) * std
    bound = 4 * np.sqrt(6 / (448 + 448))
    w = head.mix.weight
    assert w.abs().max().item() <= bound and w.abs().max().item() > 0.99 * bound
    assert w.std().item() == pytest.approx(bound / np.sqrt(3), rel=0.02)


@pytest.mark.parametrize("t", [0.05, 0.15, 0.25, 0.5, 0.9])
def test_alphas_for_threshold_cross_at_the_threshold(t):
    from samcam.refine.affinity import alphas_for_threshold

    low, alpha, high = alphas_for_threshold(t)
    assert (1 - t) ** alpha == pytest.approx(t, rel=1e-9)  # the walk starts from the CAM's own label
    assert low == pytest.approx(alpha / 4) and high == pytest.approx(2 * alpha)


def test_alphas_for_threshold_give_psas_constants_near_its_crossing():
    from samcam.refine.affinity import alphas_for_threshold

    # PSA's α 16 crosses (1 − m)^16 = m at m ≈ 0.1205 (bisection here, independently of the rule)
    lo, hi = 0.01, 0.5
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if (1 - mid) ** 16 > mid else (lo, mid)
    assert alphas_for_threshold(lo) == pytest.approx((4.0, 16.0, 32.0), rel=1e-6)
    for bad in (0, 1, -0.1, 1.5):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            alphas_for_threshold(bad)


def _cell_means(a, f):
    """Mean over f × f cells of ``K × H × W`` (H, W multiples of f), by loops."""
    k, H, W = a.shape
    out = np.zeros((k, H // f, W // f))
    for y in range(H // f):
        for x in range(W // f):
            out[:, y, x] = a[:, f * y : f * y + f, f * x : f * x + f].mean((1, 2))
    return out


def test_cell_seeds_average_each_cell_then_take_psas_rule():
    from samcam.refine.affinity import cell_seeds

    rng = np.random.default_rng(5)
    cams = rng.random((2, 24, 32)).astype(np.float32) ** 3
    cams[0, :12, :12] += 0.6 * rng.random((12, 12)).astype(np.float32)  # class 3 strong in the top left
    cams[1, 10:, 20:] = np.maximum(cams[1, 10:, 20:], 0.8)  # class 15 strong in the bottom right
    cams[:, 16:, :16] *= 0.05  # background in the bottom left
    keys = np.array([2, 14])
    got = cell_seeds(cams, keys, (3, 4), low_alpha=2.0, high_alpha=12.0)
    peak = cams.max(0, keepdims=True)
    low = _cell_means(np.concatenate([(1 - peak) ** 2.0, cams]), 8)
    high = _cell_means(np.concatenate([(1 - peak) ** 12.0, cams]), 8)
    want = np.full((3, 4), IGNORE)
    for y in range(3):
        for x in range(4):
            a, b = low[:, y, x].argmax(), high[:, y, x].argmax()
            if b == 0:
                want[y, x] = 0
            elif a > 0:
                want[y, x] = [0, 3, 15][a]
    assert got.tolist() == want.tolist()
    assert {0, 3, 15} <= set(got.ravel().tolist())  # the case holds background and both classes


def test_cell_seeds_refine_with_the_crf():
    """On a two-colour image whose CAM is noisy cell by cell, the CRF changes the seeds (it pulls
    each cell towards its colour region), and they are exactly the pooled CRF marginals' seeds."""
    from samcam.refine.affinity import cell_seeds
    from samcam.refine.crf import CRFConfig, dense_crf

    rng = np.random.default_rng(6)
    image = np.zeros((32, 48, 3), np.uint8)
    image[:, 24:] = 220
    cell_noise = np.kron(rng.normal(0, 0.25, (4, 6)), np.ones((8, 8)))
    cams = np.clip(np.where(np.arange(48)[None] >= 24, 0.6, 0.15) + cell_noise, 0, 1).astype(np.float32)[None]
    crf = CRFConfig(iterations=5)
    got = cell_seeds(cams, np.array([0]), (4, 6), 1.0, 8.0, image, crf)
    assert got.tolist() != cell_seeds(cams, np.array([0]), (4, 6), 1.0, 8.0).tolist()
    stacks = [dense_crf(image, np.concatenate([(1 - cams) ** a, cams]).astype(np.float32), crf) for a in (1.0, 8.0)]
    low, high = (_cell_means(s, 8) for s in stacks)
    want = np.where(high.argmax(0) == 0, 0, np.where(low.argmax(0) == 1, 1, IGNORE))
    assert got.tolist() == want.tolist()
    with pytest.raises(ValueError, match="needs the image"):
        cell_seeds(cams, np.array([0]), (4, 6), crf=crf)


def test_high_alpha_background_overrides_low_alpha_foreground():
    """PSA's order: a cell whose low-α winner is a class but whose high-α winner is background is
    background (after a CRF the two stacks can disagree so)."""
    from samcam.refine.affinity import _seeds_from_scores

    low = np.array([[[0.1, 0.1, 0.8]], [[0.9, 0.2, 0.1]]], np.float32)  # bg, class: cell 0 fg, 1 fg?, 2 bg
    high = np.array([[[0.95, 0.0, 0.9]], [[0.05, 0.3, 0.1]]], np.float32)  # cell 0: bg wins here
    lut = np.array([0, 7])
    assert _seeds_from_scores(low, high, lut, 21).tolist() == [[0, 7, 0]]


def test_dense_crf_without_pairwise_terms_normalises_the_clipped_scores():
    """With both kernels at weight 0 the mean field is the unary's softmax: the scores (clipped to
    [1e-5, 1]) divided by their sum."""
    from samcam.refine.crf import CRFConfig, dense_crf

    rng = np.random.default_rng(7)
    scores = rng.random((3, 10, 12)).astype(np.float32)
    scores[1, 0, 0] = 0.0
    q = dense_crf(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8), scores, CRFConfig(gaussian_compat=0, bilateral_compat=0))
    clipped = np.clip(scores, 1e-5, 1)
    np.testing.assert_allclose(q, clipped / clipped.sum(0), rtol=1e-4, atol=1e-6)


def test_dense_crf_smooths_along_colour_edges():
    """A noisy two-region score map on a two-colour image: the appearance kernel makes each region
    agree with its colour, which the unaries alone do not."""
    from samcam.refine.crf import dense_crf

    rng = np.random.default_rng(8)
    image = np.zeros((40, 56, 3), np.uint8)  # not square: width and height may not be swapped
    image[:, 20:] = 200
    truth = np.zeros((40, 56), int)
    truth[:, 20:] = 1
    p = np.where(truth == 1, 0.7, 0.3) + rng.normal(0, 0.3, (40, 56))
    p = np.clip(p, 0.01, 0.99).astype(np.float32)
    scores = np.stack([1 - p, p])
    before = (scores.argmax(0) == truth).mean()
    after = (dense_crf(image, scores).argmax(0) == truth).mean()
    assert before < 0.85 and after > 0.99


def test_crf_defaults_are_psas_and_bad_settings_are_refused():
    from samcam.refine.crf import CRFConfig, dense_crf

    c = CRFConfig()
    assert (c.iterations, c.gaussian_sxy, c.gaussian_compat, c.bilateral_sxy, c.bilateral_srgb, c.bilateral_compat) == (10, 3, 3, 80, 13, 10)
    for bad, msg in (({"iterations": -1}, "iterations"), ({"bilateral_srgb": 0}, "bilateral_srgb"), ({"gaussian_compat": float("nan")}, "gaussian_compat")):
        with pytest.raises(ValueError, match=msg):
            CRFConfig(**bad)
    with pytest.raises(ValueError, match="K × H × W"):
        dense_crf(np.zeros((4, 5, 3), np.uint8), np.ones((2, 5, 4), np.float32))
    with pytest.raises(ValueError, match="non-negative"):
        dense_crf(np.zeros((4, 5, 3), np.uint8), -np.ones((2, 4, 5), np.float32))


def test_label_seeds_keep_pure_cells_only():
    from samcam.refine.affinity import label_seeds

    rng = np.random.default_rng(9)
    label = np.zeros((32, 40), np.uint8)
    label[4:20, 6:30] = 12
    label[22:, :9] = 3
    label[0, 39] = IGNORE
    got = label_seeds(label, (4, 5))
    want = np.full((4, 5), IGNORE)
    for y in range(4):
        for x in range(5):
            cell = label[8 * y : 8 * y + 8, 8 * x : 8 * x + 8]
            if (cell == cell[0, 0]).all():
                want[y, x] = cell[0, 0]
    assert got.tolist() == want.tolist() and {0, 3, 12, IGNORE} <= set(got.ravel().tolist())
    assert rng is not None


def test_segment_cells_take_each_cells_most_frequent_class_ignoring_void():
    from samcam.refine.affinity import segment_cells

    gt = np.zeros((16, 16), np.uint8)
    gt[:, 5:] = 7  # cell (0, 0): 5 columns of 0, 3 of 7 -> 0; cell (0, 1): all 7
    gt[8:, :8] = IGNORE
    gt[15, 0] = 4  # the one counted pixel of cell (1, 0)
    gt[8:, 8:] = IGNORE  # cell (1, 1): void only
    assert segment_cells(gt, (2, 2)).tolist() == [[0, 7], [4, IGNORE]]


def test_walk_on_segment_affinities_never_crosses_a_class():
    """1 within a class, 0 across: a score that is 1 on one segment and 0 elsewhere stays exactly so
    under any number of steps (each step averages within the segment only)."""
    from samcam.refine.affinity import segment_transition

    cells = np.zeros((9, 11), np.uint8)
    cells[2:6, 3:9] = 5
    cells[7:, :4] = 9
    T = segment_transition(cells, 4)
    dense = _dense_transition(np.stack([cells * 50.0]), 4, 1.0)  # exp(−50·Δ) ≈ 0 across, 1 within
    np.testing.assert_allclose(T.toarray(), dense, atol=1e-12)
    v = (cells == 5).astype(np.float32)[None]
    walked = random_walk(v, T, 64)
    assert (walked[v == 0] == 0).all()
    np.testing.assert_allclose(walked[v == 1], 1.0, rtol=1e-5)


@pytest.mark.integration
def test_ground_truth_walk_repairs_partial_and_false_cams_on_real_images(voc_root, train_with_images):
    """The diagnostic of the issue: with affinities from the ground truth the walk completes partial
    CAMs and removes false ones. Each object's CAM is 1 on its upper half and 0.1 (below the 0.15
    threshold) on its lower half, and a 0.6 blob of the first class sits in the background."""
    from samcam.cam.label import cam_to_label
    from samcam.data.spaces import VOC
    from samcam.io import read_label
    from samcam.metrics import evaluate_arrays
    from samcam.refine.affinity import ground_truth_walk

    before, after = [], []
    for i in train_with_images[:3]:
        gt = read_label(voc_root / "SegmentationClass" / f"{i}.png")
        keys = np.array([c - 1 for c in np.unique(gt) if 0 < c < IGNORE])
        maps = []
        for k in keys:
            obj = gt == k + 1
            rows = np.nonzero(obj)[0]
            cam = np.where(obj, 0.1, 0.0).astype(np.float32)
            upper = obj.copy()
            upper[(rows.min() + rows.max()) // 2 :] = False
            cam[upper] = 1.0
            maps.append(cam)
        ys, xs = np.nonzero(gt == 0)
        y, x = ys[len(ys) // 2], xs[len(xs) // 2]
        blob = np.zeros(gt.shape, bool)
        blob[max(0, y - 12) : y + 12, max(0, x - 12) : x + 12] = True
        maps[0][blob & (gt == 0)] = 0.6
        maps = np.stack(maps)
        before.append((i, gt, cam_to_label(maps, keys, 0.15)))
        walked = ground_truth_walk(maps, keys, gt, AffinityConfig(alpha=16))
        assert set(np.unique(walked)) <= set(np.unique(gt)) - {IGNORE}
        after.append((i, gt, walked))
    b, a = (evaluate_arrays(x, VOC).scores().miou for x in (before, after))
    assert a > b + 0.15 and a > 0.75, (b, a)


@pytest.mark.slow
def test_head_learning_rate_is_lr_times_the_multiplier(tmp_path, voc_root, gt_cams):
    """Only the product lr × head_lr_mult trains the (only trained) head: 0.01 × 10 gives the
    weights of 0.1 × 1 and not those of 0.01 × 1."""
    from samcam.io import image_index
    from samcam.pipeline.affinity import AffinityTrainConfig, train_affinity

    cams, ids = gt_cams
    index = image_index(voc_root / "JPEGImages")
    weights = {}
    for name, lr, mult in (("a", 0.01, 10.0), ("b", 0.1, 1.0), ("c", 0.01, 1.0)):
        cfg = AffinityTrainConfig(epochs=1, batch_size=2, crop=16, lr=lr, head_lr_mult=mult, crf=False)
        train_affinity(index, cams, ids, tmp_path / f"{name}.pt", cfg, progress=False)
        weights[name] = torch.load(tmp_path / f"{name}.pt", weights_only=False)["state_dict"]
    assert all(torch.allclose(weights["a"][k], weights["b"][k], atol=1e-6) for k in weights["a"])
    assert not all(torch.allclose(weights["a"][k], weights["c"][k], atol=1e-4) for k in weights["a"])


@pytest.mark.slow
def test_seeds_from_labels_and_an_earlier_head_refused(tmp_path, voc_root, gt_cams):
    from PIL import Image

    from samcam.io import image_index, write_label
    from samcam.pipeline.affinity import AffinityTrainConfig, load_affinity, train_affinity
    from samcam.io import read_label

    cams, ids = gt_cams
    index = image_index(voc_root / "JPEGImages")
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for i in ids:
        write_label(seeds / f"{i}.png", read_label(voc_root / "SegmentationClass" / f"{i}.png") % 255)
    cfg = AffinityTrainConfig(epochs=1, batch_size=2, crop=16)
    r = train_affinity(index, cams, ids, tmp_path / "l.pt", cfg, progress=False, seed_labels=seeds)
    assert np.isfinite(r.losses).all()
    ck = torch.load(tmp_path / "l.pt", weights_only=False)
    assert ck["record"]["seed_labels"] == "seeds" and ck["record"]["cams"] is None and ck["head"] == "psa-elu"  # relative to the checkpoint
    with pytest.raises(ValueError, match="another affinity run"):  # the same run from the CAMs is another run
        train_affinity(index, cams, ids, tmp_path / "l.pt", cfg, progress=False)
    import hashlib

    by_hand = hashlib.sha256("".join(f"{i}\0{(seeds / f'{i}.png').stat().st_size}\0{hashlib.sha256((seeds / f'{i}.png').read_bytes()).hexdigest()}\n"
                                     for i in sorted(ids)).encode()).hexdigest()  # fmt: skip
    assert ck["record"]["seeds_sha256"] == "sha256:" + by_hand  # the seeds it learnt from, by content
    first = read_label(seeds / f"{ids[0]}.png")
    write_label(seeds / f"{ids[0]}.png", np.where(first == 0, 0, 255).astype(np.uint8) if (first == 0).any() else first % 2)  # other seeds, same path
    with pytest.raises(ValueError, match="another affinity run"):  # a finished run on other seeds is not its resume
        train_affinity(index, cams, ids, tmp_path / "l.pt", cfg, progress=False, seed_labels=seeds)
    write_label(seeds / f"{ids[0]}.png", first)
    assert train_affinity(index, cams, ids, tmp_path / "l.pt", cfg, progress=False, seed_labels=seeds).done == 0
    made_before = torch.load(tmp_path / "l.pt", weights_only=False)  # a checkpoint of a samcam that recorded no contents: still resumed
    made_before["record"] = {k: v for k, v in made_before["record"].items() if k not in ("seeds_sha256", "images_sha256")}
    torch.save(made_before, tmp_path / "l.pt")
    assert train_affinity(index, cams, ids, tmp_path / "l.pt", cfg, progress=False, seed_labels=seeds).done == 0
    bad = tmp_path / "bad_seeds"
    bad.mkdir()
    for i in ids:
        Image.fromarray(np.full(read_label(seeds / f"{i}.png").shape, 40, np.uint8)).save(bad / f"{i}.png")
    with pytest.raises(ValueError, match=r"values \[40\] outside the classes 0..20 and 255"):
        train_affinity(index, None, ids, tmp_path / "b.pt", cfg, progress=False, seed_labels=bad)
    for i in ids:
        Image.fromarray(np.full(read_label(seeds / f"{i}.png").shape, 255, np.uint8)).save(bad / f"{i}.png")
    with pytest.raises(ValueError, match="no cell of the label is one class"):
        train_affinity(index, None, ids, tmp_path / "b.pt", cfg, progress=False, seed_labels=bad)
    del ck["head"]
    torch.save(ck, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="earlier samcam"):
        load_affinity(tmp_path / "old.pt")
    (seeds / f"{ids[0]}.png").unlink()
    with pytest.raises(FileNotFoundError, match=f"no seed label for 1 ids, e.g. {ids[0]}.png"):
        train_affinity(index, cams, ids, tmp_path / "m.pt", cfg, progress=False, seed_labels=seeds)
    write_label(seeds / f"{ids[0]}.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError, match=f"{ids[0]}.png: label of 5×5 px"):
        train_affinity(index, cams, ids, tmp_path / "m.pt", cfg, progress=False, seed_labels=seeds)


def _walk_one_power(cams, keys, T, grid, alpha, steps):
    """The walk at one power as the paper states it: background map stacked before the class maps,
    the K + 1 maps pooled, walked together, upsampled and argmaxed."""
    from torch.nn import functional as F

    from samcam.cam.label import scores_to_label, with_key_lookup

    scores = torch.from_numpy(with_background(cams, alpha))[None]
    small = F.adaptive_avg_pool2d(scores, grid)[0].numpy()
    walked = random_walk(small, T, steps)
    full = F.interpolate(torch.from_numpy(walked)[None], size=cams.shape[1:], mode="bilinear", align_corners=False)[0]
    return scores_to_label(full.numpy(), with_key_lookup(keys), 21)


def test_walk_at_several_powers_is_each_power_walked_alone():
    """walk_labels walks the class maps once and one background map per power; each label equals the
    walk of that power's K + 1 maps on their own, and the powers change the labels."""
    from samcam.refine.affinity import propagate_alphas, walk_labels

    rng = np.random.default_rng(5)
    f = rng.random((3, 6, 7)).astype(np.float32)
    T = transition_matrix(f, 3, 32.0)
    yy, xx = np.mgrid[:48, :56]
    cams = np.stack([0.9 * np.exp(-((xx - 14) ** 2 + (yy - 20) ** 2) / 150.0), 0.6 * np.exp(-((xx - 42) ** 2 + (yy - 30) ** 2) / 100.0)])
    cams = (cams * (0.9 + 0.1 * rng.random(cams.shape))).astype(np.float32)
    keys = np.array([4, 17])
    alphas = [0.5, 2.0, 4.82, 16.0]
    got = walk_labels(cams, keys, T, (6, 7), alphas, 4)
    want = [_walk_one_power(cams, keys, T, (6, 7), a, 4) for a in alphas]
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    assert len({g.tobytes() for g in got}) == len(alphas)  # each power gives another label here
    assert [(g == 0).mean() for g in got] == sorted([(g == 0).mean() for g in got], reverse=True)  # a larger power, less background
    cfg = AffinityConfig(radius=3, beta=32.0, steps=4, alpha=4.82)
    assert all(np.array_equal(a, b) for a, b in zip(propagate_alphas(cams, keys, torch.from_numpy(f), cfg, alphas), want))
    assert np.array_equal(propagate(cams, keys, torch.from_numpy(f), cfg), want[2])  # config.alpha
    with pytest.raises(ValueError, match="no background power"):
        walk_labels(cams, keys, T, (6, 7), [], 12)


@pytest.mark.slow
def test_alpha_sweep_scores_each_power_as_its_labels(tmp_path, voc_root, gt_cams):
    """The sweep's row for each power is the score of the labels affinity_labels writes at that power
    (scored by samcam eval from the files); the command writes the table and names bad input."""
    import pandas as pd

    from samcam import cli
    from samcam.io import image_index
    from samcam.pipeline.affinity import AffinityTrainConfig, alpha_sweep, affinity_labels, read_alpha_sweep, train_affinity
    from samcam.pipeline.evaluate import evaluate_folders
    from samcam.data.spaces import VOC
    from samcam.metrics import error_rates

    cams, ids = gt_cams
    index = image_index(voc_root / "JPEGImages")
    ck = tmp_path / "aff.pt"
    train_affinity(index, cams, ids[:1], ck, AffinityTrainConfig(epochs=1, batch_size=2, crop=16, crf=False), progress=False)
    alphas = [1.0, 6.0, 40.0]
    walk = AffinityConfig(radius=None, steps=24)
    with pytest.raises(ValueError, match=f"{ck}: its head was trained on 1 of these 3 ids \\(e.g. {ids[0]}\\); a background power is chosen on held-out images"):
        alpha_sweep(index, cams, voc_root / "SegmentationClass", ids[::-1], ck, alphas, walk, progress=False)  # any order, any overlap
    ids = ids[1:]  # held out
    (tmp_path / "held.txt").write_text("".join(f"{i}\n" for i in ids))
    df = alpha_sweep(index, cams, voc_root / "SegmentationClass", ids, ck, alphas, walk, progress=False)
    assert list(df["alpha"]) == alphas and list(df.columns[:2]) == ["alpha", "miou"]
    for a, row in zip(alphas, df.itertuples()):
        out = tmp_path / f"labels_{a:g}"
        affinity_labels(index, cams, ids, ck, out, AffinityConfig(radius=None, steps=24, alpha=a), progress=False)
        ev = evaluate_folders(out, voc_root / "SegmentationClass", VOC, ids)
        assert row.miou == pytest.approx(ev.scores().miou, abs=1e-12)
        assert row.false_pct == pytest.approx(error_rates(ev.conf)["false_pct"], abs=1e-9)
    assert df["miou"].nunique() > 1 and df["best"].sum() >= 1 and df.loc[df["best"], "miou"].min() == df["miou"].max()
    csv = tmp_path / "sweep.csv"
    assert cli.main(["affinity-sweep", "--images", str(voc_root / "JPEGImages"), "--cams", str(cams), "--gt", str(voc_root / "SegmentationClass"),
                     "--checkpoint", str(ck), "--alphas", "1", "6", "40", "--steps", "24", "--csv", str(csv), "--ids", str(tmp_path / "held.txt")]) == 0  # fmt: skip
    written = pd.read_csv(csv)
    assert np.allclose(written["miou"], df["miou"]) and read_alpha_sweep(csv) == alphas[int(df["miou"].to_numpy().argmax())]
    import hashlib

    assert written["checkpoint_sha256"].tolist() == [hashlib.sha256(ck.read_bytes()).hexdigest()] * len(written)  # the head it scored
    other = tmp_path / "other.pt"
    state = torch.load(ck, weights_only=False)
    torch.save({**state, "state_dict": {k: v + 1 if v.is_floating_point() else v for k, v in state["state_dict"].items()}}, other)  # another head
    assert hashlib.sha256(other.read_bytes()).hexdigest() != written["checkpoint_sha256"][0]
    assert cli.main(["affinity-sweep", "--images", str(voc_root / "JPEGImages"), "--cams", str(cams), "--gt", str(voc_root / "SegmentationClass"),
                     "--checkpoint", str(other), "--alphas", "1", "--steps", "24", "--csv", str(csv), "--ids", str(tmp_path / "held.txt")]) == 2  # fmt: skip
    assert pd.read_csv(csv).equals(written)  # audit 12, F12: another network's sweep does not replace this one
    with pytest.raises(ValueError, match="listed twice"):
        alpha_sweep(index, cams, voc_root / "SegmentationClass", ids, ck, [2.0, 2.0], walk, progress=False)
    with pytest.raises(ValueError, match="alpha must be"):
        alpha_sweep(index, cams, voc_root / "SegmentationClass", ids, ck, [0.0], walk, progress=False)
    with pytest.raises(ValueError, match=r"trained with radius 5"):
        alpha_sweep(index, cams, voc_root / "SegmentationClass", ids, ck, [2.0], AffinityConfig(radius=4), progress=False)
    small = tmp_path / "gt_small"
    small.mkdir()
    from samcam.io import write_label

    for i in ids:
        write_label(small / f"{i}.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError, match=rf"gt_small/{ids[0]}\.png: ground truth of 5×5 px"):
        alpha_sweep(index, cams, small, ids, ck, [2.0], walk, progress=False)


@pytest.mark.parametrize(
    "text, message",
    [
        ("alpha,miou\n", "rows with columns alpha and miou"),
        ("alpha,score\n2,0.5\n", "rows with columns alpha and miou"),
        ("alpha,miou\n2,nan\n", "finite numbers"),
        ("alpha,miou\n2,1.5\n", "miou in 0..1"),
        ("alpha,miou\n2,-0.1\n", "miou in 0..1"),
        ("alpha,miou\nx,0.5\n", "finite numbers"),
        ("alpha,miou\n2,0.5\n2,0.6\n", "listed twice"),
        ("alpha,miou\n0,0.5\n", "alpha must be"),
        ("alpha,miou\n300,0.5\n", "alpha must be"),
    ],
)
def test_alpha_sweep_table_is_checked(tmp_path, text, message):
    from samcam.pipeline.affinity import read_alpha_sweep

    p = tmp_path / "t.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=message) as e:
        read_alpha_sweep(p)
    assert str(p) in str(e.value)


def test_alpha_sweep_table_gives_the_first_power_of_the_best_miou(tmp_path):
    from samcam.pipeline.affinity import read_alpha_sweep

    p = tmp_path / "t.csv"
    p.write_text("alpha,miou,best\n2,0.4,False\n8,0.5,True\n4,0.5,True\n16,0.1,False\n")
    assert read_alpha_sweep(p) == 8.0
    p.write_text("alpha,miou\n1,1.0\n2,0.0\n")
    assert read_alpha_sweep(p) == 1.0
    with pytest.raises(FileNotFoundError, match="alpha sweep table not found"):
        read_alpha_sweep(tmp_path / "none.csv")


def test_the_heads_rate_follows_one_poly_schedule_over_all_epochs(tmp_path, voc_root, gt_cams, monkeypatch):
    """3 images, batch 2, 2 epochs: steps 0..3 of 4, each at poly_lr(lr × head_lr_mult, step, 4)."""
    import samcam.training
    from samcam.io import image_index
    from samcam.pipeline.affinity import AffinityTrainConfig, train_affinity
    from samcam.training import poly_lr

    seen = []
    real = samcam.training.set_poly_lr

    def spy(opt, base, step, total, power=0.9, mult_key=None):
        real(opt, base, step, total, power, mult_key)
        seen.append((step, total, opt.param_groups[0]["lr"]))

    monkeypatch.setattr(samcam.training, "set_poly_lr", spy)
    cams, ids = gt_cams
    cfg = AffinityTrainConfig(epochs=2, batch_size=2, crop=16, lr=0.05, head_lr_mult=4.0, crf=False)
    train_affinity(image_index(voc_root / "JPEGImages"), cams, ids, tmp_path / "a.pt", cfg, progress=False)
    assert [(s, t) for s, t, _ in seen] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert all(lr == pytest.approx(poly_lr(0.2, s, 4), rel=1e-12) for s, _, lr in seen)


def test_each_batch_loss_is_the_mean_over_its_own_images_the_last_partial_one_too(tmp_path, voc_root, gt_cams, monkeypatch):
    """3 images: in one batch of 3 the loss is (l1 + l2 + l3) / 3; in batches of 2 it is (l1 + l2) / 2,
    then l3 / 1 (the last batch holds one image, not two). The head is never stepped here (descend only
    records), and the sample order and windows draw alike, so 2·La + 1·Lb = 3·L3."""
    import samcam.training
    from samcam.io import image_index
    from samcam.pipeline.affinity import AffinityTrainConfig, train_affinity

    cams, ids = gt_cams
    assert len(ids) == 3
    losses = {}
    for batch in (3, 2):
        seen = losses.setdefault(batch, [])
        monkeypatch.setattr(samcam.training, "descend", lambda opt, loss: seen.append(loss.item()) or loss.item())
        cfg = AffinityTrainConfig(epochs=1, batch_size=batch, crop=16, crf=False)
        train_affinity(image_index(voc_root / "JPEGImages"), cams, ids, tmp_path / f"a{batch}.pt", cfg, progress=False)
    assert len(losses[3]) == 1 and len(losses[2]) == 2
    assert 2 * losses[2][0] + losses[2][1] == pytest.approx(3 * losses[3][0], rel=1e-5)


def test_a_refused_affinity_resume_names_the_fields_that_differ_or_the_kind_of_checkpoint(tmp_path, voc_root, gt_cams):
    """train-affinity refused a resume with its whole record ('{'config': {... 13 fields ...}, 'ids': 2,
    ...}'), the field that differs unnamed (audit 11, F13): now each field, a content hash by its first
    digits; a checkpoint of another training is named as one, before any feature is computed."""
    import re
    from dataclasses import replace

    from PIL import Image

    from samcam.io import image_index, read_image
    from samcam.pipeline.affinity import AffinityTrainConfig, train_affinity
    from samcam.training import save_checkpoint

    cams, ids = gt_cams
    index = image_index(voc_root / "JPEGImages")
    cfg = AffinityTrainConfig(epochs=1, batch_size=1, crop=16, crf=False)
    ck = tmp_path / "a.pt"
    train_affinity(index, cams, ids[:1], ck, cfg, progress=False)
    (tmp_path / "moved").mkdir()  # the record holds the CAMs' path relative to the checkpoint; by content they are the same
    (tmp_path / "moved" / "a.pt").write_bytes(ck.read_bytes())
    assert train_affinity(index, cams, ids[:1], tmp_path / "moved" / "a.pt", cfg, progress=False).done == 0

    def refused(why, **changes):
        args = {"images": index, "ids": ids[:1], "config": cfg, **changes}
        with pytest.raises(ValueError, match=f"^{re.escape(str(ck))} holds another affinity run \\({why}\\); choose another path$"):
            train_affinity(args["images"], cams, args["ids"], ck, args["config"], progress=False)

    refused("config.epochs: 1 -> 2", config=replace(cfg, epochs=2))
    refused("config.crop: 16 -> 24, config.seed: 0 -> 5", config=replace(cfg, crop=24, seed=5))
    digits = "'sha256:[0-9a-f]{12}…'"
    refused(f"ids: 1 -> 2, ids_sha256: '[0-9a-f]{{12}}…' -> '[0-9a-f]{{12}}…', images_sha256: {digits} -> {digits}, seeds_sha256: {digits} -> {digits}",
            ids=ids[:2])  # fmt: skip
    flipped = tmp_path / f"{ids[0]}.png"
    Image.fromarray(read_image(index[ids[0]])[::-1]).save(flipped)
    refused(f"images_sha256: {digits} -> {digits}", images={**index, ids[0]: flipped})
    save_checkpoint(tmp_path / "seg.pt", {"format": "samcam-seg/1"})
    with pytest.raises(ValueError, match=f"^{re.escape(str(tmp_path / 'seg.pt'))}: a train-seg checkpoint, not a train-affinity one; choose another path$"):
        train_affinity(index, cams, ids[:1], tmp_path / "seg.pt", cfg, progress=False)


def test_dense_crf_hands_pydensecrf_psas_kernels_on_the_image_as_given(monkeypatch):
    """What reaches pydensecrf (a recording stand-in): the grid as width × height, the unary of the
    scores, each kernel's own settings, the image as contiguous uint8 RGB, and the iteration count;
    its marginals come back as K × H × W float32."""
    import pydensecrf.densecrf as dcrf

    from samcam.refine.crf import CRFConfig, dense_crf

    calls = {}

    class Recording:
        def __init__(self, w, h, k):
            calls["grid"] = (w, h, k)

        def setUnaryEnergy(self, u):
            calls["unary"] = np.array(u)

        def addPairwiseGaussian(self, **kw):
            calls["gaussian"] = kw

        def addPairwiseBilateral(self, **kw):
            calls["bilateral"] = {k: v for k, v in kw.items() if k != "rgbim"}
            calls["rgbim"] = kw["rgbim"]

        def inference(self, n):
            calls["iterations"] = n
            w, h, k = calls["grid"]
            return np.arange(k * h * w, dtype=np.float64).reshape(k, h * w)

    monkeypatch.setattr(dcrf, "DenseCRF2D", Recording)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (4, 6, 3)).astype(np.int64)  # a wider type: handed over as uint8
    scores = rng.random((2, 4, 6)).astype(np.float64)
    q = dense_crf(image, scores)
    assert calls["grid"] == (6, 4, 2) and calls["iterations"] == 10
    assert calls["gaussian"] == {"sxy": 3.0, "compat": 3.0} and calls["bilateral"] == {"sxy": 80.0, "srgb": 13.0, "compat": 10.0}
    assert calls["rgbim"].dtype == np.uint8 and calls["rgbim"].flags.c_contiguous and np.array_equal(calls["rgbim"], image)
    np.testing.assert_allclose(calls["unary"], -np.log(np.clip(scores, 1e-5, 1)).reshape(2, -1), rtol=1e-5)
    assert q.dtype == np.float32 and q.shape == (2, 4, 6) and np.array_equal(q.ravel(), np.arange(48))
    dense_crf(image, scores, CRFConfig(iterations=0, gaussian_sxy=1.5, gaussian_compat=0.5, bilateral_sxy=20, bilateral_srgb=5, bilateral_compat=0))
    assert calls["iterations"] == 0 and calls["gaussian"] == {"sxy": 1.5, "compat": 0.5}
    assert calls["bilateral"] == {"sxy": 20, "srgb": 5, "compat": 0}


@pytest.mark.parametrize("field", ["gaussian_sxy", "bilateral_sxy", "bilateral_srgb", "gaussian_compat", "bilateral_compat"])
def test_crf_settings_take_their_whole_range_and_nothing_past_it(field):
    from samcam.refine.crf import CRFConfig

    positive = field.endswith(("sxy", "srgb"))  # a kernel's width must be > 0; a weight may be 0
    for bad in ([0.0, -1.0] if positive else [-1e-9, -1.0]) + [float("inf"), float("nan")]:
        with pytest.raises(ValueError, match=f"{field} must be a {'positive number' if positive else 'number ≥ 0'}, not {bad}"):
            CRFConfig(**{field: bad})
    for good in [1e-6, 0.5, 1e6] + ([] if positive else [0.0]):
        assert getattr(CRFConfig(**{field: good}), field) == good
    assert CRFConfig(iterations=0).iterations == 0
    with pytest.raises(ValueError, match="iterations must be ≥ 0, not -1"):
        CRFConfig(iterations=-1)


@pytest.mark.parametrize("image_shape,scores_shape", [((4, 5, 3), (2, 4)), ((4, 5), (2, 4, 5)), ((4, 5, 4), (2, 4, 5)), ((5, 4, 3), (2, 4, 5))])
def test_dense_crf_refuses_shapes_that_do_not_pair(image_shape, scores_shape):
    from samcam.refine.crf import dense_crf

    with pytest.raises(ValueError, match=re.escape(f"scores {scores_shape} and image {image_shape} must be K × H × W and H × W × 3")):
        dense_crf(np.zeros(image_shape, np.uint8), np.ones(scores_shape, np.float32))


def test_dense_crf_refuses_non_finite_scores():
    from samcam.refine.crf import dense_crf

    for bad in (np.nan, np.inf):
        s = np.ones((2, 4, 5), np.float32)
        s[1, 2, 3] = bad
        with pytest.raises(ValueError, match="scores must be finite and non-negative"):
            dense_crf(np.zeros((4, 5, 3), np.uint8), s)
