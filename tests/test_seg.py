"""samcam.seg: training on a few real VOC images, save/reload, resume, refusal, and the eval mIoU."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samcam.seg.evaluate import evaluate, predict
from samcam.seg.recipe import Recipe, augment, draw_params
from samcam.seg.train import load_model, read_checkpoint, train

TINY = Recipe(crop=64, batch_size=2, epochs=2, scale_min=0.25, scale_max=0.5, seed=3)  # 4 images → 2 steps/epoch


@pytest.fixture(scope="module")
def train_ids(train_with_images: list[str]) -> list[str]:
    return train_with_images[:4]


@pytest.fixture(scope="module")
def transcam(data_root: Path) -> Path:
    p = data_root / "pseudo_labels" / "transcam"
    if not p.is_dir():
        pytest.skip(f"TransCAM pseudo labels not found at {p}")
    return p


@pytest.fixture(scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, voc_root: Path, transcam: Path, train_ids: list[str], one_thread) -> Path:
    out = tmp_path_factory.mktemp("full")
    r = train(voc_root / "JPEGImages", transcam, train_ids, out, TINY, progress=False)
    assert r.complete and r.step == r.total_steps == 4 and (r.done, r.skipped) == (4, 0) and len(r.epoch_seconds) == len(r.losses) == 2
    return r.out


def _state(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]


def test_augment_pads_with_ignore_and_keeps_pairs() -> None:
    image = np.full((20, 30, 3), 9, np.uint8)
    label = np.ones((20, 30), np.uint8)
    params = draw_params(label.shape, replace(TINY, crop=48), np.random.default_rng(0))
    img, lab = augment(image, label, params, 48)
    assert img.shape == (48, 48, 3) and lab.shape == (48, 48)
    assert set(np.unique(lab)) <= {1, 255} and (lab == 255).any()
    assert (img[lab == 1] == 9).all()


def test_resume_after_interrupt_equals_uninterrupted(tmp_path: Path, voc_root: Path, transcam: Path,
                                                      train_ids: list[str], full_run: Path) -> None:  # fmt: skip
    out = tmp_path / "resumed"
    r1 = train(voc_root / "JPEGImages", transcam, train_ids, out, TINY, max_steps=3, progress=False)  # stops mid-epoch 2
    assert (r1.step, r1.complete, r1.done, r1.skipped) == (3, False, 3, 0)
    r2 = train(voc_root / "JPEGImages", transcam, train_ids, out, TINY, progress=False)
    assert (r2.step, r2.complete, r2.done, r2.skipped) == (4, True, 1, 3)
    full, resumed = _state(full_run), _state(out / "last.pt")
    for k in full:
        assert torch.equal(full[k], resumed[k]), k


def test_reloaded_model_scores_identically(tmp_path: Path, voc_root: Path, transcam: Path, train_ids: list[str],
                                           train_with_images: list[str], one_thread) -> None:  # fmt: skip
    from samcam.seg.model import SegNet

    out = tmp_path / "run"
    train(voc_root / "JPEGImages", transcam, train_ids, out, replace(TINY, epochs=1), progress=False)
    model, recipe, meta = load_model(out / "last.pt")
    assert recipe == replace(TINY, epochs=1) and meta["complete"]
    again = SegNet(recipe.backbone, 21, pretrained=False, freeze_early=recipe.freeze_early)
    again.load_state_dict(read_checkpoint(out / "last.pt")["model"])
    gt_dir = voc_root / "SegmentationClass"
    ids = train_with_images[4:6]  # images the model did not train on
    ev1 = evaluate(model, voc_root / "JPEGImages", gt_dir, ids, progress=False)
    ev2 = evaluate(again.eval(), voc_root / "JPEGImages", gt_dir, ids, progress=False)
    assert np.array_equal(ev1.conf, ev2.conf) and ev1.conf.sum() > 0
    pred = predict(model, np.zeros((37, 53, 3), np.uint8), scales=(0.75, 1.0), flip=True)
    assert pred.shape == (37, 53) and pred.dtype == np.uint8


def test_other_recipe_or_labels_refuse(tmp_path: Path, voc_root: Path, transcam: Path, train_ids: list[str],
                                       one_thread) -> None:  # fmt: skip
    out = tmp_path / "run"
    train(voc_root / "JPEGImages", transcam, train_ids, out, TINY, max_steps=1, progress=False)
    with pytest.raises(ValueError, match=r"another recipe \(lr: "):
        train(voc_root / "JPEGImages", transcam, train_ids, out, replace(TINY, lr=0.5), progress=False)
    with pytest.raises(ValueError, match="other labels"):
        train(voc_root / "JPEGImages", voc_root / "SegmentationClass", train_ids, out, TINY, progress=False)


def test_missing_label_names_the_file(tmp_path: Path, voc_root: Path, train_ids: list[str]) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / f"{train_ids[0]}.png")):
        train(voc_root / "JPEGImages", tmp_path, train_ids, tmp_path / "out", TINY, progress=False)


class _RedChannelNet(torch.nn.Module):
    """A stand-in model: the predicted class is the red value // 40 (0..6), as one-hot logits."""

    n_classes = 21

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = (x[:, 0] // 40).long()
        return torch.nn.functional.one_hot(cls, 21).permute(0, 3, 1, 2).float() * 10


def test_eval_miou_matches_hand_computation(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images, gts = tmp_path / "img", tmp_path / "gt"
    images.mkdir(), gts.mkdir()
    preds, truths = [], []
    for i in range(2):
        red = rng.integers(0, 240, (7, 9), dtype=np.uint8)
        Image.fromarray(np.dstack([red, red, red])).save(images / f"im{i}.png")
        gt = rng.integers(0, 6, (7, 9)).astype(np.uint8)
        gt[0, :3] = 255  # void
        Image.fromarray(gt, mode="L").save(gts / f"im{i}.png")
        preds.append(red // 40)
        truths.append(gt)
    ev = evaluate(_RedChannelNet(), images, gts, ["im0", "im1"], progress=False)
    # by hand: loop over pixels
    tp, fp, fn = np.zeros(21), np.zeros(21), np.zeros(21)
    for p_map, g_map in zip(preds, truths):
        for p, g in zip(p_map.ravel(), g_map.ravel()):
            if g == 255:
                continue
            if p == g:
                tp[g] += 1
            else:
                fp[p] += 1
                fn[g] += 1
    union = tp + fp + fn
    miou = np.mean([tp[c] / union[c] for c in range(21) if union[c] > 0])
    assert ev.scores().miou == pytest.approx(miou, abs=1e-12)


def test_commands_train_then_eval(tmp_path: Path, voc_root: Path, transcam: Path, train_with_images: list[str],
                                  one_thread, capsys) -> None:  # fmt: skip
    import json

    from samcam.cli import main

    ids = tmp_path / "train.txt"
    ids.write_text("\n".join(train_with_images[:2]) + "\n")
    val = tmp_path / "val.txt"
    val.write_text(train_with_images[2] + "\n")
    common = ["--images", str(voc_root / "JPEGImages"), "--ids"]
    rc = main(["train-seg", *common, str(ids), "--labels", str(transcam), "--out", str(tmp_path / "run"),
               "--crop", "64", "--batch-size", "2", "--epochs", "1", "--scale-min", "0.25", "--scale-max", "0.5"])  # fmt: skip
    assert rc == 0 and "step 1/1, complete" in capsys.readouterr().out
    rc = main(["eval-seg", *common, str(val), "--checkpoint", str(tmp_path / "run" / "last.pt"),
               "--gt", str(voc_root / "SegmentationClass"), "--json", str(tmp_path / "e.json"),
               "--save-predictions", str(tmp_path / "pred")])  # fmt: skip
    summary = json.loads((tmp_path / "e.json").read_text())
    assert rc == 0 and summary["n_images"] == 1 and 0 <= summary["miou"] <= 1
    assert (tmp_path / "pred" / f"{train_with_images[2]}.png").is_file()
    # predictions never land in a user's label folder, and two outputs are never one file
    user = tmp_path / "my_labels"
    user.mkdir()
    (user / f"{train_with_images[2]}.png").write_bytes((voc_root / "SegmentationClass" / f"{train_with_images[2]}.png").read_bytes())
    before = (user / f"{train_with_images[2]}.png").read_bytes()
    eval_args = ["eval-seg", *common, str(val), "--checkpoint", str(tmp_path / "run" / "last.pt"), "--gt", str(voc_root / "SegmentationClass")]
    assert main([*eval_args, "--save-predictions", str(user)]) == 2
    assert "holds outputs without a provenance record" in capsys.readouterr().err
    assert (user / f"{train_with_images[2]}.png").read_bytes() == before and not (user / "samcam_run.json").exists()
    assert main([*eval_args, "--json", str(tmp_path / "x.out"), "--csv", str(tmp_path / "x.out")]) == 2
    assert "two outputs of one command are the same path" in capsys.readouterr().err
    rc = main(["train-seg", *common, str(ids), "--labels", str(transcam), "--out", str(tmp_path / "run"), "--crop", "80",
              "--batch-size", "2"])
    assert rc == 2 and "another recipe" in capsys.readouterr().err


class _PositionNet(torch.nn.Module):
    """A stand-in model that is a known, left-right asymmetric function of the image: class ``c``'s
    logit at column ``j`` is ``A[c] · red / 64 + B[c] · j`` (columns counted from the left, so the
    right padding to the stride changes no real pixel's logit)."""

    n_classes = 4
    A = np.array([0.0, 1.0, -0.5, 0.25])
    B = np.array([0.0, 0.3, -0.2, 0.1])
    C = np.zeros(4)  # a constant per class

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, :1] / 64
        col = torch.arange(x.shape[-1], dtype=x.dtype).view(1, 1, 1, -1)
        a, b, c = (torch.as_tensor(v, dtype=x.dtype).view(1, -1, 1, 1) for v in (self.A, self.B, self.C))
        return a * red + b * col + c

    @classmethod
    def by_hand(cls, image: np.ndarray) -> np.ndarray:
        """The same function in numpy: ``n_classes × H × W`` logits."""
        red = image[..., 0].astype(np.float64) / 64
        col = np.arange(image.shape[1], dtype=np.float64)[None, :]
        return cls.A[:, None, None] * red + cls.B[:, None, None] * col + cls.C[:, None, None]


class _SkewNet(_PositionNet):
    """Class 1 wins right of column 4 and class 0 left of it: its flip average changes the argmax."""

    A = np.array([0.0, 0.01, -1.0, -1.0])
    B = np.array([0.0, 0.5, 0.0, 0.0])
    C = np.array([0.0, -2.0, 0.0, 0.0])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(0))
    return e / e.sum(0)


def test_flip_averages_the_image_and_its_mirror_flipped_back():
    """predict_probs with flip = the mean of softmax f(x) and softmax flip(f(flip(x))), computed by
    hand, on an image and a model that are both left-right asymmetric."""
    from samcam.seg.evaluate import predict_probs

    image = np.random.default_rng(4).integers(0, 256, (5, 11, 3), dtype=np.uint8)
    plain = _softmax(_PositionNet.by_hand(image))
    mirrored = _softmax(_PositionNet.by_hand(image[:, ::-1]))[:, :, ::-1]
    assert np.abs(plain - mirrored).max() > 0.05  # the flip matters here
    np.testing.assert_allclose(predict_probs(_PositionNet(), image).numpy(), plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predict_probs(_PositionNet(), image, flip=True).numpy(), (plain + mirrored) / 2, rtol=1e-5, atol=1e-6)


def test_paired_gaps_by_hand():
    """The gap of each row to the reference, paired by seed, against the t statistic computed here."""
    import pandas as pd

    from samcam.seg.report import paired_gaps

    df = pd.DataFrame({"row": ["ref"] * 3 + ["a"] * 3 + ["b"] * 2 + ["c"] + ["e"] * 3,
                       "seed": [0, 1, 2, 0, 1, 2, 0, 1, 5, 0, 1, 2],
                       "miou": [30.0, 32.0, 31.0, 33.0, 34.5, 34.0, 30.5, 31.0, 40.0, 31.0, 34.0, 31.5]})
    g = paired_gaps(df, "ref").set_index("row")
    d = np.array([3.0, 2.5, 3.0])  # a − ref per seed
    t = d.mean() / (d.std(ddof=1) / np.sqrt(3))
    assert g.loc["a", "seeds"] == 3 and g.loc["a", "mean_gap"] == pytest.approx(d.mean())
    assert g.loc["a", "sd_gap"] == pytest.approx(d.std(ddof=1)) and g.loc["a", "t"] == pytest.approx(t)
    assert g.loc["a", "p"] < 0.05 and g.loc["a", "real"]  # a steady 2.5-3 points over three seeds
    db = np.array([0.5, -1.0])  # b − ref: a gap smaller than its spread
    assert g.loc["b", "mean_gap"] == pytest.approx(db.mean()) and not g.loc["b", "real"]
    assert g.loc["c", "seeds"] == 0 and np.isnan(g.loc["c", "p"]) and not g.loc["c", "real"]  # no common seed
    # e − ref = 1, 2, 0.5: t = 1.1667 / (0.7638 / √3) = 2.646 on 2 degrees of freedom, p = 0.118 —
    # (for 2 degrees of freedom the two-sided p is 1 − t / √(t² + 2) = 1 − 2.6458 / 3): a gap of about
    # one spread, not called real at the 5 % level
    assert g.loc["e", "t"] == pytest.approx(2.6458, abs=1e-3) and g.loc["e", "p"] == pytest.approx(0.1181, abs=1e-3)
    assert not g.loc["e", "real"]
    with pytest.raises(ValueError, match="reference row 'nope'"):
        paired_gaps(df, "nope")


def test_each_step_sets_the_poly_rate_with_the_heads_multiplier(tmp_path: Path, voc_root: Path, transcam: Path, train_ids: list[str],
                                                                 one_thread, monkeypatch) -> None:  # fmt: skip
    """The optimiser's two groups at every step: backbone poly_lr(lr, step, total, power), head that
    times head_lr_mult; the step counts across epochs (4 steps of 2 epochs: 0, 1, 2, 3)."""
    import samcam.seg.train as seg_train
    from samcam.training import poly_lr

    seen = []
    real = seg_train.set_poly_lr

    def spy(opt, base, step, total, power=0.9, mult_key=None):
        real(opt, base, step, total, power, mult_key)
        seen.append((step, total, [g["lr"] for g in opt.param_groups]))

    monkeypatch.setattr(seg_train, "set_poly_lr", spy)
    recipe = replace(TINY, head_lr_mult=7.0, poly_power=0.5)
    train(voc_root / "JPEGImages", transcam, train_ids, tmp_path / "run", recipe, progress=False)
    assert [(s, t) for s, t, _ in seen] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    for step, total, (backbone, head) in seen:
        want = poly_lr(recipe.lr, step, total, 0.5)
        assert backbone == pytest.approx(want, rel=1e-12) and head == pytest.approx(7.0 * want, rel=1e-12)


def _synthetic_voc(root: Path, ids: list[str], shape=(40, 48)) -> tuple[Path, Path]:
    """Random images and labels (classes 0-3, a void band) under ``root``: ``(images, labels)``."""
    rng = np.random.default_rng(11)
    images, labels = root / "img", root / "lab"
    images.mkdir(parents=True), labels.mkdir(parents=True)
    for i in ids:
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(images / f"{i}.png")
        lab = rng.integers(0, 4, shape).astype(np.uint8)
        lab[:3] = 255
        Image.fromarray(lab, mode="L").save(labels / f"{i}.png")
    return images, labels


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, one_thread) -> tuple[Path, Path, Path]:
    """A SegNet trained for 2 steps from random weights on synthetic data: (checkpoint, images, labels)."""
    root = tmp_path_factory.mktemp("synthetic")
    images, labels = _synthetic_voc(root, ["a", "b", "c", "d"])
    r = train(images, labels, ["a", "b", "c", "d"], root / "run", replace(TINY, crop=32, epochs=1), progress=False, pretrained=False)
    return r.out, images, labels


def test_evaluate_checkpoint_passes_its_scales_and_flip_on(tiny_checkpoint, monkeypatch):
    import samcam.seg.evaluate as module

    seen = []
    real = module.evaluate
    monkeypatch.setattr(module, "evaluate", lambda *a, **k: (seen.append(a[5:7]), real(*a, **k))[1])
    ck_path, images, labels = tiny_checkpoint
    module.evaluate_checkpoint(ck_path, images, labels, ["a"], scales=(0.5, 1.0), flip=True)
    module.evaluate_checkpoint(ck_path, images, labels, ["a"])
    assert seen == [((0.5, 1.0), True), ((1.0,), False)]


def test_evaluate_checkpoint_summary_and_files_by_hand(tiny_checkpoint, tmp_path, capsys):
    """Every field of eval-seg's summary against the checkpoint and a confusion matrix counted here
    from the model's own predictions; the JSON and CSV files as written."""
    import json
    import time

    from samcam.seg.evaluate import evaluate_checkpoint, write_results

    ck_path, images, labels = tiny_checkpoint
    model, recipe, meta = load_model(ck_path)
    preds = {i: predict(model, np.asarray(Image.open(images / f"{i}.png"))) for i in ("a", "c")}
    conf = np.zeros((21, 21), np.int64)
    for i, p in preds.items():
        g = np.asarray(Image.open(labels / f"{i}.png"))
        ok = g != 255
        np.add.at(conf, (g[ok], p[ok]), 1)
    tp, union = np.diag(conf), conf.sum(0) + conf.sum(1) - np.diag(conf)
    present = union > 0
    t0 = time.perf_counter()
    ev, s = evaluate_checkpoint(tiny_checkpoint[0], images, labels, ["a", "c"], progress=True)
    wall = time.perf_counter() - t0
    assert "eval-seg" in capsys.readouterr().err  # the progress bar, asked for
    assert s["checkpoint"] == str(ck_path.resolve()) and s["labels_dir"] == str(labels.resolve()) == meta["labels_dir"]
    assert s["recipe"] == recipe.to_dict() and s["step"] == 2 and s["complete"] is True and s["n_images"] == 2
    assert s["scales"] == [1.0] and s["flip"] is False and 0 < s["seconds"] <= wall and s["threads"] == torch.get_num_threads()
    assert s["miou"] == pytest.approx(np.mean(tp[present] / union[present]))
    assert s["pixel_accuracy"] == pytest.approx(tp.sum() / conf.sum())
    for k, name in enumerate(("background", "aeroplane", "bicycle", "bird", "boat")):
        assert s["iou"][name] == (pytest.approx(tp[k] / union[k]) if present[k] else None), name
    assert sum(v is None for v in s["iou"].values()) == 21 - present.sum() and list(s["iou"]) == list(VOC_NAMES)
    write_results(ev, s, tmp_path / "e.json", tmp_path / "e.csv")
    assert (tmp_path / "e.json").read_text() == json.dumps(s, indent=1) + "\n"
    assert (tmp_path / "e.csv").read_text() == ev.per_class_table().to_csv(index=False)
    _, flipped = evaluate_checkpoint(ck_path, images, labels, ["a", "c"], flip=True, scales=(1.0, 0.5))
    assert flipped["flip"] is True and flipped["scales"] == [1.0, 0.5]
    by_hand = [predict(model, np.asarray(Image.open(images / f"{i}.png")), (1.0, 0.5), True) for i in ("a", "c")]
    assert flipped["pixel_accuracy"] == pytest.approx(
        sum(((p == np.asarray(Image.open(labels / f"{i}.png"))) & (np.asarray(Image.open(labels / f"{i}.png")) != 255)).sum() for i, p in zip("ac", by_hand))
        / sum((np.asarray(Image.open(labels / f"{i}.png")) != 255).sum() for i in "ac"))  # fmt: skip


VOC_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
             "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")  # fmt: skip


def test_predict_and_evaluate_pass_flip_on_and_default_to_none():
    """``predict(flip=True)`` is the argmax of the flip average by hand; ``evaluate`` without ``flip``
    scores the plain prediction (the model and image are left-right asymmetric)."""
    image = np.random.default_rng(5).integers(0, 256, (6, 13, 3), dtype=np.uint8)
    plain = _softmax(_SkewNet.by_hand(image))
    mirrored = _softmax(_SkewNet.by_hand(image[:, ::-1]))[:, :, ::-1]
    flip_pred = ((plain + mirrored) / 2).argmax(0)
    assert (flip_pred != plain.argmax(0)).any()  # the flip changes some pixels' class here
    np.testing.assert_array_equal(predict(_SkewNet(), image, flip=True), flip_pred)
    np.testing.assert_array_equal(predict(_SkewNet(), image), plain.argmax(0))


def test_evaluate_scores_the_plain_prediction_by_default_and_records_its_predictions(tmp_path):
    import json

    from samcam.data.spaces import VOC
    from samcam.seg.evaluate import _state_sha256

    image = np.random.default_rng(5).integers(0, 256, (6, 13, 3), dtype=np.uint8)
    (tmp_path / "img").mkdir(), (tmp_path / "gt").mkdir()
    Image.fromarray(image).save(tmp_path / "img" / "x.png")
    plain = _softmax(_SkewNet.by_hand(image)).argmax(0).astype(np.uint8)
    Image.fromarray(plain, mode="L").save(tmp_path / "gt" / "x.png")
    ev = evaluate(_SkewNet(), tmp_path / "img", tmp_path / "gt", ["x"], save_dir=tmp_path / "pred", progress=False)
    assert ev.scores().pixel_accuracy == 1.0  # the ground truth is the plain prediction
    assert evaluate(_SkewNet(), tmp_path / "img", tmp_path / "gt", ["x"], flip=True, progress=False).scores().pixel_accuracy < 1.0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "pred" / "x.png")), plain)
    assert Image.open(tmp_path / "pred" / "x.png").mode == "P"  # VOC palette PNG
    rec = json.loads((tmp_path / "pred" / "samcam_run.json").read_text())
    assert rec["step"] == "eval-seg-predictions"
    assert rec["parameters"] == {"scales": [1.0], "flip": False, "dataset": VOC.name, "model_sha256": _state_sha256(_SkewNet())}
    assert set(rec["inputs"]) == {"images", "gt"}  # what the predictions were made from, by name


def test_evaluate_names_a_missing_folder_and_a_mis_sized_ground_truth(tmp_path):
    (tmp_path / "img").mkdir(), (tmp_path / "gt").mkdir()
    Image.fromarray(np.zeros((6, 13, 3), np.uint8)).save(tmp_path / "img" / "x.png")
    Image.fromarray(np.zeros((6, 12), np.uint8), mode="L").save(tmp_path / "gt" / "x.png")
    with pytest.raises(FileNotFoundError, match=r"folder not found: .*nowhere"):
        evaluate(_PositionNet(), tmp_path / "nowhere", tmp_path / "gt", ["x"])
    with pytest.raises(FileNotFoundError, match=r"folder not found: .*nogt"):
        evaluate(_PositionNet(), tmp_path / "img", tmp_path / "nogt", ["x"])
    with pytest.raises(ValueError, match=r"no evaluation ids"):
        evaluate(_PositionNet(), tmp_path / "img", tmp_path / "gt", [])
    with pytest.raises(ValueError, match=r"gt/x\.png: ground-truth size \(6, 12\) differs from image size \(6, 13\) \(.*img/x\.png\)"):
        evaluate(_PositionNet(), tmp_path / "img", tmp_path / "gt", ["x"], progress=False)


def test_scaled_shape_by_hand():
    from samcam.seg.recipe import scaled_shape

    assert scaled_shape((30, 20), 1.5) == (45, 30)
    assert scaled_shape((30, 21), 0.5) == (15, 10)  # round half to even: 10.5 -> 10
    assert scaled_shape((10, 7), 0.04) == (1, 1)  # never below one pixel


def test_draw_params_stay_in_the_recipes_ranges_and_flip_half_the_time():
    from samcam.seg.recipe import draw_params

    rng = np.random.default_rng(0)
    recipe = replace(TINY, crop=32, scale_min=0.25, scale_max=0.5)
    draws = [draw_params((160, 256), recipe, rng) for _ in range(400)]
    scales = np.array([d.scale for d in draws])
    assert scales.min() >= 0.25 and scales.max() < 0.5 and scales.max() - scales.min() > 0.2
    for d in draws:  # the crop offset lies inside the scaled image (or 0 where it is smaller than the crop)
        h, w = round(160 * d.scale), round(256 * d.scale)
        assert 0 <= d.y <= max(h - 32, 0) and 0 <= d.x <= max(w - 32, 0)
    assert max(d.y for d in draws) > 20 and max(d.x for d in draws) > 80
    flips = [d.flip for d in draws]
    assert all(isinstance(f, bool) for f in flips) and 150 < sum(flips) < 250
    assert not any(draw_params((160, 256), replace(recipe, flip=False), rng).flip for _ in range(50))


def test_resize_pair_bilinear_image_nearest_label():
    from samcam.seg.recipe import resize_pair

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (9, 14, 3), dtype=np.uint8)
    label = rng.integers(0, 21, (9, 14)).astype(np.uint8)
    img, lab = resize_pair(image, label, (4, 6))
    assert img.shape == (4, 6, 3) and lab.shape == (4, 6)
    bilinear = np.asarray(Image.fromarray(image).resize((6, 4), Image.BILINEAR))
    assert not np.array_equal(bilinear, np.asarray(Image.fromarray(image).resize((6, 4), Image.BICUBIC)))
    np.testing.assert_array_equal(img, bilinear)
    # nearest neighbour: the source pixel under each output pixel's centre (no centre on a boundary here)
    rows, cols = ((np.arange(4) + 0.5) * 9 / 4).astype(int), ((np.arange(6) + 0.5) * 14 / 6).astype(int)
    np.testing.assert_array_equal(lab, label[rows][:, cols])
    same = resize_pair(image, label, (9, 14))
    assert same[0] is image and same[1] is label


@pytest.mark.parametrize(("shape", "size"), [((5, 7), 8), ((9, 6), 8), ((8, 8), 8), ((10, 12), 8), ((8, 5), 8)])
def test_pad_pair_by_hand(shape, size):
    from samcam.seg.recipe import PAD_VALUE, pad_pair

    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    label = rng.integers(0, 21, shape).astype(np.uint8)
    h, w = max(shape[0], size), max(shape[1], size)
    want_img = np.full((h, w, 3), PAD_VALUE, np.uint8)
    want_lab = np.full((h, w), 255, np.uint8)
    want_img[: shape[0], : shape[1]] = image
    want_lab[: shape[0], : shape[1]] = label
    img, lab = pad_pair(image, label, size)
    np.testing.assert_array_equal(img, want_img)
    np.testing.assert_array_equal(lab, want_lab)
    assert PAD_VALUE == 127  # the backbone's mean: (127 − 127) / 128 = 0


def test_augment_refuses_a_label_of_another_size():
    from samcam.seg.recipe import AugParams, augment

    with pytest.raises(ValueError, match=r"image shape \(4, 5\) differs from label shape \(4, 6\)"):
        augment(np.zeros((4, 5, 3), np.uint8), np.zeros((4, 6), np.uint8), AugParams(1.0, 0, 0, False), 4)


def test_epoch_order_is_its_own_stream():
    """The order of epoch e is ``default_rng([seed, e, 2**30]).permutation(n)``: a stream no sample's
    augmentation uses (those are ``[seed, e, position]``), fixed so that a recipe fixes the order."""
    from samcam.seg.recipe import epoch_order, sample_rng

    for seed, epoch in [(0, 0), (3, 2)]:
        np.testing.assert_array_equal(epoch_order(50, seed, epoch), np.random.default_rng([seed, epoch, 2**30]).permutation(50))
        assert not np.array_equal(epoch_order(50, seed, epoch), sample_rng(seed, epoch, 0).permutation(50))
    assert not np.array_equal(epoch_order(50, 0, 0), epoch_order(50, 0, 1))


def test_recipe_from_dict_names_unknown_fields():
    with pytest.raises(ValueError, match=r"recipe has unknown fields \['colour', 'crops'\]"):
        Recipe.from_dict({**TINY.to_dict(), "crops": 3, "colour": 1})
    assert Recipe.from_dict(TINY.to_dict()) == TINY


def test_backbone_features_apply_drop_connect_as_the_library_does():
    """In training, block i drops connections at rate · i / blocks, as ``EfficientNet.extract_features``
    does: the same seed gives the same stride-32 features."""
    from samcam.seg.model import LiteFeatures
    from samcam.cam.nets import efficientnet_lite

    net = efficientnet_lite("lite0", pretrained=False).backbone.net
    assert net._global_params.drop_connect_rate > 0
    feats = LiteFeatures(net).train()
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(7)
    _, high = feats(x)
    torch.manual_seed(7)
    expected = net.extract_features(x)
    torch.testing.assert_close(high, expected)
    torch.manual_seed(8)
    assert not torch.allclose(feats(x)[1], expected)  # the drop is random: another seed, other features


def test_train_seg_and_eval_seg_commands_say_what_they_did(tmp_path, one_thread, capsys):
    """The two commands on synthetic data: each option reaches the step, and each printed line is
    checked against the checkpoint and the summary they wrote."""
    import json

    from samcam.cli import main

    ids = ["a", "b", "c", "d"]
    images, labels = _synthetic_voc(tmp_path, [*ids, "e", "f"])  # e and f held out
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    (tmp_path / "val.txt").write_text("e\nf\n")
    run = tmp_path / "run"

    def train_cmd(out: Path) -> list[str]:
        return ["train-seg", "--images", str(images), "--labels", str(labels), "--ids", str(tmp_path / "ids.txt"), "--out", str(out),
                "--crop", "32", "--batch-size", "2", "--epochs", "1", "--device", "cpu", "--threads", "1"]  # fmt: skip

    train_args = train_cmd(run)
    assert main([*train_args, "--max-steps", "1", "--progress"]) == 0
    out = capsys.readouterr()
    ck = read_checkpoint(run / "last.pt")
    assert ck["step"] == 1 and ck["history"]["device"] == "cpu" and ck["history"]["threads"] == 1 and torch.get_num_threads() == 1
    assert out.out.startswith("step 1/2, stopped early (rerun to resume), peak RSS ") and out.out.endswith(f" MiB -> {run / 'last.pt'}\n")
    assert "train-seg run" in out.err  # the bar, asked for
    from samcam.outputs import lock_output

    with lock_output(run):  # another process training this run folder: refused at once, its checkpoint untouched
        before = (run / "last.pt").read_bytes()
        assert main(train_args) == 2
        assert f"{run}: another samcam process is writing this folder" in capsys.readouterr().err
        assert (run / "last.pt").read_bytes() == before
    assert main(["eval-seg", "--checkpoint", str(run / "last.pt"), "--images", str(images), "--gt", str(labels), "--ids",
                 str(tmp_path / "val.txt"), "--device", "cpu", "--json", str(tmp_path / "early.json")]) == 2  # fmt: skip
    assert capsys.readouterr().err == (f"samcam eval-seg: error: {run / 'last.pt'}: an unfinished training run (step 1 of 2); "
                                       "rerun train-seg to finish it\n") and not (tmp_path / "early.json").exists()  # fmt: skip
    assert main(train_args) == 0
    ck = read_checkpoint(run / "last.pt")
    secs = ck["history"]["epoch_seconds"]
    assert capsys.readouterr().out.startswith(f"step 2/2, complete, {sum(secs) / len(secs):.1f} s/epoch, peak RSS ")
    for given in (images / "run", labels / "run", tmp_path / "ids.txt"):  # never an output over or inside what the user gave
        assert main(train_cmd(given)) == 2
        assert f"output {given}" in capsys.readouterr().err

    common = ["eval-seg", "--checkpoint", str(run / "last.pt"), "--images", str(images), "--gt", str(labels),
              "--ids", str(tmp_path / "val.txt"), "--device", "cpu", "--threads", "1"]  # fmt: skip
    for extra, scales, flip, how in [([], [1.0], False, "scales 1.0"), (["--flip", "--scales", "1.0,0.5"], [1.0, 0.5], True, "scales 1.0,0.5 + flip"),
                                     (["--multi-scale"], [0.75, 1.0, 1.25], True, "scales 0.75,1.0,1.25 + flip")]:  # fmt: skip
        j, c = tmp_path / f"{len(extra)}.json", tmp_path / f"{len(extra)}.csv"
        assert main([*common, *extra, "--json", str(j), "--csv", str(c)]) == 0
        s = json.loads(j.read_text())
        assert (s["scales"], s["flip"]) == (scales, flip)
        assert capsys.readouterr().out == f"val mIoU {100 * s['miou']:.2f} over 2 images ({how}) <- {run / 'last.pt'}\n"
        assert c.read_text().splitlines()[0].startswith("class,")
    void = tmp_path / "void"
    void.mkdir()
    for i in ("e", "f"):
        Image.fromarray(np.full((40, 48), 255, np.uint8), mode="L").save(void / f"{i}.png")
    assert main([*common[:6], str(void), *common[7:], "--progress"]) == 0
    out = capsys.readouterr()
    assert out.out == f"val mIoU undefined (no pixel to score) over 2 images (scales 1.0) <- {run / 'last.pt'}\n" and "eval-seg" in out.err
    assert main([*common, "--multi-scale", "--flip"]) == 2
    assert "--flip does not apply with --multi-scale" in capsys.readouterr().err
    from samcam.seg.evaluate import MULTI_SCALES

    assert main([*common, "--multi-scale", "--scales", "0.5"]) == 2
    assert f"with --multi-scale (it sets --scales {','.join(map(str, MULTI_SCALES))} --flip)" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "ok"), [("4", True), ("0.25,4.0", True), ("4.01", False), ("0", False), ("1,1", False), ("x", False), ("nan", False)])
def test_eval_scales_option(text, ok):
    import argparse

    from samcam.seg.commands import MAX_SCALE, _scales

    assert MAX_SCALE == 4.0
    if ok:
        assert _scales(text) == tuple(float(s) for s in text.split(","))
    else:
        with pytest.raises(argparse.ArgumentTypeError, match=rf"scales must .*, got {text!r}"):
            _scales(text)


def test_training_records_what_it_did(tmp_path, monkeypatch, one_thread, capsys):
    """A run's checkpoint and result against what the test saw: the mean loss of each epoch's steps,
    epoch times within the wall time, the load average, device, threads and peak memory, the batches
    drawn, a non-default head width and unfrozen stem that reload, and the progress bar."""
    import os
    import re
    import time

    import samcam.seg.train as seg_train
    from samcam.training import descend

    ids = ["a", "b", "c", "d", "e", "f"]
    images, labels = _synthetic_voc(tmp_path, ids)
    step_losses, batches = [], []
    monkeypatch.setattr(seg_train, "descend", lambda opt, loss: step_losses.append(descend(opt, loss)) or step_losses[-1])
    real_batch = seg_train.make_batch
    monkeypatch.setattr(seg_train, "make_batch", lambda data, recipe, epoch, positions: batches.append((epoch, positions)) or real_batch(data, recipe, epoch, positions))
    monkeypatch.setattr(os, "getloadavg", lambda: (1.25, 2.5, 3.75))
    recipe = replace(TINY, crop=32, epochs=2, head_channels=16, freeze_early=False)
    t0 = time.perf_counter()
    first = train(images, labels, ids, tmp_path / "run", recipe, progress=True, pretrained=False, max_steps=4)
    assert re.search(r"train-seg run: .*4/6 \[", capsys.readouterr().err)  # named, counted in steps out of the total
    assert not read_checkpoint(first.out)["complete"] and read_checkpoint(first.out)["step"] == 4  # saved mid-epoch
    r = train(images, labels, ids, tmp_path / "run", recipe, progress=True, pretrained=False)
    wall = time.perf_counter() - t0
    assert re.search(r"train-seg run: .*6/6 \[", capsys.readouterr().err)  # resumed at step 4
    assert [(e, p.start, p.stop) for e, p in batches] == [(0, 0, 2), (0, 2, 4), (0, 4, 6), (1, 0, 2), (1, 2, 4), (1, 4, 6)]
    ck = read_checkpoint(r.out)
    h = ck["history"]
    assert r.complete and ck["complete"] and ck["step"] == ck["total_steps"] == 6 and ck["dataset"] == "voc"
    assert ck["labels_dir"] == str(labels.resolve()) and h["device"] == "cpu" and h["threads"] == torch.get_num_threads() == 1
    assert h["load_average"] == [1.25, 1.25] and len(h["epoch_seconds"]) == 2
    assert all(0 < s < wall for s in h["epoch_seconds"]) and 0 < r.seconds < wall
    assert h["losses"][0] == pytest.approx(np.mean(step_losses[:3]))
    assert h["losses"][1] == pytest.approx(np.mean(step_losses[4:]))  # a resumed epoch: the mean of the steps run since
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024  # peak RSS, MiB
    assert 0.9 * hwm <= h["peak_rss_mib"] <= hwm * 1.01 and r.peak_rss_mib == pytest.approx(hwm, rel=0.01)
    model, got, meta = load_model(r.out)  # reloads only if built with the recipe's head and stem settings
    assert got == recipe and "model" not in meta and "optimizer" not in meta and meta["step"] == 6
    assert all(p.requires_grad for p in model.parameters())  # freeze_early=False: the stem trains too
    assert sum(p.numel() for p in model.head.high_classifier.parameters()) == 21 * 16 + 21


def test_a_run_without_a_bar_logs_one_line_per_epoch(tmp_path, one_thread, capsys):
    """Where no bar is shown (stderr no terminal: a log file, nohup), each epoch says where the run is,
    its mean loss and time as the checkpoint records them; a caller that asked for no progress gets none."""
    ids = ["a", "b", "c", "d"]
    images, labels = _synthetic_voc(tmp_path, ids)
    recipe = replace(TINY, crop=32, epochs=2)
    r = train(images, labels, ids, tmp_path / "run", recipe, pretrained=False)
    h = read_checkpoint(r.out)["history"]
    assert capsys.readouterr().err.splitlines() == [
        f"train-seg {tmp_path / 'run'}: epoch {e + 1}/2 (step {2 * (e + 1)}/4), loss {h['losses'][e]:.4f}, {h['epoch_seconds'][e]:.1f} s, saved last.pt"
        for e in range(2)]  # fmt: skip
    train(images, labels, ids, tmp_path / "quiet", recipe, pretrained=False, progress=False)
    assert capsys.readouterr().err == ""


def test_training_names_what_does_not_fit(tmp_path, one_thread):
    import samcam.seg.train as seg_train
    from samcam.training import save_checkpoint

    images, labels = _synthetic_voc(tmp_path, ["a", "b"])
    recipe = replace(TINY, crop=32, epochs=1)
    with pytest.raises(ValueError, match=r"1 training images are fewer than one batch of 2"):
        train(images, labels, ["a"], tmp_path / "one", recipe, pretrained=False)
    with pytest.raises(ValueError, match=r"no training ids"):
        seg_train.load_data(images, labels, [])
    with pytest.raises(FileNotFoundError, match=r"label file not found: .*lab/zz\.png"):
        seg_train.load_data(images, labels, ["a", "zz"])
    Image.fromarray(np.zeros((40, 47), np.uint8), mode="L").save(labels / "b.png")
    with pytest.raises(ValueError, match=r"lab/b\.png: label size \(40, 47\) differs from image size \(40, 48\) \(.*img/b\.png\)"):
        seg_train.load_data(images, labels, ["a", "b"])
    images, labels = _synthetic_voc(tmp_path / "ok", ["a", "b"])
    run = train(images, labels, ["a", "b"], tmp_path / "run", recipe, pretrained=False).out
    ck = read_checkpoint(run)
    save_checkpoint(run, {**ck, "total_steps": 5, "step": 5})
    with pytest.raises(ValueError, match=rf"{run}: made for 5 steps, this run has 1; use another --out"):
        train(images, labels, ["a", "b"], tmp_path / "run", recipe, pretrained=False)
    save_checkpoint(run, {**ck, "optimizer": {"state": {}, "param_groups": []}})
    with pytest.raises(ValueError, match=rf"{run}: its optimizer state does not fit this run \(ValueError\)"):
        train(images, labels, ["a", "b"], tmp_path / "run", recipe, pretrained=False)
    key = next(iter(ck["model"]))
    save_checkpoint(run, {**ck, "model": {**ck["model"], key: ck["model"][key] * float("nan")}})
    with pytest.raises(ValueError, match=rf"{run}: its segmentation weights hold values that are not finite"):
        train(images, labels, ["a", "b"], tmp_path / "run", recipe, pretrained=False)
    save_checkpoint(run, ck)
    with pytest.raises(ValueError, match=rf"{run} was made with another recipe \(crop: 32 -> 64, seed: 3 -> 4\); use another --out"):
        train(images, labels, ["a", "b"], tmp_path / "run", replace(recipe, crop=64, seed=4), pretrained=False)
    Image.fromarray(np.ones((40, 48), np.uint8), mode="L").save(labels / "b.png")
    with pytest.raises(ValueError, match=rf"{run}"):
        train(images, labels, ["a", "b"], tmp_path / "run", recipe, pretrained=False)  # other labels: named


def _resumable_run(tmp_path):
    """A finished one-step run on a and b of three synthetic images, and a check that a resume of it with
    other data is refused with exactly ``why``: ``(images, labels, recipe, refused)``."""
    images, labels = _synthetic_voc(tmp_path, ["a", "b", "c"])
    recipe = replace(TINY, crop=32, epochs=1, head_channels=8)
    run = train(images, labels, ["a", "b"], tmp_path / "run", recipe, pretrained=False).out

    def refused(why: str, images=images, labels=labels, ids=("a", "b"), recipe=recipe):
        with pytest.raises(ValueError, match=f"^{re.escape(f'{run} was made with {why}; use another --out or delete it')}$"):
            train(images, labels, list(ids), tmp_path / "run", recipe, pretrained=False)

    return images, labels, recipe, refused


def test_a_resume_on_other_images_is_refused_and_one_on_a_copy_of_them_resumes(tmp_path, one_thread):
    """train-seg resumed a run with another --images folder: only the labels were fingerprinted (audit
    11, F8). The images are recorded by content: a byte copy elsewhere resumes, other pixels are refused."""
    import shutil

    images, labels, recipe, refused = _resumable_run(tmp_path)
    shutil.copytree(images, tmp_path / "copy")
    assert train(tmp_path / "copy", labels, ["a", "b"], tmp_path / "run", recipe, pretrained=False).done == 0  # the same images: resumed
    flipped = tmp_path / "flipped"
    shutil.copytree(images, flipped)
    Image.fromarray(np.asarray(Image.open(images / "b.png"))[::-1]).save(flipped / "b.png")
    refused(f"other images (it was trained on those of {images.resolve()})", images=flipped)
    refused(f"another recipe (lr: {recipe.lr!r} -> 0.5); other images (it was trained on those of {images.resolve()})",
            images=flipped, recipe=replace(recipe, lr=0.5))  # fmt: skip


def test_a_refused_resume_names_the_ids_labels_or_kind_of_checkpoint_that_differ(tmp_path, one_thread):
    """One more id was refused as 'other labels', and a train-classifier checkpoint as 'not a samcam
    segmentation checkpoint' (audit 11, F13): the ids are recorded in order and a change of them is
    named as one; a checkpoint made before they were recorded is compared on its count and labels."""
    import shutil

    from samcam.training import save_checkpoint

    images, labels, recipe, refused = _resumable_run(tmp_path)
    run = tmp_path / "run" / "last.pt"
    assert read_checkpoint(run)["ids"] == ["a", "b"]  # what it learnt from, in order
    refused("other ids (2 -> 3 ids, 1 new, e.g. 'c')", ids=("a", "b", "c"))
    refused("other ids (the same ids in another order)", ids=("b", "a"))
    other = tmp_path / "other"
    shutil.copytree(labels, other)
    Image.fromarray(np.ones((40, 48), np.uint8), mode="L").save(other / "b.png")
    refused(f"other labels (from {labels.resolve()})", labels=other)
    ck = read_checkpoint(run)
    save_checkpoint(run, {k: v for k, v in ck.items() if k not in ("ids", "images_dir", "images_fingerprint")})  # as samcam wrote it before
    refused("other ids (2 -> 3 ids)", ids=("a", "b", "c"))
    refused(f"other labels (from {labels.resolve()}) or another id list", labels=other)
    save_checkpoint(run, {"config": {}, "state_dict": {}, "epoch": 1})  # what train-classifier writes
    with pytest.raises(ValueError, match=f"^{re.escape(f'{run}: a train-classifier checkpoint, not a train-seg one')}$"):
        train(images, labels, ["a", "b"], tmp_path / "run", recipe, pretrained=False)


def test_eval_seg_refuses_the_images_the_network_was_trained_on(tiny_checkpoint, tmp_path, capsys):
    """eval-seg scored a network on its own training images and called it 'val mIoU' (audit 11, F5):
    the ids it was trained on, in its checkpoint, are refused as cam-eval and train-seg --eval-ids
    refuse them; a checkpoint made before samcam recorded them is scored with a note saying so."""
    from samcam.cli import main
    from samcam.training import save_checkpoint

    ck, images, labels = tiny_checkpoint  # trained on a, b, c, d
    (tmp_path / "ids.txt").write_text("e\nb\n")
    args = ["eval-seg", "--checkpoint", str(ck), "--images", str(images), "--gt", str(labels), "--ids", str(tmp_path / "ids.txt"),
            "--device", "cpu", "--json", str(tmp_path / "e.json")]  # fmt: skip
    assert main(args) == 2
    assert capsys.readouterr().err == (f"samcam eval-seg: error: {tmp_path / 'ids.txt'}: 1 of its 2 ids are images the network {ck} "
                                       "was trained on (e.g. b); eval-seg scores held-out images\n")  # fmt: skip
    assert not (tmp_path / "e.json").exists()
    old = tmp_path / "old.pt"
    save_checkpoint(old, {k: v for k, v in read_checkpoint(ck).items() if k != "ids"})
    (tmp_path / "ids.txt").write_text("b\n")
    assert main([*args[:2], str(old), *args[3:]]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("val mIoU ") and out.err == (f"samcam: note: {old} records no training ids (made before train-seg kept them): "
                                                           f"whether {tmp_path / 'ids.txt'} holds training images is not checked\n")  # fmt: skip


def test_label_fingerprint_is_the_ids_and_their_label_bytes(tmp_path):
    """``sha256`` over each id, a NUL and the SHA-256 of its label file, in id order: other labels,
    another order or ids that run together give another fingerprint."""
    import hashlib

    from samcam.seg.train import load_data

    images, labels = _synthetic_voc(tmp_path, ["a", "b"])
    h = hashlib.sha256()
    for i in ("a", "b"):
        h.update(i.encode() + b"\0" + hashlib.sha256((labels / f"{i}.png").read_bytes()).digest())
    assert load_data(images, labels, ["a", "b"]).fingerprint == h.hexdigest()
    assert load_data(images, labels, ["b", "a"]).fingerprint != h.hexdigest()


def _checkpoint(**changes) -> dict:
    from samcam.seg.train import FORMAT

    ck = {"format": FORMAT, "recipe": Recipe().to_dict(), "n_classes": 21, "dataset": "voc", "labels_dir": "l", "labels_fingerprint": "a" * 64,
          "n_train": 1, "step": 0, "total_steps": 1, "complete": False, "history": {"losses": [0.0], "epoch_seconds": [0]}, "model": {}}  # fmt: skip
    ck.update(changes)
    return ck


def test_read_checkpoint_accepts_each_fields_smallest_value_and_names_the_first_it_refuses(tmp_path):
    """The smallest legal values (1 class without a dataset, 1 training image, step 0, losses and
    times of 0) load; one below each is named with the bound it broke."""
    from samcam.training import save_checkpoint

    def read(ck):
        save_checkpoint(tmp_path / "c.pt", ck)
        return read_checkpoint(tmp_path / "c.pt")

    assert read(_checkpoint())["n_train"] == 1
    one_class = _checkpoint(n_classes=1)
    del one_class["dataset"]
    assert read(one_class)["n_classes"] == 1
    for changes, message in [({"n_train": 0}, "n_train is 0, expected a whole number ≥ 1"), ({"step": -1}, "step is -1, expected a whole number ≥ 0"),
                             ({"total_steps": -1}, "total_steps is -1, expected a whole number ≥ 0"), ({"n_classes": 0}, "n_classes is 0, expected a whole number ≥ 1"),
                             ({"history": []}, "history is a list, expected a mapping"), ({"complete": 1}, "complete is a int, expected a bool"),
                             ({"labels_fingerprint": "g" * 100}, f"labels_fingerprint {'g' * 80!r} is not the SHA-256"),
                             ({"history": {"losses": list(range(-1, 40))}}, f"history.losses {str(list(range(-1, 40)))[:80]} is not a list of finite numbers ≥ 0"),
                             # complete exactly at the last step, as train() saves it (audit 10, F7: a "complete" step-0 run was scored)
                             ({"complete": True}, "complete is True at step 0 of 1"), ({"step": 1}, "complete is False at step 1 of 1"),
                             ({"labels_dir": "/l\x1b[31mRED"}, "labels_dir '/l\\x1b[31mRED' is not one line of printable text"),
                             # the fields train-seg records since audit 11 (F5, F8), checked where present
                             ({"ids": ["a", "b"]}, "ids ['a', 'b'] is not a list of the 1 training ids"), ({"ids": [1]}, "ids [1] is not a list"),
                             ({"images_dir": "/i\x1b[31m"}, "images_dir '/i\\x1b[31m' is not one line of printable text"),
                             ({"images_fingerprint": "a" * 64}, f"images_fingerprint {'a' * 64!r} is not the fingerprint train-seg writes")]:  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'c.pt'}: bad field in a samcam segmentation checkpoint ({message}")):
            read(_checkpoint(**changes))


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_optimizer_by_recipe(optimizer):
    from samcam.seg.model import SegNet
    from samcam.seg.train import build_optimizer

    recipe = replace(TINY, optimizer=optimizer, lr=0.02, weight_decay=0.003, head_lr_mult=7.0)
    model = SegNet("lite0", 21, pretrained=False, head_channels=8)
    opt = build_optimizer(model, recipe)
    assert type(opt) is {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[optimizer]
    backbone, head = model.param_groups()
    assert [len(g["params"]) for g in opt.param_groups] == [len(backbone), len(head)]
    assert [g["lr_mult"] for g in opt.param_groups] == [1.0, 7.0]
    assert all(g["lr"] == 0.02 and g["weight_decay"] == 0.003 for g in opt.param_groups)
    if optimizer == "sgd":
        assert all(g["momentum"] == 0.9 for g in opt.param_groups)


def test_peak_rss_is_the_kernels_high_water_mark():
    from samcam.seg.train import peak_rss_mib

    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024
    assert peak_rss_mib() == pytest.approx(hwm, rel=0.02)


def test_segnet_forward_by_hand():
    """LR-ASPP on EfficientNet-Lite, step by step with torch's functional calls: input scaling
    (x − 127) / 128, stride-8 and stride-32 features, ``ReLU(BN(conv(high))) · sigmoid(conv(mean(high)))``
    upsampled to the stride-8 grid, both classifiers added, the sum upsampled to the input."""
    from torch.nn import functional as F

    from samcam.seg.model import SegNet

    torch.manual_seed(0)
    net = SegNet("lite0", 5, pretrained=False, head_channels=8).eval()
    with torch.no_grad():  # batch norm with statistics that are not the identity
        for m in net.head.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.uniform_(0.5, 2), m.bias.uniform_(-1, 1)
    x = torch.rand(2, 3, 70, 90) * 255
    h = net.head
    with torch.no_grad():
        low, high = net.backbone((x - 127.0) / 128.0)
        assert low.shape[-2:] == (70 // 8, 90 // 8) and high.shape[-2:] == (70 // 32, 90 // 32)  # strides 8 and 32
        assert low.shape[1] == net.backbone.low_channels and high.shape[1] == net.backbone.high_channels
        conv, bn = h.cbr[0], h.cbr[1]
        assert conv.bias is None
        a = F.relu(F.batch_norm(F.conv2d(high, conv.weight), bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps))
        g = torch.sigmoid(F.conv2d(high.mean(dim=(2, 3), keepdim=True), h.gate[1].weight, h.gate[1].bias))
        up = F.interpolate(a * g, size=(70 // 8, 90 // 8), mode="bilinear", align_corners=False)
        logits = F.conv2d(low, h.low_classifier.weight, h.low_classifier.bias) + F.conv2d(up, h.high_classifier.weight, h.high_classifier.bias)
        expected = F.interpolate(logits, size=(70, 90), mode="bilinear", align_corners=False)
        torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)
    assert "mean" not in net.state_dict() and "std" not in net.state_dict()  # the scaling is not a weight
    assert net.backbone_name == "lite0" and net.n_classes == 5
    with pytest.raises(ValueError, match=r"backbone"):
        SegNet("lite9", pretrained=False)


def test_freeze_early_freezes_the_stem_and_the_stride_2_and_4_blocks_only():
    from samcam.seg.model import SegNet

    net = SegNet("lite0", 21, pretrained=False)
    assert all(p.requires_grad for p in net.parameters())  # not frozen unless asked
    net = SegNet("lite0", 21, pretrained=False, freeze_early=True).train()
    eff = net.backbone.net
    stride, frozen_blocks = 2, []
    for i, block in enumerate(eff._blocks):  # cumulative stride after each block, from the architecture
        stride *= max(np.atleast_1d(block._block_args.stride))
        if stride <= 4:
            frozen_blocks.append(i)
    assert frozen_blocks == [0, 1, 2]  # Lite0: stride 2 (block 0), stride 4 (blocks 1-2)
    for i, block in enumerate(eff._blocks):
        assert all(p.requires_grad != (i in frozen_blocks) for p in block.parameters()), i
        assert block.training != (i in frozen_blocks), i  # frozen batch-norm statistics too
    assert not any(p.requires_grad for p in eff._conv_stem.parameters()) and not eff._bn0.training
    assert all(p.requires_grad for p in net.head.parameters())
    strides = 2 * np.cumprod([max(np.atleast_1d(b._block_args.stride)) for b in eff._blocks])
    last_at_8 = int(np.flatnonzero(strides == 8)[-1])  # the stride-8 features: the last block before stride 16
    assert net.backbone.low_index == last_at_8 and net.backbone.low_channels == eff._blocks[last_at_8]._block_args.output_filters


def test_output_stride_16_dilates_the_last_stage_with_the_same_weights():
    """``output_stride`` 16 (recipe field, DeepLab's choice): the last stride-2 block keeps its weights
    but not its stride, so the features the head gates come at 1/16 of the input, the stride-8 features
    do not move, and the network is the one ``freeze_early`` and the checkpoint loader see."""
    from samcam.seg.model import SegNet
    from samcam.seg.recipe import Recipe

    torch.manual_seed(0)
    n32 = SegNet.from_recipe(Recipe(head_channels=8), 21, pretrained=False).eval()
    n16 = SegNet.from_recipe(Recipe(head_channels=8, output_stride=16), 21, pretrained=False).eval()
    n16.load_state_dict(n32.state_dict())  # same parameters, key for key
    x = torch.rand(1, 3, 96, 128) * 255
    with torch.no_grad():
        (l32, h32), (l16, h16) = n32.backbone((x - 127.0) / 128.0), n16.backbone((x - 127.0) / 128.0)
        torch.testing.assert_close(l16, l32)  # up to stride 8 the two networks are one
        assert h32.shape[-2:] == (96 // 32, 128 // 32) and h16.shape[-2:] == (96 // 16, 128 // 16)
        assert n16(x).shape == (1, 21, 96, 128)
    eff = n16.backbone.net
    last = max(i for i, b in enumerate(eff._blocks) if max(np.atleast_1d(b._block_args.stride)) == 2)
    assert tuple(eff._blocks[last]._depthwise_conv.stride) == (1, 1)
    assert [tuple(b._depthwise_conv.dilation) for b in eff._blocks[last + 1:]] == [(2, 2)] * (len(eff._blocks) - last - 1)
    frozen = SegNet.from_recipe(Recipe(output_stride=16, head_channels=8), 21, pretrained=False)
    assert [b for b in frozen.backbone.frozen if b in list(frozen.backbone.net._blocks)] == list(frozen.backbone.net._blocks[:3])
    assert Recipe.from_dict({k: v for k, v in Recipe().to_dict().items() if k != "output_stride"}).output_stride == 32  # earlier checkpoints
    with pytest.raises(ValueError, match=r"output_stride.*8"):
        Recipe(output_stride=8)


def test_recipe_files_set_fields_and_options_beside_them_win(tmp_path, capsys):
    """``--recipe``: a shipped name or a YAML file; its fields over the defaults, options over its fields;
    a bad file named with what is wrong."""
    from samcam.cli import build_parser
    from samcam.seg.commands import recipe_from_args
    from samcam.seg.recipe import RECIPES, Recipe, read_recipe, recipe_file, recipe_names

    assert "c320_e20_os16" in recipe_names() and recipe_file("c320_e20_os16") == RECIPES / "c320_e20_os16.yaml"
    assert read_recipe("c320_e20_os16") == {"crop": 320, "epochs": 20, "output_stride": 16}  # the search's choice (results/seg/search)

    def parse(*extra):
        cmd = ["train-seg", "--images", "i", "--labels", "l", "--ids", "x", "--out", "o", *extra]
        return recipe_from_args(build_parser(cmd).parse_args(cmd))

    assert parse() == Recipe()
    assert parse("--recipe", "c320_e20_os16") == Recipe(crop=320, epochs=20, output_stride=16)
    f = tmp_path / "r.yaml"
    f.write_text("crop: 64\nflip: false\nseed: 4\n")
    assert parse("--recipe", str(f), "--seed", "9", "--epochs", "2") == Recipe(crop=64, flip=False, seed=9, epochs=2)
    assert parse("--recipe", str(f), "--crop", "224") == Recipe(crop=224, flip=False, seed=4)  # an option at its default still wins
    for text, why in (("- 1\n", "recipe is a list, not a mapping"), ("crop: 8\n", "crop is 8"), ("size: 3\n", "unknown fields ['size']"),
                      ("crop: [\n", "not a readable YAML file"), ("crop: " + "9" * 5000 + "\n", "not a readable YAML file (Exceeds the limit")):  # fmt: skip
        f.write_text(text)
        with pytest.raises(ValueError, match=re.escape(f"{f}: ") + ".*" + re.escape(why)):
            read_recipe(f)
    for text, why in (("crop: 64\ncrop: 32\n", "the key 'crop' is given twice in one mapping"),
                      ("a: &a [1, 2]\nbackbone: *a\n", "YAML aliases (*name) are not accepted"),
                      ("1: 2\na: 3\n", "unknown fields ['1', 'a']")):  # fmt: skip
        f.write_text(text)
        with pytest.raises(ValueError, match=re.escape(f"{f}: ") + ".*" + re.escape(why)):
            read_recipe(f)
    for text in ("", "\n  \n", "# only a comment\n"):  # a truncated or emptied file is no recipe (audit 12, F21); {} asks for the defaults
        f.write_text(text)
        with pytest.raises(ValueError, match=re.escape(f"{f}: an empty recipe file; give the fields to set, or {{}} for the defaults")):
            read_recipe(f)
    f.write_text("{}\n")
    assert read_recipe(f) == {} and parse("--recipe", str(f)) == Recipe()
    f.write_text("crop: 64\n" + "#" * (1 << 20))
    with pytest.raises(ValueError, match=re.escape(f"{f}: {f.stat().st_size} bytes, over the 1 MiB limit for a recipe file")):
        read_recipe(f)
    with pytest.raises(SystemExit) as e:  # an empty value is refused by the parser, as for every option
        parse("--recipe", "")
    assert e.value.code == 2 and "argument --recipe: empty; give a value" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no recipe named 'best'; shipped: c320_e20_os16"):
        read_recipe("best")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "none.yaml"))):
        read_recipe(tmp_path / "none.yaml")


def test_recipe_names_and_paths_are_told_apart(tmp_path, monkeypatch):
    """A name with a folder or a suffix is a path (also `sub/r`, two parts, no suffix); a bare name is
    a shipped recipe, every shipped name listed when it is not one; an empty mapping is the defaults.
    (Mutation survivors: `or` → `and`, `> 1` → `> 2`, the names' separator, an empty file.)"""
    import samcam.seg.recipe as recipe_module
    from samcam.seg.recipe import Recipe, read_recipe, recipe_file

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "r").write_text("crop: 96\n")
    assert recipe_file("sub/r") == Path("sub/r") and read_recipe("sub/r") == {"crop": 96}
    (tmp_path / "sub" / "empty.yaml").write_text("{}  # nothing set\n")
    assert read_recipe("sub/empty.yaml") == {} and Recipe(**read_recipe("sub/empty.yaml")) == Recipe()
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for name in ("b_two", "a_one"):
        (shipped / f"{name}.yaml").write_text("epochs: 2\n")
    monkeypatch.setattr(recipe_module, "RECIPES", shipped)
    assert recipe_file("a_one") == shipped / "a_one.yaml"
    with pytest.raises(FileNotFoundError, match=re.escape("no recipe named 'c'; shipped: a_one, b_two (or give a YAML file's path)")):
        recipe_file("c")
    with pytest.raises(ValueError, match=re.escape("--recipe is empty; give a recipe file or one of: a_one, b_two")):
        recipe_file("")


def test_train_seg_writes_a_record_of_the_evaluated_run(tmp_path, one_thread, capsys):
    """``--record``: once evaluated, the run's record (what the table reads) beside the run folder; the
    recipe of ``--recipe`` and the options beside it is the one trained; a record needs the evaluation."""
    import json

    from samcam.cli import main
    from samcam.outputs import REPO, git_commit
    from samcam.seg.report import collect, run_record

    ids = ["a", "b", "c", "d"]
    images, labels = _synthetic_voc(tmp_path, [*ids, "e", "f"])  # e and f held out
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    (tmp_path / "val.txt").write_text("f\ne\n")
    (tmp_path / "r.yaml").write_text("crop: 32\nbatch_size: 2\nepochs: 1\nhead_channels: 8\n")
    run, record = tmp_path / "runs" / "gt_s3", tmp_path / "records" / "gt_s3.json"
    cmd = ["train-seg", "--images", str(images), "--labels", str(labels), "--ids", str(tmp_path / "ids.txt"), "--out", str(run),
           "--recipe", str(tmp_path / "r.yaml"), "--seed", "3", "--device", "cpu", "--threads", "1",
           "--eval-gt", str(labels), "--eval-ids", str(tmp_path / "val.txt"), "--record", str(record)]  # fmt: skip
    assert main(cmd) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"run record -> {record}"
    ck = read_checkpoint(run / "last.pt")
    assert ck["recipe"] == Recipe(crop=32, batch_size=2, epochs=1, head_channels=8, seed=3).to_dict() and ck["total_steps"] == 2
    rec = json.loads(record.read_text())
    assert {k: v for k, v in rec.items() if k not in ("commit", "machine")} == run_record(run)
    assert rec["commit"] == git_commit(REPO) and rec["machine"]["cores"] >= 1
    assert ck["history"]["commits"] == [git_commit(REPO)]  # the code that trained it, kept beside the record's own commit
    ev = json.loads((run / "eval.json").read_text())
    assert rec["eval"]["miou"] == ev["miou"] and rec["eval"]["n_images"] == 2 and rec["history"] == ck["history"]
    import hashlib  # what it was scored on: the val ids' ground truth by content, kept by the record (audit 11, F4)

    h = hashlib.sha256()
    for i in sorted((tmp_path / "val.txt").read_text().split()):
        data = (labels / f"{i}.png").read_bytes()
        h.update(f"{i}\0{len(data)}\0{hashlib.sha256(data).hexdigest()}\n".encode())
    assert ev["scored_on"] == rec["eval"]["scored_on"] == "sha256:" + h.hexdigest()
    assert collect(record.parent)["miou"].tolist() == [100 * ev["miou"]]
    assert main([*cmd[:-6], "--record", str(record)]) == 2
    assert "--record needs --eval-gt and --eval-ids" in capsys.readouterr().err
    assert main([*cmd[:-1], str(labels / "x.json")]) == 2  # never into the labels
    assert f"output {labels / 'x.json'} lies inside the input folder {labels}" in capsys.readouterr().err
    assert main([*cmd[:-1], str(run / "r.json")]) == 2  # nor into the run folder it describes
    assert "lies inside the output folder" in capsys.readouterr().err
    fresh = [*cmd[:cmd.index("--out") + 1], str(tmp_path / "runs" / "gt_s4"), *cmd[cmd.index("--out") + 2:]]
    for bad, why in ((tmp_path / "records", "exists and is not a regular file"), (f"{tmp_path / 'new'}/", "ends with a separator")):
        assert main([*fresh[:-1], str(bad)]) == 2  # said before the training, not after it
        assert why in capsys.readouterr().err and not (tmp_path / "runs" / "gt_s4").exists()
    recipe_text = (tmp_path / "r.yaml").read_text()
    assert main([*fresh[:-1], str(tmp_path / "r.yaml")]) == 2  # the record is never written over the recipe it ran
    assert f"output {tmp_path / 'r.yaml'} is the input {tmp_path / 'r.yaml'}" in capsys.readouterr().err
    assert (tmp_path / "r.yaml").read_text() == recipe_text and not (tmp_path / "runs" / "gt_s4").exists()


def test_train_seg_evaluates_a_complete_run_into_its_folder(tmp_path, one_thread, capsys, monkeypatch):
    """``--eval-gt/--eval-ids``: nothing while the run is unfinished; once complete, the run folder
    gets eval.json and pred/ exactly as eval-seg writes them for that checkpoint, in the layout the
    report reads (one command per row of the table). ``--device cpu`` holds for the training and the
    evaluation even where CUDA is visible."""
    import json

    import samcam.seg.evaluate
    import samcam.seg.train

    asked = []

    def gpu_machine(device=None):  # as on a machine with a GPU: no device named means cuda
        asked.append(device)
        return torch.device(device or "meta")  # (here a device nothing can run on)

    for module in (samcam.seg.train, samcam.seg.evaluate):
        monkeypatch.setattr(module, "pick_device", gpu_machine)

    from samcam.cli import main
    from samcam.seg.report import collect

    ids = ["a", "b", "c", "d"]
    images, labels = _synthetic_voc(tmp_path, [*ids, "e", "f"])  # e and f held out
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    (tmp_path / "val.txt").write_text("f\ne\n")
    run = tmp_path / "runs" / "gt_s3"
    cmd = ["train-seg", "--images", str(images), "--labels", str(labels), "--ids", str(tmp_path / "ids.txt"), "--out", str(run),
           "--crop", "32", "--batch-size", "2", "--epochs", "2", "--seed", "3", "--device", "cpu", "--threads", "1",
           "--eval-gt", str(labels), "--eval-ids", str(tmp_path / "val.txt")]  # fmt: skip
    assert main([*cmd, "--max-steps", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "not evaluated yet: the run is not complete (rerun to resume; it is evaluated once it is)"
    assert sorted(p.name for p in run.iterdir()) == [".samcam.lock", "last.pt"]  # the lock every written folder holds, no evaluation
    assert main([*cmd, "--progress"]) == 0
    out, err = capsys.readouterr()
    assert "train-seg gt_s3" in err and "eval-seg" in err  # the bars asked for: the training's and the evaluation's
    out = out.splitlines()
    assert asked == ["cpu"] * 3  # the two trainings and the evaluation
    secs = read_checkpoint(run / "last.pt")["history"]["epoch_seconds"]
    assert len(secs) == 2 and out[0].startswith(f"step 4/4, complete, {sum(secs) / 2:.1f} s/epoch, peak RSS ")  # two epochs: the mean
    s = json.loads((run / "eval.json").read_text())
    assert out[1] == f"val mIoU {100 * s['miou']:.2f} over 2 images (scales 1.0) <- {run / 'last.pt'} -> {run / 'eval.json'}"
    assert main(["eval-seg", "--checkpoint", str(run / "last.pt"), "--images", str(images), "--gt", str(labels), "--ids", str(tmp_path / "val.txt"),
                 "--device", "cpu", "--json", str(tmp_path / "e.json"), "--save-predictions", str(tmp_path / "pred")]) == 0  # fmt: skip
    capsys.readouterr()
    by_eval_seg = json.loads((tmp_path / "e.json").read_text())
    assert {k: v for k, v in s.items() if k != "seconds"} == {k: v for k, v in by_eval_seg.items() if k != "seconds"}
    assert sorted(p.name for p in (run / "pred").glob("*.png")) == ["e.png", "f.png"]
    for i in ("e", "f"):
        assert (run / "pred" / f"{i}.png").read_bytes() == (tmp_path / "pred" / f"{i}.png").read_bytes()
    df = collect(tmp_path / "runs")
    assert (df["row"].tolist(), df["seed"].tolist(), df["miou"].tolist()) == (["gt"], [3], [100 * s["miou"]])
    for half in (["--eval-gt", str(labels)], ["--eval-ids", str(tmp_path / "val.txt")]):
        assert main([*cmd[:-4], *half]) == 2
        assert capsys.readouterr().err == "samcam train-seg: error: --eval-gt and --eval-ids go together\n"
    for inside in ("pred", "eval.json"):  # the predictions are never written over the ground truth or the training labels
        for at in (-3, 4):  # --eval-gt, --labels
            assert main([*cmd[:at], str(run / inside), *cmd[at + 1:]]) == 2
            assert f"output {run / inside}" in capsys.readouterr().err


def test_eval_seg_refuses_a_table_path_that_names_a_folder_before_it_evaluates(tmp_path, capsys):
    """`--json`/`--csv` name files: an existing folder or a path ending with a separator is refused at
    once (the checkpoint, absent here, is never read)."""
    from samcam.cli import main

    (tmp_path / "ids.txt").write_text("a\n")
    (tmp_path / "d").mkdir()
    base = ["eval-seg", "--checkpoint", str(tmp_path / "none.pt"), "--images", str(tmp_path), "--gt", str(tmp_path), "--ids", str(tmp_path / "ids.txt")]
    for option in ("--json", "--csv"):
        for bad, why in ((tmp_path / "d", f"output {tmp_path / 'd'}: exists and is not a regular file"),
                         (f"{tmp_path / 'new'}/", f"output {tmp_path / 'new'}/: ends with a separator, which names a folder")):  # fmt: skip
            assert main([*base, option, str(bad)]) == 2
            err = capsys.readouterr().err
            assert why in err and "none.pt" not in err
    (tmp_path / "ck.pt").write_bytes(b"weights")  # a table is never written over an input: the checkpoint, the ids
    given = ["eval-seg", "--checkpoint", str(tmp_path / "ck.pt"), "--images", str(tmp_path / "d"), "--gt", str(tmp_path / "d"),
             "--ids", str(tmp_path / "ids.txt")]  # fmt: skip
    for option, target in (("--json", tmp_path / "ck.pt"), ("--csv", tmp_path / "ids.txt")):
        assert main([*given, option, str(target)]) == 2
        assert f"output {target} is the input {target}; choose another output path" in capsys.readouterr().err
    assert (tmp_path / "ck.pt").read_bytes() == b"weights" and (tmp_path / "ids.txt").read_text() == "a\n"


def test_a_training_batch_pairs_each_pixel_with_its_own_label():
    """make_batch's image pixel (i, j) is its label's pixel (i, j), whatever the scale, crop and flip: the
    image's red channel is built as 40 × its label (blocks of 8 × 16 on a 80 × 96 image, so a transposed
    or mirrored image would not match), and pixels well inside a block (away from resize blur) agree."""
    from samcam.seg.train import TrainData, make_batch

    yy, xx = np.mgrid[0:80, 0:96]
    label = ((yy // 8 + 2 * (xx // 16)) % 4).astype(np.uint8)
    image = np.stack([40 * label, np.zeros_like(label), np.full_like(label, 9)], -1).astype(np.uint8)
    data = TrainData(["a", "b"], [image, image], [label, label], "x")
    for seed in range(4):
        recipe = Recipe(crop=64, batch_size=2, scale_min=0.9, scale_max=1.6, seed=seed)
        x, y = make_batch(data, recipe, 0, range(2))
        assert x.shape == (2, 3, 64, 64) and y.shape == (2, 64, 64)
        for b in range(2):
            lab = y[b].numpy()
            inner = np.ones_like(lab, bool)  # pixels whose 3 × 3 neighbourhood holds one label
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    inner[1:-1, 1:-1] &= lab[1 + di:63 + di, 1 + dj:63 + dj] == lab[1:-1, 1:-1]
            inner[[0, -1], :] = inner[:, [0, -1]] = False
            inner &= lab != 255
            assert inner.sum() > 500
            np.testing.assert_allclose(x[b, 0].numpy()[inner], 40.0 * lab[inner], atol=1.0)


class _PerPixel(torch.nn.Module):
    """A network whose class scores at a pixel depend on that pixel only (a 1 × 1 convolution): padding
    to the stride and cropping back change nothing, so a hand computation needs neither."""

    n_classes = 3

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[0.02, -0.01, 0.0], [0.0, 0.03, -0.02], [-0.01, 0.0, 0.02]]).view(3, 3, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.1, -0.2, 0.0]))

    def forward(self, x):
        return self.conv(x)


def test_multi_scale_prediction_resizes_height_and_width_each_to_its_own():
    """A 6 × 14 image at scale 0.5 is predicted at 3 × 7 (height, width), its scores resized back to
    6 × 14; scales together are the mean of their softmaxes (by hand, on a per-pixel network)."""
    from torch.nn import functional as F

    from samcam.seg.evaluate import predict_probs

    model = _PerPixel().eval()
    image = np.random.default_rng(0).integers(0, 255, (6, 14, 3), np.uint8)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        half = F.interpolate(x, size=(3, 7), mode="bilinear", align_corners=False)
        p_half = F.interpolate(model(half), size=(6, 14), mode="bilinear", align_corners=False).softmax(1)[0]
        p_one = model(x).softmax(1)[0]
        torch.testing.assert_close(predict_probs(model, image, (0.5,)), p_half, atol=1e-6, rtol=0)
        torch.testing.assert_close(predict_probs(model, image, (0.5, 1.0)), (p_half + p_one) / 2, atol=1e-6, rtol=0)


def test_eval_refuses_a_scale_that_shrinks_an_image_below_the_stride(tmp_path):
    """eval-seg --scales 0.01 scored every image from a 1 × 1 rescale; now the image is named."""
    from PIL import Image

    from samcam.data.spaces import VOC
    from samcam.seg.evaluate import MIN_SIDE, STRIDE, _score

    assert (STRIDE, MIN_SIDE) == (32, 16)
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "gt").mkdir()
    Image.fromarray(np.zeros((40, 60), np.uint8)).save(tmp_path / "gt" / "a.png")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'a.png'}: at scale 0.25 its 40 × 60 pixels become 10 × 15, a side below 16 pixels (half the network's stride)")):
        _score(None, tmp_path, tmp_path / "gt", ["a"], VOC, (1.0, 0.25), False, None, False, None)
