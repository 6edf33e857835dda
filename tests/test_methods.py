import numpy as np
import pytest
from PIL import Image

from samcam.cam.methods import METHODS, get_method, load_pseudo_label
from samcam.io import read_label
from samcam.pipeline.labels import export_labels


def _save_obj(path, obj):
    arr = np.empty((), object)
    arr[()] = obj
    np.save(path, arr, allow_pickle=True)


MAPS = np.array([[[0.1, 0.6, 0.9, 0.0]], [[0.2, 0.1, 0.95, 0.0]]], np.float32)  # two classes, 1 × 4 image


def test_registry_names_the_paper_methods():
    assert set(METHODS) == {"CLIMS", "CLIP-ES", "EPS", "L2G", "SIPE", "TransCAM"}
    assert get_method("clip-es").format == "clipes_npy"
    with pytest.raises(KeyError, match="unknown method"):
        get_method("nope")


def test_png(tmp_path):
    Image.fromarray(np.array([[0, 3, 255]], np.uint8), mode="L").save(tmp_path / "a.png")
    assert load_pseudo_label(tmp_path, "a", "png").tolist() == [[0, 3, 255]]


def test_irn_npy(tmp_path):
    _save_obj(tmp_path / "a.npy", {"keys": np.array([2, 14]), "high_res": MAPS, "cam": MAPS[:, :, :2]})
    assert load_pseudo_label(tmp_path, "a", "irn_npy", 0.15).tolist() == [[15, 3, 15, 0]]
    with pytest.raises(ValueError, match="needs a background threshold"):
        load_pseudo_label(tmp_path, "a", "irn_npy")


def test_sipe_npy_keys_include_background(tmp_path):
    bg = np.array([[[0.5, 0.5, 0.5, 0.5]]], np.float32)
    _save_obj(tmp_path / "a.npy", {"keys": np.array([0, 2, 14]), "IS_CAM": np.concatenate([bg, MAPS])})
    assert load_pseudo_label(tmp_path, "a", "sipe_npy").tolist() == [[0, 2, 14, 0]]


def test_clipes_npy_background_is_one_minus_max(tmp_path):
    _save_obj(tmp_path / "a.npy", {"keys": np.array([2, 14]), "attn_highres": MAPS})
    # bg = 1 - max: [0.8, 0.4, 0.05, 1.0]
    assert load_pseudo_label(tmp_path, "a", "clipes_npy").tolist() == [[0, 3, 15, 0]]


def test_psa_npy(tmp_path):
    _save_obj(tmp_path / "a.npy", {2: MAPS[0], 14: MAPS[1]})
    assert load_pseudo_label(tmp_path, "a", "psa_npy", 0.15).tolist() == [[15, 3, 15, 0]]
    _save_obj(tmp_path / "empty.npy", {})
    assert load_pseudo_label(tmp_path, "empty", "psa_npy", 0.15, shape=(1, 4)).tolist() == [[0, 0, 0, 0]]


def test_l2g_per_class_pngs(tmp_path):
    for k, m in zip((2, 14), MAPS):
        Image.fromarray((m[0][None] * 255).round().astype(np.uint8)).save(tmp_path / f"a_{k}.png")
    assert load_pseudo_label(tmp_path, "a", "l2g_png", 0.25).tolist() == [[0, 3, 15, 0]]
    with pytest.raises(FileNotFoundError, match="no class maps"):
        load_pseudo_label(tmp_path, "b", "l2g_png", 0.25)
    # ``a_2.png`` and ``a_02.png`` are both class 2: which one is meant cannot be told
    Image.fromarray(np.zeros((1, 4), np.uint8)).save(tmp_path / "a_02.png")
    with pytest.raises(ValueError, match=r"a_<class>\.png: two class maps for class 2, a_02\.png and a_2\.png; keep one"):
        load_pseudo_label(tmp_path, "a", "l2g_png", 0.25)


@pytest.mark.parametrize("fmt,doc,needle", [
    ("psa_npy", {2.5: MAPS[0]}, r"class keys \[2\.5\] are not whole class indices"),     # never truncated to class 2
    ("psa_npy", {-1: MAPS[0]}, "include a negative class index"),                      # would have become background
    ("psa_npy", {2: MAPS[0], 2.0: MAPS[1]}, None),                                     # a dict keeps one of 2 and 2.0: fine
    ("sipe_npy", {"keys": np.array([0, 2, 2]), "IS_CAM": np.concatenate([MAPS[:1], MAPS])}, r"keys \[0, 2, 2\] name a class twice"),
    ("sipe_npy", {"keys": np.array([0, 2.7]), "IS_CAM": MAPS}, "not whole class indices"),
    # without its background map every pixel took a class (audit 11, F10)
    ("sipe_npy", {"keys": np.array([2, 14]), "IS_CAM": MAPS}, r"keys \[2, 14\] lack background \(0\)"),
    ("clipes_npy", {"keys": np.array([14, 14]), "attn_highres": MAPS}, "name a class twice"),
])  # fmt: skip
def test_method_keys_are_whole_distinct_class_indices(tmp_path, fmt, doc, needle):
    from samcam.cam.methods import FORMATS

    _save_obj(tmp_path / "a.npy", doc)
    threshold = 0.15 if FORMATS[fmt].needs_threshold else None
    if needle is None:
        assert load_pseudo_label(tmp_path, "a", fmt, threshold).shape == (1, 4)
        return
    with pytest.raises(ValueError, match=r"a\.npy: .*" + needle):
        load_pseudo_label(tmp_path, "a", fmt, threshold)


@pytest.mark.parametrize("fmt", ["png", "sipe_npy", "clipes_npy"])
def test_a_threshold_for_a_format_of_labels_is_refused_not_ignored(tmp_path, fmt):
    with pytest.raises(ValueError, match=f"^format {fmt} holds labels, not score maps: it takes no background threshold"):
        load_pseudo_label(tmp_path, "a", fmt, 0.3)


def test_transcam_loader_on_the_official_files(data_root, tmp_path):
    folder = data_root / "pseudo_labels" / "transcam"
    m = get_method("TransCAM")
    ids = sorted(p.stem for p in folder.glob("*.png"))[:20]
    assert len(list(folder.glob("*.png"))) == 1464
    assert export_labels(folder, tmp_path, ids, m.format).done == 20
    for i in ids:
        label = load_pseudo_label(folder, i, m.format)
        assert label.max() <= 20
        np.testing.assert_array_equal(read_label(tmp_path / f"{i}.png"), label)
