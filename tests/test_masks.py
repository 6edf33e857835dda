import gzip

import numpy as np
import pytest
from conftest import CACHED_MASKS, examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from samcam import cli
from samcam.io import read_label, read_png_samples, write_label
from samcam.sam.masks import MaskRuns, MaskSet, PackedMasks
from samcam.sam.mask_files import MaskStore, read_compact, read_compact_runs, read_official, read_official_packed, write_compact, write_official


def _random_set(n=5, h=17, w=23, seed=0):
    rng = np.random.default_rng(seed)
    masks = rng.random((n, h, w)) < 0.3
    return MaskSet(
        masks,
        predicted_iou=rng.random(n),
        stability_score=rng.random(n),
        point_coords=rng.random((n, 2)) * [w, h],
        crop_box=np.tile([0, 0, w, h], (n, 1)),
        meta={"model_type": "vit_t", "settings": {"points_per_side": 4}},
    )


def _assert_same(a: MaskSet, b: MaskSet):
    np.testing.assert_array_equal(a.masks, b.masks)
    for f in ("predicted_iou", "stability_score", "point_coords", "crop_box"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert a.meta == b.meta


@pytest.mark.parametrize("n", [0, 1, 5])
def test_formats_round_trip_losslessly(tmp_path, n):
    ms = _random_set(n)
    write_compact(tmp_path / "x.json.gz", ms)
    _assert_same(read_compact(tmp_path / "x.json.gz"), ms)
    write_official(tmp_path / "x", ms)
    _assert_same(read_official(tmp_path / "x"), ms)
    rec = MaskSet.from_records(ms.to_records(), shape=ms.shape, meta=ms.meta)
    _assert_same(rec, ms)


def test_records_have_generator_layout():
    rec = _random_set(2).to_records()[0]
    assert set(rec) == {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"}
    assert rec["area"] == int(rec["segmentation"].sum())
    x, y, w, h = rec["bbox"]
    ys, xs = np.nonzero(rec["segmentation"])
    assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min())


def test_official_layout_is_amg_py(tmp_path):
    write_official(tmp_path / "im", _random_set(3))
    header = (tmp_path / "im" / "metadata.csv").read_text().splitlines()[0]
    assert header.startswith("id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x")
    with Image.open(tmp_path / "im" / "0.png") as im:
        assert set(np.unique(np.array(im))) <= {0, 255}
    with pytest.raises(FileExistsError):
        write_official(tmp_path / "im", _random_set(3))
    # without metadata.csv (as the paper's code reads it) the pngs are read in numeric order
    (tmp_path / "im" / "metadata.csv").unlink()
    np.testing.assert_array_equal(read_official(tmp_path / "im").masks, _random_set(3).masks)


def test_official_folder_without_metadata_reads_ten_and_more_masks_in_numeric_order(tmp_path):
    """amg.py numbers its PNGs 0, 1, ..., 11: read without metadata.csv, mask 10 comes after mask 9,
    not after mask 1 (a name sort puts 10.png and 11.png before 2.png). Mask i, written here with
    Pillow, is the one pixel at flat index i, so its place in the set is its number."""
    folder = tmp_path / "im"
    folder.mkdir()
    n, h, w = 12, 5, 7
    for i in range(n):
        m = np.zeros(h * w, np.uint8)
        m[i] = 255
        Image.fromarray(m.reshape(h, w)).save(folder / f"{i}.png")
    want = np.eye(n, h * w, dtype=bool).reshape(n, h, w)
    np.testing.assert_array_equal(read_official(folder).masks, want)
    np.testing.assert_array_equal(read_official_packed(folder).to_masks(), want)


def test_corrupt_files_are_named(tmp_path):
    (tmp_path / "bad.json.gz").write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"bad\.json\.gz: not a samcam compact"):
        read_compact(tmp_path / "bad.json.gz")
    (tmp_path / "other.json.gz").write_bytes(gzip.compress(b'{"format": "x"}'))
    with pytest.raises(ValueError, match=r"other\.json\.gz"):
        read_compact(tmp_path / "other.json.gz")
    write_official(tmp_path / "im", _random_set(2))
    (tmp_path / "im" / "1.png").write_bytes(b"broken")
    with pytest.raises(ValueError, match=r"im/1\.png: unreadable"):
        read_official(tmp_path / "im")


def test_store_autodetects_format(tmp_path):
    MaskStore(tmp_path, "compact").write("a", _random_set(2))
    MaskStore(tmp_path, "official").write("b", _random_set(2, seed=1))
    store = MaskStore(tmp_path)
    assert store.ids() == ["a", "b"]
    assert store.format_of("a") == "compact" and store.format_of("b") == "official"
    _assert_same(store.read("b"), _random_set(2, seed=1))
    with pytest.raises(FileNotFoundError, match="no mask set for c"):
        store.read("c")


def test_cached_real_masks_read(train_with_images):
    store = MaskStore(CACHED_MASKS)
    assert set(store.ids()) == set(train_with_images)
    ms = store.read(train_with_images[0])
    assert len(ms) > 10 and ms.meta["settings"]["points_per_side"] == 32
    assert np.all(ms.predicted_iou > 0.88) and np.all(ms.stability_score >= 0.95)


def test_cli_merge_both_formats_resume_and_errors(tmp_path, capsys):
    rng = np.random.default_rng(3)
    (tmp_path / "p").mkdir()
    for name in ("a", "b"):
        write_label(tmp_path / "p" / f"{name}.png", rng.integers(0, 3, (17, 23)).astype(np.uint8))
    MaskStore(tmp_path / "m", "compact").write("a", _random_set(4))
    MaskStore(tmp_path / "m", "official").write("b", _random_set(4, seed=2))
    args = ["merge", "--pseudo", str(tmp_path / "p"), "--masks", str(tmp_path / "m"), "--out", str(tmp_path / "o")]
    assert cli.main(args) == 0
    assert "2 merged" in capsys.readouterr().out
    from merge_reference import merge_loop

    for name, seed in (("a", 0), ("b", 2)):
        label = read_label(tmp_path / "p" / f"{name}.png")
        expected = merge_loop(label, list(_random_set(4, seed=seed).masks), 21)
        np.testing.assert_array_equal(read_label(tmp_path / "o" / f"{name}.png"), expected)
    assert cli.main(args) == 0
    assert "0 merged" in capsys.readouterr().out and True
    # an input changed in place (a label added): the folder's outputs were made from other inputs
    write_label(tmp_path / "p" / "c.png", np.zeros((17, 23), np.uint8))
    assert cli.main(args) == 2
    assert "differs in content" in capsys.readouterr().err
    # an id without masks, into a new folder
    args = args[:-1] + [str(tmp_path / "o2")]
    assert cli.main(args) == 2
    assert "no mask set for c" in capsys.readouterr().err
    assert cli.main(args + ["--missing-masks", "keep-cam"]) == 2  # the policy is a setting: not mixed into that folder
    assert "parameters.missing_masks: 'error' -> 'keep-cam'" in capsys.readouterr().err
    args = args[:-1] + [str(tmp_path / "o2b")]
    assert cli.main(args + ["--missing-masks", "keep-cam"]) == 0
    # never into an input folder; masks of the wrong size are named
    assert cli.main(args[:-1] + [str(tmp_path / "p" / "out")]) == 2
    assert "the input folder" in capsys.readouterr().err
    write_label(tmp_path / "p" / "d.png", np.zeros((5, 5), np.uint8))
    MaskStore(tmp_path / "m").write("d", _random_set(2))
    assert cli.main(args[:-1] + [str(tmp_path / "o3"), "--missing-masks", "keep-cam"]) == 2  # a new folder: o2's inputs have changed
    assert "d.json.gz: mask size (17, 23) differs from label size (5, 5)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- lean readers


def _coco(masks):
    from pycocotools import mask as mask_utils

    return [r["counts"] for r in mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))]


@st.composite
def mask_stacks(draw):
    """Mask stacks whose COCO counts need one to seven characters, with deltas of both signs."""
    h, w = draw(st.integers(1, 40)), draw(st.sampled_from([1, 3, 64, 700, 5000]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    masks = []
    for kind in draw(st.lists(st.sampled_from(["random", "empty", "full", "rect", "pixel", "sparse"]), min_size=1, max_size=6)):
        m = np.zeros((h, w), bool)
        if kind == "random":
            m = rng.random((h, w)) < rng.random()
        elif kind == "full":
            m[:] = True
        elif kind == "rect":
            m[rng.integers(0, h) :, rng.integers(0, w) : rng.integers(0, w) + rng.integers(1, w + 1)] = True
        elif kind == "pixel":
            m[rng.integers(0, h), rng.integers(0, w)] = True
        elif kind == "sparse":
            m = rng.random((h, w)) < 0.002
        masks.append(m)
    return np.array(masks)


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(masks=mask_stacks())
def test_coco_strings_decode_to_the_masks(masks):
    from pycocotools import mask as mask_utils

    n, h, w = masks.shape
    counts = _coco(masks)
    runs = MaskRuns.from_coco(counts, (h, w))  # bytes, as pycocotools gives them
    np.testing.assert_array_equal(runs.to_masks(), masks)
    np.testing.assert_array_equal(runs.area, masks.reshape(n, h * w).sum(axis=1))
    # the same as pycocotools' own decoder, from the str form the compact files hold
    dense = mask_utils.decode([{"size": [h, w], "counts": c} for c in counts]).transpose(2, 0, 1)
    np.testing.assert_array_equal(MaskRuns.from_coco([c.decode() for c in counts], (h, w)).to_masks(), dense.astype(bool))
    # runs: sorted, disjoint, non-empty, within the image, column-major
    assert np.all(runs.ends > runs.starts) and runs.starts.min(initial=0) >= 0 and runs.ends.max(initial=0) <= h * w
    for i in range(n):
        s, e = runs.starts[runs.offsets[i] : runs.offsets[i + 1]], runs.ends[runs.offsets[i] : runs.offsets[i + 1]]
        assert np.all(s[1:] > e[:-1])
    for order in ("C", "F"):
        np.testing.assert_array_equal(MaskRuns.from_masks(masks, order).to_masks(), masks)
    np.testing.assert_array_equal(PackedMasks.from_masks(masks).to_masks(), masks)


def test_coco_runs_by_hand():
    # column-major: pixels (0,0) (1,0) | (0,1) (1,1) | (0,2) (1,2); mask = pixels 1, 2 and 5
    m = np.array([[[0, 1, 0], [1, 0, 1]]], bool)
    runs = MaskRuns.from_coco(_coco(m), (2, 3))
    assert runs.starts.tolist() == [1, 5] and runs.ends.tolist() == [3, 6] and runs.offsets.tolist() == [0, 2]
    assert MaskRuns.from_masks(m, "C").starts.tolist() == [1, 3, 5]  # row-major: pixels 1, 3, 5
    assert len(MaskRuns.from_coco([], (4, 5))) == 0
    # counts 2, 0, 4 (pycocotools reads a 1-run of length 0): no run is kept
    empty_run = MaskRuns.from_coco(["204"], (2, 3))
    assert empty_run.starts.size == 0 and empty_run.offsets.tolist() == [0, 0]
    assert not empty_run.to_masks().any()


@pytest.mark.parametrize(
    "counts, why",
    [
        (["0"], "add up"),  # one count of 0 pixels in a 2 × 3 image
        (["6", "3"], "add up"),  # the second too short
        ([""], "empty"),
        (["6 "], "out of range"),  # ' ' is below '0'
        (["6p"], "out of range"),  # 'p' is above 'o'
        (["1" + "_"], "ends inside a count"),  # '_' has the "more" bit: the string stops mid-count
        (["123K"], "negative"),  # count 3 = count 1 + (−5): negative
    ],
)
def test_malformed_coco_strings_are_refused(counts, why):
    with pytest.raises(ValueError, match=why):
        MaskRuns.from_coco(counts, (2, 3))


def test_lean_readers_equal_full_readers(tmp_path):
    ms = _random_set(6, h=31, w=47, seed=4)
    write_compact(tmp_path / "a.json.gz", ms)
    write_official(tmp_path / "b", ms)
    np.testing.assert_array_equal(read_compact_runs(tmp_path / "a.json.gz").to_masks(), ms.masks)
    np.testing.assert_array_equal(read_official_packed(tmp_path / "b").to_masks(), ms.masks)
    store = MaskStore(tmp_path)
    assert isinstance(store.read_masks("a"), MaskRuns) and isinstance(store.read_masks("b"), PackedMasks)
    with pytest.raises(ValueError, match=r"a\.json\.gz: mask size \(31, 47\) differs from label size \(5, 5\)"):
        store.read_masks("a", (5, 5))
    with pytest.raises(ValueError, match=r"b: mask size \(31, 47\) differs"):
        store.read_masks("b", (5, 5))
    with pytest.raises(FileNotFoundError, match="no mask set for c"):
        store.read_masks("c")
    # amg.py folders are read strictly: a mask PNG holding values other than 0/255 (or 0/1) is an error naming it
    grey = np.where(ms.masks[0], 255, 7).astype(np.uint8)
    grey[0, :5] = 254
    Image.fromarray(grey).save(tmp_path / "b" / "0.png")
    for reader in (read_official_packed, read_official):
        with pytest.raises(ValueError, match=r"b/0\.png: mask values \[7, 254, 255\] are neither 0/255 nor 0/1"):
            reader(tmp_path / "b")
    # empty sets keep their size
    write_compact(tmp_path / "e.json.gz", _random_set(0, h=7, w=9))
    write_official(tmp_path / "f", _random_set(0, h=7, w=9))
    assert store.read_masks("e").shape == store.read_masks("f").shape == (7, 9)
    assert len(store.read_masks("e")) == len(store.read_masks("f")) == 0
    # a compact file whose strings are broken is named
    import json

    doc = json.loads(gzip.decompress((tmp_path / "a.json.gz").read_bytes()))
    doc["masks"][2]["segmentation"]["counts"] = "0"
    (tmp_path / "g.json.gz").write_bytes(gzip.compress(json.dumps(doc).encode()))
    with pytest.raises(ValueError, match=r"g\.json\.gz: bad mask"):
        read_compact_runs(tmp_path / "g.json.gz")
    with pytest.raises(ValueError, match=r"g\.json\.gz: bad mask"):
        read_compact(tmp_path / "g.json.gz")


def _png_bytes(arr, palette=False):
    import io

    from samcam.data.spaces import VOC

    buf = io.BytesIO()
    im = Image.fromarray(arr)
    if palette:  # an 8-bit palette image, as samcam writes labels
        im = Image.fromarray(arr, mode="P")
        im.putpalette(VOC.palette.reshape(-1).tolist())
    im.save(buf, format="PNG")
    return buf.getvalue()


def test_png_reader_fast_and_fallback_paths(tmp_path, monkeypatch):
    import struct
    import zlib

    import samcam.io as samcam_io

    rng = np.random.default_rng(0)
    gray = (rng.random((13, 17)) < 0.4).astype(np.uint8) * 255
    gray[0, 0] = 7
    idx = rng.integers(0, 21, (13, 17)).astype(np.uint8)
    cases = {
        "gray.png": (_png_bytes(gray), gray),
        "pal.png": (_png_bytes(idx, palette=True), idx),
        "rgb.png": (_png_bytes(np.dstack([gray, idx, gray])), np.dstack([gray, idx, gray])),  # Pillow's path
        "g16.png": (_png_bytes(gray.astype(np.uint16) * 250), gray.astype(np.uint16) * 250),
    }
    # one image split over three IDAT chunks, after an ancillary chunk
    data = cases["gray.png"][0]
    (n,) = struct.unpack_from(">I", data, 33)
    assert data[37:41] == b"IDAT"
    stream = data[41 : 41 + n]

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    parts = [stream[:5], stream[5:9], stream[9:]]
    split = data[:33] + chunk(b"tEXt", b"a\x00b") + b"".join(chunk(b"IDAT", p) for p in parts) + chunk(b"IEND", b"")
    cases["split.png"] = (split, gray)
    for in_place in (True, False):
        monkeypatch.setattr(samcam_io, "_DECODE_IN_PLACE", in_place)
        for name, (raw, want) in cases.items():
            (tmp_path / name).write_bytes(raw)
            got = read_png_samples(tmp_path / name)[0]
            np.testing.assert_array_equal(got, want, err_msg=f"{name} in_place={in_place}")
            with Image.open(tmp_path / name) as im:
                np.testing.assert_array_equal(got, np.asarray(im))
    monkeypatch.setattr(samcam_io, "_DECODE_IN_PLACE", None)
    assert samcam_io._decode_in_place_works() in (True, False)
    (tmp_path / "cut.png").write_bytes(data[: 41 + n // 2])
    with pytest.raises(ValueError, match=r"cut\.png: unreadable PNG"):
        read_png_samples(tmp_path / "cut.png")
    with pytest.raises(FileNotFoundError):
        read_png_samples(tmp_path / "nope.png")


def test_label_reader_equals_pillow(tmp_path):
    """io.read_label (fast 8-bit path) against Pillow's own decoding, for palette, grayscale and colour labels."""
    from samcam.data.spaces import VOC

    rng = np.random.default_rng(1)
    lab = rng.integers(0, 21, (9, 11)).astype(np.uint8)
    lab[0, :3] = 255
    write_label(tmp_path / "p.png", lab)  # palette
    Image.fromarray(lab).save(tmp_path / "l.png")  # grayscale
    Image.fromarray(VOC.palette[lab]).save(tmp_path / "rgb.png")  # colour label
    for name in ("p.png", "l.png"):
        with Image.open(tmp_path / name) as im:
            np.testing.assert_array_equal(read_label(tmp_path / name, VOC), np.asarray(im))
    np.testing.assert_array_equal(read_label(tmp_path / "rgb.png", VOC), lab)
    for bad, void in ((21, False), (21, True), (254, True)):
        lab2 = np.where(lab == 255, 0, lab).astype(np.uint8) if not void else lab.copy()
        lab2[3, 3] = bad
        Image.fromarray(lab2).save(tmp_path / "bad.png")  # write_label refuses such values
        with pytest.raises(ValueError, match=rf"bad\.png: label values \[{bad}\] outside 0\.\.20"):
            read_label(tmp_path / "bad.png", VOC)
    with pytest.raises(FileNotFoundError, match="label file not found"):
        read_label(tmp_path / "none.png", VOC)


def test_merge_output_is_a_voc_palette_png(tmp_path):
    from samcam.data.spaces import VOC
    from samcam.pipeline.merge import merge_folders
    from samcam.refine.merge import MergeRule

    rng = np.random.default_rng(5)
    (tmp_path / "p").mkdir()
    write_label(tmp_path / "p" / "a.png", rng.integers(0, 3, (31, 47)).astype(np.uint8))
    MaskStore(tmp_path / "m", "official").write("a", _random_set(6, h=31, w=47, seed=4))
    s = merge_folders(tmp_path / "p", tmp_path / "m", tmp_path / "o", VOC, MergeRule(), progress=False)
    assert s.merged == 1 and [p.name for p in (tmp_path / "o").glob(".*")] == [".samcam.lock"]  # no temporary file left (the lock stays)
    with Image.open(tmp_path / "o" / "a.png") as im:
        assert im.mode == "P"
        assert im.getpalette()[: 3 * 21] == VOC.palette[:21].reshape(-1).tolist()


@pytest.mark.integration
def test_merge_and_eval_commands_start_without_torch():
    import subprocess
    import sys

    code = (
        "import sys; from samcam.cli import build_parser\n"
        "for cmd in ('merge', 'eval'):\n"
        "    build_parser([cmd, '--help'])\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "build_parser()\n"  # the full parser (every subcommand) still builds
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_lean_official_reader_follows_metadata_csv(tmp_path):
    ms = _random_set(4, h=9, w=13, seed=6)
    write_official(tmp_path / "x", ms)
    meta = tmp_path / "x" / "metadata.csv"
    lines = meta.read_text().splitlines()
    # the masks in the csv's order; a quoted csv goes through the csv module
    meta.write_text("\n".join([lines[0], lines[3], lines[1], lines[4], lines[2]]) + "\n")
    np.testing.assert_array_equal(read_official_packed(tmp_path / "x").to_masks(), ms.masks[[2, 0, 3, 1]])
    quoted = lines[3].split(",")
    quoted[1] = f'"{quoted[1]}"'
    meta.write_text("\n".join([lines[0], ",".join(quoted), lines[1], lines[2], lines[4]]) + "\n")
    np.testing.assert_array_equal(read_official_packed(tmp_path / "x").to_masks(), ms.masks[[2, 0, 1, 3]])
    np.testing.assert_array_equal(read_official(tmp_path / "x").masks, ms.masks[[2, 0, 1, 3]])
    # a csv that leaves out a PNG beside it: the folder is not one mask set
    meta.write_text("\n".join([lines[0], lines[3], lines[1]]) + "\n")
    with pytest.raises(ValueError, match=r"metadata\.csv: does not list 1\.png beside it"):
        read_official_packed(tmp_path / "x")
    meta.write_text(lines[0].replace("id,", "key,") + "\n" + lines[1] + "\n")
    with pytest.raises(ValueError, match=r"metadata\.csv: missing columns \['id'\]"):
        read_official_packed(tmp_path / "x")
    meta.unlink()  # without the csv: every <i>.png in numeric order
    np.testing.assert_array_equal(read_official_packed(tmp_path / "x").to_masks(), ms.masks)


def test_the_lean_compact_reader_reads_the_whole_file(tmp_path):
    """read_compact_runs (the merge's) parses every file whole, as read_compact does: the same masks and
    meta whatever text the meta holds or whatever the key order, and the same refusals."""
    import json

    # a count of 44 is written "\\" (char 92: group 12 with the "more" bit), JSON-escaped as "\\\\"
    m = np.zeros((3, 10, 10), bool)
    column_major = np.arange(100).reshape(10, 10).T  # pixel (y, x) is number x·10 + y in RLE order
    m[0], m[1] = column_major >= 44, (column_major >= 44) & (column_major < 90)
    m[2, 1:4, 2:9] = True
    assert "\\" in _coco(m[:1])[0].decode()
    meta = {"note": 'tricky "counts":"0" ,"masks":[ text', "masks": [{"segmentation": {"size": [1, 1], "counts": "1"}}], "counts": "x\\y"}
    ms = MaskSet(m, meta=meta)
    write_compact(tmp_path / "a.json.gz", ms)
    text = gzip.decompress((tmp_path / "a.json.gz").read_bytes())
    np.testing.assert_array_equal(read_compact_runs(tmp_path / "a.json.gz").to_masks(), m)
    np.testing.assert_array_equal(read_compact(tmp_path / "a.json.gz").masks, m)
    assert MaskStore(tmp_path).meta("a") == meta  # the fields outside the masks come back as written
    # another key order (masks first): the same masks
    doc = json.loads(text)
    other = {"masks": doc["masks"], **{k: v for k, v in doc.items() if k != "masks"}}
    (tmp_path / "b.json.gz").write_bytes(gzip.compress(json.dumps(other).encode()))
    np.testing.assert_array_equal(read_compact_runs(tmp_path / "b.json.gz").to_masks(), m)
    # a mask whose size differs from the file's is named
    doc["masks"][1]["segmentation"]["size"] = [10, 11]
    (tmp_path / "c.json.gz").write_bytes(gzip.compress(json.dumps(doc, separators=(",", ":")).encode()))
    for read in (read_compact_runs, read_compact):
        with pytest.raises(ValueError, match=r"c\.json\.gz: bad mask record 1 .*size differs from the file's 10×10 \(\[10, 11\]\)"):
            read(tmp_path / "c.json.gz")
    # a broken string is named too
    doc["masks"][1]["segmentation"]["size"] = [10, 10]
    doc["masks"][1]["segmentation"]["counts"] = "3"
    (tmp_path / "d.json.gz").write_bytes(gzip.compress(json.dumps(doc, separators=(",", ":")).encode()))
    with pytest.raises(ValueError, match=r"d\.json\.gz: bad mask"):
        read_compact_runs(tmp_path / "d.json.gz")
    with pytest.raises(FileNotFoundError, match="mask file not found"):
        read_compact_runs(tmp_path / "none.json.gz")
    (tmp_path / "e.json.gz").write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"e\.json\.gz: not a samcam compact"):
        read_compact_runs(tmp_path / "e.json.gz")


@pytest.mark.integration
def test_cached_real_masks_lean_equals_full(train_with_images):
    for i in train_with_images[:40]:  # the cached files give pycocotools' masks either way
        path = CACHED_MASKS / f"{i}.json.gz"
        np.testing.assert_array_equal(read_compact_runs(path).to_masks(), read_compact(path).masks)


def test_compact_files_keep_every_field_and_are_reproducible(tmp_path):
    import gzip
    import json

    ms = _random_set(3, 9, 13, seed=4)
    ms.crop_box = np.array([[1, 2, 9, 7], [0, 0, 13, 9], [3, 1, 5, 4]], float)
    write_compact(tmp_path / "a.json.gz", ms)
    back = read_compact(tmp_path / "a.json.gz")
    np.testing.assert_array_equal(back.crop_box, ms.crop_box)
    np.testing.assert_allclose(back.point_coords, ms.point_coords)
    assert back.point_coords.dtype == float and back.crop_box.dtype == float and back.meta == ms.meta
    raw = (tmp_path / "a.json.gz").read_bytes()
    assert raw[4:8] == b"\x00\x00\x00\x00"  # gzip mtime 0: the same masks give the same bytes
    doc = json.loads(gzip.decompress(raw))
    assert doc["format"] == "samcam-masks/1" and [m["crop_box"] for m in doc["masks"]] == ms.crop_box.tolist()
    del doc["meta"]
    for m in doc["masks"]:
        del m["crop_box"]
    (tmp_path / "b.json.gz").write_bytes(gzip.compress(json.dumps(doc).encode()))
    plain = read_compact(tmp_path / "b.json.gz")
    assert plain.meta == {}
    np.testing.assert_array_equal(plain.crop_box, np.tile([0, 0, 13, 9], (3, 1)))  # the whole image, as MaskSet defaults
    np.testing.assert_array_equal(plain.masks, ms.masks)


def test_compact_file_errors_name_the_file_and_the_problem(tmp_path):
    import gzip
    import json

    (tmp_path / "other.json.gz").write_bytes(gzip.compress(json.dumps({"format": "other/9"}).encode()))
    with pytest.raises(ValueError, match=r"other\.json\.gz: not a samcam compact mask file \(format 'other/9'\)"):
        read_compact(tmp_path / "other.json.gz")
    (tmp_path / "list.json.gz").write_bytes(gzip.compress(b"[1, 2]"))
    with pytest.raises(ValueError, match=r"list\.json\.gz: not a samcam compact mask file \(format None\)"):
        read_compact(tmp_path / "list.json.gz")
    with pytest.raises(FileNotFoundError, match=r"^mask file not found: .*none\.json\.gz$"):
        read_compact(tmp_path / "none.json.gz")
    ms = _random_set(2, 5, 7)
    write_compact(tmp_path / "c.json.gz", ms)
    doc = json.loads(gzip.decompress((tmp_path / "c.json.gz").read_bytes()))
    doc["masks"][1]["segmentation"]["size"] = [5, 8]
    (tmp_path / "d.json.gz").write_bytes(gzip.compress(json.dumps(doc).encode()))
    with pytest.raises(ValueError, match=r"d\.json\.gz: .*a mask's size differs from the file's 5×7"):
        read_compact(tmp_path / "d.json.gz")
