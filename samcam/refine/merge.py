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

Implementation: the class loop runs on the small ``N × K`` table of intersections ``|S_i ∩ C_k|``;
only the unions that are painted touch pixels. Two forms of the masks:

- run-length (:class:`~samcam.sam.masks.MaskRuns`, what a compact file decodes to without a dense
  array): with ``cum_k`` the running count of class-``k`` pixels in the runs' pixel order, a run
  ``[s, e)`` holds ``cum_k[e] − cum_k[s]`` pixels of ``k``, so the table costs one pass over the label
  per class present plus a gather per run; a union is the merged intervals of its masks' runs;
- dense (``N × H × W`` bool): bit-packed once (``N × H·W/8`` bytes); every intersection is a
  popcount of packed bits, and unions are bitwise ORs of packed rows, unpacked only to paint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from samcam.registry import lookup
from samcam.sam.masks import MaskRuns, MaskSet, PackedMasks, pack_masks

#: The paper repository's rules: (whether the coverage test is on, whether uncovered CAM pixels keep their class).
RULES: dict[str, tuple[bool, bool]] = {"max_iou": (False, False), "max_iou_imp": (False, True), "max_iou_imp2": (True, True)}
DEFAULT_RULE = "max_iou_imp2"
#: the paper's thresholds: a mask is taken when |S∩C| > MAJORITY·|S| (2|S∩C| − |S| > 0), or, by the
#: coverage test, when |S∩C| / |C| ≥ COVERAGE
MAJORITY = 0.5
COVERAGE = 0.85


@dataclass(frozen=True)
class MergeRule:
    """A merge rule: which tests take a mask, and whether uncovered CAM pixels are kept."""

    name: str = DEFAULT_RULE
    majority: float = MAJORITY  # take S if |S∩C| > majority·|S|  (0.5: 2|S∩C| − |S| > 0)
    coverage: float | None = COVERAGE  # also take S if |S∩C| / |C| ≥ coverage (None: test off)
    keep_uncovered: bool = True  # C \ U keeps label c

    def __post_init__(self) -> None:
        lookup(RULES, self.name, "merge rule")
        if not 0.0 <= self.majority <= 1.0:
            raise ValueError(f"majority {self.majority} outside [0, 1]")
        if self.coverage is not None and not 0.0 <= self.coverage <= 1.0:
            raise ValueError(f"coverage {self.coverage} outside [0, 1]")

    @classmethod
    def named(cls, name: str, majority: float = MAJORITY, coverage: float = COVERAGE) -> MergeRule:
        """The repository's rule ``name`` with the given thresholds."""
        coverage_test, keep_uncovered = lookup(RULES, name, "merge rule")
        return cls(name, majority, coverage if coverage_test else None, keep_uncovered)


@dataclass
class MergeResult:
    """The merged label and, for inspection, which class took each mask (0 = none)."""

    label: np.ndarray
    owner: np.ndarray  # (N,) class that took mask i, 0 if untaken
    intersections: np.ndarray  # (N, K) |S_i ∩ (P == k)| for k ≥ 1 (column 0, background, is not needed and may be 0)
    mask_area: np.ndarray  # (N,)
    class_area: np.ndarray  # (K,)


def pack(masks: np.ndarray) -> np.ndarray:
    """``N × H × W`` bool → bits, ``N × ⌈H·W/64⌉·8`` bytes (each mask's ``np.packbits`` then zero
    padding: rows are whole 64-bit words); one pass over the masks, all later work is on bits."""
    return pack_masks(masks)


def _popcount_rows(bits: np.ndarray) -> np.ndarray:
    """Set bits per row (``int64``), 64 bits at a time where the rows are whole words (as :func:`pack`
    makes them; plain ``np.packbits`` rows are counted byte by byte)."""
    if bits.shape[1] % 8 == 0:
        bits = np.ascontiguousarray(bits).view(np.uint64)
    return np.bitwise_count(bits).sum(axis=-1, dtype=np.int64)


def _class_bits(in_class: np.ndarray, width: int) -> np.ndarray:
    """A flat bool region packed like a mask row of ``width`` bytes."""
    out = np.zeros(width, dtype=np.uint8)
    bits = np.packbits(in_class)
    out[: len(bits)] = bits
    return out


def intersection_table(masks: np.ndarray | None, label: np.ndarray, n_classes: int, packed: np.ndarray | None = None) -> np.ndarray:
    """``N × K`` counts ``|S_i ∩ (label == k)|`` for the foreground classes ``k ≥ 1`` (column 0 stays 0).

    Masks and class regions are bit-packed, so each count is a popcount of ``N × H·W/8`` bytes
    (``np.bitwise_count``). Labels ≥ K (e.g. 255) are counted nowhere. ``masks`` may be ``None``
    when ``packed`` (their :func:`pack`) is given.
    """
    packed = pack(masks) if packed is None else packed
    n = packed.shape[0]
    table = np.zeros((n, n_classes), dtype=np.int64)
    if n == 0:
        return table
    flat_label = label.reshape(-1)
    for c in range(1, n_classes):
        in_c = flat_label == c
        if in_c.any():
            table[:, c] = _popcount_rows(packed & _class_bits(in_c, packed.shape[1]))
    return table


def _union(packed: np.ndarray, select: np.ndarray, size: int) -> np.ndarray:
    """Pixel mask (flat bool) of the union of the selected packed masks."""
    if not select.any():
        return np.zeros(size, dtype=bool)
    rows = np.ascontiguousarray(packed[select]).view(np.uint64)  # whole 64-bit words: OR them as such
    return np.unpackbits(np.bitwise_or.reduce(rows, axis=0).view(np.uint8), count=size).view(bool)


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


def _union_fill(starts: np.ndarray, ends: np.ndarray, size: int) -> np.ndarray:
    """Pixel mask (flat bool) of the union of runs ``[starts, ends)`` sorted by start: merge them into
    disjoint intervals (a running maximum of the ends), then fill gaps and intervals with
    ``np.repeat``, one write per pixel."""
    if not len(starts):
        return np.zeros(size, dtype=bool)
    reach = np.maximum.accumulate(ends)
    opens = np.empty(len(starts), dtype=bool)
    opens[0] = True
    np.greater(starts[1:], reach[:-1], out=opens[1:])  # starts past every earlier end: a new interval
    closes = np.empty_like(opens)
    closes[:-1], closes[-1] = opens[1:], True
    bounds = np.empty(2 * np.count_nonzero(opens) + 2, dtype=np.int64)
    bounds[0], bounds[-1] = 0, size
    bounds[1:-1:2], bounds[2:-1:2] = starts[opens], reach[closes]
    flags = np.zeros(len(bounds) - 1, dtype=bool)
    flags[1::2] = True
    return np.repeat(flags, np.diff(bounds))


def _merge_runs(label: np.ndarray, runs: MaskRuns, n_classes: int, rule: MergeRule) -> MergeResult:
    h, w = label.shape
    size = h * w
    n = len(runs)
    if size == 0:
        return _merge_packed(label, np.zeros((n, 0), dtype=np.uint8), n_classes, rule)
    flat = np.ascontiguousarray(label.T).reshape(-1) if runs.order == "F" else label.reshape(-1)  # the runs' pixel order
    # the label as runs of one value: starts lab_at, values lab_val; run_of[p] = the run holding pixel p
    lab_at = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    lab_len = np.diff(lab_at, append=size)
    lab_val = flat[lab_at]
    class_area = np.bincount(lab_val, weights=lab_len, minlength=n_classes)[:n_classes].astype(np.int64)
    n_lab = len(lab_at)
    lab_at_x = np.append(lab_at, size)  # with a sentinel run [size, size + 1) for ends at size
    run_of = np.repeat(np.arange(n_lab + 1, dtype=np.int32), np.append(lab_len, 1))
    # |S_i ∩ C| from the runs of S_i: pixels of class c before p = before[c][run_of[p]] + offset in that run
    j_s, j_e = run_of[runs.starts], run_of[runs.ends]
    table = np.zeros((n, n_classes), dtype=np.int64)
    for c in np.flatnonzero(class_area[1:]) + 1:
        is_c = np.append(lab_val == c, False)
        before = np.zeros(n_lab + 1, dtype=np.int64)
        np.cumsum(lab_len * is_c[:-1], out=before[1:])
        inside = before[j_e] + (runs.ends - lab_at_x[j_e]) * is_c[j_e] - before[j_s] - (runs.starts - lab_at[j_s]) * is_c[j_s]
        table[:, c] = runs.segment_sum(inside)
    mask_area = runs.area
    owner, steps = select_masks(table, mask_area, class_area, rule)

    # paint: out = max over steps of c·region_c (a later, larger class overwrites an earlier one)
    out = np.zeros(size, dtype=np.uint8)
    if steps:
        order = np.argsort(runs.starts, kind="stable")  # masks' runs are sorted: a merge of sorted lists
        s_sorted, e_sorted, mask_sorted = runs.starts[order], runs.ends[order], runs.mask_index[order]
        for c, take, available in steps:
            sel = take[mask_sorted]
            region = _union_fill(s_sorted[sel], e_sorted[sel], size)
            if rule.keep_uncovered:
                sel = available[mask_sorted]
                region |= (flat == c) & ~_union_fill(s_sorted[sel], e_sorted[sel], size)
            np.maximum(out, region.view(np.uint8) * np.uint8(c), out=out)
    out = np.ascontiguousarray(out.reshape(w, h).T) if runs.order == "F" else out.reshape(h, w)
    return MergeResult(out, owner, table, mask_area, class_area)


def merge(label: np.ndarray, masks: MaskSet | MaskRuns | PackedMasks | np.ndarray, n_classes: int, rule: MergeRule | str = DEFAULT_RULE) -> MergeResult:
    """Apply ``rule`` to pseudo label ``label`` (H × W) and ``masks``: a :class:`MaskSet`, N × H × W
    bool, or the lean forms :class:`~samcam.sam.masks.MaskRuns` and
    :class:`~samcam.sam.masks.PackedMasks`; every form gives the same result."""
    if isinstance(rule, str):
        rule = MergeRule.named(rule)
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"pseudo label must be 2-D, got shape {label.shape}")
    if isinstance(masks, (MaskRuns, PackedMasks)):
        if len(masks) and masks.shape != label.shape:
            raise ValueError(f"mask size {masks.shape} differs from label size {label.shape}")
        if isinstance(masks, MaskRuns):
            return _merge_runs(label, masks, n_classes, rule)
        return _merge_packed(label, masks.bits, n_classes, rule)
    m = masks.masks if isinstance(masks, MaskSet) else np.asarray(masks, dtype=bool)
    if m.ndim != 3:
        raise ValueError(f"masks must be N × H × W, got shape {m.shape}")
    if m.shape[0] and m.shape[1:] != label.shape:
        raise ValueError(f"mask size {m.shape[1:]} differs from label size {label.shape}")
    return _merge_packed(label, pack(m), n_classes, rule)


def _merge_packed(label: np.ndarray, packed: np.ndarray, n_classes: int, rule: MergeRule) -> MergeResult:
    flat = label.reshape(-1)
    n, size = len(packed), label.size
    table = np.zeros((n, n_classes), dtype=np.int64)
    class_area = _class_area(flat, n_classes)
    is_class = {}
    for c in np.flatnonzero(class_area[1:]) + 1:
        is_class[c] = flat == c
        if n:
            table[:, c] = _popcount_rows(packed & _class_bits(is_class[c], packed.shape[1]))
    mask_area = _popcount_rows(packed)
    owner, steps = select_masks(table, mask_area, class_area, rule)

    out = np.zeros(size, dtype=np.uint8)
    for c, take, available in steps:  # ascending classes: a later one overwrites, so out = max
        region = _union(packed, take, size)
        if rule.keep_uncovered:
            region |= is_class[c] & ~_union(packed, available, size)
        np.maximum(out, region.view(np.uint8) * np.uint8(c), out=out)
    return MergeResult(out.reshape(label.shape), owner, table, mask_area, class_area)


def _class_area(flat: np.ndarray, n_classes: int) -> np.ndarray:
    """``|label == k|`` for ``k < n_classes``, counted on the label's runs of equal values (a label
    map has few), not pixel by pixel."""
    if not flat.size:
        return np.zeros(n_classes, dtype=np.int64)
    at = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    area = np.bincount(flat[at], weights=np.diff(at, append=flat.size), minlength=n_classes)
    return area[:n_classes].astype(np.int64)


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
