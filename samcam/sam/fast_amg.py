"""A faster "segment everything" generator that returns the official generator's masks.

:class:`FastMaskGenerator` is segment-anything's ``SamAutomaticMaskGenerator`` (same point grid,
crops, filters, NMS and output) with one step replaced: how a batch of point prompts is decoded.
Mathematically the same computation, reordered to skip work:

1. **Image-only work done once per image, not once per prompt.** In the decoder's first two-way block
   the image tokens are still the image embedding itself, so the token→image keys and values do not
   depend on the prompt; they are computed once and broadcast, and the embedding is never copied per
   prompt (``repeat_interleave``).
2. **Projections moved from the image side to the token side.** Every cross attention between the
   ~7 prompt tokens and the 4096 image tokens projects the image tokens (``H·W × 256 → 128``). By
   associativity the same scores and outputs come from projecting the few token rows instead
   (see :func:`_token_to_image`, :func:`_image_to_token`): less than half the multiply-adds.
3. **Filter by predicted IoU before any upsampling.** The IoU head needs only the transformer's
   tokens; prompts none of whose three masks pass ``pred_iou_thresh`` skip the output upscaling
   network, and only the passing masks are computed and upsampled to image size.
4. Only the three multimask outputs are decoded (the official path also decodes the single-mask output
   and throws it away).

Stability filtering, thresholding, boxes, edge filtering and RLE are the official code's own steps,
run on the surviving masks. ``LayerNorm2d`` in the upscaling network runs as the fused ``layer_norm``. Floating-point summation order differs slightly from the official path
(broadcast instead of repeated matrix products), so a mask at a threshold's edge may rarely differ;
``tests/test_fast_amg.py`` checks equivalence on real images.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.utils.amg import (
    MaskData,
    batched_mask_to_box,
    calculate_stability_score,
    is_box_near_crop_edge,
    mask_to_rle_pytorch,
    uncrop_masks,
)


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    b, t, c = x.shape
    return x.reshape(b, t, n, c // n).transpose(1, 2)


def _attend(mod, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``Attention.forward`` on already projected ``q, k, v`` (batch dims broadcast)."""
    q, k, v = _heads(q, mod.num_heads), _heads(k, mod.num_heads), _heads(v, mod.num_heads)
    attn = torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]), dim=-1)
    out = attn @ v
    b, n, t, c = out.shape
    return mod.out_proj(out.transpose(1, 2).reshape(b, t, n * c))


def _token_to_image(mod, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``Attention(q=tokens, k=image, v=image)`` without projecting the ``H·W`` image tokens.

    ``softmax(q_h (k W_kh + b_kh)ᵀ) (v W_vh + b_vh)`` is evaluated as ``softmax((q_h W_kh) kᵀ + q_h·b_kh)``
    followed by ``(attn v) W_vhᵀ + b_vh`` (attention rows sum to 1): the projections act on the few
    token rows instead of the thousands of image rows, less than half the multiply-adds.
    """
    n = mod.num_heads
    qp = _heads(mod.q_proj(q), n)  # B × n × T × d
    d = qp.shape[-1]
    wk = mod.k_proj.weight.view(n, d, -1)  # n × d × C
    wv = mod.v_proj.weight.view(n, d, -1)
    b, _, t, _ = qp.shape
    qk = torch.einsum("bntd,ndc->bntc", qp, wk).reshape(b, n * t, -1)
    bias = torch.einsum("bntd,nd->bnt", qp, mod.k_proj.bias.view(n, d)).reshape(b, n * t, 1)
    attn = torch.softmax((torch.baddbmm(bias, qk, k.transpose(1, 2)) if k.shape[0] == b else qk @ k.transpose(1, 2) + bias) / math.sqrt(d), dim=-1)
    ctx = (attn @ v).view(b, n, t, -1)  # B × n × T × C
    out = torch.einsum("bntc,ndc->bntd", ctx, wv) + mod.v_proj.bias.view(1, n, 1, d)
    return mod.out_proj(out.transpose(1, 2).reshape(b, t, n * d))


def _image_to_token(mod, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``Attention(q=image, k=tokens, v=tokens)`` without projecting the ``H·W`` image tokens.

    The query projection is folded into the keys (``q W_qhᵀ k_hᵀ = q (W_qhᵀ k_hᵀ)``) and the output
    projection into the values (``attn_h (v_h W_ohᵀ)``), so the image rows meet ``C × (heads·T)`` and
    ``(heads·T) × C`` matrices instead of two ``C × C/2`` projections.
    """
    n = mod.num_heads
    kp = _heads(mod.k_proj(k), n)  # B × n × T × d
    vp = _heads(mod.v_proj(v), n)
    b, _, t, d = kp.shape
    wq = mod.q_proj.weight.view(n, d, -1)  # n × d × C
    a = torch.einsum("ndc,bntd->bcnt", wq, kp).reshape(b, -1, n * t)  # B × C × (n·T)
    bias = torch.einsum("nd,bntd->bnt", mod.q_proj.bias.view(n, d), kp).reshape(b, 1, n * t)
    scores = (q @ a + bias) / math.sqrt(d)  # B × HW × (n·T)
    attn = torch.softmax(scores.view(b, -1, n, t), dim=-1).view(b, -1, n * t)
    wo = mod.out_proj.weight.view(-1, n, d)  # C × n × d
    vo = torch.einsum("bntd,cnd->bntc", vp, wo).reshape(b, n * t, -1)  # B × (n·T) × C
    return attn @ vo + mod.out_proj.bias


def _block(layer, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor):
    """``TwoWayAttentionBlock.forward`` (not the first block) with the reordered cross attentions."""
    q = queries + query_pe
    queries = layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))
    q = queries + query_pe
    k = keys + key_pe
    queries = layer.norm2(queries + _token_to_image(layer.cross_attn_token_to_image, q, k, keys))
    queries = layer.norm3(queries + layer.mlp(queries))
    q = queries + query_pe
    keys = layer.norm4(keys + _image_to_token(layer.cross_attn_image_to_token, k, q, queries))
    return queries, keys


class _ImageState:
    """Per-image tensors of the decoder's first block, shared by every prompt."""

    def __init__(self, model, features: torch.Tensor) -> None:
        dec = model.mask_decoder
        tr = dec.transformer
        first = tr.layers[0]
        pe = model.prompt_encoder.get_dense_pe()  # 1 × C × h × w
        src = features + model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        self.shape = src.shape
        self.keys = src.flatten(2).permute(0, 2, 1)  # 1 × HW × C
        self.key_pe = pe.flatten(2).permute(0, 2, 1)
        k_in = self.keys + self.key_pe
        self.t2i_k = first.cross_attn_token_to_image.k_proj(k_in)
        self.t2i_v = first.cross_attn_token_to_image.v_proj(self.keys)
        self.keys_pe = k_in


def decode_prompts(model, state: _ImageState, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mask decoder's transformer for ``B`` prompts.

    Returns the IoU predictions of the three multimask outputs (``B × 3``), their hypernetwork
    weights (``B × 3 × C'``) and the image tokens after the transformer (``B × HW × C``).
    """
    dec = model.mask_decoder
    tr = dec.transformer
    first = tr.layers[0]
    tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
    query_pe = tokens
    if not first.skip_first_layer_pe:  # every SAM decoder skips it; keep the general path honest
        raise NotImplementedError("decoder whose first block adds PE to self-attention")
    queries = first.norm1(first.self_attn(q=tokens, k=tokens, v=tokens))
    q = queries + query_pe
    a = first.cross_attn_token_to_image
    queries = first.norm2(queries + _attend(a, a.q_proj(q), state.t2i_k, state.t2i_v))
    queries = first.norm3(queries + first.mlp(queries))
    q = queries + query_pe
    keys = first.norm4(state.keys + _image_to_token(first.cross_attn_image_to_token, state.keys_pe, q, queries))
    for layer in tr.layers[1:]:
        queries, keys = _block(layer, queries, keys, query_pe, state.key_pe)
    q = queries + query_pe
    k = keys + state.key_pe
    queries = tr.norm_final_attn(queries + _token_to_image(tr.final_attn_token_to_image, q, k, keys))
    iou = dec.iou_prediction_head(queries[:, 0, :])[:, 1:]
    mask_tokens = queries[:, 1 : 1 + dec.num_mask_tokens, :]
    hyper = torch.stack([dec.output_hypernetworks_mlps[i](mask_tokens[:, i, :]) for i in range(1, dec.num_mask_tokens)], dim=1)
    return iou, hyper, keys


def upscale(seq: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``output_upscaling`` with its ``LayerNorm2d`` run as ``F.layer_norm`` over channels-last data.

    SAM's ``LayerNorm2d`` normalises over channels with explicit mean/pow/sqrt tensor ops; the fused
    ``layer_norm`` kernel computes the same normalisation several times faster on CPU.
    """
    from torch.nn import functional as F

    for mod in seq:
        if type(mod).__name__ == "LayerNorm2d":
            x = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), mod.weight, mod.bias, mod.eps).permute(0, 3, 1, 2)
        else:
            x = mod(x)
    return x


class FastMaskGenerator(SamAutomaticMaskGenerator):
    """``SamAutomaticMaskGenerator`` with a faster, equivalent prompt-batch decoder (module docstring)."""

    def __init__(self, model, upsample_chunk: int = 32, **settings: Any) -> None:
        super().__init__(model, output_mode="binary_mask", **settings)
        self.upsample_chunk = upsample_chunk
        self._state: _ImageState | None = None
        self._state_for: torch.Tensor | None = None

    def _image_state(self) -> _ImageState:
        feats = self.predictor.features
        if self._state_for is not feats:
            self._state = _ImageState(self.predictor.model, feats)
            self._state_for = feats
        return self._state

    @torch.inference_mode()
    def _process_batch(self, points: np.ndarray, im_size, crop_box, orig_size) -> MaskData:
        model = self.predictor.model
        dec = model.mask_decoder
        orig_h, orig_w = orig_size
        state = self._image_state()
        pts = torch.as_tensor(self.predictor.transform.apply_coords(points, im_size), device=self.predictor.device)
        labels = torch.ones(pts.shape[0], dtype=torch.int, device=pts.device)
        sparse, _ = model.prompt_encoder(points=(pts[:, None, :], labels[:, None]), boxes=None, masks=None)
        iou, hyper, keys = decode_prompts(model, state, sparse)

        n_out = iou.shape[1]
        flat_iou = iou.flatten()
        keep = flat_iou > self.pred_iou_thresh if self.pred_iou_thresh > 0.0 else torch.ones_like(flat_iou, dtype=torch.bool)
        idx = torch.nonzero(keep).flatten()  # official order: prompt-major, output-minor
        prompt_idx, out_idx = idx // n_out, idx % n_out
        _, c, h, w = state.shape
        logits = []
        if idx.numel():
            used, inverse = torch.unique(prompt_idx, return_inverse=True)
            src = keys[used].transpose(1, 2).reshape(used.numel(), c, h, w)
            up = upscale(dec.output_upscaling, src)  # U × C' × 4h × 4w
            u, c2, h2, w2 = up.shape
            low = (hyper[used] @ up.view(u, c2, h2 * w2))[inverse, out_idx].view(idx.numel(), h2, w2)
            for s in range(0, idx.numel(), self.upsample_chunk):
                chunk = low[s : s + self.upsample_chunk][None]
                logits.append(model.postprocess_masks(chunk, self.predictor.input_size, self.predictor.original_size)[0])
        masks = torch.cat(logits) if logits else torch.zeros((0, *im_size), device=pts.device)
        data = MaskData(
            masks=masks,
            iou_preds=flat_iou[idx],
            points=torch.as_tensor(points.repeat(n_out, axis=0))[idx.cpu()],
        )
        data["stability_score"] = calculate_stability_score(data["masks"], model.mask_threshold, self.stability_score_offset)
        if self.stability_score_thresh > 0.0:
            data.filter(data["stability_score"] >= self.stability_score_thresh)
        data["masks"] = data["masks"] > model.mask_threshold
        data["boxes"] = batched_mask_to_box(data["masks"])
        keep_mask = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
        if not torch.all(keep_mask):
            data.filter(keep_mask)
        data["masks"] = uncrop_masks(data["masks"], crop_box, orig_h, orig_w)
        data["rles"] = mask_to_rle_pytorch(data["masks"])
        del data["masks"]
        return data
