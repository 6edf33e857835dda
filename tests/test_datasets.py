import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import samcam as ds
from samcam.data.safe_pickle import load_object_npy


def test_voc_palette_standard_colours():
    pal = ds.VOC.palette
    assert pal[0].tolist() == [0, 0, 0]
    assert pal[1].tolist() == [128, 0, 0]  # aeroplane
    assert pal[15].tolist() == [192, 128, 128]  # person
    assert pal[255].tolist() == [224, 224, 192]  # void
    assert ds.VOC.n_classes == 21 and ds.COCO.n_classes == 81


def test_write_then_read_palette_png(tmp_path):
    label = np.array([[0, 1, 15], [20, 255, 3]], dtype=np.uint8)
    ds.write_label(tmp_path / "a.png", label)
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == "P"
        assert im.getpalette()[3:6] == [128, 0, 0]
    np.testing.assert_array_equal(ds.read_label(tmp_path / "a.png", ds.VOC), label)


def test_grayscale_and_rgb_labels_read_as_indices(tmp_path):
    label = np.array([[0, 8], [255, 12]], dtype=np.uint8)
    Image.fromarray(label, mode="L").save(tmp_path / "g.png")
    Image.fromarray(ds.colorize(label)).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(ds.read_label(tmp_path / "g.png", ds.VOC), label)
    np.testing.assert_array_equal(ds.read_label(tmp_path / "rgb.png", ds.VOC), label)


def test_out_of_range_values_name_the_file(tmp_path):
    Image.fromarray(np.array([[0, 21]], dtype=np.uint8), mode="L").save(tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"bad\.png.*\[21\]"):
        ds.read_label(tmp_path / "bad.png", ds.VOC)
    assert ds.read_label(tmp_path / "bad.png", ds.COCO).max() == 21  # fine for 81 classes


def test_unreadable_png_names_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match=r"broken\.png: unreadable"):
        ds.read_label(tmp_path / "broken.png")


def _make_tree(root, ids, sizes):
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    for i, (img_size, lab_size) in zip(ids, sizes):
        Image.fromarray(np.zeros((*img_size, 3), np.uint8)).save(root / "JPEGImages" / f"{i}.jpg")
        ds.write_label(root / "SegmentationClass" / f"{i}.png", np.zeros(lab_size, np.uint8))


def test_voc_tree_errors(tmp_path, monkeypatch):
    _make_tree(tmp_path, ["a", "b"], [((4, 5), (4, 5)), ((4, 5), (5, 4))])
    monkeypatch.setenv("SAMCAM_VOC_ROOT", str(tmp_path))
    tree = ds.VocTree()
    assert tree.ids("train") == ["a", "b"]
    img, gt = tree.read_pair("a")
    assert img.shape == (4, 5, 3) and gt.shape == (4, 5)
    with pytest.raises(ValueError, match=r"b\.png: label size \(5, 4\) differs from image size \(4, 5\)"):
        tree.read_pair("b")
    with pytest.raises(FileNotFoundError, match=r"c\.jpg"):
        tree.read_image("c")


def test_a_voc_root_from_the_environment_is_an_input_as_one_given(tmp_path, monkeypatch, capsys):
    """``VocTree.given_root``: ``--voc``, else ``$SAMCAM_VOC_ROOT`` (empty: unset); the commands that read
    a VOC root check their outputs against it whichever way it came (train-classifier had written its
    checkpoint into the environment's VOC folder)."""
    from samcam.cli import main

    monkeypatch.delenv("SAMCAM_VOC_ROOT", raising=False)
    assert ds.VocTree.given_root(None) is None and ds.VocTree.given_root("v") == Path("v")
    monkeypatch.setenv("SAMCAM_VOC_ROOT", "")
    assert ds.VocTree.given_root(None) is None
    with pytest.raises(ValueError, match=r"no VOC root given and \$SAMCAM_VOC_ROOT is not set"):
        ds.VocTree()
    voc = tmp_path / "voc"
    (voc / "JPEGImages").mkdir(parents=True)
    monkeypatch.setenv("SAMCAM_VOC_ROOT", str(voc))
    assert ds.VocTree.given_root(None) == voc and ds.VocTree.given_root("other") == Path("other")
    (tmp_path / "ids.txt").write_text("a\n")
    ids = str(tmp_path / "ids.txt")
    for argv, out in ((["train-classifier", "--ids", ids, "--out"], voc / "JPEGImages" / "clf.pt"),
                      (["cam", "--images", str(tmp_path / "im"), "--checkpoint", str(tmp_path / "c.pt"), "--ids", ids, "--out"], voc / "cams"),
                      (["cam-eval", "--checkpoint", str(tmp_path / "c.pt"), "--ids", ids, "--csv"], voc / "e.csv")):  # fmt: skip
        assert main([*argv, str(out)]) == 2
        assert f"output {out} lies inside the input folder {voc}; choose another output path" in capsys.readouterr().err
        assert not out.exists()


def test_an_empty_data_variable_is_unset_never_the_current_folder(monkeypatch):
    from samcam import io

    monkeypatch.setenv("SAMCAM_DATA", "")
    assert io.data_root() == io.REPO.parent / "shared" / "data"
    monkeypatch.setenv("SAMCAM_DATA", "elsewhere")
    assert io.data_root() == Path("elsewhere")


def test_the_shared_voc_tree_is_the_data_roots_voc2012_and_its_folders_are_defaults(tmp_path, monkeypatch):
    from samcam.data.voc import TRAIN_SPLIT, VocTree
    from samcam.reproduce import REPO, resolve

    monkeypatch.setenv("SAMCAM_DATA", str(tmp_path / "nowhere"))
    tree = VocTree.shared()  # need not exist: notebooks take its folders as defaults
    assert tree.root == tmp_path / "nowhere" / "voc2012"
    assert VocTree.shared(tmp_path).root == tmp_path / "voc2012"
    assert (tree.images_dir, tree.gt_dir) == (tree.root / "JPEGImages", tree.root / "SegmentationClass")
    assert tree.split_file() == tree.root / "ImageSets" / "Segmentation" / "train_with_images.txt" and TRAIN_SPLIT == "train_with_images"
    assert tree.split_file("val") == tree.root / "ImageSets" / "Segmentation" / "val.txt"
    with pytest.raises(FileNotFoundError, match=r"nowhere/voc2012/JPEGImages/x\.jpg"):
        tree.read_image("x")
    with pytest.raises(FileNotFoundError, match="VOC root is not a folder"):
        VocTree(tmp_path / "nowhere")
    assert resolve(None, tree.gt_dir) == tree.gt_dir and resolve(None) is None
    assert resolve("results/x", tree.gt_dir) == REPO / "results" / "x"


def test_labels_from_xml(tmp_path):
    xml = "<annotation><object><name>dog</name></object><object><name>person</name></object><object><name>dog</name></object></annotation>"
    (tmp_path / "x.xml").write_text(xml)
    assert ds.labels_from_xml(tmp_path / "x.xml").tolist() == [12, 15]
    (tmp_path / "y.xml").write_text(xml.replace("dog", "dragon"))
    with pytest.raises(ValueError, match=r"y\.xml.*dragon"):
        ds.labels_from_xml(tmp_path / "y.xml")


def test_labels_from_mask_ignores_void_and_background():
    assert ds.labels_from_mask(np.array([[0, 255, 3], [3, 20, 0]], np.uint8)).tolist() == [3, 20]


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_restricted_unpickler_refuses_code(tmp_path):
    arr = np.empty((), dtype=object)
    arr[()] = {"x": _Evil()}
    np.save(tmp_path / "evil.npy", arr, allow_pickle=True)
    with pytest.raises(ValueError, match=r"evil\.npy: refusing to load global (posix|os)\.system"):
        load_object_npy(tmp_path / "evil.npy")


def test_restricted_unpickler_reads_irn_style_dict(tmp_path):
    arr = np.empty((), dtype=object)
    arr[()] = {2007000032: np.eye(20, dtype=np.float32)[0], 2007000039: np.eye(20, dtype=np.float32)[19]}
    np.save(tmp_path / "cls.npy", arr, allow_pickle=True)
    labels = ds.load_cls_labels(tmp_path / "cls.npy")
    assert {k: v.tolist() for k, v in labels.items()} == {"2007_000032": [1], "2007_000039": [20]}
    assert pickle.loads(pickle.dumps(labels))  # plain python/numpy objects


def test_real_cls_labels_match_ground_truth(data_root, voc_root):
    labels = ds.load_cls_labels(data_root / "irn" / "cls_labels.npy")
    assert len(labels) == 12031
    tree = ds.VocTree(voc_root)
    for image_id in tree.ids("train")[:50]:
        assert labels[image_id].tolist() == ds.labels_from_mask(tree.read_gt(image_id)).tolist()
    # the two known disagreements documented in shared/data/SOURCES.md
    assert 20 in labels["2011_001621"] and 20 not in ds.labels_from_mask(tree.read_gt("2011_001621"))
    assert 15 not in labels["2008_005245"] and 15 in ds.labels_from_mask(tree.read_gt("2008_005245"))


def test_coco_to_voc_map():
    m = np.array([[0, 1, 63, 72, 8, 150]], np.uint8)  # unlabeled, person, couch, tv, truck, a stuff class
    assert ds.coco_panoptic_to_voc(m).tolist() == [[255, 15, 18, 20, 0, 0]]
    assert sorted(ds.COCO_TO_VOC.values()) == list(range(1, 21))


def test_find_image_is_the_lookup_of_one_id(tmp_path):
    """The one-id lookup reads a folder as ``image_index`` does: .jpg, .jpeg or .png; two images for one
    id, a missing image and an id that is a path are each refused."""
    from samcam.io import find_image, image_index

    (tmp_path / "a.jpeg").write_bytes(b"x")
    (tmp_path / "b.png").write_bytes(b"x")
    assert find_image(tmp_path, "a") == tmp_path / "a.jpeg" and find_image(tmp_path, "b") == tmp_path / "b.png"
    assert {i: find_image(tmp_path, i) for i in image_index(tmp_path)} == image_index(tmp_path)
    with pytest.raises(FileNotFoundError, match="c.jpg"):
        find_image(tmp_path, "c")
    (tmp_path / "C.JPG").write_bytes(b"x")  # a camera's upper-case suffix, as image_index reads it
    assert find_image(tmp_path, "C") == image_index(tmp_path)["C"] == tmp_path / "C.JPG"
    (tmp_path / "b.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="two images for b, b.jpg and b.png"):
        find_image(tmp_path, "b")
    with pytest.raises(ValueError, match="not a name|path"):
        find_image(tmp_path, "../a")
