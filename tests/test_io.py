"""samcam.io's codecs and file lookups against what a user's files hold (written here with PIL, gzip
and zlib, independently of the code under test), and each refusal's message naming the file."""

from __future__ import annotations

import gzip
import math
import os
import re
import zlib

import numpy as np
import pytest
from PIL import Image

from samcam import io, outputs
from samcam.data.spaces import VOC


def test_write_label_takes_any_integer_type_within_0_255_and_writes_the_voc_palette(tmp_path):
    label = np.array([[0, 1, 20], [255, 7, 0]], dtype=np.int64)
    io.write_label(tmp_path / "a.png", label)
    im = Image.open(tmp_path / "a.png")
    assert im.mode == "P" and im.format == "PNG"
    assert np.array_equal(np.asarray(im), label) and np.asarray(im).dtype == np.uint8
    palette = np.array(im.getpalette()[: 3 * len(VOC.palette)]).reshape(-1, 3)
    assert np.array_equal(palette, VOC.palette)
    assert palette[1].tolist() == [128, 0, 0] and palette[15].tolist() == [192, 128, 128]  # aeroplane, person: the published palette
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # nothing left beside it
    io.write_label(tmp_path / "b.png", label.astype(np.uint8))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), label)


@pytest.mark.parametrize("values", [[-1, 3], [0, 256], [-5, 0]])
def test_write_label_refuses_values_outside_0_255_naming_the_file(tmp_path, values):
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'a.png'}: label values must fit in 0..255")):
        io.write_label(tmp_path / "a.png", np.array([values], dtype=np.int32))
    assert not any(tmp_path.iterdir())


def test_write_label_refuses_a_map_that_is_not_2d(tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'a.png'}: a label map must be 2-D, got shape (2, 2, 3)")):
        io.write_label(tmp_path / "a.png", np.zeros((2, 2, 3), np.uint8))


@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_write_label_refuses_values_outside_the_label_space_naming_the_file(tmp_path, dtype):
    """21..254 fit in a byte but are no VOC class (0..20) and not void (255): refused, the file named."""
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'a.png'}: label values [21, 254] outside 0..20 (and 255 = void) for dataset voc")):
        io.write_label(tmp_path / "a.png", np.array([[0, 21], [254, 255]], dtype=dtype))
    assert not any(tmp_path.iterdir())


def test_write_label_writes_through_a_temporary_samcam_recognises(tmp_path, monkeypatch):
    """While the PNG is being written, the folder holds one hidden file that samcam takes for its own
    temporary (so a killed run's leftover is cleaned, not taken for a user's file); then only the label."""
    seen = []
    save = Image.Image.save

    def spy(im, fp, *args, **kwargs):
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        return save(im, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", spy)
    io.write_label(tmp_path / "a.png", np.zeros((2, 3), np.uint8))
    assert len(seen) == 1 and len(seen[0]) == 1
    assert seen[0][0].startswith(".a.png.") and outputs.is_temporary(seen[0][0])
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_write_label_compresses_with_zlibs_run_length_strategy(tmp_path):
    """Z_RLE matches only runs of one value (distance 1): a row that repeats a 64-pixel pattern with no two
    neighbours equal is stored as literals, at least its entropy in bytes, where deflate's ordinary
    matching would store the repeats as back-references in under a hundred bytes."""
    period = [i % 21 for i in range(63)] + [255]  # no value next to itself, across the period's end too
    label = np.array([period * 32], np.uint8)  # 1 × 2048: no row above (the Up filter cannot make runs)
    io.write_label(tmp_path / "a.png", label)
    mode, w, h, stream, _ = io.png_parts((tmp_path / "a.png").read_bytes())
    assert (mode, w, h) == ("P", 2048, 1)
    raw = zlib.decompress(stream)
    assert raw == b"\x00" + label.tobytes()  # filter type 0 (none): the bytes coded are the pixels themselves
    counts = np.unique(label, return_counts=True)[1]
    entropy_bits = -sum(c * math.log2(c / label.size) for c in counts)  # the least any literal-only code takes
    assert len(stream) >= entropy_bits / 8


def test_an_rgb_label_is_read_through_the_palette(tmp_path):
    """An RGB rendering of a VOC label (what many tools save) reads as the class indices, uint8."""
    idx = np.array([[0, 1, 15], [255, 20, 0]], np.uint8)
    Image.fromarray(VOC.palette[idx].astype(np.uint8)).save(tmp_path / "a.png")  # the 256-colour palette: void 255 is (224, 224, 192)
    got = io.read_label(tmp_path / "a.png", VOC)
    assert got.dtype == np.uint8 and got.shape == (2, 3) and np.array_equal(got, idx)
    rgb = VOC.palette[idx].astype(np.uint8)
    rgb[0, 0] = (10, 11, 12)
    Image.fromarray(rgb).save(tmp_path / "b.png")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'b.png'}: RGB label colour 0a0b0c is not in the palette")):
        io.read_label(tmp_path / "b.png", VOC)


def test_read_gzip_inflates_a_gzip_file_and_names_each_fault(tmp_path):
    data = bytes(range(256)) * 40
    (tmp_path / "a.gz").write_bytes(gzip.compress(data))
    assert io.read_gzip(tmp_path / "a.gz") == data
    whole = gzip.compress(data)
    (tmp_path / "cut.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'cut.gz'}: not a readable gzip stream (truncated gzip stream)")):
        io.read_gzip(tmp_path / "cut.gz")
    (tmp_path / "two.gz").write_bytes(whole + b"xyz")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'two.gz'}: not a readable gzip stream (3 bytes after the end of the gzip stream)")):
        io.read_gzip(tmp_path / "two.gz")
    (tmp_path / "z.gz").write_bytes(zlib.compress(data))  # a zlib stream is not a gzip file (no header, no CRC-32 trailer)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'z.gz'}: not a readable gzip stream (")):
        io.read_gzip(tmp_path / "z.gz")
    (tmp_path / "d.gz").mkdir()
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'd.gz'}: is a folder, not a regular file; a compact mask file must be a file")):
        io.read_gzip(tmp_path / "d.gz", "compact mask file")


def test_write_image_writes_uint8_rgb_in_the_suffixs_format(tmp_path):
    img = np.stack([*np.meshgrid(np.arange(6) * 40.0, np.arange(4) * 60.0), np.full((4, 6), 7.0)], axis=-1)  # floats 0..200
    io.write_image(tmp_path / "a.png", img)
    im = Image.open(tmp_path / "a.png")
    assert im.format == "PNG" and im.mode == "RGB" and np.array_equal(np.asarray(im), img.astype(np.uint8))
    io.write_image(tmp_path / "b.JPG", img)
    assert Image.open(tmp_path / "b.JPG").format == "JPEG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.JPG"]


def test_read_gzip_names_a_gzip_file_by_default(tmp_path):
    (tmp_path / "d.gz").mkdir()
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'd.gz'}: is a folder, not a regular file; a gzip file must be a file")):
        io.read_gzip(tmp_path / "d.gz")


def test_write_bytes_writes_the_bytes_atomically(tmp_path):
    data = bytes(range(256)) + b"\x00\r\n"
    io.write_bytes(tmp_path / "sub" / "a.bin", data)  # the folder is made
    assert (tmp_path / "sub" / "a.bin").read_bytes() == data
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.bin"]
    io.write_bytes(tmp_path / "sub" / "a.bin", b"second")  # replaces the file
    assert (tmp_path / "sub" / "a.bin").read_bytes() == b"second"


def test_common_folder():
    assert io.common_folder(["a/x.png", "a/y.png"]) == "a"
    assert io.common_folder(["a/x.png"]) == "a"
    assert io.common_folder(["a/x.png", "b/y.png"]) is None
    assert io.common_folder([]) is None


def test_image_lookups_name_what_is_missing(tmp_path):
    d = tmp_path / "img"
    with pytest.raises(FileNotFoundError, match=re.escape(f"image folder not found: {d}")):
        io.image_index(d)
    d.mkdir()
    (d / "a.txt").write_text("not an image")  # sorted before the image: skipped, not the end of the listing
    with pytest.raises(FileNotFoundError, match=re.escape(f"image folder {d} holds no .jpg/.png images")):
        io.image_index(d)
    Image.fromarray(np.zeros((3, 5, 3), np.uint8)).save(d / "b.png")
    assert io.image_index(d) == {"b": d / "b.png"}
    assert io.image_size(d / "b.png") == (3, 5)
    with pytest.raises(FileNotFoundError, match=re.escape(f"image file not found: {d / 'c.png'}")):
        io.image_size(d / "c.png")
    with pytest.raises(ValueError, match=re.escape(str(d))):  # an id that is a path: refused, naming the folder asked
        io.find_image(d, "../b")


@pytest.mark.parametrize(
    "read, what",
    [
        (lambda p: io.check_input(p, "mask file"), "mask file"),
        (lambda p: io.read_input(p, "id list"), "id list"),
        (lambda p: io.read_yaml(p, "recipe"), "recipe"),
        (lambda p: io.read_csv(p, "metadata.csv"), "metadata.csv"),
        (lambda p: io.read_ids(p), "id list"),
        (lambda p: io.sha256_file(p, what="checkpoint"), "checkpoint"),
        (lambda p: io.load_checkpoint(p), "checkpoint"),
        (lambda p: io.read_gzip(p, "mask file", 1 << 20), "mask file"),
    ],
    ids=["check_input", "read_input", "read_yaml", "read_csv", "read_ids", "sha256_file", "load_checkpoint", "read_gzip"],
)
def test_every_reader_says_an_absent_input_is_not_found_naming_its_kind_and_path(tmp_path, read, what):
    # one home (check_input) for "<kind> not found: <path>", the message a user reads for a mistyped path
    missing = tmp_path / "sub" / "nope.bin"
    with pytest.raises(FileNotFoundError) as e:
        read(missing)
    assert str(e.value) == f"{what} not found: {missing}"
    (tmp_path / "link").symlink_to(tmp_path / "gone")  # a broken link is absent too
    with pytest.raises(FileNotFoundError, match=re.escape(f"{what} not found: {tmp_path / 'link'}")):
        read(tmp_path / "link")


def test_read_labelled_image_pairs_an_image_with_its_label_and_names_both_when_their_sizes_differ(tmp_path):
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    label = np.array([[0, 1, 2, 3, 255]] * 4, dtype=np.uint8)
    Image.fromarray(label, mode="L").save(tmp_path / "l.png")
    image, got = io.read_labelled_image(tmp_path / "a.png", tmp_path / "l.png", VOC)
    assert np.array_equal(image, rgb) and np.array_equal(got, label)
    Image.fromarray(label.T.copy(), mode="L").save(tmp_path / "t.png")  # 5 × 4: the label of another image
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 't.png'}: ground-truth size (5, 4) differs from image size (4, 5) ({tmp_path / 'a.png'})")):
        io.read_labelled_image(tmp_path / "a.png", tmp_path / "t.png", VOC, "ground-truth")


def _gray_png(label: np.ndarray, bits: int, rows_kept: int | None = None) -> bytes:
    """A grayscale PNG of ``bits`` per sample holding ``label``'s values as its raw samples, by hand;
    ``rows_kept``: its data a whole zlib stream of only the first rows (every CRC valid)."""
    import struct

    per_byte = 8 // bits
    rows = []
    for r in label:
        padded = np.concatenate([r, np.zeros(-len(r) % per_byte, dtype=r.dtype)]).reshape(-1, per_byte)
        rows.append(b"\0" + bytes(int(sum(int(v) << (8 - bits * (k + 1)) for k, v in enumerate(g))) for g in padded))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", label.shape[1], label.shape[0], bits, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"".join(rows[:rows_kept]))) + chunk(b"IEND", b"")


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_a_grayscale_label_of_fewer_than_8_bits_is_read_as_its_raw_samples(tmp_path, bits):
    # audit 11, F2: Pillow scales a 4-bit sample v to 17 v (a picture's gray), so class 1 read as 17 and 15 as void
    label = (np.arange(7 * 5).reshape(7, 5) % (2**bits)).astype(np.uint8)  # an odd width: each row padded to a byte
    (tmp_path / "g.png").write_bytes(_gray_png(label, bits))
    with Image.open(tmp_path / "g.png") as im:  # the file is what it claims: Pillow reads it, scaled
        assert im.size == (5, 7) and (bits == 1 or np.asarray(im).max() == 255)
    got = io.read_label(tmp_path / "g.png", VOC)
    assert got.dtype == np.uint8 and np.array_equal(got, label)


def test_a_palette_label_re_indexed_by_an_editor_is_read_by_its_colours(tmp_path):
    # audit 11, F1: PIL's ADAPTIVE palette (or an optimiser) keeps the VOC colours under other indices; read by
    # index, such labels scored 4.12 mIoU where the same labels score 55.65
    label = np.zeros((6, 8), dtype=np.uint8)
    label[1:3, 1:4], label[3:5, 4:7], label[5, :] = 15, 1, 255  # person, aeroplane, a void row
    Image.fromarray(VOC.palette[label]).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "adaptive.png")
    with Image.open(tmp_path / "adaptive.png") as im:
        assert im.mode == "P" and set(np.unique(np.asarray(im))) != {0, 1, 15, 255}  # the indices are not the classes
    assert np.array_equal(io.read_label(tmp_path / "adaptive.png", VOC), label)
    # renumbered 0..2 with a palette holding the VOC colours of 1, 15 and void
    im = Image.fromarray(np.searchsorted([0, 1, 15, 255], label).astype(np.uint8), mode="P")
    im.putpalette(VOC.palette[[0, 1, 15, 255]].ravel().tolist())
    im.save(tmp_path / "renumbered.png")
    assert np.array_equal(io.read_label(tmp_path / "renumbered.png", VOC), label)
    # the VOC palette itself, and a palette that is no colour code (a grey ramp): the indices are the classes
    io.write_label(tmp_path / "voc.png", label)
    assert np.array_equal(io.read_label(tmp_path / "voc.png", VOC), label)
    im = Image.fromarray(label, mode="P")
    im.putpalette([v for i in range(256) for v in (i, i, i)])
    im.save(tmp_path / "grey.png")
    assert np.array_equal(io.read_label(tmp_path / "grey.png", VOC), label)


# --- the small helpers every message and check goes through, against values computed here (issue 22:
# io.py's surviving mutants) ---


@pytest.mark.parametrize("n,text", [(0, "0 bytes"), (512, "512 bytes"), (1000, "1000 bytes"), (1 << 10, "1 KiB"),
                                    (3 << 10, "3 KiB"), (1 << 20, "1 MiB"), (3 << 20, "3 MiB"), (1 << 30, "1 GiB"),
                                    (4 << 30, "4 GiB"), ((1 << 30) + (1 << 20), "1025 MiB"), ((1 << 20) + 1, f"{(1 << 20) + 1} bytes")])  # fmt: skip
def test_size_text_is_the_largest_whole_binary_unit(n, text):
    assert io._size_text(n) == text


def _name_limit(tmp_path, monkeypatch, limit):
    """The file system's name limit as ``os.pathconf`` reports it (``None``: it cannot say)."""
    real = os.pathconf

    def pathconf(path, name):
        if limit is None:
            raise OSError("no pathconf here")
        return limit if name == "PC_NAME_MAX" else real(path, name)

    monkeypatch.setattr(os, "pathconf", pathconf)


@pytest.mark.parametrize("limit", [255, 100, None])
def test_check_writable_allows_a_name_exactly_as_long_as_its_temporary_fits(tmp_path, monkeypatch, limit):
    # the temporary is "." + name + ".samcam-" + 8 random + name's suffix + ".tmp": 25 bytes more for a .png
    _name_limit(tmp_path, monkeypatch, limit)
    room = (limit or 255) - 25
    io.check_writable(tmp_path / ("a" * (room - 4) + ".png"))
    target = tmp_path / "deep" / "er" / ("a" * (room - 3) + ".png")  # folders still to be made: the nearest one named
    with pytest.raises(ValueError) as e:
        io.check_writable(target)
    assert str(e.value) == (f"output {target}: its name is {room + 1} bytes, too long to write there: samcam writes it through a "
                            f"temporary file whose name is 25 bytes longer, and {tmp_path} allows at most {limit or 255}; "
                            f"give a name of at most {room} bytes")  # fmt: skip


def test_check_writable_counts_the_temporary_suffix_given(tmp_path, monkeypatch):
    _name_limit(tmp_path, monkeypatch, 100)
    name = "b" * (100 - 19)  # suffix ".x": "." + name + ".samcam-" + 8 + ".x" is 19 bytes more
    io.check_writable(tmp_path / name, suffix=".x")
    with pytest.raises(ValueError, match="whose name is 21 bytes longer"):  # its own suffix: "" + ".tmp"
        io.check_writable(tmp_path / name)


@pytest.mark.parametrize("read_only", [True, False])
def test_check_writable_says_why_a_folder_cannot_be_written(tmp_path, monkeypatch, read_only):
    # root writes anywhere, so the file system's answers are given here: write permission refused
    # (read and search allowed), and a read-only flag or none
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: not (mode & os.W_OK) and real_access(p, mode, **kw))
    flags = os.ST_RDONLY if read_only else 0
    asked = []
    monkeypatch.setattr(os, "statvfs", lambda p: asked.append(p) or type("V", (), {"f_flag": flags})())
    with pytest.raises(ValueError) as e:
        io.check_writable(tmp_path / "sub" / "out.png")
    why = "on a read-only file system" if read_only else "not writable by this user"
    assert str(e.value) == f"output {tmp_path / 'sub' / 'out.png'}: cannot be written: {tmp_path} is {why}"
    assert asked == [tmp_path]  # the file system of the folder it would write in
    monkeypatch.setattr(os, "access", real_access)
    io.check_writable(tmp_path / "sub" / "out.png")


def test_near_miss_points_only_at_a_file_of_another_name():
    assert io.near_miss(["abc", "d e"], lambda name: False) == ""
    assert io.near_miss(["abc"], lambda name: True) == ""  # the id itself exists: nothing to point at
    assert io.near_miss(["2008_000008  1"], {"2008_000008"}.__contains__) == (
        " ('2008_000008' exists: an id list's line is one whole id, here '2008_000008  1'; does the list have a second column?)")
    nfd = "cafe\u0301"
    assert io.near_miss([nfd], {"caf\u00e9"}.__contains__) == (
        " ('caf\u00e9' exists: the same name in another Unicode normal form; rename the file or the id)")
    ids = [f"id{i} x" for i in range(6)]  # only the first five missing ids are looked at
    assert io.near_miss(ids, {"id5"}.__contains__) == ""
    assert io.near_miss(ids, {"id4"}.__contains__).startswith(" ('id4' exists")


def test_still_pixels_reads_an_image_without_frames():
    im = Image.fromarray(np.arange(6, dtype=np.uint8).reshape(2, 3))
    assert not hasattr(im, "n_frames")
    assert np.array_equal(io.still_pixels(im), np.arange(6).reshape(2, 3))


@pytest.mark.parametrize("payload", [b"\0" * 200_000, np.random.default_rng(0).bytes(200_000)], ids=["runs", "noise"])
def test_read_gzip_refuses_a_stream_past_its_limit_holding_no_more_than_the_limit(tmp_path, monkeypatch, payload):
    (tmp_path / "a.gz").write_bytes(gzip.compress(payload))
    held = []
    real = zlib.decompressobj

    class Counting:
        def __init__(self, *a):
            self.d = real(*a)

        def decompress(self, data, max_length=0):
            out = self.d.decompress(data, max_length)
            held.append(len(out))
            return out

        def __getattr__(self, name):
            return getattr(self.d, name)

    monkeypatch.setattr(zlib, "decompressobj", Counting)
    with pytest.raises(ValueError) as e:
        io.read_gzip(tmp_path / "a.gz", "mask file", limit=1 << 16)
    assert str(e.value) == f"{tmp_path / 'a.gz'}: not a readable gzip stream (inflates beyond the 64 KiB limit of a mask file)"
    assert sum(held) <= (1 << 16) + 1  # the limit, and one byte to tell that more would come
    held.clear()
    assert io.read_gzip(tmp_path / "a.gz", limit=len(payload)) == payload


def test_first_sentence_is_whole_or_cut_at_a_word():
    assert io._first_sentence("") == "" and io._first_sentence("\n  \n") == ""
    assert io._first_sentence("\n  It failed. Try again.\nmore") == "It failed"
    assert io._first_sentence("Ends in X.") == "Ends in X"
    assert io._first_sentence("word " * 10, limit=19) == "word word word …"
    assert io._first_sentence("word " * 10, limit=22) == "word word word word …"
    assert io._first_sentence("abcd " * 4 + "abc", limit=23) == "abcd " * 4 + "abc"  # exactly the limit: whole
    assert io._first_sentence("x" * 300) == "x" * 300 and io._first_sentence("y " * 151).endswith(" …")


def test_read_csv_names_the_missing_file_as_a_table(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"table not found: {tmp_path / 'no.csv'}")):
        io.read_csv(tmp_path / "no.csv")


@pytest.mark.parametrize("header", ["01,1", "NA,null", "1,1.0", "True,true"])
def test_read_csv_takes_column_names_as_written(tmp_path, header):
    # names pandas keeps apart (it reads a header as text) are no repeated column, whatever they would parse to
    (tmp_path / "t.csv").write_text(f"{header}\n5,6\n")
    table = io.read_csv(tmp_path / "t.csv")
    assert list(table.columns) == header.split(",") and table.iloc[0].tolist() == [5, 6]


def test_read_csv_names_a_long_repeated_column_by_its_first_80_characters(tmp_path):
    name = "c" * 100
    (tmp_path / "t.csv").write_text(f"{name},{name}\n1,2\n")
    with pytest.raises(ValueError) as e:
        io.read_csv(tmp_path / "t.csv")
    assert str(e.value) == f"{tmp_path / 't.csv'}: the column {'c' * 80!r} appears twice (pandas would rename one and read the other)"


def test_read_csv_gives_the_parser_message_in_one_line(tmp_path):
    import io as _io

    import pandas as pd

    data = b"a,b\n1,2\n1,2,3,4\n"
    (tmp_path / "t.csv").write_bytes(data)
    with pytest.raises(pd.errors.ParserError) as want:
        pd.read_csv(_io.BytesIO(data))
    with pytest.raises(ValueError) as e:
        io.read_csv(tmp_path / "t.csv")
    assert str(e.value) == f"{tmp_path / 't.csv'}: not a readable CSV ({' '.join(str(want.value).split())})"


def test_read_yaml_names_a_repeated_key_past_a_key_it_does_not_check_with_its_line(tmp_path):
    (tmp_path / "c.yaml").write_text("~: 0\nb: 1\nb: 2\n")  # a null key is not compared; the keys after it are
    with pytest.raises(ValueError) as e:
        io.read_yaml(tmp_path / "c.yaml", "configuration")
    assert str(e.value) == f"{tmp_path / 'c.yaml'}: not a readable YAML file (the key 'b' is given twice in one mapping, line 3)"


_TURNS = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
          5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
          8: lambda a: np.rot90(a, 1)}  # fmt: skip  (EXIF 2.3's eight orientations, by hand)


@pytest.mark.parametrize("orientation", range(1, 10))
def test_an_image_is_read_upright_as_its_exif_orientation_says(tmp_path, capsys, orientation):
    # audit 12, F5: a photo tagged "turned" was read as stored, so the labels and masks of the picture
    # everyone sees (viewers, OpenCV's imread in the official SAM script) did not fit it
    from samcam.progress import reset_notes

    reset_notes()
    rng = np.random.default_rng(orientation)
    stored = Image.fromarray(rng.integers(0, 255, (16, 24, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[io.EXIF_ORIENTATION] = orientation
    stored.save(tmp_path / "a.jpg", exif=exif.tobytes(), quality=95)
    with Image.open(tmp_path / "a.jpg") as im:
        assert im.getexif()[io.EXIF_ORIENTATION] == orientation
        raw = np.asarray(im.convert("RGB"))  # the stored pixels, as decoded
    want = _TURNS.get(orientation, _TURNS[1])(raw)  # 9: no orientation: as stored
    assert np.array_equal(io.read_image(tmp_path / "a.jpg"), want)
    assert io.image_size(tmp_path / "a.jpg") == want.shape[:2]  # the header's size, turned alike (audit 13, F3: cam2label's check)
    io.read_image(tmp_path / "a.jpg")
    err = capsys.readouterr().err
    turned = 2 <= orientation <= 8
    assert err.count("note:") == int(turned) and (not turned or f"{tmp_path / 'a.jpg'}: images with an EXIF orientation are read turned upright" in err)


def test_two_spellings_of_one_name_are_refused_wherever_ids_are_read(tmp_path):
    # audit 12, F18: café composed and decomposed, two files that show alike, were scored as two images
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    assert nfc != nfd
    (tmp_path / "gt").mkdir()
    for i in (nfc, nfd, "plain"):
        io.write_label(tmp_path / "gt" / f"{i}.png", np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError) as e:
        io.folder_ids(tmp_path / "gt", ".png", "ground-truth")
    first, second = sorted([nfc, nfd])
    assert str(e.value) == (f"{tmp_path / 'gt'}: ids {first!r} and {second!r} are one name in two Unicode forms (composed and decomposed); "
                            "keep one, or they are read as two images")  # fmt: skip
    (tmp_path / "ids.txt").write_text(f"{nfd}\nplain\n{nfc}\n")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'ids.txt'}: ids {nfd!r} and {nfc!r} are one name")):
        io.read_ids(tmp_path / "ids.txt")
    Image.new("RGB", (3, 2)).save(tmp_path / "gt" / f"{nfc}.jpg")
    (tmp_path / "img").mkdir()
    for i in (nfc, nfd):
        Image.new("RGB", (3, 2)).save(tmp_path / "img" / f"{i}.jpg")
    with pytest.raises(ValueError, match="are one name in two Unicode forms"):
        io.image_index(tmp_path / "img")
    (tmp_path / "gt" / f"{nfd}.png").unlink()  # one spelling: read as before
    assert io.folder_ids(tmp_path / "gt", ".png", "ground-truth") == sorted([nfc, "plain"])
    assert io.check_ids(["a", "b"], "x") == ["a", "b"]


@pytest.mark.parametrize("kept", [1, 3, 5])
def test_a_label_whose_data_stream_ends_early_is_refused(tmp_path, kept):
    # audit 13, F1: a whole zlib stream of fewer rows (CRCs and IEND valid) was read, the missing rows whatever
    # memory held: eval scored 45.61 where the whole label scores 61.31, exit 0 (Pillow reads it without a word too)
    from samcam.pipeline.evaluate import evaluate_folders

    label = (np.arange(6 * 9).reshape(6, 9) % 21).astype(np.uint8)
    (tmp_path / "whole").mkdir()
    (tmp_path / "cut").mkdir()
    (tmp_path / "whole" / "a.png").write_bytes(_gray_png(label, 8))
    (tmp_path / "cut" / "a.png").write_bytes(_gray_png(label, 8, rows_kept=kept))
    assert np.array_equal(io.read_label(tmp_path / "whole" / "a.png", VOC), label)
    with pytest.raises(ValueError) as e:
        io.read_label(tmp_path / "cut" / "a.png", VOC)
    assert str(e.value) == (f"{tmp_path / 'cut' / 'a.png'}: unreadable label image (unreadable PNG (its data stream ends after {kept} "
                            "of its 6 rows: a truncated file))")  # fmt: skip
    with pytest.raises(ValueError, match="a truncated file"):
        evaluate_folders(tmp_path / "cut", tmp_path / "whole", VOC)


def test_a_label_whose_last_row_is_decode_pngs_mark_is_read_whole(tmp_path):
    # the last row untouched by the decoder is told by a mark; a label holding that very row is read as it is
    w = 2 * len(io._LAST_ROW_MARK) + 3
    label = np.zeros((4, w), np.uint8)
    label[-1] = io._LAST_ROW_MARK[np.arange(w) % len(io._LAST_ROW_MARK)]
    (tmp_path / "a.png").write_bytes(_gray_png(label, 8))
    got, _ = io.read_png_samples(tmp_path / "a.png", "label file")
    assert np.array_equal(got, label)
