"""Files in and out: atomic writes, id lists, images and label maps, image folders, where data lives.

Every function here touches the file system; the algorithms elsewhere take and return arrays.
"""

from __future__ import annotations

import contextlib
import io as _io
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from samcam.data.spaces import VOC, DatasetSpec, check_label_values

REPO = Path(__file__).resolve().parents[1]
"""The checkout that holds ``samcam/``, ``notebooks/`` and ``results/``."""


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder; on success it is renamed to ``target``.

    A reader never sees a half-written file, and an interrupted run leaves no partial output: at most
    a hidden ``.*.tmp`` file, which :func:`clean_temporaries` removes on a later run.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=suffix or target.suffix + ".tmp"
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600 files; give them the usual mode
        os.replace(tmp_path, target)
    except OSError as e:  # a full disk, a quota: say which output could not be written
        if e.filename not in (None, tmp, str(tmp_path)):
            raise
        raise OSError(e.errno, f"{target}: cannot be written ({e.strerror or e})") from e
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


MAX_PIXELS = Image.MAX_IMAGE_PIXELS
"""The most pixels an image, label or mask may declare (Pillow's decompression-bomb limit, about
179 million: a 13 400² image); checked from the header, before anything is decoded."""

MAX_INPUT_BYTES = 4 << 30
"""The largest input file read whole, and the most bytes a gzip stream may inflate to (4 GiB)."""


def check_input(path: str | os.PathLike, what: str = "input") -> Path:
    """``path`` if it is a regular file of at most :data:`MAX_INPUT_BYTES`: a pipe or a device could
    block or never end, a folder is no file. ``FileNotFoundError`` when absent, else ``ValueError``
    naming the file; ``what`` names its kind. Every input file passes here before it is opened."""
    import stat

    path = Path(path)
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a pipe" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
        raise ValueError(f"{path}: is {kind}, not a regular file; a {what} must be a file")
    if st.st_size > MAX_INPUT_BYTES:
        raise ValueError(f"{path}: {st.st_size} bytes, over the {MAX_INPUT_BYTES >> 30} GiB limit for a {what}")
    return path


def read_input(path: str | os.PathLike, what: str = "input") -> bytes:
    """The bytes of ``path`` after :func:`check_input`."""
    return check_input(path, what).read_bytes()


def read_gzip(path: str | os.PathLike, what: str = "gzip file") -> bytes:
    """The inflated content of a gzip file, complete and at most :data:`MAX_INPUT_BYTES`:
    ``ValueError`` naming the file for a truncated or corrupt stream or one that inflates beyond the
    limit (a gzip bomb), checked while inflating, never after."""
    import zlib

    data = read_input(path, what)
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip header and trailer (CRC, length) checked
    try:
        out = d.decompress(data, MAX_INPUT_BYTES)
        if d.unconsumed_tail:
            raise ValueError(f"inflates beyond the {MAX_INPUT_BYTES >> 30} GiB limit")
        if not d.eof:
            raise ValueError("truncated gzip stream")
    except zlib.error as e:
        raise ValueError(f"{path}: not a readable gzip stream ({e})") from None
    except ValueError as e:
        raise ValueError(f"{path}: not a readable gzip stream ({e})") from None
    return out


def check_pixels(height: int, width: int, source: str | os.PathLike) -> None:
    """``ValueError`` naming ``source`` when an image size is negative or over :data:`MAX_PIXELS`."""
    if height < 0 or width < 0 or height * width > MAX_PIXELS:
        raise ValueError(f"{source}: declares {height}×{width} pixels, over the limit of {MAX_PIXELS} (a decompression bomb, or not an image)")


#: the image format each input suffix must hold: a file is what its name says
SUFFIX_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def open_image(src, path: str | os.PathLike, fn, what: str = "image"):
    """``fn(im)`` of the image ``src`` (a path or bytes stream) named ``path``, opened after its
    header is checked: the format its suffix names (:data:`SUFFIX_FORMATS`) and at most
    :data:`MAX_PIXELS`. ``ValueError`` naming ``path`` for an unreadable, mislabelled or oversized
    image, ``FileNotFoundError`` for an absent one."""
    path = Path(path)
    fmt = SUFFIX_FORMATS.get(path.suffix.lower())
    if isinstance(src, (str, os.PathLike)):
        src = check_input(src, what)
    try:
        with Image.open(src, formats=(fmt,) if fmt else None) as im:
            check_pixels(im.height, im.width, path)
            return fn(im)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        said = f"not {fmt} data, though named {path.suffix}" if isinstance(e, UnidentifiedImageError) and fmt else str(e).removeprefix(f"{path}: ")
        raise ValueError(f"{path}: unreadable {what} ({said})") from None


def write_text(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_parts(data: bytes) -> tuple[str, int, int, bytes] | None:
    """``(mode, width, height, zlib stream)`` of an 8-bit grayscale (``L``) or palette (``P``),
    non-interlaced PNG, found by ``struct`` alone; ``None`` for any other file."""
    import struct

    if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR" or len(data) < 33:
        return None
    w, h, depth, color, _, _, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if depth != 8 or color not in (0, 3) or interlace != 0:
        return None
    pos, idat = 33, []
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat.append(data[pos + 8 : pos + 8 + length])
        elif kind == b"IEND":
            break
        pos += 12 + length
    return ("L" if color == 0 else "P"), w, h, b"".join(idat)


_DECODE_IN_PLACE: bool | None = None


def _decode_in_place_works() -> bool:
    """Whether Pillow decodes into an image made by ``Image.frombuffer`` over a numpy array (it
    shares the array's memory), checked once on a tiny PNG; if not, decoded images are copied."""
    global _DECODE_IN_PLACE
    if _DECODE_IN_PLACE is None:
        try:
            want = np.array([[0, 255, 7], [255, 0, 9]], dtype=np.uint8)
            png = _io.BytesIO()
            Image.fromarray(want, mode="L").save(png, format="PNG")
            mode, w, h, stream = png_parts(png.getvalue())
            got = np.zeros_like(want)
            Image.frombuffer(mode, (w, h), got, "raw", mode, 0, 1).frombytes(stream, "zip", mode)
            _DECODE_IN_PLACE = bool(np.array_equal(got, want))
        except Exception:  # noqa: BLE001 - any failure: use the copying path
            _DECODE_IN_PLACE = False
    return _DECODE_IN_PLACE


def decode_png(parts: tuple[str, int, int, bytes], out: np.ndarray | None = None) -> np.ndarray:
    """Decode ``png_parts`` output (Pillow's C zlib decoder, which also undoes the PNG filters) into
    ``out`` (``H × W`` uint8, C-contiguous) or a new array; ``ValueError`` if the stream is bad."""
    mode, w, h, stream = parts
    check_pixels(h, w, "PNG")
    if out is None:
        out = np.empty((h, w), dtype=np.uint8)
    if _decode_in_place_works():
        Image.frombuffer(mode, (w, h), out, "raw", mode, 0, 1).frombytes(stream, "zip", mode)
    else:
        out[...] = np.asarray(Image.frombytes(mode, (w, h), stream, "zip", mode))
    return out


def read_png_8bit(path: str | os.PathLike) -> np.ndarray:
    """A PNG's pixel values as an array: quickly for 8-bit grayscale or palette PNGs (the masks
    ``amg.py`` writes, label maps), whose values (gray levels, palette indices) come back as ``uint8``.

    Those are parsed here and decoded by Pillow's C decoder straight into the array, skipping
    Pillow's per-file Python work and a copy; any other PNG (16-bit, RGB, interlaced, …) goes through
    ``Image.open`` (``np.asarray`` of it). ``ValueError`` naming the file if it is not readable.
    """
    path = Path(path)
    data = read_input(path, "PNG")
    parts = png_parts(data)
    if parts is None:
        return open_image(_io.BytesIO(data), path, np.asarray, "PNG")
    try:
        check_pixels(parts[2], parts[1], path)
        return decode_png(parts)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable PNG ({str(e).removeprefix(f'{path}: ')})") from None


def read_label(path: str | os.PathLike, spec: DatasetSpec | None = None) -> np.ndarray:
    """Read a label image as a ``uint8`` array of class indices.

    Palette (mode ``P``) and grayscale (mode ``L``) PNGs hold indices directly (8-bit PNGs are
    decoded by :func:`read_png_8bit`'s fast path); an RGB colour label is mapped back through the
    dataset palette. With ``spec`` given, values other than ``0..n_classes-1`` and void raise
    ``ValueError`` naming the file.
    """
    path = Path(path)
    try:
        arr = read_png_8bit(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"label file not found: {path}") from None
    except ValueError as e:
        raise ValueError(f"{path}: unreadable label image ({str(e).removeprefix(f'{path}: ')})") from None
    if arr.ndim == 3 and arr.shape[2] in (3, 4) and arr.dtype == np.uint8:
        arr = _rgb_to_index(arr[..., :3], (spec or VOC).palette, path)
    elif arr.ndim != 2 or arr.dtype != np.uint8:
        raise ValueError(f"{path}: label image of {arr.dtype} values with shape {arr.shape}; expected a palette (P) or grayscale (L) PNG")
    if spec is not None:
        check_label_values(arr, spec, path)
    return arr


def _rgb_to_index(rgb: np.ndarray, palette: np.ndarray, path: Path) -> np.ndarray:
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    pal_code = (palette[:, 0].astype(np.int64) << 16) | (palette[:, 1].astype(np.int64) << 8) | palette[:, 2]
    lut = {int(c): i for i, c in reversed(list(enumerate(pal_code)))}
    uniq, inv = np.unique(code, return_inverse=True)
    try:
        idx = np.array([lut[int(u)] for u in uniq], dtype=np.uint8)
    except KeyError as e:
        raise ValueError(f"{path}: RGB label colour {int(e.args[0]):06x} is not in the palette") from None
    return idx[inv].reshape(code.shape)


def write_label(path: str | os.PathLike, label: np.ndarray, spec: DatasetSpec = VOC) -> None:
    """Write ``label`` as a palette PNG with ``spec``'s palette, atomically; values outside the label
    space raise ``ValueError`` naming ``path``. Compressed with zlib's run-length strategy (label maps
    are long runs): smaller files than the default and about four times faster to write."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"{path}: a label map must be 2-D, got shape {label.shape}")
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise ValueError(f"{path}: label values must fit in 0..255")
        label = label.astype(np.uint8)
    check_label_values(label, spec, path)
    im = Image.fromarray(label, mode="P")
    im.putpalette(spec.palette.reshape(-1).tolist())
    with atomic_path(path, suffix=".png.tmp") as tmp:
        im.save(tmp, format="PNG", compress_type=ZLIB_RLE, compress_level=1)


ZLIB_RLE = 3
"""zlib's ``Z_RLE`` compression strategy."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as H × W × 3 uint8 RGB (grayscale, palette and RGBA are converted)."""
    try:
        return open_image(path, path, lambda im: np.array(im.convert("RGB")))
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A PyTorch checkpoint read with ``weights_only`` (no code runs); ``ValueError`` naming the file
    when it is missing, truncated, not a checkpoint or not a dict."""
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    check_input(path, "checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a bad file
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: a checkpoint should hold a dict, found {type(state).__name__}")
    return state


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(H, W)`` of an image file, read from its header."""
    try:
        return open_image(path, path, lambda im: (im.height, im.width))
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an ``H × W × 3`` uint8 RGB image (format from the suffix, PNG lossless) atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image, np.uint8)).save(tmp, format=Image.registered_extensions()[path.suffix.lower()])


_NOT_IN_A_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")


def check_id(image_id: object, source: str | os.PathLike) -> str:
    """``image_id`` if it is a name (what ``<folder>/<id><suffix>`` may be built from): a non-empty
    string without ``/``, ``\\``, NUL or control characters, neither ``.`` nor ``..``. Anything else
    would read or write outside the folder it names, so ``ValueError`` naming ``source`` (the id list,
    CSV or folder the id came from). Every id samcam reads, from any source, passes through here."""
    if not isinstance(image_id, str) or image_id in ("", ".", "..") or _NOT_IN_A_NAME.search(image_id):
        raise ValueError(f"{source}: id {image_id!r} is not a name (no /, \\, .., control characters or empty ids); ids name files inside a folder")
    return image_id


def check_ids(ids: Sequence[str], source: str | os.PathLike) -> list[str]:
    """Every id of ``ids`` through :func:`check_id`."""
    return [check_id(i, source) for i in ids]


def read_ids(path: str | os.PathLike) -> list[str]:
    """Read an id list: one id per line (first word), blank lines and ``#`` comments skipped, a UTF-8
    byte-order mark ignored. ``ValueError`` naming the file when it is a folder, not UTF-8 text,
    holds no id, or lists an id twice (it would be scored twice)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; an id list is a text file with one id per line")
    try:
        text = read_input(path, "id list").decode("utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"id list not found: {path}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}); an id list is one id per line") from None
    ids = [s.split()[0] for s in (ln.strip() for ln in text.splitlines()) if s and not s.startswith("#")]
    if not ids:
        raise ValueError(f"{path}: holds no ids")
    check_ids(ids, path)
    seen: set[str] = set()
    dups = [i for i in ids if i in seen or seen.add(i)]
    if dups:
        raise ValueError(f"{path}: id {dups[0]} is listed more than once ({len(dups)} repeats)")
    return ids


def require_files(paths: Sequence[Path], what: str) -> None:
    """Raise ``FileNotFoundError`` listing the first missing paths (``what`` names their kind)."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(f"{len(missing)} {what} missing: {shown}{more}")


def folder_ids(folder: str | os.PathLike, suffix: str, what: str, ids: list[str] | None = None) -> list[str]:
    """``ids``, each checked to have ``folder/<id><suffix>``, or the ids of every such file of ``folder``
    (sorted); ``FileNotFoundError`` naming the folder when it is missing or holds none, or listing the
    files missing. ``what`` names the files (``"CAM"``, ``"prediction"``, ...)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {folder}")
    if ids is None:
        ids = check_ids(sorted(p.name.removesuffix(suffix) for p in folder.glob(f"*{suffix}")), folder)
        if not ids:
            raise FileNotFoundError(f"{folder}: holds no <id>{suffix} {what} files")
    else:
        check_ids(ids, f"the ids given for {folder}")
    require_files([folder / f"{i}{suffix}" for i in ids], f"{what} files")
    return ids


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def common_folder(paths) -> str | None:
    """The one folder that holds all ``paths`` (for provenance records), or ``None`` when they are spread out."""
    folders = {str(Path(p).parent) for p in paths}
    return folders.pop() if len(folders) == 1 else None


def image_index(images_dir: str | os.PathLike) -> dict[str, Path]:
    """Map id → image path for every ``.jpg/.jpeg/.png`` in ``images_dir``."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {images_dir}")
    index = {check_id(p.stem, images_dir): p for p in sorted(images_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    if not index:
        raise FileNotFoundError(f"image folder {images_dir} holds no .jpg/.png images")
    return index


def check_output(out: str | os.PathLike, *inputs: str | os.PathLike | None) -> None:
    """Refuse an output (file or folder) that is an input or lies inside an input folder: nothing a
    user gave is ever written into or over."""
    o = Path(out).resolve()
    for i in inputs:
        if i is None:
            continue
        r = Path(i).resolve()
        if o == r:
            raise ValueError(f"output {out} is the input {i}; choose another output path")
        if r in o.parents:
            raise ValueError(f"output {out} lies inside the input folder {i}; choose another output path")


RUN_RECORD = "samcam_run.json"
"""The provenance file of every output folder: the step, its inputs (where and what: a path and a
content fingerprint), its parameters, samcam's version."""

LOCK_FILE = ".samcam.lock"
"""Held (``fcntl.flock``) by the one process that writes an output folder."""

STALE_TMP_SECONDS = 600.0
"""A temporary file older than this is left from a killed run (a live one exists for seconds)."""

DATA_VAR = "${SAMCAM_DATA}"
"""How a recorded path under :func:`data_root` begins."""


def record_path(path: str | os.PathLike, base: str | os.PathLike) -> str:
    """``path`` as a record holds it: ``${SAMCAM_DATA}/…`` when it lies under :func:`data_root`,
    else relative to the folder ``base`` that holds the record (``../../masks/x``), so a record reads
    the same from any checkout. The one rule for every path samcam records (:func:`resolve_recorded`
    reads one back)."""
    p = Path(os.path.abspath(path))
    for root in _roots(data_root()):
        if p == root or root in p.parents:
            rel = p.relative_to(root).as_posix()
            return DATA_VAR if rel == "." else f"{DATA_VAR}/{rel}"
    try:  # lexical, so a path through a link of the checkout (.venv) stays inside it
        return Path(os.path.relpath(p, os.path.abspath(base))).as_posix()
    except ValueError:  # another drive (Windows): nothing relative exists
        return str(p)


def read_record(path: str | os.PathLike, kind: str, remedy: str) -> dict:
    """A JSON object a step wrote beside its outputs (a run record); ``ValueError`` naming ``path``,
    the ``kind`` of record and the ``remedy`` when it is unreadable or not an object."""
    try:
        record = json.loads(Path(path).read_text())
        if not isinstance(record, dict):
            raise ValueError(f"a JSON {type(record).__name__}, not an object")
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable {kind} ({e}); {remedy}") from None
    return record


def resolve_recorded(text: str, base: str | os.PathLike) -> Path:
    """The path a :func:`record_path` string names, read from a record in the folder ``base``."""
    if text == DATA_VAR or text.startswith(DATA_VAR + "/"):
        return data_root() / text[len(DATA_VAR) + 1 :]
    return Path(base) / text


def _roots(root: Path) -> list[Path]:
    """``root`` as given (absolute) and resolved (symbolic links followed), each once."""
    return list(dict.fromkeys([Path(os.path.abspath(root)), Path(os.path.realpath(root))]))


_ABSOLUTE = re.compile(r"(?<![\w.+/-])/[^\s'\"`<>|;,)\]}]+")


def relocate_text(text: str, base: str | os.PathLike, checkouts: Sequence[str | os.PathLike] = ()) -> str:
    """``text`` with every absolute path under :func:`data_root`, this checkout (:data:`REPO`, and the
    ``checkouts`` taken as this one: where committed files were made) or the folder beside it (where
    ``../shared/data`` lies) rewritten by :func:`record_path` against ``base``; other text (system
    paths) is unchanged. For printed output, parameters and summaries."""
    roots = [(r, r) for r in (*_roots(data_root()), *_roots(REPO))]
    roots += [(Path(os.path.abspath(c)), REPO) for c in checkouts]
    roots += [(r, r) for r in _roots(REPO.parent)] + [(Path(os.path.abspath(c)).parent, REPO.parent) for c in checkouts]

    def one(m: re.Match) -> str:
        p = Path(m.group(0))
        for old, new in roots:
            if p == old or old in p.parents:
                return record_path(new / p.relative_to(old), base) + ("/" if m.group(0).endswith("/") else "")
        return m.group(0)

    return _ABSOLUTE.sub(one, text)


def relocate(value, base: str | os.PathLike, checkouts: Sequence[str | os.PathLike] = ()):
    """A JSON-like ``value`` (dicts, lists, strings, paths, numbers) with :func:`relocate_text`
    applied to each string and path; numbers and keys are unchanged."""
    if isinstance(value, dict):
        return {k: relocate(v, base, checkouts) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [relocate(v, base, checkouts) for v in value]
    if isinstance(value, os.PathLike):
        return record_path(value, base)
    if isinstance(value, str):
        return relocate_text(value, base, checkouts)
    return value


COST_RECORD = "samcam_cost.json"
MASK_RECORD = "samcam_masks.json"

#: bookkeeping files of an output folder: not part of its content when it is another step's input
RECORD_FILES = frozenset({RUN_RECORD, COST_RECORD, MASK_RECORD})


def fingerprint(path: str | os.PathLike | None) -> str | None:
    """A content fingerprint of an input: the SHA-256 of a file; for a folder, the SHA-256 over the
    sorted ``(relative name, size, SHA-256)`` of its files, all levels down, leaving out hidden files
    (locks, temporaries) and :data:`RECORD_FILES`. ``None`` for no input or a missing one. Equal
    contents give equal fingerprints wherever they lie; 10 MB of labels or masks take about 0.1 s."""
    import hashlib

    if path is None or not Path(path).exists():
        return None
    p = Path(path)
    if not p.is_dir():
        return "sha256:" + sha256_file(p)
    h = hashlib.sha256()
    for q in sorted(p.rglob("*")):
        rel = q.relative_to(p)
        if q.is_dir() or any(part.startswith(".") for part in rel.parts) or rel.as_posix() in RECORD_FILES:
            continue
        h.update(f"{rel.as_posix()}\0{q.stat().st_size}\0{sha256_file(q)}\n".encode())
    return "sha256:" + h.hexdigest()


@contextlib.contextmanager
def lock_output(out: str | os.PathLike) -> Iterator[Path]:
    """Hold ``out/.samcam.lock`` (``fcntl.flock``, released when the block ends or the process dies)
    while a step writes ``out``; ``RuntimeError`` at once, naming the folder, when another process
    holds it: two runs never mix their outputs in one folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; a folder is then not guarded
        yield out
        return
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"{out}: another samcam process is writing this folder ({path} is locked); wait for it or choose another output folder") from None
        try:
            yield out
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


#: what a record compares with a rerun's: a rerun that differs in any is refused (paths are not
#: compared: a moved checkout or a copied input with the same content is the same input)
COMPARED = ("step", "fingerprints", "parameters", "samcam_version")


@contextlib.contextmanager
def claim_output(out: str | os.PathLike, step: str, inputs: dict[str, str | os.PathLike | None], params: dict,
                 notes: dict | None = None) -> Iterator[Path]:  # fmt: skip
    """Make ``out`` the output folder of ``step`` with these ``inputs`` and ``params``, locked
    (:func:`lock_output`) for the ``with`` block in which the step writes it.

    The first run writes ``out/samcam_run.json``: each input's path (:func:`record_path`) and content
    (:func:`fingerprint`), the parameters (paths in them recorded the same way) and samcam's version.
    A later run whose inputs have the same content, with the same parameters and version, resumes
    (wherever the checkout or the inputs now lie); any other is refused (``ValueError`` naming the
    record and what differs: a changed input by name and path), so one folder never mixes outputs of
    two settings or holds outputs of stale inputs. A folder that holds no output yet (a first run that
    failed early) takes the new record. ``notes`` are stored, not compared. Temporary files left by a
    killed run are removed. ``out`` may not be or lie in an input.
    """
    from samcam import __version__

    out = Path(out)
    check_output(out, *inputs.values())
    with lock_output(out):
        record = {"step": step, "samcam_version": __version__,
                  "inputs": {k: (record_path(v, out) if v is not None else None) for k, v in inputs.items()},
                  "fingerprints": {k: fingerprint(v) for k, v in inputs.items()},
                  "parameters": json.loads(json.dumps(relocate(params, out), default=str))}  # fmt: skip
        path = out / RUN_RECORD
        has_outputs = any(p.suffix in OUTPUT_SUFFIXES for p in out.iterdir())
        if path.exists() and has_outputs:
            old = read_record(path, "provenance record", "remove it or choose another output folder")
            if "fingerprints" not in old:
                raise ValueError(f"{path}: a record without input fingerprints (made before samcam recorded them; scripts/relocate_records.py adds them); choose another output folder")
            changed = [k for k in record["fingerprints"] if old["fingerprints"].get(k) != record["fingerprints"][k]]
            if changed:
                what = ", ".join(f"{k} ({inputs[k]})" for k in changed)
                raise ValueError(f"{path}: the input {what} differs in content from the one this folder's outputs were made from; choose another output folder")
            diff = [k for k in COMPARED if k != "fingerprints" and old.get(k) != record[k]]
            if diff:
                what = "; ".join(_differences(old.get(k), record[k], k) for k in diff)
                raise ValueError(f"{path}: this folder holds outputs made with other settings ({what}); choose another output folder")
        elif has_outputs:
            raise ValueError(f"{out}: holds outputs without a provenance record ({RUN_RECORD}); choose another output folder")
        else:
            write_text(path, json.dumps({**record, "notes": notes or {}}, indent=1, sort_keys=True) + "\n")
        clean_temporaries(out)
        yield out


def machine() -> str:
    """This machine in words, for cost records: CPU model and core count."""
    import platform

    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} cores"


def add_cost(folder: str | os.PathLike, seconds: float, images: int, device: str = "cpu") -> None:
    """Append one run of a step to ``folder/samcam_cost.json``: its seconds, images and device. A
    resumed step adds a run, so the folder's cost (:func:`read_cost`) is the sum of its runs."""
    import datetime

    path = Path(folder) / COST_RECORD
    runs = _cost_runs(path)
    runs.append({"seconds": round(float(seconds), 3), "images": int(images), "device": device, "machine": machine() if device == "cpu" else device,
                 "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})  # fmt: skip
    write_text(path, json.dumps({"runs": runs}, indent=1) + "\n")


def _cost_runs(path: Path) -> list[dict]:
    if not path.exists():
        return []
    try:
        runs = json.loads(path.read_text())["runs"]
        if not all(isinstance(r, dict) and {"seconds", "images", "machine"} <= set(r) for r in runs):
            raise ValueError("a run lacks seconds, images or machine")
        return runs
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: unreadable cost record ({e}); remove it to start the record anew") from None


def read_cost(folder: str | os.PathLike) -> dict:
    """The summed cost of ``folder``'s runs: ``seconds``, ``images``, ``seconds_per_image``, the
    ``devices`` (``cpu``, ``cuda:0``) and ``machines``; empty values when the folder has no record."""
    runs = _cost_runs(Path(folder) / COST_RECORD)
    secs, n = sum(r["seconds"] for r in runs), sum(r["images"] for r in runs)
    return {"seconds": secs if runs else None, "images": n, "seconds_per_image": secs / n if n else None,
            "devices": sorted({r.get("device", "cpu") for r in runs}), "machines": sorted({r["machine"] for r in runs})}  # fmt: skip


#: the file kinds the pipeline steps write (an output folder holding any of them is not empty)
OUTPUT_SUFFIXES = (".png", ".npy", ".gz", ".pt")


def _differences(old, new, key: str) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return ", ".join(f"{key}.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)
    return f"{key}: {old!r} -> {new!r}"


def clean_temporaries(folder: str | os.PathLike, older_than: float = STALE_TMP_SECONDS) -> int:
    """Remove the ``.*.tmp`` files of :func:`atomic_path` older than ``older_than`` seconds; returns the count."""
    import time

    now, n = time.time(), 0
    for p in Path(folder).glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > older_than:
                p.unlink()
                n += 1
    return n


def is_complete(path: str | os.PathLike) -> bool:
    """Whether an output file exists whole: a PNG that passes its checksums, a ``.gz`` that
    decompresses to its end, an ``.npy`` whose data are all there, any other file non-empty. A
    truncated or empty file counts as not done."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return False
    except OSError:
        return False
    if path.suffix == ".png":
        try:
            with Image.open(path) as im:
                im.load()
            return True
        except (OSError, SyntaxError, UnidentifiedImageError, ValueError):
            return False
    if path.suffix == ".gz":
        import gzip
        import zlib

        try:
            with gzip.open(path, "rb") as f:
                while f.read(1 << 20):
                    pass
            return True
        except (OSError, EOFError, zlib.error):
            return False
    if path.suffix == ".npy":
        try:
            np.load(path, allow_pickle=False, mmap_mode="r")
            return True
        except ValueError:  # an object array (IRN's dict): unpickling tells whether it is whole
            from samcam.data.safe_pickle import load_object_npy

            try:
                load_object_npy(path)
                return True
            except (ValueError, OSError, EOFError):
                return False
        except OSError:
            return False
    return True


def pending(ids: Sequence[str], out: str | os.PathLike, suffix: str = ".png") -> list[str]:
    """The ids whose ``out/<id><suffix>`` is absent or incomplete (:func:`is_complete`), in order."""
    out = Path(out)
    return [i for i in check_ids(ids, f"the ids given for {out}") if not is_complete(out / f"{i}{suffix}")]


def data_root() -> Path:
    """``$SAMCAM_DATA`` or ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("SAMCAM_DATA", REPO.parent / "shared" / "data"))
