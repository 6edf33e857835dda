"""The fast generator against the official one at every setting, in seconds (a small input).

``tests/test_sam.py`` compares the two generators on real photos with MobileSAM's real image encoder,
which costs seconds per image on a CPU, so it is marked slow and a mutation run cannot afford it.
Here MobileSAM, real weights and all, runs at a 128-pixel input instead of 1024: everything
:mod:`samcam.sam.fast_amg` replaces (the decoder, the upscaling, the resize) and everything it keeps
(grid, crops, filters, NMS) runs as at full size, on an 8 × 8 embedding, in a fraction of a second.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samcam.sam.model import MaskGenerator, build_sam

# the tests that run MobileSAM's weights are marked integration one by one; the rest are model-free


def _small_tiny_vit():
    """MobileSAM's image encoder for 128-pixel inputs (8 × 8 embedding): the same TinyViT, whose
    ``forward`` hard-codes the 64 × 64 embedding of 1024-pixel inputs."""
    from mobile_sam.modeling import TinyViT

    class SmallTinyViT(TinyViT):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.patch_embed(x)
            for layer in self.layers:
                x = layer(x)
            side = self.img_size // 16
            return self.neck(x.view(x.shape[0], side, side, x.shape[-1]).permute(0, 3, 1, 2))

    return SmallTinyViT(img_size=SIZE, in_chans=3, num_classes=1000, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10],
                        window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0, mbconv_expand_ratio=4.0, local_conv_size=3)  # fmt: skip


SIZE = 128  # the model's input side (MobileSAM's is 1024)


def _small_sam():
    """The official ``Sam`` around MobileSAM's modules at a 128-pixel input, weights not loaded."""
    from mobile_sam.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    return Sam(
        image_encoder=_small_tiny_vit(),
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(SIZE // 16, SIZE // 16), input_image_size=(SIZE, SIZE), mask_in_chans=16),
        mask_decoder=MaskDecoder(transformer_dim=256, transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8)),
    ).eval()


@pytest.fixture(scope="module")
def sam(mobile_sam_checkpoint):
    """MobileSAM's real weights at a 128-pixel input: its image encoder, prompt encoder and mask
    decoder are size-independent (windowed attention, a positional encoding of normalised
    coordinates), so the masks are real masks, 64 times cheaper than at 1024 pixels."""
    model = _small_sam()
    model.load_state_dict(build_sam("vit_t", device="cpu").state_dict(), strict=True)
    return model.eval()


def _image() -> np.ndarray:
    """A non-square 90 × 130 scene: three coloured shapes on a gradient, with noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:90, :130]
    img = np.stack([xx * 1.5, yy * 2.0, np.full_like(xx, 60)], axis=-1).astype(float)
    img[(yy - 30) ** 2 + (xx - 35) ** 2 < 18**2] = (230, 40, 40)
    img[55:85, 70:120] = (30, 30, 220)
    img[10:40, 85:125] = (240, 240, 60)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def _masks(sam, generator, **settings):
    return MaskGenerator(sam, generator, **settings).generate(_image())


#: pixels a mask may differ by: a logit within float rounding of the mask threshold 0 may fall on the
#: other side, and the two generators upscale in another order (one pixel of one mask on some CPUs)
ROUNDING_PIXELS = 2


def _assert_same(official, fast):
    """Same masks in the same order (up to a rounding pixel each), with the same prompts, scores and crop boxes."""
    assert len(fast) == len(official)
    assert fast.masks.shape == official.masks.shape
    assert (fast.masks != official.masks).sum(axis=(1, 2)).max(initial=0) <= ROUNDING_PIXELS
    assert np.array_equal(fast.point_coords, official.point_coords)
    assert np.array_equal(fast.crop_box, official.crop_box)
    assert np.array_equal(fast.area, fast.masks.sum(axis=(1, 2)))
    assert np.abs(fast.area.astype(np.int64) - official.area).max(initial=0) <= ROUNDING_PIXELS
    assert np.allclose(fast.predicted_iou, official.predicted_iou, atol=1e-4, equal_nan=True)
    # a logit within float rounding of ±offset may fall on the other side: one pixel of a small mask
    assert np.allclose(fast.stability_score, official.stability_score, atol=2e-3, equal_nan=True)


def _key(masks):
    return masks.masks.tobytes(), masks.point_coords.tobytes()


BASE = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}

# Each setting at a value other than BASE's, and the settings it must differ from; every one changes
# the official masks of this image (checked below), so a fast generator that ignores it, or uses a
# literal in its place, gives other masks.
SETTINGS = [
    ({"pred_iou_thresh": 0.5}, {}),
    ({"stability_score_thresh": 0.3}, {}),
    ({"stability_score_thresh": 0.7, "stability_score_offset": 0.5}, {"stability_score_thresh": 0.7}),
    ({"box_nms_thresh": 0.3}, {}),
    ({"points_per_side": 3}, {}),
    ({"crop_n_layers": 1, "points_per_side": 2}, {"points_per_side": 2}),  # the crops' boxes, edges and uncropping are fast_amg's own code
    ({"crop_n_layers": 1, "points_per_side": 2, "crop_nms_thresh": 0.2}, {"crop_n_layers": 1, "points_per_side": 2}),
    ({"crop_n_layers": 1, "points_per_side": 2, "crop_overlap_ratio": 0.8}, {"crop_n_layers": 1, "points_per_side": 2}),
    ({"crop_n_layers": 1, "points_per_side": 4, "crop_n_points_downscale_factor": 2}, {"crop_n_layers": 1}),
    ({"min_mask_region_area": 40}, {}),  # segment-anything's own post-processing (cv2), on the fast generator's masks
]


@pytest.fixture(scope="module")
def base(sam):
    return _masks(sam, "official", **BASE)


@pytest.mark.integration
def test_the_base_settings_give_masks(sam, base):
    assert len(base) >= 8  # enough masks that NMS, filters and crops each change some
    _assert_same(base, _masks(sam, "fast", **BASE))


@pytest.mark.integration
@pytest.mark.parametrize(("change", "against"), SETTINGS, ids=[",".join(f"{k}={v}" for k, v in c.items()) for c, _ in SETTINGS])
def test_fast_equals_official_at_each_setting(sam, base, change, against):
    settings = {**BASE, **change}
    official = _masks(sam, "official", **settings)
    assert len(official) > 0
    reference = _masks(sam, "official", **{**BASE, **against}) if against else base
    assert _key(official) != _key(reference)  # the setting matters on this image
    _assert_same(official, _masks(sam, "fast", **settings))


@pytest.mark.integration
@pytest.mark.parametrize(("points_per_batch", "prompt_chunk", "upsample_chunk"), [(7, 1, 32), (64, 5, 3), (4, 3, 1)])
def test_batching_never_changes_the_masks(sam, points_per_batch, prompt_chunk, upsample_chunk):
    """Prompt batches, prompt chunks and resize chunks that do not divide the 36 prompts."""
    from samcam.sam.fast_amg import FastMaskGenerator
    from samcam.sam.masks import MaskSet
    from samcam.sam.model import amg_settings

    official = _masks(sam, "official", **BASE, points_per_batch=points_per_batch)
    gen = FastMaskGenerator(sam, upsample_chunk=upsample_chunk, prompt_chunk=prompt_chunk, **amg_settings(**BASE, points_per_batch=points_per_batch))
    with torch.inference_mode():
        fast = MaskSet.from_records(gen.generate(_image()), shape=_image().shape[:2])
    _assert_same(official, fast)


@pytest.mark.integration
def test_a_threshold_no_mask_passes_gives_no_masks(sam):
    settings = {**BASE, "pred_iou_thresh": 1.5}
    assert len(_masks(sam, "official", **settings)) == len(_masks(sam, "fast", **settings)) == 0


def test_mask_logits_refuses_an_upscaling_other_than_exact_gelu():
    """The fused upscaling computes SAM's exact GELU; any other activation is refused by name, not run."""
    from torch import nn

    from samcam.sam.fast_amg import mask_logits

    keys, hyper = torch.zeros(1, 4, 8), torch.zeros(1, 3, 2)
    for act1, act2 in [(nn.GELU(approximate="tanh"), nn.GELU()), (nn.GELU(), nn.ReLU()), (nn.ReLU(), nn.GELU())]:
        seq = nn.Sequential(nn.ConvTranspose2d(8, 4, 2, 2), nn.LayerNorm(4), act1, nn.ConvTranspose2d(4, 2, 2, 2), act2)
        with pytest.raises(NotImplementedError, match=r"^output upscaling with activations other than exact GELU$"):
            mask_logits(seq, keys, hyper, (2, 2))


def test_what_the_fused_decoder_does_not_compute_is_refused_by_name():
    """A hypernetwork MLP with a sigmoid output, or a decoder whose first block adds the positional
    encoding to self-attention (no SAM decoder does either), is refused, not run through the fused
    path; equally shaped MLPs, stacked, give each mask token its own MLP's output."""
    from types import SimpleNamespace

    from segment_anything.modeling.mask_decoder import MLP

    from samcam.sam.fast_amg import _hypernetworks, _stack_mlps, decode_prompts

    torch.manual_seed(0)
    mlps = [MLP(8, 6, 4, 3) for _ in range(2)]
    tokens = torch.randn(5, 2, 8)  # B × K × C
    with torch.no_grad():
        expected = torch.stack([mlps[k](tokens[:, k]) for k in range(2)], dim=1)
        torch.testing.assert_close(_hypernetworks(_stack_mlps(mlps), tokens), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(NotImplementedError, match=r"^hypernetwork MLP with a sigmoid output$"):
        _stack_mlps([mlps[0], MLP(8, 6, 4, 3, sigmoid_output=True)])
    first = SimpleNamespace(skip_first_layer_pe=False)
    model = SimpleNamespace(mask_decoder=SimpleNamespace(transformer=SimpleNamespace(layers=[first])))
    with pytest.raises(NotImplementedError, match=r"^decoder whose first block adds PE to self-attention$"):
        decode_prompts(model, None, torch.zeros(1, 2, 256))


def _records(sam, generator, **settings):
    """The raw records of ``generate`` (``bbox`` included, which :class:`MaskSet` recomputes from the masks)."""
    from samcam.sam.model import GENERATORS, amg_settings

    with torch.inference_mode():
        return GENERATORS[generator](sam, amg_settings(**settings)).generate(_image())


@pytest.mark.integration
def test_crops_give_the_official_boxes(sam):
    """With crops each mask's box is uncropped into image coordinates before the crops' NMS, as the
    official generator does: the records' boxes agree (up to a rounding pixel)."""
    settings = {**BASE, "crop_n_layers": 1, "points_per_side": 2}
    official, fast = _records(sam, "official", **settings), _records(sam, "fast", **settings)
    assert len(fast) == len(official) > 0 and any(r["crop_box"] != official[0]["crop_box"] for r in official)
    boxes = np.array([r["bbox"] for r in fast]), np.array([r["bbox"] for r in official])
    assert np.abs(boxes[0] - boxes[1]).max() <= 1


@pytest.mark.integration
def test_a_mask_whose_predicted_iou_equals_the_threshold_is_dropped(sam):
    """The official rule keeps a mask whose predicted IoU is strictly above ``pred_iou_thresh``."""
    masks = _masks(sam, "fast", **BASE)
    at = float(np.sort(masks.predicted_iou)[len(masks) // 2])  # a float32 value: exactly the mask's score
    kept = _masks(sam, "fast", **{**BASE, "pred_iou_thresh": at})
    assert len(kept) > 0 and (kept.predicted_iou > at).all() and at not in kept.predicted_iou


@pytest.mark.parametrize("shape", [(130, 90), (90, 130), (64, 64)], ids=["portrait", "landscape", "square"])
def test_resize_logits_is_the_official_postprocessing(shape):
    """``resize_logits`` against ``Sam.postprocess_masks`` (two interpolations and the crop of the
    padding; it reads no weight), for a portrait image too, whose padding lies to the right of the
    low-res logits; the last row and column that reach the image included."""
    from segment_anything.utils.transforms import ResizeLongestSide

    from samcam.sam.fast_amg import resize_logits

    low = torch.randn(3, SIZE // 4, SIZE // 4, generator=torch.Generator().manual_seed(0))
    input_size = ResizeLongestSide(SIZE).get_preprocess_shape(*shape, SIZE)
    with torch.no_grad():
        official = _small_sam().postprocess_masks(low[:, None], input_size, shape)[:, 0]
    torch.testing.assert_close(resize_logits(low, SIZE, input_size, shape), official, rtol=1e-4, atol=1e-4)


def test_concat_is_maskdata_cat():
    """``concat`` of tensors, arrays and lists gives what ``MaskData.cat`` gives, part after part."""
    from segment_anything.utils.amg import MaskData

    from samcam.sam.fast_amg import concat

    rng = np.random.default_rng(0)
    parts = [MaskData(t=torch.rand(n, 2), a=rng.random((n, 3)), rles=[{"n": i} for i in range(n)]) for n in (2, 0, 3)]
    expected = MaskData(**{k: (v.clone() if isinstance(v, torch.Tensor) else v.copy()) for k, v in parts[0].items()})
    for p in parts[1:]:
        expected.cat(p)
    got = concat(parts)
    assert sorted(k for k, _ in got.items()) == sorted(k for k, _ in expected.items()) == ["a", "rles", "t"]
    assert torch.equal(got["t"], expected["t"]) and np.array_equal(got["a"], expected["a"]) and got["rles"] == expected["rles"]
