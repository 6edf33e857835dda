"""A faster "segment everything" generator that returns the official generator's masks.

:class:`FastMaskGenerator` is segment-anything's ``SamAutomaticMaskGenerator`` (same point grid,
crops, filters, NMS and output) with one step replaced: how a batch of point prompts becomes
full-resolution mask logits. Mathematically the same computation, reordered to skip work:

1. **Image-only work done once per image, not once per prompt.** In the decoder's first two-way block
   the image tokens are still the image embedding itself, so the token→image keys and values do not
   depend on the prompt; they are computed once and broadcast, and the embedding is never copied per
   prompt (``repeat_interleave``).
2. **Projections moved from the image side to the token side.** Every cross attention between the
   ~7 prompt tokens and the 4096 image tokens projects the image tokens (``H·W × 256 → 128``). By
   associativity the same scores and outputs come from projecting the few token rows instead
   (:func:`token_to_image`, :func:`image_to_token`): less than half the multiply-adds. The output
   projection's bias is folded into the values (each head's attention sums to 1) and the residual
   add into the matrix product.
3. **Softmax over a contiguous axis.** Image→token attention normalises over 7 tokens per head;
   its scores are laid out ``heads·tokens × pixels`` so that softmax runs along the long axis.
4. **Prompts one at a time on CPU** (``prompt_chunk``): the per-prompt ``4096 × 256`` tensors then
   stay in cache, which on CPU is faster than large batches. On a GPU the whole batch of
   ``points_per_batch`` prompts runs at once (one prompt at a time would be bound by kernel launches).
5. **Upscaling as two matrix products in channels-last layout.** The decoder's output upscaling
   (2×2 stride-2 transposed convolutions, ``LayerNorm2d``, GELU) is per pixel, so it runs as
   ``pixels × channels`` products; the hypernetwork product gives the three masks directly.
6. **One separable resize.** The official post-processing upsamples each ``256²`` logit map to
   ``1024²``, crops the padding and resizes to the image: two bilinear passes, both linear and
   separable, so the same values come from ``R_y · L · R_xᵀ`` with two small matrices
   (:func:`resize_matrix`, built by applying the official interpolation to the identity) restricted
   to the rows and columns of ``L`` that reach the image.
7. Only the three multimask outputs are decoded (the official path also decodes the single-mask output
   and throws it away), and masks failing ``pred_iou_thresh`` are never resized.

Stability filtering, thresholding, boxes, edge filtering and RLE are the official code's own steps,
run on the surviving masks. Floating-point summation order differs from the official path, so a
mask at a threshold's edge may rarely differ by a pixel; ``tests/test_sam.py`` checks equivalence on
real images, ``tests/test_fast_amg.py`` at every setting (MobileSAM at a small input, in seconds) and
``benchmarks/bench_generator.py`` on VOC.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.utils.amg import (
    MaskData,
    batch_iterator,
    batched_mask_to_box,
    calculate_stability_score,
    is_box_near_crop_edge,
    mask_to_rle_pytorch,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)
from torchvision.ops.boxes import batched_nms
from torch.nn import functional as F


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    b, t, c = x.shape
    return x.reshape(b, t, n, c // n).transpose(1, 2)


def token_to_image(mod, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``Attention(q=tokens, k=image, v=image)`` without projecting the ``H·W`` image tokens.

    ``softmax(q_h (k W_kh + b_kh)ᵀ) (v W_vh + b_vh)`` is evaluated as ``softmax((q_h W_kh) kᵀ + q_h·b_kh)``
    followed by ``(attn v) W_vhᵀ + b_vh`` (attention rows sum to 1).
    """
    n = mod.num_heads
    qp = _heads(mod.q_proj(q), n)  # B × n × T × d
    b, _, t, d = qp.shape
    scale = 1.0 / math.sqrt(d)
    wk = mod.k_proj.weight.view(n, d, -1)  # n × d × C
    wv = mod.v_proj.weight.view(n, d, -1)
    qk = torch.einsum("bntd,ndc->bntc", qp, wk).reshape(b, n * t, -1) * scale
    bias = torch.einsum("bntd,nd->bnt", qp, mod.k_proj.bias.view(n, d)).reshape(b, n * t, 1) * scale
    attn = torch.softmax(torch.baddbmm(bias, qk, k.transpose(1, 2)), dim=-1)
    ctx = (attn @ v).view(b, n, t, -1)  # B × n × T × C
    out = torch.einsum("bntc,ndc->bntd", ctx, wv) + mod.v_proj.bias.view(1, n, 1, d)
    return mod.out_proj(out.transpose(1, 2).reshape(b, t, n * d))


def image_to_token(mod, keys: torch.Tensor, q: torch.Tensor | None, k: torch.Tensor, v: torch.Tensor, q_heads: torch.Tensor | None = None) -> torch.Tensor:
    """``keys + Attention(q=image, k=tokens, v=tokens)`` without projecting the ``H·W`` image tokens.

    The query projection is folded into the keys (``q W_qhᵀ k_hᵀ = q (W_qhᵀ k_hᵀ)``), the output
    projection into the values (``attn_h (v_h W_ohᵀ)``, plus ``b_o / heads`` per head since each
    head's attention sums to 1), and the residual ``keys`` is the product's addend. Scores are laid
    out ``heads·tokens × pixels`` so the softmax over tokens runs along a contiguous axis.
    """
    n = mod.num_heads
    kp = _heads(mod.k_proj(k), n)  # B × n × T × d
    vp = _heads(mod.v_proj(v), n)
    b, _, t, d = kp.shape
    scale = 1.0 / math.sqrt(d)
    if q_heads is not None:
        scores = kp @ q_heads  # B × n × T × HW
    else:
        wq = mod.q_proj.weight.view(n, d, -1)  # n × d × C
        a = torch.einsum("bntd,ndc->bntc", kp, wq).reshape(b, n * t, -1) * scale  # B × (n·T) × C
        bias = torch.einsum("bntd,nd->bnt", kp, mod.q_proj.bias.view(n, d)).reshape(b, n * t, 1) * scale
        scores = torch.baddbmm(bias, a, q.transpose(1, 2)).view(b, n, t, -1)
    attn = torch.softmax(scores, dim=2).view(b, n * t, -1)
    wo = mod.out_proj.weight.view(-1, n, d)  # C × n × d
    vo = torch.einsum("bntd,cnd->bntc", vp, wo).reshape(b, n * t, -1) + mod.out_proj.bias / n  # B × (n·T) × C
    return torch.baddbmm(keys.expand(b, -1, -1), attn.transpose(1, 2), vo)


class _ImageState:
    """Per-image tensors of the decoder's first block, shared by every prompt."""

    def __init__(self, model, features: torch.Tensor) -> None:
        first = model.mask_decoder.transformer.layers[0]
        attn = first.cross_attn_token_to_image
        pe = model.prompt_encoder.get_dense_pe()  # 1 × C × h × w
        src = features + model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        self.shape = src.shape
        self.keys = src.flatten(2).permute(0, 2, 1).contiguous()  # 1 × HW × C
        self.key_pe = pe.flatten(2).permute(0, 2, 1).contiguous()
        self.keys_pe = self.keys + self.key_pe
        self.t2i_k = _heads(attn.k_proj(self.keys_pe), attn.num_heads).contiguous()  # 1 × n × HW × d
        self.t2i_v = _heads(attn.v_proj(self.keys), attn.num_heads).contiguous()
        i2t = first.cross_attn_image_to_token
        q = _heads(i2t.q_proj(self.keys_pe), i2t.num_heads)  # 1 × n × HW × d
        self.i2t_q = (q / math.sqrt(q.shape[-1])).transpose(-1, -2).contiguous()  # 1 × n × d × HW
        dec = model.mask_decoder
        self.hyper = _stack_mlps([dec.output_hypernetworks_mlps[i] for i in range(1, dec.num_mask_tokens)])


def decode_prompts(model, state: _ImageState, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mask decoder's transformer for ``B`` prompts.

    Returns the IoU predictions of the three multimask outputs (``B × 3``), their hypernetwork
    weights (``B × 3 × C'``) and the image tokens after the transformer (``B × HW × C``).
    """
    dec = model.mask_decoder
    tr = dec.transformer
    first = tr.layers[0]
    if not first.skip_first_layer_pe:  # every SAM decoder skips it; keep the general path honest
        raise NotImplementedError("decoder whose first block adds PE to self-attention")
    tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
    pe = tokens
    queries = first.norm1(first.self_attn(q=tokens, k=tokens, v=tokens))
    a = first.cross_attn_token_to_image
    qp = _heads(a.q_proj(queries + pe), a.num_heads)
    attn = torch.softmax(qp @ state.t2i_k.transpose(-1, -2) / math.sqrt(qp.shape[-1]), dim=-1)
    out = attn @ state.t2i_v  # B × n × T × d
    b, n, t, d = out.shape
    queries = first.norm2(queries + a.out_proj(out.transpose(1, 2).reshape(b, t, n * d)))
    queries = first.norm3(queries + first.mlp(queries))
    q = queries + pe
    keys = first.norm4(image_to_token(first.cross_attn_image_to_token, state.keys, None, q, queries, q_heads=state.i2t_q))
    for layer in tr.layers[1:]:
        q = queries + pe
        queries = layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))
        k = keys + state.key_pe
        queries = layer.norm2(queries + token_to_image(layer.cross_attn_token_to_image, queries + pe, k, keys))
        queries = layer.norm3(queries + layer.mlp(queries))
        keys = layer.norm4(image_to_token(layer.cross_attn_image_to_token, keys, k, queries + pe, queries))
    # The final attention acts on each token alone; only the IoU token and the multimask tokens are read.
    used = [0, *range(2, 1 + dec.num_mask_tokens)]
    queries, pe = queries[:, used], pe[:, used]
    k = keys + state.key_pe
    queries = tr.norm_final_attn(queries + token_to_image(tr.final_attn_token_to_image, queries + pe, k, keys))
    iou = dec.iou_prediction_head(queries[:, 0, :])[:, 1:]
    return iou, _hypernetworks(state.hyper, queries[:, 1:, :]), keys


def _stack_mlps(mlps) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The layers of several equally shaped ``MLP``s (ReLU between layers, no sigmoid) as stacked ``(Wᵀ, b)``."""
    if any(m.sigmoid_output for m in mlps):
        raise NotImplementedError("hypernetwork MLP with a sigmoid output")
    return [(torch.stack([m.layers[i].weight.t() for m in mlps]), torch.stack([m.layers[i].bias for m in mlps])[:, None, :])
            for i in range(mlps[0].num_layers)]  # fmt: skip


def _hypernetworks(stacked: list[tuple[torch.Tensor, torch.Tensor]], tokens: torch.Tensor) -> torch.Tensor:
    """Each mask token through its own hypernetwork MLP, all at once: ``B × K × C`` → ``B × K × C'``."""
    x = tokens.transpose(0, 1)  # K × B × C
    for i, (w, b) in enumerate(stacked):
        x = torch.baddbmm(b, x, w)
        if i < len(stacked) - 1:
            x = torch.relu(x)
    return x.transpose(0, 1)


def mask_logits(seq: torch.nn.Sequential, keys: torch.Tensor, hyper: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Low-resolution mask logits ``B × K × 4h × 4w``: ``output_upscaling`` then the hypernetwork product.

    ``seq`` is SAM's ``ConvTranspose2d(2, stride 2) → LayerNorm2d → GELU → ConvTranspose2d(2, stride 2)
    → GELU``. A 2×2 stride-2 transposed convolution maps each input pixel to its own 2×2 output block,
    so both run as ``pixels × channels`` products on the channels-last ``keys`` (``B × h·w × C``),
    the layer norm over the last axis; sub-pixel order is undone once, on the ``K`` mask maps.
    """
    ct1, ln, act1, ct2, act2 = seq
    if not (isinstance(act1, torch.nn.GELU) and isinstance(act2, torch.nn.GELU) and act1.approximate == act2.approximate == "none"):
        raise NotImplementedError("output upscaling with activations other than exact GELU")
    b, hw, c = keys.shape
    h, w = size
    c1, c2 = ct1.weight.shape[1], ct2.weight.shape[1]
    y = torch.addmm(ct1.bias.repeat(4), keys.reshape(b * hw, c), ct1.weight.permute(0, 2, 3, 1).reshape(c, 4 * c1))
    y = torch.ops.aten.gelu_(F.layer_norm(y.view(-1, c1), (c1,), ln.weight, ln.bias, ln.eps))
    z = torch.ops.aten.gelu_(torch.addmm(ct2.bias.repeat(4), y, ct2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)))
    z = z.view(b, hw * 16, c2)
    m = torch.mm(hyper[0], z[0].t())[None] if b == 1 else hyper @ z.transpose(1, 2)  # B × K × (h, w, dy1, dx1, dy2, dx2)
    k = m.shape[1]
    return m.view(b, k, h, w, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7).reshape(b, k, 4 * h, 4 * w)


@lru_cache(maxsize=64)
def resize_matrix(low: int, full: int, valid: int, out: int) -> torch.Tensor:
    """``out × low`` matrix of the official post-processing along one axis.

    ``low → full`` bilinear (``align_corners=False``), keep the first ``valid`` samples (the crop of
    the padding), then ``→ out`` bilinear: the official code's two ``F.interpolate`` calls applied to
    the identity, so ``R_y · L · R_xᵀ`` equals them on any ``L``. Float32 like the official call, whose
    sample positions are computed in float32 (float64 weights differ from them by up to ~1e-5).
    """
    with torch.inference_mode(False), torch.no_grad():  # a plain tensor, usable outside inference mode too
        eye = torch.eye(low, dtype=torch.float32)[:, None, :]
        up = F.interpolate(eye, size=full, mode="linear", align_corners=False)[..., :valid]
        return F.interpolate(up, size=out, mode="linear", align_corners=False)[:, 0, :].t().contiguous()


def resize_logits(low: torch.Tensor, full: int, input_size: tuple[int, int], original_size: tuple[int, int]) -> torch.Tensor:
    """``Sam.postprocess_masks`` for ``N × h × w`` logits as one separable product (``N × H × W``)."""
    _, h, w = low.shape
    ry = resize_matrix(h, full, input_size[0], original_size[0]).to(low.device)
    rx = resize_matrix(w, full, input_size[1], original_size[1]).to(low.device)
    rows = int(torch.nonzero(ry.abs().sum(0)).max()) + 1  # low-res rows that reach the image
    cols = int(torch.nonzero(rx.abs().sum(0)).max()) + 1
    return ry[:, :rows] @ (low[:, :rows, :cols] @ rx[:, :cols].t())


def concat(parts: list[MaskData]) -> MaskData:
    """``MaskData.cat`` of several parts at once, without its deep copy of every list (the RLEs)."""
    out = MaskData()
    for key, first in parts[0].items():
        vals = [p[key] for p in parts]
        if isinstance(first, torch.Tensor):
            out[key] = torch.cat(vals)
        elif isinstance(first, np.ndarray):
            out[key] = np.concatenate(vals)
        else:
            out[key] = [x for v in vals for x in v]
    return out


class FastMaskGenerator(SamAutomaticMaskGenerator):
    """``SamAutomaticMaskGenerator`` with a faster, equivalent prompt-batch decoder (module docstring)."""

    def __init__(self, model, upsample_chunk: int = 32, prompt_chunk: int | None = None, **settings: Any) -> None:
        super().__init__(model, output_mode="binary_mask", **settings)
        self.upsample_chunk = upsample_chunk
        on_cpu = self.predictor.device.type == "cpu"
        self.prompt_chunk = prompt_chunk or (1 if on_cpu else self.points_per_batch)  # module docstring, item 4
        self._state: _ImageState | None = None
        self._state_for: torch.Tensor | None = None

    def _image_state(self) -> _ImageState:
        feats = self.predictor.features
        if self._state_for is not feats:
            self._state = _ImageState(self.predictor.model, feats)
            self._state_for = feats
        return self._state

    def _low_res(self, points: np.ndarray, im_size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """IoU predictions (``P·3``, prompt-major), which of them pass ``pred_iou_thresh``, and the
        low-res logits of those that pass (in the same order)."""
        model = self.predictor.model
        state = self._image_state()
        pts = torch.as_tensor(self.predictor.transform.apply_coords(points, im_size), device=self.predictor.device)
        labels = torch.ones(pts.shape[0], dtype=torch.int, device=pts.device)
        sparse, _ = model.prompt_encoder(points=(pts[:, None, :], labels[:, None]), boxes=None, masks=None)
        ious, keeps, lows = [], [], []
        for s in range(0, sparse.shape[0], self.prompt_chunk):
            iou, hyper, keys = decode_prompts(model, state, sparse[s : s + self.prompt_chunk])
            keep = iou > self.pred_iou_thresh if self.pred_iou_thresh > 0.0 else torch.ones_like(iou, dtype=torch.bool)
            ious.append(iou.flatten())
            keeps.append(keep.flatten())
            if keep.any():
                used = keep.any(dim=1)
                low = mask_logits(model.mask_decoder.output_upscaling, keys[used], hyper[used], state.shape[-2:])
                lows.append(low[keep[used]])
        iou = torch.cat(ious)
        low = torch.cat(lows) if lows else iou.new_zeros((0, 4 * state.shape[-2], 4 * state.shape[-1]))
        return iou, torch.cat(keeps), low

    @torch.inference_mode()
    def _process_batch(self, points: np.ndarray, im_size, crop_box, orig_size) -> MaskData:
        model = self.predictor.model
        orig_h, orig_w = orig_size
        flat_iou, keep, low = self._low_res(points, im_size)
        idx = torch.nonzero(keep).flatten()  # official order: prompt-major, output-minor
        prompt_points = torch.as_tensor(points.repeat(flat_iou.numel() // len(points), axis=0))
        full = model.image_encoder.img_size
        parts = []
        for s in range(0, max(idx.numel(), 1), self.upsample_chunk):  # one empty chunk when nothing passes
            sel = idx[s : s + self.upsample_chunk]
            data = MaskData(
                masks=resize_logits(low[s : s + self.upsample_chunk], full, self.predictor.input_size, self.predictor.original_size),
                iou_preds=flat_iou[sel],
                points=prompt_points[sel.cpu()],
            )
            data["stability_score"] = calculate_stability_score(data["masks"], model.mask_threshold, self.stability_score_offset)
            if self.stability_score_thresh > 0.0:
                data.filter(data["stability_score"] >= self.stability_score_thresh)
            data["masks"] = data["masks"] > model.mask_threshold
            data["boxes"] = batched_mask_to_box(data["masks"]).long()  # integer even for an empty chunk (float zeros there)
            keep_mask = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
            if not torch.all(keep_mask):
                data.filter(keep_mask)
            data["masks"] = uncrop_masks(data["masks"], crop_box, orig_h, orig_w)
            data["rles"] = mask_to_rle_pytorch(data["masks"])
            del data["masks"]
            parts.append(data)
        return concat(parts)

    def _process_crop(self, image: np.ndarray, crop_box: list[int], crop_layer_idx: int, orig_size: tuple[int, ...]) -> MaskData:
        """The official ``_process_crop`` (embed the crop, decode its point grid in batches, NMS), with
        the batches joined by :func:`concat` instead of ``MaskData.cat``'s deep copies."""
        x0, y0, x1, y1 = crop_box
        cropped = image[y0:y1, x0:x1, :]
        size = cropped.shape[:2]
        self.predictor.set_image(cropped)
        points = self.point_grids[crop_layer_idx] * np.array(size)[None, ::-1]
        data = concat([self._process_batch(p, size, crop_box, orig_size) for (p,) in batch_iterator(self.points_per_batch, points)])
        self.predictor.reset_image()
        keep = batched_nms(data["boxes"].float(), data["iou_preds"], torch.zeros(len(data["boxes"])), iou_threshold=self.box_nms_thresh)
        data.filter(keep)
        data["boxes"] = uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = torch.tensor([crop_box for _ in range(len(data["rles"]))])
        return data
