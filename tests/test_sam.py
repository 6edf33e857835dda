"""Model building for every checkpoint type, and the fast generator against the official one."""

import numpy as np
import pytest
import torch
from skimage import data

from samcam.sam.model import (
    MODEL_TYPES,
    MaskGenerator,
    _registry,
    amg_settings,
    build_sam,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mobile_sam(mobile_sam_checkpoint):
    return build_sam("vit_t", device="cpu")


def test_vit_t_loads_the_verified_checkpoint(mobile_sam):
    assert sum(p.numel() for p in mobile_sam.parameters()) > 9_000_000
    assert not mobile_sam.training


def test_vit_b_loads_through_the_same_path(tmp_path):
    torch.manual_seed(0)
    ref = _registry("vit_b")(checkpoint=None)
    torch.save(ref.state_dict(), tmp_path / "vit_b_random.pth")
    model = build_sam("vit_b", checkpoint=tmp_path / "vit_b_random.pth", device="cpu")
    for (name, a), b in zip(ref.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpoint_of_another_model_type_is_refused(mobile_sam_checkpoint):
    with pytest.raises(ValueError, match=r"mobile_sam\.pt: checkpoint does not match model type vit_b"):
        build_sam("vit_b", checkpoint=mobile_sam_checkpoint, device="cpu")


def test_every_model_type_has_a_builder():
    assert MODEL_TYPES == ("vit_h", "vit_l", "vit_b", "vit_t")
    for t in MODEL_TYPES:
        assert callable(_registry(t))
    with pytest.raises(ValueError, match="unknown model type"):
        _registry("vit_x")


def test_settings_default_to_official_and_reject_unknown():
    s = amg_settings(points_per_side=8)
    assert s["points_per_side"] == 8 and s["pred_iou_thresh"] == 0.88 and s["stability_score_thresh"] == 0.95
    with pytest.raises(TypeError, match="points_per_sid"):
        amg_settings(points_per_sid=8)


def _best_iou(a, b):
    fa = a.masks.reshape(len(a), -1).astype(np.float32)
    fb = b.masks.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    return (inter / (a.area[:, None] + b.area[None, :] - inter)).max(axis=1)


def _assert_equivalent(model, image, pps):
    official = MaskGenerator(model, "official", points_per_side=pps).generate(image)
    fast = MaskGenerator(model, "fast", points_per_side=pps).generate(image)
    assert len(official) > 0
    assert len(fast) == len(official)
    assert _best_iou(official, fast).min() >= 0.98
    assert _best_iou(fast, official).min() >= 0.98


def test_fast_generator_matches_official_on_a_real_photo(mobile_sam):
    _assert_equivalent(mobile_sam, data.chelsea(), 6)


def test_fast_generator_matches_official_on_voc(mobile_sam, voc_root, train_with_images):
    from samcam.io import read_image

    _assert_equivalent(mobile_sam, read_image(voc_root / "JPEGImages" / f"{train_with_images[1]}.jpg"), 8)


def test_generator_rejects_non_rgb(mobile_sam):
    with pytest.raises(ValueError, match="H × W × 3 uint8"):
        MaskGenerator(mobile_sam, "fast", points_per_side=2).generate(np.zeros((8, 8), np.uint8))
