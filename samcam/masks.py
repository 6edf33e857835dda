"""Class-agnostic mask sets (what SAM's "segment everything" mode returns) and their formats.

Three interchangeable formats, all lossless (mask pixels, order and every score are kept):

``official``
    The layout of segment-anything's ``scripts/amg.py``, which the paper's code reads: a folder per
    image id holding ``0.png, 1.png, …`` (255 = inside the mask) and ``metadata.csv``.
``compact``
    One gzipped JSON file per image, ``<id>.json.gz``: masks as COCO run-length encoding
    (pycocotools) with the per-mask scores SAM gives, plus the settings and model that made them.
    About 50× smaller than ``official``.
``records``
    In memory: the list of dicts that ``SamAutomaticMaskGenerator.generate`` returns
    (``segmentation`` as a boolean array, ``area``, ``bbox``, ``predicted_iou``, ``point_coords``,
    ``stability_score``, ``crop_box``).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .atomic import atomic_path

COMPACT_SUFFIX = ".json.gz"
COMPACT_FORMAT = "samcam-masks/1"
OFFICIAL_HEADER = [
    "id", "area", "bbox_x0", "bbox_y0", "bbox_w", "bbox_h", "point_input_x", "point_input_y",
    "predicted_iou", "stability_score", "crop_box_x0", "crop_box_y0", "crop_box_w", "crop_box_h",
]  # fmt: skip
FORMATS = ("compact", "official")


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
        nan = lambda *s: np.full(s, np.nan)  # noqa: E731
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
        """``N × 4`` boxes in XYWH, as SAM reports them (0-size masks give zeros)."""
        out = np.zeros((len(self), 4), dtype=np.int64)
        rows, cols = self.masks.any(axis=2), self.masks.any(axis=1)
        for i in range(len(self)):
            ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
            if ys.size:
                out[i] = (xs[0], ys[0], xs[-1] - xs[0], ys[-1] - ys[0])
        return out

    def check_shape(self, shape: tuple[int, int], source: str | os.PathLike = "<masks>") -> None:
        """Raise ``ValueError`` naming ``source`` when the masks are not ``shape``."""
        if len(self) and self.shape != tuple(shape):
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
                "crop_box": [_num(v) for v in self.crop_box[i]],
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


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)


def _rle_bytes(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


# ----------------------------------------------------------------------------- compact format


def write_compact(path: str | os.PathLike, ms: MaskSet) -> None:
    """Write ``ms`` as one gzipped JSON file (COCO RLE masks, SAM's scores, provenance), atomically."""
    from pycocotools import mask as mask_utils

    h, w = ms.shape
    rles = mask_utils.encode(np.asfortranarray(ms.masks.transpose(1, 2, 0).astype(np.uint8))) if len(ms) else []
    doc = {
        "format": COMPACT_FORMAT,
        "height": h,
        "width": w,
        "meta": ms.meta,
        "masks": [
            {
                "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                "predicted_iou": _json_float(ms.predicted_iou[i]),
                "stability_score": _json_float(ms.stability_score[i]),
                "point_coords": [[_json_float(v) for v in ms.point_coords[i]]],
                "crop_box": [_num(v) for v in ms.crop_box[i]],
            }
            for i, rle in enumerate(rles)
        ],
    }
    data = gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), mtime=0)
    with atomic_path(path, suffix=".gz.tmp") as tmp:
        tmp.write_bytes(data)


def _json_float(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)


def read_compact(path: str | os.PathLike) -> MaskSet:
    """Read a file written by :func:`write_compact`; ``ValueError`` naming the file if it is not one."""
    path = Path(path)
    try:
        doc = json.loads(gzip.decompress(path.read_bytes()))
    except FileNotFoundError:
        raise FileNotFoundError(f"mask file not found: {path}") from None
    except (OSError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: not a samcam compact mask file ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != COMPACT_FORMAT:
        raise ValueError(f"{path}: not a samcam compact mask file (format {doc.get('format') if isinstance(doc, dict) else None!r})")
    records = [
        {**m, "predicted_iou": _nan(m["predicted_iou"]), "stability_score": _nan(m["stability_score"]),
         "point_coords": [[_nan(v) for v in m["point_coords"][0]]]}
        for m in doc["masks"]
    ]  # fmt: skip
    return MaskSet.from_records(records, shape=(doc["height"], doc["width"]), meta=doc.get("meta", {}))


def _nan(v: float | None) -> float:
    return float("nan") if v is None else float(v)


# ----------------------------------------------------------------------------- official amg.py layout


def write_official(folder: str | os.PathLike, ms: MaskSet) -> None:
    """Write ``ms`` in the ``scripts/amg.py`` layout: ``<folder>/<i>.png`` (255 inside) + ``metadata.csv``.

    Written into a temporary sibling folder and renamed, so a folder that exists is complete.
    """
    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"{folder} exists; refusing to overwrite a mask folder")
    tmp = folder.with_name(f".{folder.name}.tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for i, m in enumerate(ms.masks):
        Image.fromarray(m.astype(np.uint8) * 255).save(tmp / f"{i}.png")
    area, bbox = ms.area, ms.bbox
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(OFFICIAL_HEADER)
    for i in range(len(ms)):
        wr.writerow([i, int(area[i]), *map(int, bbox[i]), *map(repr_float, ms.point_coords[i]),
                     repr_float(ms.predicted_iou[i]), repr_float(ms.stability_score[i]),
                     *(_num(v) for v in ms.crop_box[i])])  # fmt: skip
    (tmp / "metadata.csv").write_text(buf.getvalue())
    # not part of amg.py's layout: the image size (for empty sets) and provenance, for lossless reading
    (tmp / "samcam_meta.json").write_text(json.dumps({"image_shape": list(ms.shape), "meta": ms.meta}, indent=1))
    os.replace(tmp, folder)


def repr_float(v: float) -> str:
    """``repr`` of a float: round-trips exactly, as amg.py's ``str(float)`` does."""
    return repr(float(v))


def read_official(folder: str | os.PathLike) -> MaskSet:
    """Read an ``amg.py`` folder. With ``metadata.csv`` its ``id`` order and scores are used; without
    it, every ``<i>.png`` is read in numeric order (as the paper's code, which scans the folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"mask folder not found: {folder}")
    meta_csv = folder / "metadata.csv"
    rows: list[dict[str, str]] = []
    if meta_csv.exists():
        with open(meta_csv, newline="") as f:
            rows = list(csv.DictReader(f))
        missing = [c for c in ("id", "predicted_iou", "stability_score") if rows and c not in rows[0]]
        if missing:
            raise ValueError(f"{meta_csv}: missing columns {missing}")
        names = [f"{r['id']}.png" for r in rows]
    else:
        names = sorted((p.name for p in folder.glob("*.png") if p.stem.isdigit()), key=lambda s: int(s[:-4]))
    masks = []
    for name in names:
        p = folder / name
        try:
            with Image.open(p) as im:
                masks.append(np.array(im) == 255)
        except FileNotFoundError:
            raise FileNotFoundError(f"mask file not found: {p} (listed in {meta_csv})") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ValueError(f"{p}: unreadable mask PNG ({e})") from e
        if masks[-1].shape != masks[0].shape:
            raise ValueError(f"{p}: mask size {masks[-1].shape} differs from {folder / names[0]} {masks[0].shape}")
    meta_json = folder / "samcam_meta.json"
    side = json.loads(meta_json.read_text()) if meta_json.exists() else {}
    meta = side.get("meta", {})
    if not masks:
        shape = tuple(side.get("image_shape", (0, 0)))
        return MaskSet(np.zeros((0, *shape), dtype=bool), meta=meta)
    f = lambda k: np.array([float(r[k]) for r in rows]) if rows else None  # noqa: E731
    return MaskSet(
        np.stack(masks),
        predicted_iou=f("predicted_iou"),
        stability_score=f("stability_score"),
        point_coords=np.stack([f("point_input_x"), f("point_input_y")], axis=1) if rows else None,
        crop_box=np.stack([f(k) for k in OFFICIAL_HEADER[-4:]], axis=1) if rows else None,
        meta=meta,
    )


# ----------------------------------------------------------------------------- a folder of mask sets


class MaskStore:
    """A folder of per-image mask sets in either on-disk format (auto-detected when reading)."""

    def __init__(self, root: str | os.PathLike, fmt: str | None = None) -> None:
        self.root = Path(root)
        if fmt is not None and fmt not in FORMATS:
            raise ValueError(f"unknown mask format {fmt!r}; known: {', '.join(FORMATS)}")
        self.fmt = fmt

    def path(self, image_id: str, fmt: str | None = None) -> Path:
        fmt = fmt or self.fmt or "compact"
        return self.root / (f"{image_id}{COMPACT_SUFFIX}" if fmt == "compact" else image_id)

    def format_of(self, image_id: str) -> str | None:
        """The format ``image_id`` is stored in, or ``None`` if it has no mask set here."""
        formats = [self.fmt] if self.fmt else list(FORMATS)
        for fmt in formats:
            p = self.path(image_id, fmt)
            if (fmt == "compact" and p.is_file()) or (fmt == "official" and p.is_dir()):
                return fmt
        return None

    def has(self, image_id: str) -> bool:
        return self.format_of(image_id) is not None

    def ids(self) -> list[str]:
        """Every image id with a mask set in this folder."""
        if not self.root.is_dir():
            return []
        out = {p.name[: -len(COMPACT_SUFFIX)] for p in self.root.glob(f"*{COMPACT_SUFFIX}")}
        out |= {p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")}
        return sorted(out)

    def read(self, image_id: str, shape: tuple[int, int] | None = None) -> MaskSet:
        """The mask set of ``image_id``; with ``shape`` given, a ``ValueError`` naming the file if the
        masks have another size."""
        fmt = self.format_of(image_id)
        if fmt is None:
            raise FileNotFoundError(f"no mask set for {image_id} in {self.root} (looked for {self.path(image_id, 'compact').name} and {image_id}/)")
        path = self.path(image_id, fmt)
        ms = read_compact(path) if fmt == "compact" else read_official(path)
        if shape is not None:
            ms.check_shape(shape, path)
        return ms

    def write(self, image_id: str, ms: MaskSet) -> Path:
        p = self.path(image_id)
        if (self.fmt or "compact") == "compact":
            write_compact(p, ms)
        else:
            write_official(p, ms)
        return p
