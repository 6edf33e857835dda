"""The file formats of mask sets (:mod:`samcam.sam.masks`), their readers and writers, and :class:`MaskStore`.

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

For the merge, two lean in-memory forms hold only the masks and never a dense ``N × H × W`` array:
:class:`MaskRuns` (runs of ones; a compact file's RLE strings decode straight to it, all masks in
one vectorised pass) and :class:`PackedMasks` (bits; an ``amg.py`` folder's PNGs are packed as each
is decoded). :meth:`MaskStore.read_masks` gives the one that suits the file's format.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from samcam.io import (atomic_path, check_id, check_ids, check_pixels, decode_png, json_loads, naming_output, open_image, png_parts, read_gzip,
                       read_input, still_pixels)

COMPACT_SUFFIX = ".json.gz"
COMPACT_FORMAT = "samcam-masks/1"
OFFICIAL_HEADER = [
    "id", "area", "bbox_x0", "bbox_y0", "bbox_w", "bbox_h", "point_input_x", "point_input_y",
    "predicted_iou", "stability_score", "crop_box_x0", "crop_box_y0", "crop_box_w", "crop_box_h",
]  # fmt: skip


from samcam.progress import say_once
from samcam.registry import lookup
from samcam.sam.masks import MaskRuns, MaskSet, PackedMasks, packed_row_bytes, plain_number

# ----------------------------------------------------------------------------- compact format


def write_compact(path: str | os.PathLike, ms: MaskSet) -> None:
    """Write ``ms`` as one gzipped JSON file (COCO RLE masks, SAM's scores, provenance), atomically."""
    from pycocotools import mask as mask_utils

    h, w = ms.shape
    check_mask_size(h, w, path)  # never written as a file its reader refuses
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
                "crop_box": [plain_number(v) for v in ms.crop_box[i]],
            }
            for i, rle in enumerate(rles)
        ],
    }
    data = gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), mtime=0)
    with atomic_path(path, suffix=".gz.tmp") as tmp:
        tmp.write_bytes(data)


def _json_float(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)


#: the most a compact mask file may inflate to. SAM's masks are smooth regions, a few runs per image
#: column each, so a set grows with the image's width: the 558 committed VOC train sets (images about
#: 500 pixels wide) inflate to 2-46 KB, and a 4,000-pixel-wide image's to a few MB. A file past this is
#: no mask set (a gzip bomb would otherwise take up to samcam's 4 GiB input limit in every merge worker
#: before the JSON is refused).
MAX_MASK_FILE_BYTES = 256 << 20


def _compact_bytes(path: Path) -> bytes:
    """The inflated content of a compact mask file (:func:`samcam.io.read_gzip`, at most
    :data:`MAX_MASK_FILE_BYTES`), errors naming it."""
    try:
        return read_gzip(path, "mask file", MAX_MASK_FILE_BYTES)
    except ValueError as e:
        raise ValueError(f"{path}: not a samcam compact mask file ({str(e).removeprefix(f'{path}: ')})") from None


def _load_compact(path: str | os.PathLike) -> dict:
    path = Path(path)
    text = _compact_bytes(path)
    try:
        doc = json_loads(text)
    except ValueError as e:
        raise ValueError(f"{path}: not a samcam compact mask file ({e})") from None
    except RecursionError:
        raise ValueError(f"{path}: not a samcam compact mask file (JSON nested too deeply)") from None
    if not isinstance(doc, dict) or doc.get("format") != COMPACT_FORMAT:
        raise ValueError(f"{path}: not a samcam compact mask file (format {doc.get('format') if isinstance(doc, dict) else None!r})")
    return doc


def read_meta(path: str | os.PathLike) -> dict:
    """The ``meta`` of a compact mask file: model, settings, and the ``seconds`` and ``device`` of
    its generation."""
    return dict(_load_compact(path).get("meta") or {})


def check_mask_size(height: int, width: int, path: str | os.PathLike) -> None:
    """``ValueError`` naming ``path`` unless a mask set's recorded image size is a size: at least one
    pixel each way (a set that says ``0 × 0`` says nothing of its image, and an empty one would pass
    as the empty set of any image) and within :func:`samcam.io.check_pixels`. The one rule of every
    size a mask file records (compact ``height``/``width``, samcam_meta.json's ``image_shape``)."""
    if height < 1 or width < 1:
        raise ValueError(f"{path}: records an image size of {height}×{width} pixels; a mask set says the size of its image (at least 1×1)")
    check_pixels(height, width, path)


def _compact_shape(doc: dict, path: str | os.PathLike) -> tuple[int, int]:
    """The ``(height, width)`` of a compact file's document; ``ValueError`` naming the file when
    either is missing, not a whole number, or not a size (:func:`check_mask_size`)."""
    h, w = doc.get("height"), doc.get("width")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (h, w)):
        raise ValueError(f"{path}: a samcam compact mask file needs whole-number height and width, found {h!r} and {w!r}")
    check_mask_size(h, w, path)
    return h, w


def _score_value(v: object) -> bool:
    """Whether ``v`` is a score as :func:`write_compact` writes one: a JSON number, or ``null`` (unknown)."""
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _record_fault(m: object, size: list[int], crop: bool) -> str | None:
    """What is wrong with one mask record of a compact file (``None``: nothing), checked as
    :func:`write_compact` writes it: an object whose ``segmentation`` is ``{size, counts}`` with the
    file's size and a string, scores that are numbers or ``null``, ``point_coords`` one ``[x, y]``,
    and ``crop_box`` four numbers where the file's first record has one (``crop``), absent where not."""
    if not isinstance(m, dict):
        return f"a JSON {type(m).__name__}, not an object"
    seg = m.get("segmentation")
    if not isinstance(seg, dict) or set(seg) != {"size", "counts"}:
        return "its segmentation is not an object of size and counts"
    if seg["size"] != size:
        return f"a mask's size differs from the file's {size[0]}×{size[1]} ({seg['size']!r})"
    if not isinstance(seg["counts"], str):
        return f"its counts are a JSON {type(seg['counts']).__name__}, not an RLE string"
    for key in ("predicted_iou", "stability_score"):
        if key not in m or not _score_value(m[key]):
            return f"its {key} {m.get(key, '(absent)')!r} is not a number"
    pc = m.get("point_coords")
    if not (isinstance(pc, list) and len(pc) == 1 and isinstance(pc[0], list) and len(pc[0]) == 2 and all(map(_score_value, pc[0]))):
        return f"its point_coords {pc!r} are not one [x, y]"
    box = m.get("crop_box")
    if crop != ("crop_box" in m) or (crop and not (isinstance(box, list) and len(box) == 4 and all(v is not None and _score_value(v) for v in box))):
        return f"its crop_box {box!r} is not four numbers" if crop else "a crop_box where the file's first record has none"
    return None


#: the types of a JSON score: a number or null (``type`` is compared, so a bool, whose type is ``bool``, is none)
_SCORE_TYPES = frozenset({int, float, type(None)})
_NUMBER_TYPES = frozenset({int, float})


def _compact_masks(doc: dict, path: str | os.PathLike) -> tuple[tuple[int, int], list[dict]]:
    """The image size (:func:`_compact_shape`) and the mask records of a compact file's document,
    every record checked whole (:func:`_record_fault`), whichever reader reads it: the merge's, which
    needs only the masks, takes no file the full reader would refuse. ``ValueError`` naming the file
    and the record.

    Each record passes a test by ``type`` alone first (a third of :func:`_record_fault`'s time, which
    only says what is wrong with a record that fails it): the two must agree, which a test holds."""
    shape = _compact_shape(doc, path)
    masks = doc.get("masks")
    if not isinstance(masks, list):
        raise ValueError(f"{path}: bad mask list in a samcam compact mask file (masks is {masks!r:.40}, not a list)")
    size, crop = list(shape), bool(masks) and isinstance(masks[0], dict) and "crop_box" in masks[0]
    scores, numbers = _SCORE_TYPES, _NUMBER_TYPES
    for k, m in enumerate(masks):
        if type(m) is dict:
            seg, pc, box = m.get("segmentation"), m.get("point_coords"), m.get("crop_box")
            if (type(seg) is dict and len(seg) == 2 and seg.get("size") == size and type(seg.get("counts")) is str
                    and type(m.get("predicted_iou", "")) in scores and type(m.get("stability_score", "")) in scores
                    and type(pc) is list and len(pc) == 1 and type(pc[0]) is list and len(pc[0]) == 2
                    and type(pc[0][0]) in scores and type(pc[0][1]) in scores
                    and ((type(box) is list and len(box) == 4 and type(box[0]) in numbers and type(box[1]) in numbers
                          and type(box[2]) in numbers and type(box[3]) in numbers) if crop else "crop_box" not in m)):  # fmt: skip
                continue
        why = _record_fault(m, size, crop) or "not a record as samcam writes one"
        raise ValueError(f"{path}: bad mask record {k} in a samcam compact mask file ({why})")
    return shape, masks


def _compact_runs(doc: dict, path: str | os.PathLike) -> MaskRuns:
    shape, masks = _compact_masks(doc, path)
    try:
        return MaskRuns.from_coco([m["segmentation"]["counts"] for m in masks], shape)
    except ValueError as e:
        raise ValueError(f"{path}: bad mask in a samcam compact mask file ({e})") from e


def read_compact(path: str | os.PathLike) -> MaskSet:
    """Read a file written by :func:`write_compact`; ``ValueError`` naming the file if it is not one."""
    doc = _load_compact(path)
    runs = _compact_runs(doc, path)
    masks = doc["masks"]
    f = lambda k: np.array([_nan(m[k]) for m in masks], dtype=float)
    try:
        return MaskSet(
            runs.to_masks(),
            predicted_iou=f("predicted_iou"),
            stability_score=f("stability_score"),
            point_coords=np.array([[_nan(v) for v in m["point_coords"][0][:2]] for m in masks], dtype=float).reshape(len(masks), 2),
            crop_box=np.array([m["crop_box"] for m in masks], dtype=float).reshape(len(masks), 4) if masks and "crop_box" in masks[0] else None,
            meta=doc.get("meta", {}),
        )
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ValueError(f"{path}: bad mask record in a samcam compact mask file ({type(e).__name__}: {e})") from None


def read_compact_runs(path: str | os.PathLike) -> MaskRuns:
    """Only the masks of a compact file, as runs (no dense array, no transpose): what the merge needs.
    The file is parsed and checked whole, as :func:`read_compact` reads it (:func:`_compact_masks`)."""
    return _read_compact_runs(path)[0]


def _read_compact_runs(path: str | os.PathLike) -> tuple[MaskRuns, dict]:
    """:func:`read_compact_runs` and the file's ``meta``."""
    doc = _load_compact(path)
    return _compact_runs(doc, path), doc.get("meta")


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
    check_mask_size(*ms.shape, folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    with naming_output(folder):  # a full disk: the mask folder named
        _write_official_into(tmp, ms)
        os.replace(tmp, folder)


def _write_official_into(tmp: Path, ms: MaskSet) -> None:
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
                     *(plain_number(v) for v in ms.crop_box[i])])  # fmt: skip
    (tmp / "metadata.csv").write_text(buf.getvalue())
    (tmp / SIDE_META).write_text(json.dumps({"image_shape": list(ms.shape), "meta": ms.meta}, indent=1))


def repr_float(v: float) -> str:
    """``repr`` of a float: round-trips exactly, as amg.py's ``str(float)`` does."""
    return repr(float(v))




#: the columns of amg.py's metadata.csv that samcam reads: the mask id, then its scores
OFFICIAL_SCORES = ("id", "predicted_iou", "stability_score")


def _score(text: object) -> bool:
    """Whether a score cell reads as a number: finite, or ``nan`` (unknown, as :class:`MaskSet`
    holds scores it was not given and :func:`write_official` writes them); never ``inf`` or text."""
    try:
        return not np.isinf(float(text))
    except (TypeError, ValueError):
        return False


def _is_mask_number(stem: str) -> bool:
    """Whether a name is a mask's number as amg.py writes it (``str(i)``): ASCII digits only
    (``str.isdigit`` also takes "²", which ``int`` refuses, and "٣", an Arabic-Indic 3), without
    leading zeros ("00" and "0" would be two files, or two ids, of one mask)."""
    return re.fullmatch(r"0|[1-9][0-9]*", stem) is not None


def _refuse_other_spellings(folder: Path, entries: list[str]) -> None:
    """``ValueError`` naming ``folder`` when a mask PNG's number is written otherwise than amg.py's
    ``str(i)`` (``00.png``, ``01.png``): one mask number has exactly one file, named one way, so a
    ``00.png`` beside ``0.png`` is never read as a second mask 0."""
    odd = sorted(n for n in entries if n.endswith(".png") and re.fullmatch(r"[0-9]+", n[:-4]) and not _is_mask_number(n[:-4]))
    if odd:
        i = int(odd[0][:-4])
        also = f" beside {i}.png, two files for mask {i}" if f"{i}.png" in entries else ""
        raise ValueError(f"{folder}: {odd[0]} names mask {i} otherwise than amg.py ({i}.png){also}; "
                         "one file per mask, named by its number without leading zeros")  # fmt: skip


def _official_names(folder: Path, ids_only: bool = False) -> tuple[list[str], list[dict[str, str]]]:
    """The mask PNG names of an ``amg.py`` folder, in order, and ``metadata.csv``'s rows (none with
    ``ids_only``, which reads just the ``id`` column of a plain, unquoted CSV)."""
    meta_csv = folder / "metadata.csv"
    rows: list[dict[str, str]] = []
    try:
        text = read_input(meta_csv, "mask metadata").decode("utf-8-sig")
    except FileNotFoundError:
        text = None
    except UnicodeDecodeError as e:
        raise ValueError(f"{meta_csv}: not UTF-8 text (byte {e.start}); expected amg.py's metadata CSV") from None
    if text is not None and "\0" in text:
        raise ValueError(f"{meta_csv}: holds NUL bytes; expected amg.py's metadata CSV")
    if text is not None:
        lines = text.splitlines()
        header = lines[0].split(",") if lines else []
        if ids_only and '"' not in text and all(len(ln.split(",")) == len(header) for ln in lines[1:] if ln):
            columns = {c: [ln.split(",")[header.index(c)] for ln in lines[1:] if ln] for c in OFFICIAL_SCORES if c in header}
            check = [dict.fromkeys(header)] if len(lines) > 1 else []
        else:
            try:
                rows = list(csv.DictReader(io.StringIO(text, newline="")))
            except csv.Error as e:
                raise ValueError(f"{meta_csv}: not a readable CSV ({e})") from None
            columns = {c: [r.get(c) for r in rows] for c in OFFICIAL_SCORES}
            check = rows
        missing = [c for c in OFFICIAL_SCORES if check and c not in check[0]]
        if missing:
            raise ValueError(f"{meta_csv}: missing columns {missing}")
        for c in OFFICIAL_SCORES[1:]:  # the scores, read on every path (the merge itself needs only the ids)
            for k, v in enumerate(columns.get(c, [])):
                if not _score(v):
                    raise ValueError(f"{meta_csv}: row {k + 1}'s {c} is {v!r}, not a number")
        listed = check_ids(columns.get("id", []), meta_csv)
        other = next((i for i in listed if not _is_mask_number(i)), None)
        if other is not None:  # amg.py numbers its masks 0, 1, ...: a "٣" (an Arabic-Indic 3) or a "00" is no mask's number
            raise ValueError(f"{meta_csv}: id {other!r} is not a mask's number (ASCII digits without leading zeros, as amg.py writes them)")
        names, seen = [f"{i}.png" for i in listed], set()
        for n in names:
            if n in seen:
                raise ValueError(f"{meta_csv}: lists id {n[:-4]} twice; each mask PNG once")
            seen.add(n)
    entries = [p.name for p in folder.iterdir()]  # one listing for both questions below
    shouting = next((n for n in entries if n.lower().endswith(".png") and not n.endswith(".png")), None)
    if shouting is not None:  # "3.PNG" would otherwise be passed over without a word, and its mask lost
        raise ValueError(f"{folder / shouting}: a mask PNG of the official layout is named <i>.png, in lower case; rename it")
    _refuse_other_spellings(folder, entries)
    pngs = sorted((n for n in entries if n.endswith(".png")), key=lambda n: (not _is_mask_number(n[:-4]), int(n[:-4]) if _is_mask_number(n[:-4]) else 0, n))
    if text is None:
        other = next((n for n in pngs if not _is_mask_number(n[:-4])), None)
        if other:
            raise ValueError(f"{folder / other}: not a mask PNG name (<i>.png) of the official layout, and no metadata.csv lists the masks")
        names = pngs
    elif sorted(names) != sorted(pngs):
        unlisted, absent = sorted(set(pngs) - set(names)), sorted(set(names) - set(pngs))
        what = f"does not list {unlisted[0]} beside it" if unlisted else f"lists {absent[0]}, which is not there"
        raise ValueError(f"{meta_csv}: {what} ({len(unlisted)} unlisted, {len(absent)} absent mask PNGs); the folder is not one mask set")
    if not names and not (folder / SIDE_META).exists():
        raise ValueError(f"{folder}: an id folder of the official layout holds no mask PNGs (<i>.png) and no {SIDE_META} recording an empty set")
    return names, rows


def _mask_bits(a: np.ndarray, p: str, palette: np.ndarray | None = None) -> np.ndarray:
    """The ``H × W`` bool mask of one official-layout PNG's pixels, read as what the PNG shows:
    grey 0/255 as they are (255 inside, as the paper's code reads them), 0/1 and 1-bit (mode ``1``)
    masks as binary, the 0/1 conversion said once; a palette PNG (``palette``: its ``n × 3``
    colours) by its colours (:func:`_palette_bits`); any other value or an image of several
    channels is an error naming the file."""
    if palette is not None:
        return _palette_bits(a, palette, p)
    if a.dtype == bool:
        return a
    if a.ndim != 2 or a.dtype != np.uint8:
        raise ValueError(f"{p}: a mask PNG must be one 8-bit or 1-bit channel, found {a.dtype} values of shape {a.shape}")
    on = np.count_nonzero(a)
    inside = a == 255
    if np.count_nonzero(inside) == on:
        return inside
    inside = a == 1
    if np.count_nonzero(inside) == on:
        say_once("masks-01", f"{p}: 0/1 mask PNGs are read as binary (1 = inside), as are the others like it")
        return inside
    values = np.unique(a)
    raise ValueError(f"{p}: mask values {values[:6].tolist()}{' …' if values.size > 6 else ''} are neither 0/255 nor 0/1; a mask PNG is binary")


_BLACK, _WHITE = 0x000000, 0xFFFFFF


def _palette_bits(a: np.ndarray, palette: np.ndarray, p: str) -> np.ndarray:
    """The mask a palette PNG shows: each index in use must have a colour of the palette that is
    black (outside) or white (inside), as a grey mask's 0 and 255; an index past the palette (which
    says no colour for it) or another colour is an error naming the file, never read by its index
    (a palette of [white, black] shows the complement of its indices)."""
    from samcam.io import _colour_codes

    used = np.flatnonzero(np.bincount(a.ravel(), minlength=256))
    if used.size and used[-1] >= len(palette):
        raise ValueError(f"{p}: a palette mask PNG using index {int(used[-1])}, past its {len(palette)}-colour palette; "
                         "a mask PNG shows black (outside) and white (inside)")  # fmt: skip
    codes = _colour_codes(palette[used])
    other = next((int(c) for c in codes if c not in (_BLACK, _WHITE)), None)
    if other is not None:
        raise ValueError(f"{p}: a palette mask PNG showing colour #{other:06x}, neither black nor white; "
                         "a mask PNG shows black (outside) and white (inside)")  # fmt: skip
    white = np.zeros(256, dtype=bool)
    white[used[codes == _WHITE]] = True
    return white[a]


def _official_pngs(folder: Path, names: list[str]):
    """Yield ``(i, mask)`` for each mask PNG, ``mask`` an ``H × W`` bool array (:func:`_mask_bits`;
    8-bit PNGs are decoded into one reused buffer, without a copy); ``ValueError``/``FileNotFoundError``
    naming the file."""
    buf = shape = None
    for i, name in enumerate(names):
        p = os.path.join(folder, name)
        try:
            data = read_input(p, "mask file")
        except FileNotFoundError:
            raise FileNotFoundError(f"mask file not found: {p} (listed in {folder / 'metadata.csv'})") from None
        try:
            parts = png_parts(data)
            if parts is not None:
                check_pixels(parts.height, parts.width, p)
                got = (parts.height, parts.width)
                if buf is None or buf.shape != got:
                    buf = np.empty(got, dtype=np.uint8)
                a = decode_png(parts, buf)
                palette = None if parts.mode != "P" else parts.palette if parts.palette is not None else np.zeros((0, 3), np.uint8)
            else:
                a, palette = open_image(io.BytesIO(data), p, _shown_samples, "mask PNG")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ValueError(f"{p}: unreadable mask PNG ({str(e).removeprefix(f'{p}: ')})") from None
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            raise ValueError(f"{p}: mask size {a.shape} differs from {folder / names[0]} {shape}")
        yield i, _mask_bits(a, p, palette)


def _shown_samples(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """The pixels of a mask PNG Pillow decodes (one :func:`samcam.io.png_parts` does not take: 1-, 2-
    or 4-bit, interlaced, several channels) and, for a palette PNG, its palette (``n × 3``): what
    :func:`_mask_bits` reads as the PNG shows it."""
    a = still_pixels(im)
    if im.mode == "P":
        return a, np.array(im.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
    return a, None


def _read_official_masks(folder: Path, names: list[str]) -> np.ndarray | None:
    """The ``N × H × W`` bool masks (:func:`_mask_bits`), or ``None`` for none."""
    masks = None
    for i, m in _official_pngs(folder, names):
        if masks is None:
            masks = np.empty((len(names), *m.shape), dtype=bool)
        masks[i] = m
    return masks


SIDE_META = "samcam_meta.json"
"""Not part of ``amg.py``'s layout: the image size (for empty sets) and provenance, for lossless reading."""


def _side_meta(folder: Path, mask_shape: tuple[int, ...] | None = None) -> dict:
    """``folder/samcam_meta.json`` (``{}`` when absent); ``ValueError`` naming it when it is not a
    JSON object, its ``image_shape`` is not two whole numbers that are a size (:func:`check_mask_size`),
    or it differs from ``mask_shape`` (the size of the mask PNGs beside it, where there are any)."""
    path = folder / SIDE_META
    if not path.exists():
        return {}
    try:
        side = json_loads(read_input(path, "mask metadata"))
        if not isinstance(side, dict):
            raise ValueError(f"a JSON {type(side).__name__}, not an object")
        if "image_shape" in side:
            shape = side["image_shape"]
            if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in shape)):
                raise ValueError(f"image_shape {shape!r} is not [height, width]")
            check_mask_size(*shape, path)
    except ValueError as e:
        raise ValueError(f"{path}: unreadable samcam mask metadata ({str(e).removeprefix(f'{path}: ')})") from None
    except RecursionError:
        raise ValueError(f"{path}: unreadable samcam mask metadata (JSON nested too deeply)") from None
    if mask_shape is not None and "image_shape" in side and tuple(side["image_shape"]) != tuple(mask_shape):
        raise ValueError(f"{path}: image_shape {side['image_shape']} differs from the size of the mask PNGs beside it {list(mask_shape)}")
    return side


def _empty_set_shape(folder: Path, side: dict) -> tuple[int, int]:
    """The image size of an official id folder without mask PNGs: its samcam_meta.json's
    ``image_shape`` (samcam's writer records it), else ``ValueError`` naming the folder: the PNGs say
    the size of a set that has masks, and a folder with neither says nothing of its image (amg.py's
    metadata.csv records no image size)."""
    if "image_shape" not in side:
        raise ValueError(f"{folder}: an id folder of the official layout without mask PNGs, whose {SIDE_META} records no image_shape; "
                         "a mask set says the size of its image")  # fmt: skip
    return tuple(side["image_shape"])


def read_official(folder: str | os.PathLike) -> MaskSet:
    """Read an ``amg.py`` folder. With ``metadata.csv`` its ``id`` order and scores are used; without
    it, every ``<i>.png`` is read in numeric order (as the paper's code, which scans the folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"mask folder not found: {folder}")
    names, rows = _official_names(folder)
    masks = _read_official_masks(folder, names)
    side = _side_meta(folder, None if masks is None else masks.shape[1:])
    meta = side.get("meta", {})
    if masks is None:
        return MaskSet(np.zeros((0, *_empty_set_shape(folder, side)), dtype=bool), meta=meta)
    f = lambda k: np.array([float(r[k]) for r in rows]) if rows else None
    try:
        return MaskSet(
            masks,
            predicted_iou=f("predicted_iou"),
            stability_score=f("stability_score"),
            point_coords=np.stack([f("point_input_x"), f("point_input_y")], axis=1) if rows else None,
            crop_box=np.stack([f(k) for k in OFFICIAL_HEADER[-4:]], axis=1) if rows else None,
            meta=meta,
        )
    except (KeyError, TypeError, ValueError) as e:
        what = f"lacks column {e.args[0]}" if isinstance(e, KeyError) else f"holds a value that is not a number ({e})"
        raise ValueError(f"{folder / 'metadata.csv'}: {what}; expected amg.py's columns {', '.join(OFFICIAL_HEADER)}") from None


def read_official_packed(folder: str | os.PathLike) -> PackedMasks:
    """Only the masks of an ``amg.py`` folder (as :func:`_mask_bits` reads them), bit-packed as each
    PNG is decoded: no dense ``N × H × W`` array. A folder without masks has the size its
    ``samcam_meta.json`` records (:func:`_empty_set_shape`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"mask folder not found: {folder}")
    names, _ = _official_names(folder, ids_only=True)
    bits = shape = used = None
    for i, m in _official_pngs(folder, names):
        if bits is None:
            shape = m.shape
            bits = np.zeros((len(names), packed_row_bytes(m.size)), dtype=np.uint8)
            used = -(-m.size // 8)
        bits[i, :used] = np.packbits(m.reshape(-1))
    if bits is None:
        shape = _empty_set_shape(folder, _side_meta(folder))
        bits = np.zeros((0, packed_row_bytes(shape[0] * shape[1])), dtype=np.uint8)
    else:
        _side_meta(folder, shape)
    return PackedMasks(shape, bits)


# ----------------------------------------------------------------------------- a folder of mask sets


def _official_lean(folder: Path) -> tuple[PackedMasks, object]:
    return read_official_packed(folder), _side_meta(folder).get("meta")


def _compact_complete(path: Path) -> bool:
    """Whether a compact mask file is whole as its reader takes it (:func:`_compact_bytes`): a
    complete gzip stream, nothing after it, within :data:`MAX_MASK_FILE_BYTES`; a file that a merge
    would refuse is redone on resume."""
    from samcam.outputs import is_complete

    return is_complete(path, MAX_MASK_FILE_BYTES)


def _folder_complete(path: Path) -> bool:
    return True  # an amg.py folder is renamed into place whole (write_official)


@dataclass(frozen=True)
class MaskFormat:
    """An on-disk mask format: the entry an image's set is stored as (``{id}`` stands for the id),
    whether that entry is a file or a folder, and its writer, full reader and lean reader (the masks
    alone, as :class:`MaskRuns` or :class:`PackedMasks`, plus the recorded ``meta``), and whether an
    entry that exists was written whole (a resumed run redoes one that was not)."""

    entry: str
    is_folder: bool
    write: Callable[[Path, MaskSet], None]
    read: Callable[[Path], MaskSet]
    read_lean: Callable[[Path], tuple[MaskRuns | PackedMasks, object]]
    complete: Callable[[Path], bool]

    def exists(self, path: Path) -> bool:
        return path.is_dir() if self.is_folder else path.is_file()


#: Mask formats: samcam's compact gzip file, or segment-anything's ``amg.py`` folder of PNGs + metadata.csv.
FORMATS: dict[str, MaskFormat] = {
    "compact": MaskFormat("{id}" + COMPACT_SUFFIX, False, write_compact, read_compact, _read_compact_runs, _compact_complete),
    "official": MaskFormat("{id}", True, write_official, read_official, _official_lean, _folder_complete),
}


#: what a mask set's ``meta`` says of how its masks were made: one folder's sets share all of it
MADE_WITH = ("model_type", "checkpoint_sha256", "settings", "generator")


class MaskStore:
    """A folder of per-image mask sets in either on-disk format (auto-detected when reading). With
    ``made_with`` (the :data:`MADE_WITH` fields of the folder's record, or of one of its sets), every
    set read that records those fields must record the same: a folder put together from runs with
    other settings is refused, naming the file and the field."""

    def __init__(self, root: str | os.PathLike, fmt: str | None = None, made_with: dict | None = None) -> None:
        self.root = Path(root)
        if fmt is not None:
            lookup(FORMATS, fmt, "mask format")
        self.fmt = fmt
        self.made_with = made_with or {}

    def path(self, image_id: str, fmt: str | None = None) -> Path:
        check_id(image_id, self.root)
        return self.root / FORMATS[fmt or self.fmt or "compact"].entry.replace("{id}", image_id)

    def format_of(self, image_id: str) -> str | None:
        """The format ``image_id`` is stored in, or ``None`` if it has no mask set here; a
        ``ValueError`` when it has one in each format (which one is meant cannot be told)."""
        formats = [self.fmt] if self.fmt else list(FORMATS)
        found = [fmt for fmt in formats if FORMATS[fmt].exists(self.path(image_id, fmt))]
        if len(found) > 1:
            raise ValueError(f"{self.root}: {image_id} has two mask sets, {self.path(image_id, 'compact').name} and {image_id}/; keep one")
        return found[0] if found else None

    def has(self, image_id: str) -> bool:
        return self.format_of(image_id) is not None

    def ids(self) -> list[str]:
        """Every image id with a mask set in this folder."""
        if not self.root.is_dir():
            return []
        out = {p.name[: -len(COMPACT_SUFFIX)] for p in self.root.glob(f"*{COMPACT_SUFFIX}") if not p.name.startswith(".")}
        out |= {p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")}
        return check_ids(sorted(out), self.root)

    def read(self, image_id: str, shape: tuple[int, int] | None = None) -> MaskSet:
        """The mask set of ``image_id``; with ``shape`` given, a ``ValueError`` naming the file if the
        masks have another size."""
        fmt = self.format_of(image_id)
        if fmt is None:
            raise FileNotFoundError(f"no mask set for {image_id} in {self.root} (looked for {self.path(image_id, 'compact').name} and {image_id}/)")
        path = self.path(image_id, fmt)
        ms = FORMATS[fmt].read(path)
        _check_image_id(ms.meta, image_id, path)
        self._check_made_with(ms.meta, path)
        if shape is not None:
            ms.check_shape(shape, path)
        return ms

    def read_masks(self, image_id: str, shape: tuple[int, int] | None = None) -> MaskRuns | PackedMasks:
        """Only the masks of ``image_id``, in the cheapest form its format allows: :class:`MaskRuns`
        from a compact file, :class:`PackedMasks` from an ``amg.py`` folder (neither makes a dense
        ``N × H × W`` array). Scores and provenance are not read. ``shape`` is checked as in :meth:`read`."""
        fmt = self.format_of(image_id)
        if fmt is None:
            raise FileNotFoundError(f"no mask set for {image_id} in {self.root} (looked for {self.path(image_id, 'compact').name} and {image_id}/)")
        path = self.path(image_id, fmt)
        masks, meta = FORMATS[fmt].read_lean(path)
        _check_image_id(meta, image_id, path)
        self._check_made_with(meta, path)
        if shape is not None and masks.shape != tuple(shape):
            raise ValueError(f"{path}: mask size {masks.shape} differs from label size {tuple(shape)}")
        return masks

    def meta(self, image_id: str) -> dict:
        """The ``meta`` of ``image_id``'s mask set (``{}`` where its format keeps none)."""
        fmt = self.format_of(image_id)
        if fmt is None:
            raise FileNotFoundError(f"no mask set for {image_id} in {self.root} (looked for {self.path(image_id, 'compact').name} and {image_id}/)")
        meta = FORMATS[fmt].read_lean(self.path(image_id, fmt))[1]
        return dict(meta) if isinstance(meta, dict) else {}

    def image_size(self, image_id: str) -> tuple[int, int]:
        """The ``(height, width)`` of the image ``image_id``'s mask set was made from, read as cheaply
        as its format allows: an official folder's samcam_meta.json ``image_shape`` where it records
        one, else the masks' size (:meth:`read_masks`)."""
        fmt = self.format_of(image_id)
        if fmt == "official":
            side = _side_meta(self.path(image_id, fmt))
            if "image_shape" in side:
                return tuple(side["image_shape"])
        return tuple(self.read_masks(image_id).shape)

    def _check_made_with(self, meta: object, path: Path) -> None:
        if not self.made_with or not isinstance(meta, dict):
            return
        diff = [k for k in MADE_WITH if k in meta and k in self.made_with and meta[k] != self.made_with[k]]
        if diff:
            from samcam.outputs import differences

            what = "; ".join(differences(self.made_with[k], meta[k], k) for k in diff)
            raise ValueError(f"{path}: made with other {', '.join(diff)} than the folder's mask sets ({what}); "
                             "a folder holds the mask sets of one model and one setting")  # fmt: skip

    def write(self, image_id: str, ms: MaskSet) -> Path:
        p = self.path(image_id)
        FORMATS[self.fmt or "compact"].write(p, ms)
        return p


def _check_image_id(meta: object, image_id: str, path: Path) -> None:
    """A mask set that records the image it was made from (``meta.image_id``, as the mask step
    writes it) belongs to that image only: ``ValueError`` naming the file when it is read for another."""
    if meta is not None and not isinstance(meta, dict):
        raise ValueError(f"{path}: its meta is a {type(meta).__name__}, expected an object (the mask step writes one)")
    recorded = meta.get("image_id") if meta else None
    if recorded is not None and recorded != image_id:
        raise ValueError(f"{path}: this mask set was made from image {recorded!r}, not {image_id!r}")
