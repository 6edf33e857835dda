"""Files in and out: atomic writes, id lists, images and label maps, image folders, where data lives
(output folders, their records and resumes: :mod:`samcam.outputs`).

Every function here touches the file system; the algorithms elsewhere take and return arrays.
"""

from __future__ import annotations

import contextlib
import io as _io
import os
import re
import unicodedata
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from samcam.data.spaces import VOC, DatasetSpec, check_label_values

REPO = Path(__file__).resolve().parents[1]
"""The checkout that holds ``samcam/``, ``notebooks/`` and ``results/``."""


TMP_MARK = ".samcam-"
"""What the name of every temporary of :func:`atomic_path` holds between its target's name and 8 random
characters (``tempfile.mkstemp``'s), so that a user's hidden ``.draft.tmp`` is never taken for one."""

TEMPORARY = re.compile(r"\..+" + re.escape(TMP_MARK) + r"[a-z0-9_]{8}(\.[A-Za-z0-9]+)*")
"""The name of a temporary :func:`atomic_path` makes (``.<target>.samcam-<random><suffix>``)."""

LEGACY_TEMPORARY = re.compile(r"\.(.+)(\.[A-Za-z0-9]+)\.[a-z0-9_]{8}\2(\.tmp)?")
"""The name samcam 0.2's :func:`atomic_path` gave a temporary before :data:`TMP_MARK` (``.<target>.<random><suffix>``,
the suffix repeating the target's: ``.a.png.k2j3h4g5.png.tmp``), left by a run killed then: still cleaned."""


def naming_output(target: str | os.PathLike) -> contextlib.AbstractContextManager:
    """Within the block, an ``OSError`` (a full disk, a quota, a read-only file system) becomes one
    naming ``target``, the output being written: ``[Errno 28] No space left on device`` alone does
    not say which output failed. For blocks that only write ``target`` (or files inside it)."""
    return _NamingOutput(Path(target))


class _NamingOutput(contextlib.AbstractContextManager):
    def __init__(self, target: Path) -> None:
        self.target = target

    def __exit__(self, kind, e, tb) -> bool:
        if isinstance(e, OSError) and not (e.strerror or str(e)).startswith(str(self.target)):  # not named already
            raise type(e)(e.errno, f"{self.target}: cannot be written ({e.strerror or e})") from e
        return False


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder; on success it is renamed to ``target``.

    A reader never sees a half-written file, and an interrupted run leaves no partial output: at most
    a hidden ``.<target>.samcam-<8 random>[suffix]`` file (:data:`TEMPORARY`), which
    :func:`samcam.outputs.clean_temporaries` removes on a later run.
    An existing ``target`` that is not a regular file (a FIFO, a device, a link to a file of the
    user's) is refused: it is the user's, not an output to replace.
    """
    target = Path(target)
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise ValueError(f"{target}: exists and is {'a link' if target.is_symlink() else 'not a regular file'}; an output replaces only a file samcam wrote, choose another path")
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix, end = _temporary_affixes(target, suffix)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=end)
    except OSError as e:  # the output is named, not the hidden temporary that could not be made
        raise OSError(e.errno, f"{target}: cannot be written ({e.strerror or e})") from e
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600 files; give them the usual mode
        os.replace(tmp_path, target)
    except OSError as e:  # a full disk, a quota: say which output could not be written
        if e.filename not in (None, tmp, str(tmp_path)) or (e.strerror or str(e)).startswith(str(target)):  # another file's, or named already
            raise
        raise OSError(e.errno, f"{target}: cannot be written ({e.strerror or e})") from e
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _temporary_affixes(target: Path, suffix: str | None) -> tuple[str, str]:
    """What the name of :func:`atomic_path`'s temporary for ``target`` starts and ends with (between
    them, ``tempfile.mkstemp``'s 8 random characters): :data:`TEMPORARY`."""
    return f".{target.name}{TMP_MARK}", suffix or target.suffix + ".tmp"


def check_writable(target: str | os.PathLike, suffix: str | None = None) -> None:
    """``ValueError`` naming ``target``, said before any work, where :func:`atomic_path` could not write
    it: its folder (or, where folders are still to be made, the nearest one that exists) is on a
    read-only file system or not writable by this user, or its name is too long for that file system
    once it is the temporary's (``.<name>.samcam-<8 random><suffix>``, longer than the name)."""
    target = Path(target)
    full = Path(os.path.abspath(target))
    base = full.parent
    while not base.is_dir() and base != base.parent:
        base = base.parent
    prefix, end = _temporary_affixes(full, suffix)
    try:
        limit = os.pathconf(base, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows), or the file system does not say
        limit = 255
    n, extra = len(os.fsencode(full.name)), len(os.fsencode(prefix + end)) + 8 - len(os.fsencode(full.name))
    if n + extra > limit:
        raise ValueError(f"output {target}: its name is {n} bytes, too long to write there: samcam writes it through a temporary file "
                         f"whose name is {extra} bytes longer, and {base} allows at most {limit}; give a name of at most {limit - extra} bytes")  # fmt: skip
    if not os.access(base, os.W_OK | os.X_OK):
        read_only = hasattr(os, "statvfs") and bool(os.statvfs(base).f_flag & getattr(os, "ST_RDONLY", 1))
        raise ValueError(f"output {target}: cannot be written: {base} is {'on a read-only file system' if read_only else 'not writable by this user'}")


MAX_PIXELS = Image.MAX_IMAGE_PIXELS
"""The most pixels an image, label or mask may declare (Pillow's decompression-bomb limit, about
179 million: a 13 400² image); checked from the header, before anything is decoded."""

MAX_INPUT_BYTES = 4 << 30
"""The largest input file read whole, and the most bytes a gzip stream may inflate to (4 GiB)."""

MAX_TEXT_BYTES = 256 << 20
"""The largest text input (an id list, a metadata CSV, a table, a config: 256 MiB, ten million ids):
one larger is no such file, and parsing it would take the memory of the work it lists."""

#: the kinds of input that are text, each held to :data:`MAX_TEXT_BYTES`
TEXT_INPUTS = ("id list", "mask metadata", "reproduce config", "cam-eval table", "alpha sweep table", "annotation XML", "table", "record",
               "run record", "recipe file")  # fmt: skip

MAX_CONFIG_BYTES = 1 << 20
"""The largest YAML configuration (a reproduce config, a recipe file: 1 MiB, about a hundred times the
project's own): YAML parses a few MB per minute, so a larger one is no configuration."""

#: the kinds of input that are YAML configurations, each held to :data:`MAX_CONFIG_BYTES`
CONFIG_INPUTS = ("reproduce config", "recipe file")


def check_input(path: str | os.PathLike, what: str = "input") -> Path:
    """``path`` if it is a regular file of at most :data:`MAX_INPUT_BYTES` (:data:`MAX_TEXT_BYTES` for
    the text kinds of :data:`TEXT_INPUTS`): a pipe or a device could
    block or never end, a folder is no file. ``FileNotFoundError`` ("<what> not found: <path>") when
    absent, else ``ValueError`` naming the file; ``what`` names its kind. Every input file passes here
    before it is opened, so every reader's "not found" is said here."""
    import stat

    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a pipe" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
        raise ValueError(f"{path}: is {kind}, not a regular file; {'an' if what[:1] in 'aeiou' else 'a'} {what} must be a file")
    limit = MAX_CONFIG_BYTES if what in CONFIG_INPUTS else MAX_TEXT_BYTES if what in TEXT_INPUTS else MAX_INPUT_BYTES
    if st.st_size > limit:
        raise ValueError(f"{path}: {st.st_size} bytes, over the {limit >> 20} MiB limit for {'an' if what[0] in 'aeiou' else 'a'} {what}")
    return path


def _plain_loader():
    """A safe YAML loader that refuses anchors' aliases (a few hundred bytes of nested aliases expand
    to millions of nodes, a "billion laughs", and a configuration has no use for them) and a key
    given twice in one mapping."""
    import yaml

    class PlainLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not accepted in a configuration", self.peek_event().start_mark)
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):  # a key given twice: the last would silently win
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)):
                    continue  # an unhashable key: SafeLoader's own error names it
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice in one mapping", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return PlainLoader


def read_yaml(path: str | os.PathLike, what: str) -> Any:
    """A YAML configuration (``what``: one of :data:`CONFIG_INPUTS`) read after :func:`check_input`
    with :func:`_plain_loader`: ``FileNotFoundError`` naming ``what`` and the file when absent,
    ``ValueError`` naming the file for anything unreadable (with the line of the fault)."""
    import yaml

    data = read_input(path, what)
    try:
        return yaml.load(data.decode(), Loader=_plain_loader())
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError, ValueError) as e:
        # RecursionError: nested too deeply; ValueError: a number past Python's 4,300-digit limit
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""  # the mark's own lines follow the first: the line said here
        raise ValueError(f"{path}: not a readable YAML file ({str(e).splitlines()[0]}{where})") from None


def read_input(path: str | os.PathLike, what: str = "input") -> bytes:
    """The bytes of ``path`` after :func:`check_input`."""
    return check_input(path, what).read_bytes()


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"the key {twice[:80]!r} is given twice in one object")
    return d


def json_loads(text: str | bytes):
    """``json.loads`` that refuses an object naming a key twice (``ValueError``), where the standard
    reader silently keeps the last value: a record or mask file saying two things is not read as one."""
    import json

    return json.loads(text, object_pairs_hook=_unique_keys)


def read_csv(path: str | os.PathLike, what: str = "table"):
    """A CSV table (pandas) after :func:`check_input`: ``FileNotFoundError`` ("<what> not found:
    <path>") or ``ValueError`` naming the file when it is not readable as CSV or its header (one row:
    the tables samcam reads have one) names a column twice, which pandas would rename and read apart."""
    import io as _io

    import pandas as pd

    try:
        data = read_input(path, what)
        table = pd.read_csv(_io.BytesIO(data))
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ValueError(f"{path}: not a readable CSV ({' '.join(str(e).split())[:200]})") from None
    names = [str(c) for c in pd.read_csv(_io.BytesIO(data), header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0]]
    if twice := next((n for i, n in enumerate(names) if n in names[:i]), None):
        raise ValueError(f"{path}: the column {twice[:80]!r} appears twice (pandas would rename one and read the other)")
    return table


def read_gzip(path: str | os.PathLike, what: str = "gzip file", limit: int | None = None) -> bytes:
    """The inflated content of a gzip file, complete and at most ``limit`` bytes (the kind of file's
    own, e.g. a mask file's; :data:`MAX_INPUT_BYTES` when ``None``): ``ValueError`` naming the file
    for a truncated or corrupt stream, bytes after its end, or one that inflates beyond the limit (a
    gzip bomb), checked while inflating, never after: no more than ``limit`` bytes are ever held."""
    import zlib

    data = read_input(path, what)
    limit = MAX_INPUT_BYTES if limit is None else limit
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip header and trailer (CRC, length) checked
    try:
        out = d.decompress(data, limit)
        if d.unconsumed_tail or (not d.eof and d.decompress(b"", 1)):  # more to come past the limit
            raise ValueError(f"inflates beyond the {_size_text(limit)} limit of a {what}")
        if not d.eof:
            raise ValueError("truncated gzip stream")
        if d.unused_data:  # a second member or trailing bytes: not the file its writer closed
            raise ValueError(f"{len(d.unused_data)} bytes after the end of the gzip stream")
    except zlib.error as e:
        raise ValueError(f"{path}: not a readable gzip stream ({e})") from None
    except ValueError as e:
        raise ValueError(f"{path}: not a readable gzip stream ({e})") from None
    return out


def _size_text(n: int) -> str:
    """``n`` bytes as the largest whole unit that divides it (4 GiB, 256 MiB, 1000 bytes)."""
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


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


class PngParts(NamedTuple):
    """What :func:`png_parts` finds in an 8-bit ``L`` or ``P`` PNG: its mode, size, zlib stream and
    palette (``n × 3`` uint8, from its PLTE chunk; ``None`` without one)."""

    mode: str
    width: int
    height: int
    stream: bytes
    palette: np.ndarray | None


def png_parts(data: bytes) -> PngParts | None:
    """The :class:`PngParts` of an 8-bit grayscale (``L``) or palette (``P``), non-interlaced PNG,
    found by ``struct`` alone; ``None`` for any other file; ``ValueError`` when
    such a PNG lacks its IEND chunk (cut short), has bytes after it (not the file its writer closed)
    or a chunk whose CRC does not match its bytes (corrupt: Pillow refuses a bad header CRC, samcam
    checks every chunk's)."""
    import struct
    import zlib

    if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR" or len(data) < 33:
        return None
    w, h, depth, color, _, _, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if depth != 8 or color not in (0, 3) or interlace != 0:
        return None
    pos, idat, end, palette = 8, [], None, None
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 4 : pos + 8 + length]
        crc = data[pos + 8 + length : pos + 12 + length]
        if len(crc) == 4 and zlib.crc32(body) != struct.unpack(">I", crc)[0]:
            raise ValueError(f"the CRC of its {kind.decode('latin-1')!r} chunk does not match (a corrupt PNG)")
        if kind == b"IDAT":
            idat.append(data[pos + 8 : pos + 8 + length])
        elif kind == b"PLTE" and length % 3 == 0:
            palette = np.frombuffer(data[pos + 8 : pos + 8 + length], dtype=np.uint8).reshape(-1, 3)
        elif kind == b"IEND":
            end = pos + 12
            break
        elif kind == b"acTL":  # an animated PNG: its first frame would be read as the image, its others dropped
            raise ValueError("an animated PNG (acTL chunk); give one still image per file")
        pos += 12 + length
    if end is None or end > len(data):
        raise ValueError("no IEND chunk: the PNG is cut short")
    if end < len(data):
        raise ValueError(f"{len(data) - end} bytes after the IEND chunk")
    return PngParts("L" if color == 0 else "P", w, h, b"".join(idat), palette)


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
            mode, w, h, stream, _ = png_parts(png.getvalue())
            got = np.zeros_like(want)
            Image.frombuffer(mode, (w, h), got, "raw", mode, 0, 1).frombytes(stream, "zip", mode)
            _DECODE_IN_PLACE = bool(np.array_equal(got, want))
        except Exception:  # noqa: BLE001 - any failure: use the copying path
            _DECODE_IN_PLACE = False
    return _DECODE_IN_PLACE


def decode_png(parts: PngParts, out: np.ndarray | None = None) -> np.ndarray:
    """Decode ``png_parts`` output (Pillow's C zlib decoder, which also undoes the PNG filters) into
    ``out`` (``H × W`` uint8, C-contiguous) or a new array; ``ValueError`` if the stream is bad."""
    mode, w, h, stream, _ = parts
    check_pixels(h, w, "PNG")
    if out is None:
        out = np.empty((h, w), dtype=np.uint8)
    in_place = _decode_in_place_works()
    if in_place and h:  # a stream that ends early (a whole zlib stream of fewer rows) leaves the rows after it as they were
        out[-1] = _LAST_ROW_MARK[np.arange(w) % len(_LAST_ROW_MARK)]
        Image.frombuffer(mode, (w, h), out, "raw", mode, 0, 1).frombytes(stream, "zip", mode)
    else:
        out[...] = np.asarray(Image.frombytes(mode, (w, h), stream, "zip", mode))
    if not in_place or (h and np.array_equal(out[-1], _LAST_ROW_MARK[np.arange(w) % len(_LAST_ROW_MARK)])):
        # the last row untouched, or a row that happens to be the mark: the stream's length tells (Pillow ends without a word)
        import zlib

        try:
            size = len(zlib.decompressobj().decompress(stream, h * (w + 1)))  # never more than the image holds
        except zlib.error as e:
            raise ValueError(f"its data stream is corrupt ({e})") from None
        if size < h * (w + 1):
            raise ValueError(f"its data stream ends after {size // (w + 1)} of its {h} rows: a truncated file")
    return out


#: what :func:`decode_png` writes in the last row before decoding: a label or mask row is all but never this
_LAST_ROW_MARK = np.frombuffer(b"samcam:last-row-not-decoded\x00\xff\x7f", np.uint8)


def still_pixels(im: Image.Image) -> np.ndarray:
    """The pixels of a still image; an animated one (APNG, GIF) is refused, not read as its first frame."""
    if getattr(im, "n_frames", 1) > 1:
        raise ValueError(f"an animated image of {im.n_frames} frames; give one still image per file")
    return np.asarray(im)


def read_label(path: str | os.PathLike, spec: DatasetSpec | None = None) -> np.ndarray:
    """Read a label image as a ``uint8`` array of class indices.

    Palette (mode ``P``) and grayscale PNGs hold indices directly, as their raw samples
    (:func:`read_png_samples`; a 4-bit 1 is 1, not the 17 of a picture); an RGB colour label is mapped back through the dataset
    palette, and so is a palette label whose indices are coloured with the dataset's colours of other
    classes (a PNG re-indexed by an editor or optimiser, PIL's ``ADAPTIVE``: :func:`_recoloured`).
    With ``spec`` given, values other than ``0..n_classes-1`` and void raise ``ValueError`` naming the
    file.
    """
    path = Path(path)
    try:
        arr, palette = read_png_samples(path, "label file")
    except ValueError as e:
        raise ValueError(f"{path}: unreadable label image ({str(e).removeprefix(f'{path}: ')})") from None
    if arr.ndim == 3 and arr.shape[2] in (3, 4) and arr.dtype == np.uint8:
        if arr.shape[2] == 4 and (arr[..., 3] != 255).any():  # many tools mark "not annotated" so: no class, and not void either
            raise ValueError(f"{path}: a colour label with transparent pixels (alpha below 255); transparency is no class: "
                             "give those pixels void (255) or a class")  # fmt: skip
        arr = _rgb_to_index(arr[..., :3], (spec or VOC).palette, path)
    elif arr.ndim != 2 or arr.dtype != np.uint8:
        raise ValueError(f"{path}: label image of {arr.dtype} values with shape {arr.shape}; expected a palette (P) or grayscale (L) PNG")
    elif palette is not None:
        arr = _recoloured(arr, palette, (spec or VOC).palette)
    if spec is not None:
        check_label_values(arr, spec, path)
    return arr


def read_png_samples(path: str | os.PathLike, what: str = "PNG") -> tuple[np.ndarray, np.ndarray | None]:
    """A PNG's samples as an array, and its palette (``n × 3`` uint8; ``None`` but for a palette
    PNG): 8-bit grayscale and palette PNGs (the masks ``amg.py`` writes, label maps) parsed by
    :func:`png_parts` and decoded by Pillow's C decoder straight into the array, skipping Pillow's
    per-file Python work and a copy; any other (16-bit, RGB, interlaced, …) through ``Image.open``,
    a grayscale one of 1, 2 or 4 bits as its raw samples (Pillow scales them to 0..255, as for a
    picture: a 4-bit 1 would read 17). ``ValueError`` naming the file if it is not readable."""
    path = Path(path)
    data = read_input(path, what)
    try:
        parts = png_parts(data)
        if parts is not None:
            check_pixels(parts.height, parts.width, path)
            return decode_png(parts), parts.palette
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable PNG ({str(e).removeprefix(f'{path}: ')})") from None
    gray_bits = data[24] if data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) > 25 and data[25] == 0 else 8

    def samples(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
        arr = still_pixels(im)
        if im.mode == "P":
            return arr, np.array(im.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
        if im.mode == "1":  # a 1-bit grayscale PNG: Pillow gives bools
            return arr.astype(np.uint8), None
        if im.mode == "L" and gray_bits in (2, 4):  # Pillow scales a 2- or 4-bit sample v to v · 255 / (2^bits − 1)
            return arr // (255 // (2**gray_bits - 1)), None
        return arr, None

    return open_image(_io.BytesIO(data), path, samples, what)


def _colour_codes(rgb: np.ndarray) -> np.ndarray:
    """One integer per RGB colour (``0xRRGGBB``) of an ``… × 3`` uint8 array."""
    return (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]


def _recoloured(arr: np.ndarray, palette: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Palette indices ``arr`` as the classes their colours name: unchanged where each index in use has
    its class's colour (``colours``, the dataset palette) or where the palette is no colour code of the
    dataset (a grey ramp, indices past the palette: the indices are the classes); mapped by colour
    where every index in use has some class's colour, and not all their own."""
    n = min(len(palette), len(colours))
    if np.array_equal(palette[:n], colours[:n]):  # the dataset's palette (samcam's labels, VOC's): no pixel to look at
        return arr
    used = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    if used[-1] >= len(palette) or used[-1] >= len(colours):
        return arr
    if np.array_equal(palette[used], colours[used]):
        return arr
    want = _colour_codes(colours)
    code = _colour_codes(palette[used])
    if not np.isin(code, want).all():
        return arr
    first = {int(c): i for i, c in reversed(list(enumerate(want)))}
    lut = np.arange(256, dtype=np.uint8)
    lut[used] = [first[int(c)] for c in code]
    return lut[arr]


def _rgb_to_index(rgb: np.ndarray, palette: np.ndarray, path: Path) -> np.ndarray:
    code = _colour_codes(rgb)
    pal_code = _colour_codes(palette)
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


def _rgb8(im, path) -> np.ndarray:
    """``H × W × 3`` uint8 of a decoded image: 8-bit modes through Pillow's conversion, 16-bit
    grayscale scaled to 8 bits (Pillow's own conversion clips it, turning most pixels white), 32-bit
    integer and float images refused (their range is unknown)."""
    if im.mode.startswith("I;16"):
        gray = (np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode in ("I", "F"):
        raise ValueError(f"{path}: a {'32-bit integer' if im.mode == 'I' else 'floating-point'} image (mode {im.mode}); expected 8 or 16 bits per channel")
    return np.array(im.convert("RGB"))


def refuse_one_file(path: str | os.PathLike, other: str | os.PathLike, what: str, other_what: str) -> None:
    """``ValueError`` naming ``path`` when it is the very file ``other`` (a symbolic or hard link to it:
    :func:`os.path.samefile`): one file read as two inputs of different kinds (a prediction and its
    ground truth, an image and its label) scores, or trains on, itself. Absent files are left to their
    readers. The file-level rule of :func:`samcam.cli.refuse_one_folder`."""
    try:
        same = os.path.samefile(path, other)
    except OSError:
        return
    if same:
        raise ValueError(f"{path}: is the file {other} itself (a link to it); one file cannot be both the {what} and {other_what}")


def read_labelled_image(image_path: str | os.PathLike, label_path: str | os.PathLike, spec: DatasetSpec | None = None,
                        what: str = "label") -> tuple[np.ndarray, np.ndarray]:
    """An image (:func:`read_image`) and its label map (:func:`read_label`; ``what``: "label" or
    "ground-truth"), ``ValueError`` naming both files when their sizes differ: a label of another
    size than its image belongs to another image."""
    refuse_one_file(image_path, label_path, "image", f"its {what}")
    label = read_label(label_path, spec)
    image = read_image(image_path)
    if image.shape[:2] != label.shape:
        raise ValueError(f"{label_path}: {what} size {label.shape} differs from image size {image.shape[:2]} ({image_path})")
    return image, label


#: the EXIF tag of an image's orientation (1: as stored; 2..8: mirrored and/or turned)
EXIF_ORIENTATION = 0x0112


def _upright(im: Image.Image, path) -> Image.Image:
    """``im`` turned as its EXIF orientation says (2..8), as viewers and OpenCV's ``imread`` (the
    official SAM script's reader) show it, so the masks, CAMs and labels made from it by those tools
    fit; said once per command. As stored otherwise (no tag, 1, or a value no orientation has)."""
    from PIL import ImageOps

    from samcam.progress import say_once

    if im.getexif().get(EXIF_ORIENTATION, 1) not in range(2, 9):
        return im
    say_once("exif-orientation", f"{path}: images with an EXIF orientation are read turned upright as it says, as viewers "
                                 "and OpenCV show them (its labels must be drawn on that picture)")  # fmt: skip
    return ImageOps.exif_transpose(im)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as H × W × 3 uint8 RGB (grayscale, palette and RGBA are converted; 16-bit
    grayscale is scaled to 8 bits), upright as its EXIF orientation says (:func:`_upright`)."""
    try:
        return open_image(path, path, lambda im: _rgb8(_upright(im, path), path))
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22, what: str | None = None) -> str:
    """Hex SHA-256 of a file, read in chunks; with ``what`` (a user's input of that kind), checked
    first by :func:`check_input`, and ``FileNotFoundError`` naming ``what`` and the file when absent."""
    import hashlib

    if what is not None:
        check_input(path, what)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _is_text(head: bytes) -> bool:
    """Whether a file beginning with ``head`` is text: UTF-8 (a character cut at the end of ``head``
    allowed) without control characters but white space; never a zip archive or a pickle."""
    import codecs

    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\n\r\f" for c in text)


def _first_sentence(text: str, limit: int = 300) -> str:
    """The first sentence of ``text``'s first line, whole (its final period left out), or, past
    ``limit`` characters, cut at a word with an ellipsis: a library's message is never cut mid-word."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    first = re.split(r"(?<=[.!?])\s", line, maxsplit=1)[0].rstrip(".")
    if len(first) > limit:
        first = first[:limit].rsplit(" ", 1)[0] + " …"
    return first


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A PyTorch checkpoint read with ``weights_only`` (no code runs); ``ValueError`` naming the file
    when it is missing, truncated, not a checkpoint or not a dict."""
    import torch

    path = check_input(path, "checkpoint")
    import warnings

    with open(path, "rb") as f:
        head = f.read(512)
    if not head or _is_text(head):  # torch's own words for these are a bare EOFError or KeyError ('101' for "hello")
        why = "an empty file" if not head else "it holds text; a checkpoint is what torch.save writes"
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({why})")
    try:
        with warnings.catch_warnings():  # torch warns about a plain pickle's protocol before refusing it: one line, the refusal
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a bad file
        why = _first_sentence(str(e)) or type(e).__name__
        if why.startswith("Weights only load failed"):  # torch's advice (weights_only=False) would run the file's code
            why = "it holds objects other than tensors and plain values; samcam never runs code from a checkpoint"
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({why})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: a checkpoint should hold a dict, found {type(state).__name__}")
    return state


def check_state(state: object, path: str | os.PathLike, what: str = "weights", why: str = "the training run diverged") -> None:
    """``ValueError`` naming ``path`` unless ``state`` is a state dict of tensors whose floating-point
    values are all finite numbers, and whose batch-norm statistics (``running_var``,
    ``num_batches_tracked``) are not negative."""
    import torch

    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: its {what} are not a state dict of tensors")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise ValueError(f"{path}: its {what} hold values that are not finite numbers ({bad}); {why}")
    # batch-norm statistics no training writes: a variance below 0 makes every later activation NaN
    bad = next((k for k, v in state.items() if k.rsplit(".", 1)[-1] in ("running_var", "num_batches_tracked") and bool((v < 0).any())), None)
    if bad is not None:
        raise ValueError(f"{path}: its {what} hold a negative batch-norm statistic ({bad}); no training run writes one")


def load_weights(module, state: object, path: str | os.PathLike, what: str = "weights") -> None:
    """Load ``state`` (a checkpoint's state dict) into ``module`` strictly; ``ValueError`` naming
    ``path`` when it is not a state dict, does not fit the module, or holds a weight that is not a
    finite number (a run that diverged must not be used as if it had trained)."""
    check_state(state, path, what)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: its {what} do not fit the network ({' '.join(str(e).split())[:300]})") from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(H, W)`` of an image file, read from its header, upright as :func:`read_image` reads it (an EXIF
    orientation that turns it a quarter swaps the two)."""
    def size(im) -> tuple[int, int]:
        turned = im.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)  # transposed, or turned by 90° or 270°
        return (im.width, im.height) if turned else (im.height, im.width)

    try:
        return open_image(path, path, size)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an ``H × W × 3`` uint8 RGB image (format from the suffix, PNG lossless) atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image, np.uint8)).save(tmp, format=Image.registered_extensions()[path.suffix.lower()])


# besides separators and control characters: a leading "." (a hidden file, which no folder listing and no
# fingerprint counts, so its changes would go unnoticed)
_NOT_IN_A_NAME = re.compile(r"[/\\\x00-\x1f\x7f-\x9f]|^\.")


def check_id(image_id: object, source: str | os.PathLike) -> str:
    """``image_id`` if it is a name (what ``<folder>/<id><suffix>`` may be built from): a non-empty
    string without ``/``, ``\\``, NUL, control characters, Unicode format characters, Unicode
    spaces (which look like nothing or like a space) or undecodable bytes, not starting with ``.`` (so
    neither ``.`` nor ``..``, nor a hidden file) nor with ``#`` (an id list's comment), without a space
    at either end (an id list's lines are stripped: such an id could be listed from a folder, never
    named in a list). Anything else
    would read or write outside the folder it names, so ``ValueError`` naming ``source`` (the id list,
    CSV or folder the id came from). Every id samcam reads, from any source, passes through here."""
    if (not isinstance(image_id, str) or image_id in ("", ".", "..") or _NOT_IN_A_NAME.search(image_id)
            or image_id.startswith("#") or image_id != image_id.strip(" ")
            or any(unicodedata.category(ch) in ("Cf", "Zs", "Zl", "Zp", "Cs") for ch in image_id if ord(ch) > 127)):  # fmt: skip
        # format characters (U+202E turns a message around) and Unicode spaces (U+00A0) look like
        # nothing or a space, so an id holding one cannot be told from another; surrogates are the
        # bytes of a file name that is not UTF-8 (Python's surrogateescape), which no text can hold
        raise ValueError(f"{source}: id {image_id!r} is not a name (no /, \\, control, format or Unicode space characters, bytes that are not UTF-8, no leading dot or #, no space at either end, or empty ids); ids name files inside a folder")
    if len(image_id.encode()) > MAX_NAME_BYTES:
        raise ValueError(f"{source}: id {image_id[:40]!r}... is {len(image_id.encode())} bytes long; a name is at most {MAX_NAME_BYTES} bytes "
                         "(a file name holds 255, and samcam adds suffixes and temporaries to it)")  # fmt: skip
    return image_id


#: The longest name (an id, a step's name) in UTF-8 bytes: a file system's 255-byte file name, less the
#: suffixes and temporary endings samcam adds to it (``.params.json``, ``.samcam-<8>.json.tmp``).
MAX_NAME_BYTES = 200


def check_ids(ids: Sequence[str], source: str | os.PathLike) -> list[str]:
    """Every id of ``ids`` through :func:`check_id`; ``ValueError`` naming ``source`` when two are one
    name in two Unicode normal forms (``café`` composed, and ``e`` + accent as macOS writes it): they
    show alike, and both files would be read as two images."""
    ids = [check_id(i, source) for i in ids]
    composed: dict[str, str] = {}
    for i in ids:
        first = composed.setdefault(unicodedata.normalize("NFC", i), i)
        if first != i:
            raise ValueError(f"{source}: ids {first!r} and {i!r} are one name in two Unicode forms (composed and decomposed); "
                             "keep one, or they are read as two images")  # fmt: skip
    return ids


def read_ids(path: str | os.PathLike) -> list[str]:
    """Read an id list: one id per line (the whole line but the spaces around it: an id may hold a space,
    as ``IMG 001`` from a folder does), blank lines and ``#`` comments skipped, a UTF-8
    byte-order mark ignored. ``ValueError`` naming the file when it is a folder, not UTF-8 text,
    holds no id, or lists an id twice (it would be scored twice)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; an id list is a text file with one id per line")
    try:
        text = read_input(path, "id list").decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}); an id list is one id per line") from None
    # the whole line: its first word alone would make `a b` (a valid id, listed from a folder) score `a`;
    # a no-break space or a tab inside stays in the id, and check_id refuses it
    # lines end at \n, \r\n or \r (old Mac text: before, its ids after the first were dropped) only:
    # str.splitlines would also break at U+2028, U+0085 or \x1c, turning one line (an id refused elsewhere) into two ids
    ids = [s for s in (ln.strip(" \t\f\v") for ln in re.split(r"\r\n|\r|\n", text)) if s and not s.startswith("#")]
    if not ids:
        raise ValueError(f"{path}: holds no ids")
    check_ids(ids, path)
    seen: set[str] = set()
    dups = [i for i in ids if i in seen or seen.add(i)]
    if dups:
        raise ValueError(f"{path}: id {dups[0]} is listed more than once ({len(dups)} repeats)")
    return ids


def require_files(paths: Sequence[Path], what: str) -> None:
    """Raise ``FileNotFoundError`` listing the first missing paths (``what`` names their kind), with a
    :func:`near_miss` hint where one of them exists under a near name."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        ends = {p.name: "".join(Path(p.name).suffixes[-2:]) for p in missing[:5]}  # .png, .json.gz
        hint = near_miss([n[: len(n) - len(e)] if e else n for n, e in ends.items()],
                         lambda i, e=next(iter(ends.values())), d=missing[0].parent: (d / f"{i}{e}").exists())  # fmt: skip
        raise FileNotFoundError(f"{len(missing)} {what} missing: {shown}{more}{hint}")


def near_miss(ids: Sequence[str], present) -> str:
    """A hint (`` (…)``, or ``""``) for ids that have no file, where ``present(name)`` says whether one of
    another name does: the same name in another Unicode normal form (``café`` written as ``e`` + accent by
    macOS: the user sees the file, samcam cannot open it), or the line's first word (an id list's line is
    one whole id, so a list with a second column, VOC's ``2008_000008  1``, names ids that do not exist)."""
    for i in list(ids)[:5]:
        for form in ("NFC", "NFD"):
            j = unicodedata.normalize(form, i)
            if j != i and present(j):
                return f" ({j!r} exists: the same name in another Unicode normal form; rename the file or the id)"
        words = i.split()
        if len(words) > 1 and present(words[0]):
            return f" ({words[0]!r} exists: an id list's line is one whole id, here {i!r}; does the list have a second column?)"
    return ""


def refuse_suffix_variants(folder: Path, suffix: str, what: str, ids: list[str] | None = None) -> None:
    """``ValueError`` naming the file when ``folder`` holds a file of one of ``ids`` (of any id when
    ``None``) whose name ends in ``suffix`` in other letter case (``a.PNG`` beside, or instead of,
    ``a.png``): samcam reads ``<id><suffix>`` only, and would pass such a file over (or read one of
    two files of one id) without a word."""
    low, wanted = suffix.lower(), None if ids is None else {f"{i}{suffix}".lower() for i in ids}
    odd = next((p for p in folder.iterdir() if p.name.lower().endswith(low) and not p.name.endswith(suffix)
                and (wanted is None or p.name.lower() in wanted)), None)  # fmt: skip
    if odd is not None:
        raise ValueError(f"{odd}: a {what} file named with {odd.name[-len(suffix):]!r}; samcam reads <id>{suffix} (rename it, keeping one file per id)")


def folder_ids(folder: str | os.PathLike, suffix: str, what: str, ids: list[str] | None = None) -> list[str]:
    """``ids``, each checked to have ``folder/<id><suffix>``, or the ids of every such file of ``folder``
    (sorted); ``FileNotFoundError`` naming the folder when it is missing or holds none, or listing the
    files missing; ``ValueError`` where a samcam step is still writing it or left it unfinished
    (:func:`samcam.outputs.check_finished`). ``what`` names the files (``"CAM"``, ``"prediction"``, ...)."""
    from samcam.outputs import check_finished

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {folder}")
    check_finished(folder)
    refuse_suffix_variants(folder, suffix, what, ids)
    if ids is None:
        # hidden files are no inputs (samcam's own temporaries among them): never listed, never fingerprinted
        ids = check_ids(sorted(p.name.removesuffix(suffix) for p in folder.glob(f"*{suffix}") if not p.name.startswith(".")), folder)
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


def find_image(images_dir: str | os.PathLike, image_id: str) -> Path:
    """The image of one id in ``images_dir`` (``<id>.jpg``, ``.jpeg`` or ``.png``, as
    :func:`image_index` reads a folder): ``FileNotFoundError`` naming the file when there is none,
    ``ValueError`` when there are two (which one is meant cannot be told)."""
    images_dir = Path(images_dir)
    names = [f"{check_id(image_id, images_dir)}{s}" for s in IMAGE_SUFFIXES for s in (s, s.upper())]  # a.jpg or a.JPG
    by_file = {}  # one file met under two spellings (a case-insensitive file system) is one image
    for q in (images_dir / n for n in names):
        if q.is_file():
            st = q.stat()
            by_file.setdefault((st.st_dev, st.st_ino), q)
    found = list(by_file.values())
    if len(found) > 1:
        raise ValueError(f"{images_dir}: two images for {image_id}, {found[0].name} and {found[1].name}; keep one")
    if not found:
        hint = near_miss([image_id], lambda i: any((images_dir / f"{i}{s}").is_file() for s in IMAGE_SUFFIXES))
        raise FileNotFoundError(f"image file not found: {images_dir / image_id}.jpg{hint}")
    return found[0]


def image_index(images_dir: str | os.PathLike) -> dict[str, Path]:
    """Map id → image path for every ``.jpg/.jpeg/.png`` in ``images_dir``; ``ValueError`` when one id
    has two images (``a.jpg`` and ``a.png``: which one is meant cannot be told). A file whose name is
    not an id (:func:`check_id`: a macOS screenshot's narrow no-break space, say) can never be asked
    for: it is left out, and a note says so once."""
    from samcam.progress import say_once

    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {images_dir}")
    index: dict[str, Path] = {}
    for p in sorted(images_dir.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            image_id = check_id(p.stem, images_dir)
        except ValueError:
            say_once("not-an-id", f"{images_dir}: images whose names are not ids are left out (e.g. {p.name!r})")
            continue
        if image_id in index:
            raise ValueError(f"{images_dir}: two images for {image_id}, {index[image_id].name} and {p.name}; keep one")
        index[image_id] = p
    if not index:
        raise FileNotFoundError(f"image folder {images_dir} holds no .jpg/.png images")
    check_ids(list(index), images_dir)
    return index


def env_folder(name: str) -> Path | None:
    """The folder environment variable ``name`` names, ``None`` when it is unset or empty (never the
    current folder); a leading ``~`` is the home folder (a value from an env file is not expanded by a
    shell). ``ValueError`` naming the variable when its value is blank or names a file."""
    value = os.environ.get(name)
    if not value:
        return None
    if not value.strip():
        raise ValueError(f"{name}={value!r} is blank; unset it or name a folder")
    path = Path(os.path.expanduser(value))
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name}={value}: names a file, not a folder")
    return path


def data_root() -> Path:
    """``$SAMCAM_DATA`` (:func:`env_folder`) or ``../shared/data`` beside the checkout."""
    return env_folder("SAMCAM_DATA") or REPO.parent / "shared" / "data"
