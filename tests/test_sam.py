"""Model building for every checkpoint type, and the fast generator against the official one."""

import re

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
    assert list(MODEL_TYPES) == ["vit_h", "vit_l", "vit_b", "vit_t"]
    for t in MODEL_TYPES:
        assert callable(_registry(t))
    with pytest.raises(ValueError, match="unknown model type"):
        _registry("vit_x")


def test_settings_default_to_official_and_reject_unknown():
    s = amg_settings(points_per_side=8)
    assert s["points_per_side"] == 8 and s["pred_iou_thresh"] == 0.88 and s["stability_score_thresh"] == 0.95
    with pytest.raises(TypeError, match="points_per_sid"):
        amg_settings(points_per_sid=8)


def _ious(a, b) -> np.ndarray:
    fa = a.masks.reshape(len(a), -1).astype(np.float32)
    fb = b.masks.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    return inter / (a.area[:, None] + b.area[None, :] - inter)


def _best_iou(a, b):
    return _ious(a, b).max(axis=1)


def _assert_equivalent(model, image, pps):
    official = MaskGenerator(model, "official", points_per_side=pps).generate(image)
    fast = MaskGenerator(model, "fast", points_per_side=pps).generate(image)
    assert len(official) > 0
    assert len(fast) == len(official)
    assert _best_iou(official, fast).min() >= 0.98
    assert _best_iou(fast, official).min() >= 0.98
    j = _best_match(fast, official)  # each fast mask's official twin carries the same prompt and scores
    assert np.array_equal(fast.point_coords, official.point_coords[j])
    assert np.allclose(fast.predicted_iou, official.predicted_iou[j], atol=2e-3)
    assert np.allclose(fast.stability_score, official.stability_score[j], atol=2e-3)
    assert np.array_equal(fast.crop_box, official.crop_box[j])


def _best_match(a, b) -> np.ndarray:
    return _ious(a, b).argmax(axis=1)


def test_fast_generator_matches_official_on_a_real_photo(mobile_sam):
    _assert_equivalent(mobile_sam, data.chelsea(), 6)


def test_fast_generator_matches_official_on_voc(mobile_sam, voc_root, train_with_images):
    from samcam.io import read_image

    _assert_equivalent(mobile_sam, read_image(voc_root / "JPEGImages" / f"{train_with_images[1]}.jpg"), 8)


def _same_masks(a, b) -> bool:
    return len(a) == len(b) and (len(a) == 0 or min(_best_iou(a, b).min(), _best_iou(b, a).min()) >= 0.98)


def test_fast_generator_matches_official_at_non_default_settings(mobile_sam):
    """Every threshold off its default, on a small image: each setting must reach the fast generator
    (a per-crop NMS at a literal 0.7, or the default stability offset, gives other masks here)."""
    from skimage import transform

    image = (transform.resize(data.chelsea(), (75, 112)) * 255).astype(np.uint8)
    kw = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.92, "stability_score_offset": 0.5, "box_nms_thresh": 0.3}
    official = MaskGenerator(mobile_sam, "official", **kw).generate(image)
    fast = MaskGenerator(mobile_sam, "fast", **kw).generate(image)
    assert len(official) > 1 and _same_masks(official, fast)
    for setting, default in [("box_nms_thresh", 0.7), ("stability_score_offset", 1.0)]:  # each setting changes this image's masks
        assert not _same_masks(official, MaskGenerator(mobile_sam, "official", **{**kw, setting: default}).generate(image)), setting


def test_fast_generator_matches_official_with_crop_layers(mobile_sam):
    image = data.chelsea()
    kw = {"points_per_side": 4, "crop_n_layers": 1}
    official = MaskGenerator(mobile_sam, "official", **kw).generate(image)
    fast = MaskGenerator(mobile_sam, "fast", **kw).generate(image)
    assert len(official) > 0 and len(fast) == len(official)
    assert _best_iou(official, fast).min() >= 0.98


def test_fast_generator_batched_prompts_match_official(mobile_sam):
    """The GPU default (all prompts of a batch at once) gives the official masks too."""
    from samcam.sam.fast_amg import FastMaskGenerator
    from samcam.sam.masks import MaskSet

    image = data.chelsea()
    official = MaskGenerator(mobile_sam, "official", points_per_side=6).generate(image)
    gen = FastMaskGenerator(mobile_sam, prompt_chunk=16, **amg_settings(points_per_side=6))
    assert FastMaskGenerator(mobile_sam).prompt_chunk == 1  # one at a time on CPU
    with torch.inference_mode():
        fast = MaskSet.from_records(gen.generate(image), shape=image.shape[:2])
    assert len(fast) == len(official) > 0
    assert _best_iou(official, fast).min() >= 0.98


# --- the fast generator's pieces, each against the official module it replaces (random inputs) ---


def _official_decoder(model, features, sparse):
    """segment-anything's own decoder on ``sparse`` prompt embeddings: all four masks and IoUs."""
    pe = model.prompt_encoder
    dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(sparse.shape[0], -1, *features.shape[-2:])
    return model.mask_decoder.predict_masks(features, pe.get_dense_pe(), sparse, dense)


@pytest.mark.parametrize("chunk", [1, 3])
def test_decoder_and_upscaling_match_the_official_decoder(mobile_sam, chunk):
    from samcam.sam.fast_amg import _ImageState, decode_prompts, mask_logits

    g = torch.Generator().manual_seed(0)
    features = torch.randn(1, 256, 64, 64, generator=g)
    points = torch.rand(3, 1, 2, generator=g) * 1024
    with torch.inference_mode():
        sparse, _ = mobile_sam.prompt_encoder(points=(points, torch.ones(3, 1, dtype=torch.int)), boxes=None, masks=None)
        masks, iou = _official_decoder(mobile_sam, features, sparse)
        state = _ImageState(mobile_sam, features)
        ious, lows = [], []
        for s in range(0, 3, chunk):
            i, hyper, keys = decode_prompts(mobile_sam, state, sparse[s : s + chunk])
            ious.append(i)
            lows.append(mask_logits(mobile_sam.mask_decoder.output_upscaling, keys, hyper, (64, 64)))
    torch.testing.assert_close(torch.cat(ious), iou[:, 1:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.cat(lows), masks[:, 1:], atol=2e-3, rtol=1e-4)  # logits of magnitude ~10-100


def test_mask_logits_on_a_non_square_grid(mobile_sam):
    from samcam.sam.fast_amg import mask_logits

    g = torch.Generator().manual_seed(1)
    keys = torch.randn(2, 5 * 7, 256, generator=g)
    hyper = torch.randn(2, 3, 32, generator=g)
    dec = mobile_sam.mask_decoder
    with torch.inference_mode():
        up = dec.output_upscaling(keys.transpose(1, 2).reshape(2, 256, 5, 7))  # 2 × 32 × 20 × 28
        expected = (hyper @ up.reshape(2, 32, -1)).reshape(2, 3, 20, 28)
        got = mask_logits(dec.output_upscaling, keys, hyper, (5, 7))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("input_size", "original_size"), [((576, 1024), (281, 500)), ((1024, 768), (500, 375)), ((1024, 1024), (1500, 1500)), ((40, 1024), (17, 430))])
def test_resize_logits_equals_the_official_postprocessing(mobile_sam, input_size, original_size):
    from samcam.sam.fast_amg import resize_logits

    low = torch.randn(4, 256, 256, generator=torch.Generator().manual_seed(2)) * 10
    with torch.inference_mode():
        expected = mobile_sam.postprocess_masks(low[None], input_size, original_size)[0]
    got = resize_logits(low, 1024, input_size, original_size)
    assert got.shape == (4, *original_size)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)


def test_concat_equals_maskdata_cat():
    from segment_anything.utils.amg import MaskData

    from samcam.sam.fast_amg import concat

    parts = [MaskData(rles=[{"counts": [i, 1]}], boxes=torch.tensor([[i, 0, 1, 1]]), points=np.array([[i, 0.5]])) for i in range(3)]
    expected = MaskData()
    for p in parts:
        expected.cat(p)
    got = concat(parts)
    assert got["rles"] == expected["rles"]
    assert torch.equal(got["boxes"], expected["boxes"])
    np.testing.assert_array_equal(got["points"], expected["points"])


def test_generator_rejects_non_rgb(mobile_sam):
    with pytest.raises(ValueError, match="H × W × 3 uint8"):
        MaskGenerator(mobile_sam, "fast", points_per_side=2).generate(np.zeros((8, 8), np.uint8))


def test_a_sam_checkpoint_with_nan_weights_or_no_content_is_refused(tmp_path, mobile_sam_checkpoint):
    state = torch.load(mobile_sam_checkpoint, map_location="cpu", weights_only=True)
    key = "mask_decoder.transformer.layers.0.self_attn.q_proj.weight"
    state[key] = torch.full_like(state[key], float("nan"))
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match=rf"nan\.pt: its vit_t weights hold values that are not finite numbers \({re.escape(key)}\); a corrupt checkpoint"):
        build_sam("vit_t", checkpoint=tmp_path / "nan.pt", device="cpu")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pt: not a readable PyTorch checkpoint \(\w+"):
        build_sam("vit_t", checkpoint=tmp_path / "empty.pt", device="cpu")
