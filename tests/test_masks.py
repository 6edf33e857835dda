import gzip

import numpy as np
import pytest
from PIL import Image

from conftest import CACHED_MASKS
from samcam import cli
from samcam.datasets import read_label, write_label
from samcam.masks import MaskSet, MaskStore, read_compact, read_official, write_compact, write_official


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
    # an id without masks
    write_label(tmp_path / "p" / "c.png", np.zeros((17, 23), np.uint8))
    assert cli.main(args) == 2
    assert "no mask set for c" in capsys.readouterr().err
    assert cli.main(args + ["--missing-masks", "keep-cam"]) == 0
    # never into an input folder; masks of the wrong size are named
    assert cli.main(args[:-1] + [str(tmp_path / "p" / "out")]) == 2
    assert "lies in the input folder" in capsys.readouterr().err
    write_label(tmp_path / "p" / "d.png", np.zeros((5, 5), np.uint8))
    MaskStore(tmp_path / "m").write("d", _random_set(2))
    assert cli.main(args) == 2
    assert "d.json.gz: mask size (17, 23) differs from label size (5, 5)" in capsys.readouterr().err
