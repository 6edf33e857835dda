"""AffinityNet post-processing (Ahn & Kwak, CVPR 2018, "Learning Pixel-level Semantic Affinity with
Image-level Supervision"), built from the paper's description. Arrays and tensors in, arrays out.

1. **Seeds.** From an image's CAMs ``M_c`` two background scores are made, ``(1 − max_c M_c)^α``
   (:func:`samcam.cam.label.power_background`): a low α keeps the background strong, so a class
   that still wins there is confident *foreground*; a high α weakens it, so where the background
   still wins it is confident *background*; every other pixel is neutral (255). :func:`seed_label`.
2. **Pair labels.** Pixel pairs closer than ``radius`` (in feature cells) with both ends confident
   are *positive* when their seeds agree (split into foreground and background pairs) and
   *negative* when they differ. :func:`pair_offsets`, :func:`pair_labels`.
3. **Affinity.** A network maps the image to a feature map ``f``; the affinity of a pair is
   ``exp(−mean_ch |f_i − f_j|)``, trained with ``L = L_fg⁺/4 + L_bg⁺/4 + L⁻/2`` (cross-entropy of
   each pair set, averaged within the set). :class:`AffinityHead`, :func:`affinity_loss`.
4. **Random walk.** ``A = affinity^β`` on the same pairs (and self-loops), ``T`` its
   column-normalised transition matrix, and the CAMs with background ``(1 − max M)^α`` are
   propagated ``t`` steps: ``vec(M*) = vec(M) · Tᵗ``; the label is the argmax. :func:`random_walk`.

Differences from the paper, all stated where results are reported: the backbone is one of samcam's
ImageNet EfficientNets (frozen) instead of ResNet-38, its features are taken at output stride 8
from three levels, and the seeds are not refined by a dense CRF.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from samcam.cam.label import power_background, scores_to_label, with_key_lookup

IGNORE = 255


@dataclass(frozen=True)
class AffinityConfig:
    """The method's constants; defaults are the paper's (ResNet-38 row: α 16, β 8, γ 5, t 256)."""

    low_alpha: float = 4.0
    high_alpha: float = 32.0
    radius: int | None = 5  # None: the radius the affinity head was trained with (samcam.pipeline.affinity)
    alpha: float = 16.0
    beta: float = 8.0
    steps: int = 256

    def __post_init__(self) -> None:
        for name in ("low_alpha", "high_alpha", "alpha", "beta"):
            v = getattr(self, name)
            if not (v > 0 and np.isfinite(v)):
                raise ValueError(f"{name} must be a positive number, not {v}")
        if self.low_alpha >= self.high_alpha:
            raise ValueError(f"low_alpha ({self.low_alpha}) must be below high_alpha ({self.high_alpha})")
        if self.radius is not None and not 2 <= self.radius <= 32:
            raise ValueError(f"radius must be in 2..32 feature cells, not {self.radius}")
        if self.steps < 0:
            raise ValueError(f"steps must be ≥ 0, not {self.steps}")


def with_background(cams: np.ndarray, alpha: float) -> np.ndarray:
    """``(K+1) × H × W``: :func:`samcam.cam.label.power_background` stacked before the ``K`` CAMs."""
    cams = np.asarray(cams, np.float32)
    return np.concatenate([power_background(cams, alpha)[None], cams])


def seed_label(cams: np.ndarray, keys: np.ndarray, low_alpha: float = 4.0, high_alpha: float = 32.0, n_classes: int = 21) -> np.ndarray:
    """Seeds from CAMs ``K × H × W`` of 0-based classes ``keys``: class ``k + 1`` where the low-α
    argmax is that class (confident foreground), 0 where the high-α argmax is background (confident
    background), :data:`IGNORE` elsewhere. ``uint8`` ``H × W``; keys outside the label space or NaN
    scores are a ``ValueError`` (:func:`samcam.cam.label.scores_to_label`)."""
    lookup = with_key_lookup(keys)
    fg = scores_to_label(with_background(cams, low_alpha), lookup, n_classes)
    bg = with_background(cams, high_alpha).argmax(0) == 0
    seeds = np.full(fg.shape, IGNORE, np.uint8)
    seeds[fg > 0] = fg[fg > 0]
    seeds[bg & (fg == 0)] = 0
    return seeds


def pair_offsets(radius: int) -> np.ndarray:
    """``(dy, dx)`` offsets with ``0 < dy² + dx² < radius²`` covering each unordered pair once
    (``dy > 0``, or ``dy = 0`` and ``dx > 0``): ``P × 2``."""
    r = radius - 1
    return np.array([(dy, dx) for dy in range(0, r + 1) for dx in range(-r, r + 1)
                     if (dy > 0 or dx > 0) and dy * dy + dx * dx < radius * radius], np.int64)  # fmt: skip


def _shifted(a: np.ndarray | torch.Tensor, dy: int, dx: int):
    """The two aligned views ``a[..., y, x]`` and ``a[..., y + dy, x + dx]`` over every ``(y, x)``
    where both lie inside the last two axes (empty when the offset exceeds the grid)."""
    h, w = a.shape[-2:]
    ny = max(0, h - dy)
    x0, x1 = max(0, -dx), max(max(0, -dx), w - max(0, dx))
    return a[..., :ny, x0:x1], a[..., h - ny :, x0 + dx : x1 + dx]


def pair_labels(seeds: np.ndarray, radius: int) -> dict[str, np.ndarray]:
    """For every offset of :func:`pair_offsets`, boolean ``fg``/``bg``/``neg`` masks over the pair
    grid of that offset, concatenated flat over offsets (the order of :func:`pair_affinities`)."""
    out = {"fg": [], "bg": [], "neg": []}
    for dy, dx in pair_offsets(radius):
        a, b = _shifted(seeds, int(dy), int(dx))
        valid = (a != IGNORE) & (b != IGNORE)
        same = a == b
        out["fg"].append((valid & same & (a > 0)).ravel())
        out["bg"].append((valid & same & (a == 0)).ravel())
        out["neg"].append((valid & ~same).ravel())
    return {k: np.concatenate(v) for k, v in out.items()}


def pair_affinities(features: torch.Tensor, radius: int) -> torch.Tensor:
    """``exp(−mean_ch |f_i − f_j|)`` for every pair of :func:`pair_offsets` of one ``C × h × w``
    feature map, flat in :func:`pair_labels` order."""
    g = features.permute(1, 2, 0).contiguous()  # h × w × C: each cell's channels contiguous (~6× faster)
    parts = []
    for dy, dx in pair_offsets(radius):
        a, b = _shifted(g.permute(2, 0, 1), int(dy), int(dx))
        parts.append(torch.exp(-(a.permute(1, 2, 0) - b.permute(1, 2, 0)).abs().mean(-1)).reshape(-1))
    return torch.cat(parts)


def affinity_loss(aff: torch.Tensor, labels: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """The paper's loss ``L_fg⁺/4 + L_bg⁺/4 + L⁻/2`` over pair affinities ``aff`` and boolean pair
    sets (``fg``, ``bg``, ``neg``); an empty set contributes 0. Returns the loss and each part."""
    eps = 1e-5
    parts = {}
    for name, weight in (("fg", 0.25), ("bg", 0.25), ("neg", 0.5)):
        m = labels[name].to(aff.dtype)
        term = -torch.log(aff + eps) if name != "neg" else -torch.log(1.0 + eps - aff)
        parts[name] = weight * (term * m).sum() / m.sum().clamp(min=1.0)
    loss = parts["fg"] + parts["bg"] + parts["neg"]
    return loss, {k: float(v.detach()) for k, v in parts.items()}


class AffinityHead(nn.Module):
    """The trained part of the affinity network: each backbone level gets a ``1 × 1`` convolution
    (64, 128, 256 channels for three levels, as the paper's ResNet-38 head) and ELU, all are resized
    to the finest level's grid and concatenated, and a last ``1 × 1`` convolution mixes them."""

    def __init__(self, in_channels: list[int], widths: tuple[int, ...] = (64, 128, 256)) -> None:
        super().__init__()
        if len(in_channels) != len(widths):
            raise ValueError(f"{len(in_channels)} backbone levels for {len(widths)} head widths")
        self.levels = nn.ModuleList(nn.Conv2d(c, w, 1, bias=False) for c, w in zip(in_channels, widths))
        self.mix = nn.Conv2d(sum(widths), sum(widths), 1, bias=False)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        h, w = levels[0].shape[-2:]
        parts = [F.elu(conv(x)) for conv, x in zip(self.levels, levels)]
        parts = [p if p.shape[-2:] == (h, w) else _upsample_to(p, h, w) for p in parts]
        return self.mix(torch.cat(parts, 1))


def _upsample_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A coarser level on the finest grid: upsampled by its integer stride ratio (cell ``i`` of the
    coarse grid covers fine cells ``f·i … f·i + f − 1``), then cut or edge-padded to ``h × w``."""
    f = max(1, round(h / x.shape[-2]))
    up = F.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False)[..., :h, :w]
    ph, pw = h - up.shape[-2], w - up.shape[-1]
    return F.pad(up, (0, pw, 0, ph), mode="replicate") if ph or pw else up


def transition_matrix(features: np.ndarray | torch.Tensor, radius: int, beta: float):
    """The random walk's column-stochastic ``T`` (scipy CSR, ``n × n`` for ``n = h·w`` cells) from
    one ``C × h × w`` affinity feature map: ``A_ij = affinity_ij^β`` on pairs closer than
    ``radius``, symmetric, with self-affinity 1."""
    from scipy import sparse

    f = torch.as_tensor(features, dtype=torch.float32)
    h, w = f.shape[-2:]
    index = np.arange(h * w).reshape(h, w)
    rows, cols, vals = [np.arange(h * w)], [np.arange(h * w)], [np.ones(h * w, np.float32)]
    with torch.no_grad():
        aff = pair_affinities(f, radius).pow(beta).numpy()
    start = 0
    for dy, dx in pair_offsets(radius):
        a, b = _shifted(index, int(dy), int(dx))
        n = a.size
        v = aff[start : start + n]
        start += n
        rows += [a.ravel(), b.ravel()]
        cols += [b.ravel(), a.ravel()]
        vals += [v, v]
    A = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(h * w, h * w))
    return (A @ sparse.diags(1.0 / np.asarray(A.sum(0)).ravel())).tocsr()


def random_walk(scores: np.ndarray, T, steps: int) -> np.ndarray:
    """``vec(M) · Tᵗ`` for score maps ``K × h × w`` on T's grid (each map a row vector)."""
    k, h, w = scores.shape
    v = scores.reshape(k, h * w).astype(np.float64)
    Tt = T.T.tocsr()
    for _ in range(steps):
        v = (Tt @ v.T).T
    return v.reshape(k, h, w).astype(np.float32)


def propagate(cams: np.ndarray, keys: np.ndarray, features: np.ndarray | torch.Tensor, config: AffinityConfig = AffinityConfig(),
              n_classes: int = 21) -> np.ndarray:  # fmt: skip
    """The label of one image: its CAMs ``K × H × W`` (0-based ``keys``) with background
    ``(1 − max)^α``, averaged onto the ``h × w`` grid of ``features``, walked ``steps`` times,
    upsampled back to ``H × W`` and argmaxed. ``uint8`` ``H × W`` with class values 0..n−1."""
    lookup = with_key_lookup(keys)
    if lookup.max() > n_classes - 1 or lookup.min() < 0:
        raise ValueError(f"CAM keys {np.asarray(keys).ravel().tolist()} outside the foreground classes 0..{n_classes - 2}")
    H, W = cams.shape[1:]
    h, w = features.shape[-2:]
    scores = torch.from_numpy(with_background(cams, config.alpha))[None]
    small = F.adaptive_avg_pool2d(scores, (h, w))[0].numpy()
    if config.radius is None:
        raise ValueError("the walk needs a radius (the affinity head's training radius)")
    walked = random_walk(small, transition_matrix(features, config.radius, config.beta), config.steps)
    full = F.interpolate(torch.from_numpy(walked)[None], size=(H, W), mode="bilinear", align_corners=False)[0]
    return scores_to_label(full.numpy(), lookup, n_classes)
