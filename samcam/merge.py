"""Label class-agnostic SAM masks with a CAM pseudo label: the paper's merge rules.

The official default, ``max_iou_imp2`` (cskyl/SAM_WSSS ``merge/max_iou_imp2.py``). Input: a pseudo
label ``P`` (class indices, 0 = background) and binary masks ``S_1..S_N`` of the same image. The output
starts all 0. For each class ``c = 1..K-1`` present in ``P``, in ascending order, with ``C = (P == c)``:

1. ``U`` = the union of every mask not yet taken by an earlier class;
2. an available mask ``S`` is taken for ``c`` if more than half of it lies in ``C``
   (``2|S∩C| − |S| > 0``) *or* it covers at least 85% of ``C`` (``|S∩C| / |C| ≥ 0.85``);
   taken masks are unavailable to later classes;
3. ``out[(∪ masks taken for c) ∪ (C \\ U)] = c``: pixels of ``C`` no available mask covers keep the CAM
   label; a later class overwrites an earlier one where they overlap.

Consequences of the paper's rule, kept on purpose: CAM foreground covered only by masks that no class
takes becomes background; a value 255 in ``P`` (or any value ≥ K) becomes 0 unless a taken mask covers
it; the result does not depend on the order of the masks.

The two other rules of the repository: ``max_iou`` (majority test only, no CAM fallback) and
``max_iou_imp`` (majority test plus the ``C \\ U`` fallback). Both thresholds are parameters.

Implementation: the masks are bit-packed once (``N × H·W/8`` bytes); every intersection is a popcount
of packed bits, the class loop then runs on the small ``N × K`` table, and unions of masks are
bitwise ORs of packed rows, unpacked only to paint the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .masks import MaskSet

RULES = ("max_iou", "max_iou_imp", "max_iou_imp2")
DEFAULT_RULE = "max_iou_imp2"


@dataclass(frozen=True)
class MergeRule:
    """A merge rule: which tests take a mask, and whether uncovered CAM pixels are kept."""

    name: str = DEFAULT_RULE
    majority: float = 0.5  # take S if |S∩C| > majority·|S|  (0.5: 2|S∩C| − |S| > 0)
    coverage: float | None = 0.85  # also take S if |S∩C| / |C| ≥ coverage (None: test off)
    keep_uncovered: bool = True  # C \ U keeps label c

    @classmethod
    def named(cls, name: str, majority: float = 0.5, coverage: float = 0.85) -> MergeRule:
        """The repository's rule ``name`` with the given thresholds."""
        if name == "max_iou":
            return cls(name, majority, None, False)
        if name == "max_iou_imp":
            return cls(name, majority, None, True)
        if name == "max_iou_imp2":
            return cls(name, majority, coverage, True)
        raise ValueError(f"unknown merge rule {name!r}; known: {', '.join(RULES)}")


@dataclass
class MergeResult:
    """The merged label and, for inspection, which class took each mask (0 = none)."""

    label: np.ndarray
    owner: np.ndarray  # (N,) class that took mask i, 0 if untaken
    intersections: np.ndarray  # (N, K) |S_i ∩ (P == k)|
    mask_area: np.ndarray  # (N,)
    class_area: np.ndarray  # (K,)


def pack(masks: np.ndarray) -> np.ndarray:
    """``N × H × W`` bool → ``N × ⌈H·W/8⌉`` bits (one pass over the masks; all later work is on bits)."""
    n = masks.shape[0]
    return np.packbits(masks.reshape(n, masks.shape[1] * masks.shape[2]), axis=1)


def intersection_table(masks: np.ndarray, label: np.ndarray, n_classes: int, packed: np.ndarray | None = None) -> np.ndarray:
    """``N × K`` counts ``|S_i ∩ (label == k)|`` for the foreground classes ``k ≥ 1`` (column 0 stays 0).

    Masks and class regions are bit-packed, so each count is a popcount of ``N × H·W/8`` bytes
    (``np.bitwise_count``). Labels ≥ K (e.g. 255) are counted nowhere.
    """
    n = masks.shape[0]
    table = np.zeros((n, n_classes), dtype=np.int64)
    if n == 0:
        return table
    packed = pack(masks) if packed is None else packed
    flat_label = label.reshape(-1)
    present = np.flatnonzero(np.bincount(flat_label, minlength=n_classes)[1:n_classes]) + 1
    for c in present:
        table[:, c] = np.bitwise_count(packed & np.packbits(flat_label == c)).sum(axis=1, dtype=np.int64)
    return table


def _union(packed: np.ndarray, select: np.ndarray, size: int) -> np.ndarray:
    """Pixel mask (flat bool) of the union of the selected packed masks."""
    if not select.any():
        return np.zeros(size, dtype=bool)
    return np.unpackbits(np.bitwise_or.reduce(packed[select], axis=0), count=size).view(bool)


def select_masks(
    table: np.ndarray, mask_area: np.ndarray, class_area: np.ndarray, rule: MergeRule
) -> tuple[np.ndarray, list[tuple[int, np.ndarray, np.ndarray]]]:
    """Resolve the class loop on the intersection table.

    Returns ``owner`` (class that took each mask, 0 = none) and, per class present in ascending order,
    ``(c, taken, available)``: the masks taken for ``c`` and the masks available when ``c`` was handled.
    """
    n, k = table.shape
    owner = np.zeros(n, dtype=np.int64)
    steps = []
    taken_any = np.zeros(n, dtype=bool)
    for c in range(1, k):
        if class_area[c] == 0:
            continue
        inter = table[:, c]
        available = ~taken_any
        if rule.majority == 0.5:
            take = 2 * inter - mask_area > 0  # exact integer form of the official test
        else:
            take = inter > rule.majority * mask_area
        if rule.coverage is not None:
            take |= inter / class_area[c] >= rule.coverage
        take &= available
        owner[take] = c
        steps.append((c, take, available))
        taken_any |= take
    return owner, steps


def merge(label: np.ndarray, masks: MaskSet | np.ndarray, n_classes: int, rule: MergeRule | str = DEFAULT_RULE) -> MergeResult:
    """Apply ``rule`` to pseudo label ``label`` (H × W) and ``masks`` (a :class:`MaskSet` or N × H × W bool)."""
    if isinstance(rule, str):
        rule = MergeRule.named(rule)
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"pseudo label must be 2-D, got shape {label.shape}")
    m = masks.masks if isinstance(masks, MaskSet) else np.asarray(masks, dtype=bool)
    if m.ndim != 3:
        raise ValueError(f"masks must be N × H × W, got shape {m.shape}")
    if m.shape[0] and m.shape[1:] != label.shape:
        raise ValueError(f"mask size {m.shape[1:]} differs from label size {label.shape}")
    lab = label.astype(np.int64, copy=False)
    class_area = np.bincount(lab.reshape(-1), minlength=n_classes)[:n_classes]
    packed = pack(m)
    table = intersection_table(m, lab, n_classes, packed)
    mask_area = np.bitwise_count(packed).sum(axis=1, dtype=np.int64)
    owner, steps = select_masks(table, mask_area, class_area, rule)

    size = label.size
    out = np.zeros(size, dtype=np.uint8)
    flat = lab.reshape(-1)
    for c, take, available in steps:
        region = _union(packed, take, size)
        if rule.keep_uncovered:
            region |= (flat == c) & ~_union(packed, available, size)
        out[region] = c
    out = out.reshape(label.shape)
    return MergeResult(out, owner, table, mask_area, class_area)


def explain(res: MergeResult, rule: MergeRule | str = DEFAULT_RULE, class_names: tuple[str, ...] | None = None):
    """A table of every mask's tests for every class present: why each mask was (not) taken.

    Columns per mask: area, then for each class ``c`` present ``|S∩C|``, the majority test, the
    coverage test, and finally the class that took it (``-`` for none). For teaching and debugging.
    """
    import pandas as pd

    if isinstance(rule, str):
        rule = MergeRule.named(rule)
    names = class_names or tuple(str(i) for i in range(len(res.class_area)))
    df = pd.DataFrame({"mask": np.arange(len(res.owner)), "area": res.mask_area})
    for c in np.flatnonzero(res.class_area[1:]) + 1:
        inter = res.intersections[:, c]
        df[f"|S∩{names[c]}|"] = inter
        df[f"{names[c]}: >{rule.majority:g} inside"] = inter > rule.majority * res.mask_area
        if rule.coverage is not None:
            df[f"{names[c]}: covers ≥{rule.coverage:g}"] = inter / res.class_area[c] >= rule.coverage
    df["taken by"] = [names[o] if o else "-" for o in res.owner]
    return df
