"""Class-agnostic mask sets in memory (what SAM's "segment everything" mode returns). Arrays in,
arrays out; the file formats that store them are in :mod:`samcam.sam.mask_files`.

:class:`MaskSet` holds the records that ``SamAutomaticMaskGenerator.generate`` returns (masks as
boolean arrays, ``area``, ``bbox``, ``predicted_iou``, ``point_coords``, ``stability_score``,
``crop_box``). For the merge, two lean forms hold only the masks and never a dense ``N × H × W``
array: :class:`MaskRuns` (runs of ones; COCO RLE strings decode straight to it, all masks in one
vectorised pass) and :class:`PackedMasks` (bits, packed as each mask is decoded).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

@dataclass
class MaskSet:
    """``N`` binary masks of one ``H × W`` image, with SAM's per-mask scores.

    ``masks`` is ``N × H × W`` bool. Scores default to NaN (unknown) when a source lacks them.
    ``meta`` carries provenance (model, checkpoint hash, generator settings).
    """

    masks: np.ndarray
    predicted_iou: np.ndarray | None = None
    stability_score: np.ndarray | None = None
    point_coords: np.ndarray | None = None  # N × 2 (x, y)
    crop_box: np.ndarray | None = None  # N × 4 (x, y, w, h)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        m = np.asarray(self.masks)
        if m.ndim == 2 and m.size == 0:
            m = m.reshape(0, *m.shape)
        if m.ndim != 3:
            raise ValueError(f"masks must be N × H × W, got shape {m.shape}")
        self.masks = m.astype(bool, copy=False)
        n, h, w = self.masks.shape
        nan = lambda *s: np.full(s, np.nan)
        self.predicted_iou = _vec(self.predicted_iou, (n,), nan(n))
        self.stability_score = _vec(self.stability_score, (n,), nan(n))
        self.point_coords = _vec(self.point_coords, (n, 2), nan(n, 2))
        self.crop_box = _vec(self.crop_box, (n, 4), np.tile([0.0, 0.0, w, h], (n, 1)))

    def __len__(self) -> int:
        return self.masks.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """Image size ``(H, W)``."""
        return self.masks.shape[1], self.masks.shape[2]

    @property
    def area(self) -> np.ndarray:
        return self.masks.reshape(len(self), self.shape[0] * self.shape[1]).sum(axis=1)

    @property
    def bbox(self) -> np.ndarray:
        """``N × 4`` boxes in XYWH, as SAM reports them (0-size masks give zeros); pycocotools' ``toBbox``
        on the masks' RLEs, whose widths and heights count pixels, so one is taken off as SAM does."""
        from pycocotools import mask as mask_utils

        if not len(self):
            return np.zeros((0, 4), dtype=np.int64)
        boxes = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(self.masks.transpose(1, 2, 0).astype(np.uint8))))
        boxes = np.atleast_2d(boxes).astype(np.int64)
        boxes[:, 2:] = np.maximum(boxes[:, 2:] - 1, 0)
        return boxes

    def check_shape(self, shape: tuple[int, int], source: str | os.PathLike = "<masks>") -> None:
        """Raise ``ValueError`` naming ``source`` when the masks are not ``shape`` (an empty set too:
        every set says its image's size, :func:`samcam.sam.mask_files.check_mask_size`)."""
        if self.shape != tuple(shape):
            raise ValueError(f"{source}: mask size {self.shape} differs from label size {tuple(shape)}")

    # ------------------------------------------------------------------ records (generator output)

    @classmethod
    def from_records(cls, records: list[dict[str, Any]], shape: tuple[int, int] | None = None, meta: dict | None = None) -> MaskSet:
        """From ``SamAutomaticMaskGenerator.generate`` output (``binary_mask`` or ``coco_rle`` mode)."""
        if not records:
            if shape is None:
                raise ValueError("an empty record list needs the image shape")
            return cls(np.zeros((0, *shape), dtype=bool), meta=meta or {})
        seg = [r["segmentation"] for r in records]
        if isinstance(seg[0], dict):
            from pycocotools import mask as mask_utils

            decoded = mask_utils.decode([_rle_bytes(s) for s in seg])  # H × W × N, one call for all
            masks = np.ascontiguousarray(decoded.transpose(2, 0, 1)).astype(bool)
        else:
            masks = np.stack([np.asarray(s, dtype=bool) for s in seg])
        return cls(
            masks,
            predicted_iou=np.array([r.get("predicted_iou", np.nan) for r in records], dtype=float),
            stability_score=np.array([r.get("stability_score", np.nan) for r in records], dtype=float),
            point_coords=np.array([np.ravel(r.get("point_coords", [[np.nan, np.nan]]))[:2] for r in records], dtype=float),
            crop_box=np.array([r["crop_box"] for r in records], dtype=float) if "crop_box" in records[0] else None,
            meta=meta or {},
        )

    def to_records(self) -> list[dict[str, Any]]:
        """The list-of-dicts layout of ``SamAutomaticMaskGenerator.generate`` (``binary_mask`` mode)."""
        area, bbox = self.area, self.bbox
        return [
            {
                "segmentation": self.masks[i].copy(),
                "area": int(area[i]),
                "bbox": [int(v) for v in bbox[i]],
                "predicted_iou": float(self.predicted_iou[i]),
                "point_coords": [[float(v) for v in self.point_coords[i]]],
                "stability_score": float(self.stability_score[i]),
                "crop_box": [plain_number(v) for v in self.crop_box[i]],
            }
            for i in range(len(self))
        ]


def _vec(value, shape: tuple[int, ...], default: np.ndarray) -> np.ndarray:
    if value is None:
        return default
    arr = np.asarray(value, dtype=float)
    if arr.size == 0 and shape[0] == 0:
        return arr.reshape(shape)
    return arr.reshape(shape)


def plain_number(v: float) -> int | float:
    """A whole number as ``int``, else a ``float`` (how records and files write numbers)."""
    return int(v) if float(v).is_integer() else float(v)


def _rle_bytes(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


# ----------------------------------------------------------------------------- run-length form


@dataclass
class MaskRuns:
    """``N`` binary masks of one ``H × W`` image as runs of ones: what the merge rule needs, without
    a dense ``N × H × W`` array.

    Mask ``i`` is the union of the half-open intervals ``[starts[j], ends[j])`` for
    ``j in range(offsets[i], offsets[i + 1])``, in flat pixel indices of ``order``: ``"F"`` (column
    major, ``x·H + y``, as COCO RLE counts) or ``"C"`` (row major, ``y·W + x``). Within a mask the
    runs are sorted and disjoint.
    """

    shape: tuple[int, int]
    starts: np.ndarray
    ends: np.ndarray
    offsets: np.ndarray  # (N + 1,)
    order: str = "F"

    def __post_init__(self) -> None:
        self.shape = (int(self.shape[0]), int(self.shape[1]))
        self.starts = np.asarray(self.starts, dtype=np.int64)
        self.ends = np.asarray(self.ends, dtype=np.int64)
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        if self.order not in ("F", "C"):
            raise ValueError(f"order must be 'F' or 'C', got {self.order!r}")
        if self.starts.shape != self.ends.shape or self.offsets.ndim != 1 or not len(self.offsets) or self.offsets[-1] != len(self.starts):
            raise ValueError("inconsistent runs: starts, ends and offsets do not match")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def mask_index(self) -> np.ndarray:
        """The mask each run belongs to."""
        return np.repeat(np.arange(len(self)), np.diff(self.offsets))

    def segment_sum(self, per_run: np.ndarray) -> np.ndarray:
        """Per-mask sums of a per-run quantity (exact integers)."""
        cs = np.zeros(len(per_run) + 1, dtype=np.int64)
        np.cumsum(per_run, out=cs[1:])
        return cs[self.offsets[1:]] - cs[self.offsets[:-1]]

    @property
    def area(self) -> np.ndarray:
        return self.segment_sum(self.ends - self.starts)

    def to_masks(self) -> np.ndarray:
        """The dense ``N × H × W`` bool array."""
        h, w = self.shape
        n, size = len(self), h * w
        cover = np.zeros(n * size + 1, dtype=np.int8)
        base = self.mask_index * size
        cover[base + self.starts] += 1  # starts are distinct, and so are ends (runs are disjoint)
        cover[base + self.ends] -= 1
        flat = np.cumsum(cover[:-1], dtype=np.int8).view(bool)
        if self.order == "F":
            return np.ascontiguousarray(flat.reshape(n, w, h).transpose(0, 2, 1))
        return flat.reshape(n, h, w)

    @classmethod
    def from_masks(cls, masks: np.ndarray, order: str = "C") -> MaskRuns:
        """Runs of a dense ``N × H × W`` bool array, in ``order``."""
        m = np.asarray(masks, dtype=bool)
        if m.ndim != 3:
            raise ValueError(f"masks must be N × H × W, got shape {m.shape}")
        n, h, w = m.shape
        flat = (m.transpose(0, 2, 1) if order == "F" else m).reshape(n, h * w)
        edges = np.zeros((n, h * w + 1), dtype=np.int8)
        edges[:, :-1] = flat
        edges[:, 1:] -= flat
        rows, cols = np.nonzero(edges)
        kind = edges[rows, cols]
        starts, ends = cols[kind > 0], cols[kind < 0]
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows[kind > 0], minlength=n), out=offsets[1:])
        return cls((h, w), starts, ends, offsets, order)

    @classmethod
    def from_coco(cls, counts: list[str | bytes], shape: tuple[int, int]) -> MaskRuns:
        """Decode compressed COCO RLE strings (pycocotools' ``counts``) of ``shape`` masks, all at once.

        Vectorised version of ``rleFrString`` in pycocotools' ``maskApi.c``: each count is a
        little-endian series of 5-bit groups (char − 48; bit 0x20 = more follows, bit 0x10 of the
        last group = negative), and count ``m > 2`` is stored as the difference to count ``m − 2``.
        Counts alternate runs of zeros and ones, column major, starting with zeros.
        ``ValueError`` on a malformed string.
        """
        h, w = int(shape[0]), int(shape[1])
        size, n = h * w, len(counts)
        if n == 0 or size == 0:
            return cls((h, w), np.zeros(0), np.zeros(0), np.zeros(n + 1), "F")
        if all(isinstance(c, bytes) for c in counts):
            buf = b"".join(counts)
        elif all(isinstance(c, str) for c in counts):
            buf = "".join(counts).encode("ascii")
        else:
            buf = b"".join(c.encode("ascii") if isinstance(c, str) else bytes(c) for c in counts)
        d = np.frombuffer(buf, dtype=np.uint8) - np.uint8(48)  # below '0' wraps round to > 63
        if not len(d) or d.max() > 63:
            raise ValueError("malformed RLE counts: empty string or character out of range")
        str_end = np.cumsum(np.fromiter(map(len, counts), dtype=np.int64, count=n))
        last = d < 32  # no "more" bit: the last 5-bit group of a count
        v_end = np.flatnonzero(last)
        per_mask = np.diff(np.cumsum(last)[str_end - 1], prepend=0)  # counts ending in each string
        if not last[-1] or np.any(per_mask == 0) or np.any(~last[str_end[:-1] - 1]):
            raise ValueError("malformed RLE counts: a string is empty or ends inside a count")
        v_start = np.empty_like(v_end)
        v_start[0] = 0
        v_start[1:] = v_end[:-1] + 1
        n_chars = v_end - v_start + 1
        if n_chars.max() > 12:
            raise ValueError("malformed RLE counts: a count is too long")
        group = (d & 31).astype(np.int64)
        group -= ((d & 16) << 1) * last  # the last group is signed: bit 0x10 set means −32
        k = np.arange(len(d)) - np.repeat(v_start, n_chars)  # index of the group within its count
        val = np.add.reduceat(group << (5 * k), v_start)
        # which mask each count belongs to, and its index m within the mask
        first = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(per_mask, out=first[1:])
        owner = np.repeat(np.arange(n), per_mask)
        base = first[owner]  # index of the mask's count 0
        m = np.arange(len(val)) - base
        odd, head = (m & 1).astype(bool), m == 0
        # undo the delta coding: counts 1, 3, 5, … and 2, 4, 6, … are running sums within a mask;
        # differences to the sums at the mask's count 0 leave out every earlier mask (and count 0)
        odd_cs = np.cumsum(np.where(odd, val, 0))
        even_cs = np.cumsum(np.where(odd, 0, val))
        cnt = np.where(odd, odd_cs - odd_cs[base], even_cs - even_cs[base])
        cnt[head] = val[head]
        end = np.cumsum(cnt)  # every mask adds up to size, so mask i's positions are offset by i·size
        if cnt.min() < 0 or not np.array_equal(end[first[1:] - 1], size * np.arange(1, n + 1)):
            raise ValueError(f"malformed RLE counts: negative runs, or runs that do not add up to {h}×{w} pixels")
        ones = odd & (cnt > 0)
        run_owner = owner[ones]
        end = end[ones] - run_owner * size
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(run_owner, minlength=n), out=offsets[1:])
        return cls((h, w), end - cnt[ones], end, offsets, "F")


@dataclass
class PackedMasks:
    """``N`` binary masks of one ``H × W`` image, bit-packed: row ``i`` is
    ``np.packbits(mask_i.ravel())`` (row-major pixels) followed by zero bytes up to a multiple of 8
    bytes (``N × packed_row_bytes(H·W)`` uint8), so that rows can be read as 64-bit words. An eighth
    of a dense bool array; what the merge of dense masks works on."""

    shape: tuple[int, int]
    bits: np.ndarray

    def __post_init__(self) -> None:
        self.shape = (int(self.shape[0]), int(self.shape[1]))
        self.bits = np.asarray(self.bits, dtype=np.uint8)
        width = packed_row_bytes(self.shape[0] * self.shape[1])
        if self.bits.ndim != 2 or self.bits.shape[1] != width:
            raise ValueError(f"bits must be N × {width}, got {self.bits.shape}")

    def __len__(self) -> int:
        return self.bits.shape[0]

    def to_masks(self) -> np.ndarray:
        h, w = self.shape
        return np.unpackbits(self.bits, axis=1, count=h * w).view(bool).reshape(len(self), h, w)

    @classmethod
    def from_masks(cls, masks: np.ndarray) -> PackedMasks:
        m = np.asarray(masks, dtype=bool)
        if m.ndim != 3:
            raise ValueError(f"masks must be N × H × W, got shape {m.shape}")
        return cls(m.shape[1:], pack_masks(m))


def packed_row_bytes(size: int) -> int:
    """Bytes per packed mask of ``size`` pixels: ``⌈size/8⌉`` rounded up to a multiple of 8."""
    return -(-size // 64) * 8


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """``N × H × W`` bool → the rows of :class:`PackedMasks` (zero padding after each mask's bits)."""
    n, size = masks.shape[0], masks.shape[1] * masks.shape[2]
    out = np.zeros((n, packed_row_bytes(size)), dtype=np.uint8)
    out[:, : -(-size // 8)] = np.packbits(masks.reshape(n, size), axis=1)
    return out
