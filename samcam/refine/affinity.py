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

As in the paper's code (``jiwoon-ahn/psa``): the seeds' score maps are refined by a dense CRF
(:mod:`samcam.refine.crf`) and averaged over the cells of the feature grid before the argmax
(:func:`cell_seeds`); the head ends in an ELU and is initialised as PSA's; its learning rate is 10×
the base rate, without momentum, as PSA's optimiser actually ran (:mod:`samcam.pipeline.affinity`).

Differences from the paper's code, all stated where results are reported:

- the backbone is one of samcam's ImageNet EfficientNets, frozen, instead of a fine-tuned ResNet-38;
- the cells are the backbone's stride-8 grid (``⌈H/8⌉ × ⌈W/8⌉``) and scores are averaged onto it by
  adaptive pooling and brought back by bilinear interpolation to ``H × W``; PSA zero-pads the image
  to a multiple of 8 and pools exact 8 × 8 blocks (bins differ by up to a few pixels);
- pairs start from every cell of the grid; PSA's index lists leave out pairs that start in the last
  ``radius − 1`` rows or the first and last ``radius − 1`` columns (its border cells have fewer edges);
- the loss averages each pair set per image, then over the batch (PSA: over the whole batch).

Beyond the paper: :func:`alphas_for_threshold` ties the three background powers to the CAM's own
threshold instead of PSA's 4 / 16 / 32; :func:`label_seeds` takes seeds from any hard pseudo label
(e.g. CAM + SAM); :func:`segment_transition` walks on affinities taken from a ground-truth label (a
diagnostic: how far the walk alone can go).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from samcam.cam.label import power_background, scores_to_label, with_key_lookup
from samcam.config import check_settings, setting

IGNORE = 255


#: the most random-walk steps a config accepts (PSA and IRN walk 256: T squared 8 times); more only
#: costs time (each step is one product with the transition matrix)
MAX_WALK_STEPS = 4096
#: the largest background or affinity power a config accepts (PSA: α 4-32, β 8); far above, the
#: powers only underflow to zero
MAX_POWER = 256.0


@dataclass(frozen=True)
class AffinityConfig:
    """The method's constants; defaults are the paper's (ResNet-38 row: α 16, β 8, γ 5, t 256)."""

    low_alpha: float = 4.0
    high_alpha: float = 32.0
    radius: int | None = 5  # None: the radius the affinity head was trained with (samcam.pipeline.affinity)
    alpha: float = 16.0
    beta: float = setting(8.0, 0.0, MAX_POWER, "affinity power β", open_lo=True)
    steps: int = setting(256, 0, MAX_WALK_STEPS, "random-walk steps t")

    def __post_init__(self) -> None:
        check_settings(self, "affinity")
        for name in ("low_alpha", "high_alpha", "alpha", "beta"):
            v = getattr(self, name)
            if not (0 < v <= MAX_POWER):
                raise ValueError(f"{name} must be a number in (0, {MAX_POWER:g}], not {v}")
        if self.low_alpha >= self.high_alpha:
            raise ValueError(f"low_alpha ({self.low_alpha}) must be below high_alpha ({self.high_alpha})")
        if self.radius is not None and not 2 <= self.radius <= 32:
            raise ValueError(f"radius must be in 2..32 feature cells, not {self.radius}")


def with_background(cams: np.ndarray, alpha: float) -> np.ndarray:
    """``(K+1) × H × W``: :func:`samcam.cam.label.power_background` stacked before the ``K`` CAMs."""
    cams = np.asarray(cams, np.float32)
    return np.concatenate([power_background(cams, alpha)[None], cams])


def alphas_for_threshold(threshold: float) -> tuple[float, float, float]:
    """``(low, walk, high)`` background powers tied to a CAM's background threshold ``t``: the walk's
    ``α`` makes ``(1 − m)^α`` cross ``m`` at ``m = t`` (``α = ln t / ln(1 − t)``), so the walk starts
    from the CAM's own label; the seed powers keep PSA's ratios to its α 16 (4 and 32: ``α/4``, ``2α``).
    PSA's 16 is the value for ``t ≈ 0.12``."""
    t = float(threshold)
    if not 0.0 < t < 1.0:
        raise ValueError(f"a background threshold strictly between 0 and 1 is needed, not {threshold}")
    alpha = float(np.log(t) / np.log1p(-t))
    return alpha / 4.0, alpha, 2.0 * alpha


def _seeds_from_scores(low: np.ndarray, high: np.ndarray, lookup: np.ndarray, n_classes: int) -> np.ndarray:
    """PSA's seed rule on the two score stacks ``[background, classes…]``: the low-α winner where it
    is a class, background where the high-α winner is background (it overrides), neutral elsewhere."""
    fg = scores_to_label(low, lookup, n_classes)
    seeds = np.where(fg > 0, fg, IGNORE).astype(np.uint8)
    seeds[np.argmax(high, axis=0) == 0] = 0
    return seeds


def seed_label(cams: np.ndarray, keys: np.ndarray, low_alpha: float = 4.0, high_alpha: float = 32.0, n_classes: int = 21) -> np.ndarray:
    """Seeds from CAMs ``K × H × W`` of 0-based classes ``keys``: class ``k + 1`` where the low-α
    argmax is that class (confident foreground), 0 where the high-α argmax is background (confident
    background), :data:`IGNORE` elsewhere. ``uint8`` ``H × W``; keys outside the label space or NaN
    scores are a ``ValueError`` (:func:`samcam.cam.label.scores_to_label`)."""
    return _seeds_from_scores(with_background(cams, low_alpha), with_background(cams, high_alpha), with_key_lookup(keys), n_classes)


def cell_seeds(cams: np.ndarray, keys: np.ndarray, grid: tuple[int, int], low_alpha: float = 4.0, high_alpha: float = 32.0,
               image: np.ndarray | None = None, crf=None, n_classes: int = 21) -> np.ndarray:  # fmt: skip
    """Seeds on a feature ``grid`` (``h × w``), as the paper's code makes them: the low- and high-α
    score stacks of :func:`seed_label`, each refined by :func:`samcam.refine.crf.dense_crf` on the RGB
    ``image`` when ``crf`` (a :class:`~samcam.refine.crf.CRFConfig`) is given, averaged over each
    cell (adaptive average pooling), then :func:`seed_label`'s rule per cell."""
    stacks = [with_background(cams, a) for a in (low_alpha, high_alpha)]
    if crf is not None:
        from samcam.refine.crf import dense_crf

        if image is None:
            raise ValueError("a CRF needs the image")
        stacks = [dense_crf(image, s, crf) for s in stacks]
    low, high = (F.adaptive_avg_pool2d(torch.from_numpy(s)[None], grid)[0].numpy() for s in stacks)
    return _seeds_from_scores(low, high, with_key_lookup(keys), n_classes)


def _cell_shares(label: np.ndarray, classes, grid: tuple[int, int]) -> np.ndarray:
    """``len(classes) × h × w``: the share of each cell's pixels (adaptive average pooling onto
    ``grid``) that hold each of ``classes`` in the label ``H × W``."""
    onehot = np.stack([np.asarray(label) == c for c in classes]).astype(np.float32)
    return F.adaptive_avg_pool2d(torch.from_numpy(onehot)[None], grid)[0].numpy()


def label_seeds(label: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Seeds on a feature ``grid`` from a hard pseudo label ``H × W``: a cell takes the label's class
    where every pixel it averages (adaptive average pooling) has that class, :data:`IGNORE` where it
    is mixed (object boundaries: the neutral band) or holds :data:`IGNORE` pixels."""
    classes = np.unique(label)
    share = _cell_shares(label, classes, grid)
    seeds = np.full(grid, IGNORE, np.uint8)
    pure = share.max(0) >= 1.0 - 1e-6
    seeds[pure] = classes[share.argmax(0)[pure]].astype(np.uint8)
    return seeds


def segment_cells(label: np.ndarray, grid: tuple[int, int], n_classes: int = 21) -> np.ndarray:
    """A ground-truth label ``H × W`` on a ``grid``: each cell's most frequent class, :data:`IGNORE`
    pixels left out (a cell of only :data:`IGNORE` stays :data:`IGNORE`)."""
    counts = _cell_shares(label, range(n_classes), grid)
    cells = counts.argmax(0).astype(np.uint8)
    cells[counts.max(0) <= 0] = IGNORE
    return cells


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
    """The trained part of the affinity network, as PSA's ``resnet38_aff``: each backbone level gets
    a ``1 × 1`` convolution (64, 128, 256 channels for three levels) and ELU, all are resized to the
    finest level's grid and concatenated, and a last ``1 × 1`` convolution mixes them, followed by an
    ELU. Initialisation as PSA's: Kaiming-normal for the level convolutions, Xavier-uniform with
    gain 4 for the last one."""

    version = "psa-elu"  # written into checkpoints; an earlier head (no final ELU) is refused on load

    def __init__(self, in_channels: list[int], widths: tuple[int, ...] = (64, 128, 256)) -> None:
        super().__init__()
        if len(in_channels) != len(widths):
            raise ValueError(f"{len(in_channels)} backbone levels for {len(widths)} head widths")
        self.levels = nn.ModuleList(nn.Conv2d(c, w, 1, bias=False) for c, w in zip(in_channels, widths))
        self.mix = nn.Conv2d(sum(widths), sum(widths), 1, bias=False)
        for conv in self.levels:
            nn.init.kaiming_normal_(conv.weight)
        nn.init.xavier_uniform_(self.mix.weight, gain=4)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        h, w = levels[0].shape[-2:]
        parts = [F.elu(conv(x)) for conv, x in zip(self.levels, levels)]
        parts = [p if p.shape[-2:] == (h, w) else _upsample_to(p, h, w) for p in parts]
        return F.elu(self.mix(torch.cat(parts, 1)))


def _upsample_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A coarser level on the finest grid: upsampled by its integer stride ratio (cell ``i`` of the
    coarse grid covers fine cells ``f·i … f·i + f − 1``), then cut or edge-padded to ``h × w``."""
    f = max(1, round(h / x.shape[-2]))
    up = F.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False)[..., :h, :w]
    ph, pw = h - up.shape[-2], w - up.shape[-1]
    return F.pad(up, (0, pw, 0, ph), mode="replicate") if ph or pw else up


def _transition(aff: np.ndarray, h: int, w: int, radius: int):
    """Column-stochastic ``T`` (scipy CSR) of pair affinities ``aff`` in :func:`pair_offsets`
    order on an ``h × w`` grid: symmetric, with self-affinity 1."""
    from scipy import sparse

    index = np.arange(h * w).reshape(h, w)
    rows, cols, vals = [np.arange(h * w)], [np.arange(h * w)], [np.ones(h * w, np.float32)]
    start = 0
    for dy, dx in pair_offsets(radius):
        a, b = _shifted(index, int(dy), int(dx))
        v = aff[start : start + a.size]
        start += a.size
        rows += [a.ravel(), b.ravel()]
        cols += [b.ravel(), a.ravel()]
        vals += [v, v]
    A = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(h * w, h * w))
    return (A @ sparse.diags(1.0 / np.asarray(A.sum(0)).ravel())).tocsr()


def transition_matrix(features: np.ndarray | torch.Tensor, radius: int, beta: float):
    """The random walk's column-stochastic ``T`` (scipy CSR, ``n × n`` for ``n = h·w`` cells) from
    one ``C × h × w`` affinity feature map: ``A_ij = affinity_ij^β`` on pairs closer than
    ``radius``, symmetric, with self-affinity 1."""
    f = torch.as_tensor(features, dtype=torch.float32)
    with torch.no_grad():
        aff = pair_affinities(f, radius).pow(beta).numpy()
    return _transition(aff, *f.shape[-2:], radius)


def segment_transition(cells: np.ndarray, radius: int):
    """``T`` of affinities taken from a label on the grid (:func:`segment_cells`): 1 between cells of
    the same value, 0 across (the walk's upper bound when the affinity is perfect). Cells holding
    only void (:data:`IGNORE`) count as one more value: they exchange scores with each other only."""
    cells = np.asarray(cells)
    aff = np.concatenate([(a == b).ravel() for a, b in (_shifted(cells, int(dy), int(dx)) for dy, dx in pair_offsets(radius))])
    return _transition(aff.astype(np.float32), *cells.shape, radius)


def random_walk(scores: np.ndarray, T, steps: int) -> np.ndarray:
    """``vec(M) · Tᵗ`` for score maps ``K × h × w`` on T's grid (each map a row vector)."""
    k, h, w = scores.shape
    v = scores.reshape(k, h * w).astype(np.float64)
    Tt = T.T.tocsr()
    for _ in range(steps):
        v = (Tt @ v.T).T
    return v.reshape(k, h, w).astype(np.float32)


def walk_labels(cams: np.ndarray, keys: np.ndarray, T, grid: tuple[int, int], alphas, steps: int, n_classes: int = 21) -> list[np.ndarray]:
    """The label of one image at each background power in ``alphas``: its CAMs ``K × H × W`` (0-based
    ``keys``) with background ``(1 − max)^α``, averaged onto the ``grid`` of the transition matrix
    ``T``, walked ``steps`` times, upsampled back to ``H × W`` and argmaxed. Pooling, walk and
    upsampling act on each map alone, so the ``K`` class maps are walked once and each α adds one
    background map. ``uint8`` ``H × W`` labels with class values 0..n−1, in the order of ``alphas``."""
    lookup = with_key_lookup(keys)
    if lookup.max() > n_classes - 1 or lookup.min() < 0:
        raise ValueError(f"CAM keys {np.asarray(keys).ravel().tolist()} outside the foreground classes 0..{n_classes - 2}")
    alphas = [float(a) for a in alphas]
    if not alphas:
        raise ValueError("no background power to walk at")
    cams = np.asarray(cams, np.float32)
    H, W = cams.shape[1:]
    maps = np.concatenate([np.stack([power_background(cams, a) for a in alphas]), cams])
    small = F.adaptive_avg_pool2d(torch.from_numpy(maps)[None], grid)[0].numpy()
    walked = random_walk(small, T, steps)
    full = F.interpolate(torch.from_numpy(walked)[None], size=(H, W), mode="bilinear", align_corners=False)[0].numpy()
    classes = full[len(alphas) :]
    return [scores_to_label(np.concatenate([full[j : j + 1], classes]), lookup, n_classes) for j in range(len(alphas))]


def walk_label(cams: np.ndarray, keys: np.ndarray, T, grid: tuple[int, int], alpha: float, steps: int, n_classes: int = 21) -> np.ndarray:
    """:func:`walk_labels` at one background power ``alpha``."""
    return walk_labels(cams, keys, T, grid, (alpha,), steps, n_classes)[0]


def propagate_alphas(cams: np.ndarray, keys: np.ndarray, features: np.ndarray | torch.Tensor, config: AffinityConfig, alphas,
                     n_classes: int = 21) -> list[np.ndarray]:  # fmt: skip
    """:func:`walk_labels` on the affinities of an affinity feature map ``C × h × w``, at each
    background power in ``alphas`` (``config.alpha`` is not used)."""
    if config.radius is None:
        raise ValueError("the walk needs a radius (the affinity head's training radius)")
    T = transition_matrix(features, config.radius, config.beta)
    return walk_labels(cams, keys, T, tuple(features.shape[-2:]), alphas, config.steps, n_classes)


def propagate(cams: np.ndarray, keys: np.ndarray, features: np.ndarray | torch.Tensor, config: AffinityConfig = AffinityConfig(),
              n_classes: int = 21) -> np.ndarray:  # fmt: skip
    """:func:`propagate_alphas` at ``config.alpha``."""
    return propagate_alphas(cams, keys, features, config, (config.alpha,), n_classes)[0]


def ground_truth_walk(cams: np.ndarray, keys: np.ndarray, gt: np.ndarray, config: AffinityConfig = AffinityConfig(), stride: int = 8,
                      n_classes: int = 21) -> np.ndarray:  # fmt: skip
    """:func:`walk_label` on :func:`segment_transition` of the ground truth ``gt`` at cells of
    ``stride`` pixels (uses ground truth: a diagnostic, never a pseudo label)."""
    H, W = np.asarray(gt).shape
    grid = (-(-H // stride), -(-W // stride))
    T = segment_transition(segment_cells(gt, grid, n_classes), config.radius or 5)
    return walk_label(cams, keys, T, grid, config.alpha, config.steps, n_classes)
