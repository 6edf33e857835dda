"""The CAM search's pieces: training options (rescale, frozen blocks, ReCAM loss), in-memory CAM
scoring, the selection rule and the two commands — each against a computation made here by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from samcam import cli
from samcam.metrics import Evaluator, confusion_matrix
from samcam.pipeline.cam import select_classifier, sweep_table
from samcam.cam.nets import EFFICIENTNETS
from samcam.pipeline.train_classifier import (
    MAX_BLOCKS,
    TrainConfig,
    _random_scaled_crop,
    config_differences,
    frozen_parameter,
    recam_loss,
    train_classifier,
)


def _recam_by_loop(f, w, y):
    """ReCAM's loss written one (image, class) pair at a time."""
    terms = []
    for b in range(f.shape[0]):
        for k in range(w.shape[0]):
            if y[b, k] < 0.5:
                continue
            cam = torch.relu((w[k][:, None, None] * f[b]).sum(0))
            cam = cam / (cam.max() + 1e-5)
            pooled = (cam[None] * f[b]).mean((1, 2))
            logits = w @ pooled
            terms.append(-torch.log_softmax(logits, 0)[k])
    return torch.stack(terms).mean()


def test_recam_loss_equals_the_per_pair_computation():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(3, 6, 4, 5, generator=g)
    w = torch.randn(4, 6, 1, 1, generator=g)
    y = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 0]], dtype=torch.float32)
    assert recam_loss(f, w, y).item() == pytest.approx(_recam_by_loop(f, w[:, :, 0, 0], y).item(), rel=1e-5)
    assert recam_loss(f, w, torch.zeros_like(y)).item() == 0.0  # no class: no term


def test_frozen_parameter_names():
    assert not frozen_parameter("backbone.net._conv_stem.weight", 0)
    assert frozen_parameter("backbone.net._conv_stem.weight", 1) and frozen_parameter("backbone.net._bn0.bias", 3)
    assert frozen_parameter("backbone.net._blocks.4.x", 5) and not frozen_parameter("backbone.net._blocks.5.x", 5)
    assert not frozen_parameter("backbone.net._blocks.12.x", 5)  # "12" is not "1"
    assert not frozen_parameter("classifier.weight", 99) and not frozen_parameter("backbone.net._conv_head.weight", 99)


def test_config_identity_fills_fields_a_checkpoint_predates():
    old = {k: v for k, v in vars(TrainConfig()).items() if k not in ("rescale", "freeze_blocks", "recam", "output_stride")}
    assert not config_differences(old, TrainConfig())
    assert config_differences(old, TrainConfig(freeze_blocks=2))
    assert not config_differences({**old, "rescale": [0.5, 1.5]}, TrainConfig(rescale=(0.5, 1.5)))  # a list read back is the tuple
    with pytest.raises(ValueError, match="rescale"):
        TrainConfig(rescale=(1.5, 0.5))
    with pytest.raises(ValueError, match="frozen backbone"):
        TrainConfig(train_backbone=False, recam=1.0)


def test_random_scaled_crop_scales_then_crops():
    x = torch.arange(2 * 3 * 40 * 60, dtype=torch.float32).reshape(2, 3, 40, 60)[0]
    rng = np.random.default_rng(3)
    s = np.random.default_rng(3).uniform(0.5, 0.5)  # the first draw is the scale
    out = _random_scaled_crop(x, 32, (0.5, 0.5), rng)
    assert s == 0.5 and out.shape == (3, 32, 32)
    scaled = F.interpolate(x[None], size=(20, 30), mode="bilinear", align_corners=False)[0]
    # 20 × 30 is smaller than the crop: padded with 127 at the bottom and right, then (maybe) flipped
    padded = F.pad(scaled, (0, 2, 0, 12), value=127.0)
    assert torch.equal(out, padded) or torch.equal(out, padded.flip(-1))


@pytest.mark.slow
def test_frozen_blocks_keep_their_imagenet_weights(tmp_path):
    from skimage import data

    from samcam.cam.nets import build_camnet

    images = [data.chelsea()[::4, ::4], data.astronaut()[::4, ::4]]
    labels = np.zeros((2, 20), np.float32)
    labels[0, 7] = labels[1, 14] = 1
    cfg = TrainConfig(epochs=1, batch_size=2, crop=64, freeze_blocks=3, rescale=(0.4, 0.6), lr_backbone=0.1, recam=1.0)
    train_classifier(images, labels, tmp_path / "clf.pt", cfg, progress=False)
    trained = torch.load(tmp_path / "clf.pt", weights_only=True)["state_dict"]
    imagenet = build_camnet("efficientnet-lite0").state_dict()
    for name, v in trained.items():
        if name.startswith("classifier") or "running_" in name or "num_batches" in name:
            continue
        same = torch.equal(v, imagenet[name])
        assert same == frozen_parameter(name, 3), name  # frozen: unchanged; every other weight moved


def test_sweep_table_by_hand():
    from samcam.metrics import scores

    gt = np.array([[0, 0, 1, 1], [0, 2, 2, 255]])
    preds = [np.array([[0, 1, 1, 1], [0, 2, 0, 0]]), np.array([[1, 1, 1, 1], [2, 2, 2, 2]])]
    evs = []
    for p in preds:
        ev = Evaluator.__new__(Evaluator)
        ev.conf = confusion_matrix(gt, p, 3)
        ev.scores = (lambda c: (lambda: scores(c)))(ev.conf)
        evs.append(ev)
    df = sweep_table([0.1, 0.2], evs)
    # object pixels: class 1 two, class 2 two → 4. Pred 0: partial = 0 (cls1) + 1 (cls2) = 1; false = 1 (bg→1) + 0 = 1
    assert df.loc[0, "partial_pct"] == pytest.approx(25.0) and df.loc[0, "false_pct"] == pytest.approx(25.0)
    assert df.loc[0, "false_on_background_pct"] == pytest.approx(25.0)
    # pred 1: no misses; false: bg→1 twice, bg→2 once = 3 (the void pixel is ignored)
    assert df.loc[1, "partial_pct"] == 0 and df.loc[1, "false_pct"] == pytest.approx(75.0)
    iou0 = np.mean([1 / 2, 2 / 3, 1 / 2])  # bg: tp 1 of (gt 3 ∪ pred 2); cls1: 2 of 3; cls2: 1 of 2
    iou1 = np.mean([0.0, 2 / 4, 2 / 3])
    assert df["miou"].tolist() == pytest.approx([iou0, iou1])
    assert df["best"].tolist() == [iou0 > iou1, iou1 > iou0]
    tie = sweep_table([0.1, 0.2, 0.3], [evs[1], evs[0], evs[0]])  # a tie: the first of the best marked, as a choice takes it
    assert tie["best"].tolist() == [False, True, False]


def _table(miou, mAP, thresholds=(0.1, 0.2, 0.3)):
    return pd.DataFrame({"map": mAP, "threshold": thresholds, "miou": miou, "partial_pct": 1.0, "false_pct": 2.0})


def test_selection_takes_the_best_held_out_miou_then_map_then_order():
    evals = {"a": _table([0.30, 0.35, 0.31], 80.0), "b": _table([0.36, 0.20, 0.10], 70.0), "c": _table([0.1, 0.1, 0.34], 90.0)}
    assert select_classifier(evals) == ("b", 0.1)
    tie = {"a": _table([0.30, 0.36, 0.31], 80.0), "b": _table([0.36, 0.20, 0.10], 81.0)}
    assert select_classifier(tie) == ("b", 0.1)  # same mIoU: the higher mAP
    close = {"a": _table([0.352, 0.1, 0.1], 70.0), "b": _table([0.348, 0.1, 0.1], 90.0)}
    assert select_classifier(close) == ("a", 0.1)  # 0.4 points apart is no tie, whatever the mAP
    noise = {"a": _table([0.35 + 1e-9, 0.1, 0.1], 70.0), "b": _table([0.35, 0.1, 0.1], 90.0)}
    assert select_classifier(noise) == ("b", 0.1)  # a float's last digits are a tie: the higher mAP
    same = {"x": _table([0.2, 0.3, 0.1], 5.0), "y": _table([0.3, 0.2, 0.1], 5.0)}
    assert select_classifier(same) == ("x", 0.2)  # all equal: the first listed
    with pytest.raises(ValueError):
        select_classifier({})


def test_selection_compares_candidates_scored_alike_only():
    # audit 11, F4: cam-select chose a byte copy of a classifier because it was scored on another held-out image
    on = {k: "sha256:" + k * 64 for k in "ab"}
    a, b = _table([0.30, 0.35, 0.31], 80.0), _table([0.36, 0.20, 0.10], 70.0)
    assert select_classifier({"a": a.assign(scored_on=on["a"]), "b": b.assign(scored_on=on["a"])}) == ("b", 0.1)
    assert select_classifier({"a": a, "b": b}) == ("b", 0.1)  # tables that predate scored_on: compared as before
    for other in (b.assign(scored_on=on["b"]), b):  # other images, or a table that cannot say
        with pytest.raises(ValueError, match=r"^candidate 'b' was scored on other images or ground truth than 'a'"):
            select_classifier({"a": a.assign(scored_on=on["a"]), "b": other})
    with pytest.raises(ValueError, match=r"^candidate 'b' was swept over other thresholds than 'a'; candidates are compared on one threshold grid$"):
        select_classifier({"a": a, "b": _table([0.36, 0.20, 0.10], 70.0, (0.1, 0.2, 0.4))})
    assert select_classifier({"a": a, "b": _table([0.10, 0.20, 0.36], 70.0, (0.3, 0.2, 0.1))}) == ("b", 0.1)  # one grid, another order


def test_selection_takes_each_classifier_once():
    # audit 12, F12: a copy of one classifier's table was accepted as a second candidate
    a, b = _table([0.30, 0.35, 0.31], 80.0), _table([0.36, 0.20, 0.10], 70.0)
    one, two = "1" * 64, "2" * 64
    assert select_classifier({"a": a.assign(checkpoint_sha256=one), "b": b.assign(checkpoint_sha256=two)}) == ("b", 0.1)
    assert select_classifier({"a": a.assign(checkpoint_sha256=one), "b": b}) == ("b", 0.1)  # a table that predates the column
    with pytest.raises(ValueError) as e:
        select_classifier({"a": a.assign(checkpoint_sha256=one), "c": a, "b": b.assign(checkpoint_sha256=one)})
    assert str(e.value) == "candidates 'a' and 'b' scored one classifier (checkpoint_sha256 111111111111…); each candidate is another classifier"


def test_cam_select_command_writes_the_summary(tmp_path, capsys):
    for name, miou in (("one", [0.2, 0.4, 0.3]), ("two", [0.1, 0.2, 0.45])):
        _table(miou, 50.0).to_csv(tmp_path / f"{name}.csv", index=False)
    out = tmp_path / "summary.csv"
    assert cli.main(["cam-select", "--evals", f"one={tmp_path / 'one.csv'}", f"two={tmp_path / 'two.csv'}", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert df["candidate"].tolist() == ["one", "two"] and df["chosen"].tolist() == [False, True]
    assert df["threshold"].tolist() == [0.2, 0.3] and df["miou"].tolist() == [0.4, 0.45]
    assert "chosen: two at threshold 0.3" in capsys.readouterr().out


@pytest.mark.parametrize("evals, message", [
    (["noequals"], "expected NAME=CSV"),
    (["a=missing.csv"], "cam-eval table not found"),
    (["a=bad.csv"], "not a cam-eval table"),
    (["a=one.csv", "a=one.csv"], "given twice"),
    (["a=one.csv", "b=./one.csv"], "./one.csv is the table of candidate 'a' and of 'b'; give each candidate its own table"),
    (["a=binary.csv"], "binary.csv: not a readable CSV"),
    (["a=nan.csv"], "nan.csv: a cam-eval table whose threshold, miou, map, partial_pct, false_pct are not all finite"),
    (["a=percent.csv"], "percent.csv: miou values outside 0..1 (found 10 to 40)"),  # mIoU in percent, not a fraction
    (["a=map.csv"], "map.csv: map values outside 0..100"),
    (["a=twice.csv"], "twice.csv: threshold 0.2 is listed twice"),
    (["a=false.csv"], "false.csv: false_pct values outside 0..inf"),
    (["a=twomaps.csv"], "twomaps.csv: map differs between rows (50 to 60)"),
    (["a=fraction.csv"], "fraction.csv: map 0.8 looks like a fraction; cam-eval tables give the mAP in percent"),  # beside another's 80
    (["a=mixed.csv"], "mixed.csv: map 0.5 looks like a fraction"),  # the row that is one is named, not the first
    (["a=bools.csv"], "bools.csv: miou (bool) not numbers"),  # True/False were read as 1/0, and chosen
    (["a=tuned.csv"], "tuned.csv: a sweep tuned on the scored images' ground truth (its gt_tuned column)"),
    (["a=dup.csv"], "dup.csv: the column 'miou' appears twice"),  # pandas read the first and renamed the second
    (["a=scored.csv"], "scored.csv: its scored_on column is not one fingerprint (sha256:…) on every row"),
    (["a=network.csv"], "network.csv: its checkpoint_sha256 column is not one SHA-256 on every row; not a cam-eval table"),
    (["a=short.csv"], "short.csv: its checkpoint_sha256 column is not one SHA-256 on every row"),
])  # fmt: skip
def test_cam_select_refuses_bad_tables(tmp_path, capsys, monkeypatch, evals, message):
    monkeypatch.chdir(tmp_path)
    _table([0.1, 0.2, 0.3], 50.0).to_csv("one.csv", index=False)
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n")
    (tmp_path / "binary.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe\x00" * 8)
    _table([0.1, float("nan"), 0.3], 50.0).to_csv("nan.csv", index=False)
    _table([10.0, 20.0, 40.0], 50.0).to_csv("percent.csv", index=False)
    _table([0.1, 0.2, 0.3], 101.0).to_csv("map.csv", index=False)
    _table([0.1, 0.2, 0.3], 0.8).to_csv("fraction.csv", index=False)
    _table([0.1, 0.2, 0.3], [80.0, 0.5, 80.0]).to_csv("mixed.csv", index=False)
    _table([0.1, 0.2, 0.3], 50.0, (0.1, 0.2, 0.2)).to_csv("twice.csv", index=False)
    _table([0.1, 0.2, 0.3], 50.0).assign(false_pct=-1.0).to_csv("false.csv", index=False)
    _table([0.1, 0.2, 0.3], [50.0, 50.0, 60.0]).to_csv("twomaps.csv", index=False)
    _table([0.1, 0.2, 0.3], 50.0).assign(miou=[True, False, False]).to_csv("bools.csv", index=False)
    _table([0.1, 0.2, 0.3], 50.0).assign(scored_on=["sha256:" + "a" * 64] * 2 + ["sha256:" + "b" * 64]).to_csv("scored.csv", index=False)
    _table([0.1, 0.2, 0.3], 50.0).assign(checkpoint_sha256=["a" * 64] * 2 + ["b" * 64]).to_csv("network.csv", index=False)
    _table([0.1, 0.2, 0.3], 50.0).assign(checkpoint_sha256="abc").to_csv("short.csv", index=False)
    from samcam.cam.files import save_cam
    from samcam.io import write_label
    from samcam.pipeline.cam import threshold_sweep

    (tmp_path / "cams").mkdir()
    (tmp_path / "gt").mkdir()
    gt = np.zeros((4, 4), np.uint8)
    gt[1:3, 1:3] = 3
    write_label(tmp_path / "gt" / "a.png", gt)
    cam = np.zeros((1, 4, 4), np.float32)
    cam[0, 1:3, 1:3] = 0.8
    save_cam(tmp_path / "cams" / "a.npy", np.array([2]), cam)
    threshold_sweep(tmp_path / "cams", tmp_path / "gt", ["a"], [0.1, 0.5, 0.9]).to_csv("tuned.csv", index=False)  # cam2label --sweep-csv's table
    lines = (tmp_path / "one.csv").read_text().splitlines()
    (tmp_path / "dup.csv").write_text("\n".join([lines[0] + ",miou", *(ln + ",0.9" for ln in lines[1:])]) + "\n")
    assert cli.main(["cam-select", "--evals", *evals, "--out", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.csv").exists()


def test_cam_select_out_names_a_file(tmp_path, capsys):
    _table([0.1, 0.2, 0.3], 50.0).to_csv(tmp_path / "one.csv", index=False)
    (tmp_path / "folder").mkdir()
    for out, why in ((f"{tmp_path / 'new'}/", "ends with a separator, which names a folder"), (tmp_path / "folder", "exists and is not a regular file"),
                     (tmp_path / "sel.md", "a table is written as CSV; give a path ending with .csv")):  # audit 9's OP3: CSV text in a .md file
        assert cli.main(["cam-select", "--evals", f"a={tmp_path / 'one.csv'}", "--out", str(out)]) == 2
        assert f"output {out}: {why}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "one.csv"] and not any((tmp_path / "folder").iterdir())


def test_device_option():
    assert cli._device(None) == torch.device("cuda" if torch.cuda.is_available() else "cpu") and cli._device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="--device bogus"):
        cli._device("bogus")
    with pytest.raises(ValueError, match="--device cpu,cpu: one device"):
        cli._device("cpu,cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            cli._device("cuda:0")


@pytest.mark.slow
def test_in_memory_cam_scores_equal_the_cam_file_sweep(tmp_path, voc_root, train_with_images):
    """``score_cams`` (held-out scoring, no files) and ``extract_cams`` + ``threshold_sweep`` (files)
    give the same table on real images."""
    from samcam.cam.nets import shipped_camnet
    from samcam.data.voc import VocTree, image_labels
    from samcam.pipeline.cam import extract_cams, score_cams, threshold_sweep

    tree, ids = VocTree(voc_root), train_with_images[:2]
    labels = image_labels(tree, ids, "gt")
    net = shipped_camnet("voc_lite0_s16")
    images = {i: tree.image_path(i) for i in ids}
    extract_cams(net, images, labels, tmp_path / "cams", scales=(1.0,), progress=False)
    files = threshold_sweep(tmp_path / "cams", voc_root / "SegmentationClass", ids, [0.1, 0.3])
    memory = score_cams(net, images, voc_root / "SegmentationClass", labels, [0.1, 0.3], scales=(1.0,), progress=False)
    pd.testing.assert_frame_equal(files.drop(columns="gt_tuned"), memory.drop(columns="best"))


@pytest.mark.slow
def test_shipped_lite2_head_gives_the_committed_labels(voc_root, train_with_images):
    """The committed CAM labels of results/claims/lite2 were made from the checkpoint whose head ships
    as ``voc_lite2_s16``: this recomputes one image's CAMs from the shipped head and must find the
    same label almost everywhere (sums in another order differ in the last bits, which can move a
    pixel whose two scores tie)."""
    from samcam.cam.infer import multiscale_cam
    from samcam.cam.label import cam_to_label
    from samcam.cam.nets import shipped_camnet
    from samcam.data.voc import VocTree, image_labels
    from samcam.io import REPO, read_label

    net = shipped_camnet("voc_lite2_s16")
    assert net.record["threshold"] == 0.25 and net.record["val_map_561"] == 83.43 and net.record["config"]["train_backbone"] is False
    tree, image_id = VocTree(voc_root), train_with_images[5]
    keys = np.asarray(image_labels(tree, [image_id], "gt")[image_id]) - 1
    label = cam_to_label(multiscale_cam(net, tree.read_image(image_id), keys.tolist()), keys, net.record["threshold"])
    folder = REPO / "results/claims/lite2/labels/cam"
    if not folder.is_dir():
        pytest.skip("results/claims/lite2/labels/cam is absent: it is remade from the CPU CAM files by `samcam reproduce --only claims`")
    committed = read_label(folder / f"{image_id}.png")
    assert (label == committed).mean() > 0.999


def test_an_unfinished_checkpoint_is_refused(tmp_path):
    """A candidate killed part-way (cam_search's select phase sees its epoch checkpoint) is not scored."""
    from samcam.cam.nets import build_camnet, efficientnet_lite

    state = efficientnet_lite("lite0", pretrained=False).state_dict()
    ck = {"backbone": "efficientnet-lite0", "config": {**vars(TrainConfig()), "epochs": 3}, "epoch": 1, "state_dict": state}
    torch.save(ck, tmp_path / "half.pt")
    with pytest.raises(ValueError, match=r"half\.pt: an unfinished training run \(epoch 1 of 3\)"):
        build_camnet("efficientnet-lite0", checkpoint=tmp_path / "half.pt")
    torch.save({**ck, "epoch": 3}, tmp_path / "done.pt")
    assert build_camnet("efficientnet-lite0", checkpoint=tmp_path / "done.pt").name == "efficientnet-lite0"


def test_head_only_refuses_backbone_options():
    with pytest.raises(ValueError, match="head only"):
        TrainConfig(train_backbone=False, rescale=(0.5, 1.0))
    with pytest.raises(ValueError, match="head only"):
        TrainConfig(train_backbone=False, freeze_blocks=3)


def test_cam_eval_refuses_held_out_images_without_an_object(tmp_path, capsys):
    """Held-out images whose ground truth is background only give no average precision and no CAM error
    rate (0 object pixels): one line naming the id list, not a table of NaN under a NumPy warning."""
    from PIL import Image

    voc = tmp_path / "voc"
    for d in ("JPEGImages", "SegmentationClass"):
        (voc / d).mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(voc / "JPEGImages" / "a.jpg")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(voc / "SegmentationClass" / "a.png")
    (tmp_path / "ids.txt").write_text("a\n")
    assert cli.main(["cam-eval", "--checkpoint", str(tmp_path / "none.pt"), "--voc", str(voc), "--ids", str(tmp_path / "ids.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"samcam cam-eval: error: {tmp_path / 'ids.txt'}: none of its 1 held-out images has an object class in its labels (gt); "
                   "a classifier is scored on images with objects"]  # fmt: skip
    # nor is a classifier trained on such images (it had trained, exit 0), nor scored on them after training
    assert cli.main(["train-classifier", "--voc", str(voc), "--ids", str(tmp_path / "ids.txt"), "--out", str(tmp_path / "c.pt"), "--head-only"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"samcam train-classifier: error: {tmp_path / 'ids.txt'}: none of its 1 images has an object class in its labels (gt); "
        "a classifier learns from images with objects"]  # fmt: skip
    assert not (tmp_path / "c.pt").exists()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(voc / "JPEGImages" / "b.jpg")
    Image.fromarray(np.full((8, 8), 3, np.uint8)).save(voc / "SegmentationClass" / "b.png")
    (tmp_path / "b.txt").write_text("b\n")
    assert cli.main(["train-classifier", "--voc", str(voc), "--ids", str(tmp_path / "b.txt"), "--eval-ids", str(tmp_path / "ids.txt"),
                     "--out", str(tmp_path / "c.pt"), "--head-only"]) == 2  # fmt: skip
    assert "none of its 1 held-out images has an object class" in capsys.readouterr().err and not (tmp_path / "c.pt").exists()
    # held-out ids among the training ids: the "held-out mAP" printed was a training score (audit 12, F4: 100.00)
    (tmp_path / "ab.txt").write_text("a\nb\n")
    assert cli.main(["train-classifier", "--voc", str(voc), "--ids", str(tmp_path / "b.txt"), "--eval-ids", str(tmp_path / "ab.txt"),
                     "--out", str(tmp_path / "c.pt"), "--head-only"]) == 2  # fmt: skip
    assert capsys.readouterr().err.strip().splitlines() == [
        f"samcam train-classifier: error: {tmp_path / 'ab.txt'}: 1 of its 2 ids are training images of --ids {tmp_path / 'b.txt'} (e.g. b); "
        "train-classifier scores held-out images"]  # fmt: skip
    assert not (tmp_path / "c.pt").exists()


def test_the_search_scripts_extra_options_replace_a_candidates_own():
    """scripts/cam_search.sh's EXTRA (a smoke test's "--epochs 1 --crop 64") replaces each candidate's
    own --epochs and --crop, values and all (samcam refuses an option given twice)."""
    import subprocess

    from samcam.io import REPO

    script = (REPO / "scripts" / "cam_search.sh").read_text()
    func = script[script.index("with_extra() {"):script.index("\n}\n", script.index("with_extra() {")) + 3]
    own = "--freeze-blocks 5 --epochs 10 --rescale 0.64 1.28 --crop 512 --head-only"
    for extra, expected in (("--epochs 1 --crop 64", "--freeze-blocks 5 --rescale 0.64 1.28 --head-only --epochs 1 --crop 64"),
                            ("--rescale 0.5 1.0", "--freeze-blocks 5 --epochs 10 --crop 512 --head-only --rescale 0.5 1.0"),
                            ("", own)):  # fmt: skip
        out = subprocess.run(["bash", "-c", f'{func}\nwith_extra "{own}"'], env={"EXTRA": extra, "PATH": "/usr/bin:/bin"},
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert out.split() == expected.split()


def _script(name, args, env, cwd):
    import os
    import subprocess

    from samcam.io import REPO

    return subprocess.run(["bash", str(REPO / "scripts" / name), *args], env={"PATH": os.environ["PATH"], **env},
                          capture_output=True, text=True, cwd=cwd, timeout=60)  # fmt: skip


@pytest.mark.parametrize("jobs", ["0", "abc", "-1", "100000"])
def test_the_gpu_scripts_bound_jobs_by_the_machine(tmp_path, jobs):
    """JOBS=0 made cam_search.sh wait for ever, JOBS=abc skipped the bound, and seg_table.sh gave 0
    to xargs -P (no bound) (audit 10, F4): both refuse it before any work, as --workers is refused."""
    import os

    cores = len(os.sched_getaffinity(0))
    why = f"JOBS {jobs}: must be a whole number from 1 to the {cores} cores available\n"
    r = _script("cam_search.sh", ["train", str(tmp_path / "voc"), str(tmp_path / "w")], {"JOBS": jobs, "DEVICE": "cpu"}, tmp_path)
    assert (r.returncode, r.stderr) == (2, f"cam_search.sh: error: {why}")
    r = _script("seg_table.sh", [], {"JOBS": jobs, "SAMCAM": "false"}, tmp_path)
    assert (r.returncode, r.stderr) == (2, f"seg_table.sh: error: {why}")
    assert not (tmp_path / "w").exists()


def test_cam_search_refuses_a_candidate_name_it_does_not_have(tmp_path):
    # JOBS unset: its default (4, or the cores if fewer) passes its own check on any machine
    r = _script("cam_search.sh", ["train", str(tmp_path / "voc"), str(tmp_path / "w")], {"DEVICE": "cpu", "ONLY": "l2_head l2_haed"}, tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("cam_search.sh: error: ONLY names l2_haed, which is no candidate; l0_head ")
    assert not list(tmp_path.rglob("*.log"))  # no candidate started


@pytest.mark.parametrize("rows, why", [("(", "ROWS '(' is not a regular expression (grep -E)"),
                                       ("gtt", "ROWS 'gtt' matches no row of the config; rows: gt transcam_rule ")])
def test_seg_table_refuses_rows_that_select_nothing(tmp_path, rows, why):
    """A broken or misspelt ROWS said "no seg_row step ... is due", made the table and exited 0 (audit 10, F4)."""
    fake = tmp_path / "samcam.sh"  # the plan reproduce --list prints; any other call would be recorded
    fake.write_text('if [ "$*" = "reproduce --list" ]; then printf "%s\\n" "seg_row_gt_s0: skip [current]" "seg_row_transcam_rule_s1: would run [stale]"; '
                    f'else echo "$*" >> {tmp_path}/calls; fi\n')  # fmt: skip
    r = _script("seg_table.sh", [rows], {"JOBS": "1", "SAMCAM": f"bash {fake}"}, tmp_path)
    assert (r.returncode, r.stderr) == (2, f"seg_table.sh: error: {why}\n")
    assert not (tmp_path / "calls").exists()
    r = _script("seg_table.sh", ["gt"], {"JOBS": "1", "SAMCAM": f"bash {fake}"}, tmp_path)  # a row it has: nothing due, the table made
    assert r.returncode == 0 and "no seg_row step of rows 'gt' is due" in r.stdout
    assert (tmp_path / "calls").read_text() == "reproduce --only seg_table\n"


@pytest.mark.parametrize("backbone", ["efficientnet-lite0", "efficientnet-lite2"])
def test_freeze_blocks_is_bounded_by_the_backbones_own_blocks(backbone):
    # audit 12, F19: 60 was accepted for Lite0's 16 blocks, trained as 16 and recorded as another configuration
    from efficientnet_lite_pytorch import EfficientNet

    n = len(EfficientNet.from_name(backbone)._blocks)  # counted on the library's network, not by samcam's helper
    assert n == {"efficientnet-lite0": 16, "efficientnet-lite2": 21}[backbone]
    assert MAX_BLOCKS == max(len(EfficientNet.from_name(b)._blocks) for b in EFFICIENTNETS)  # the option's range: the largest
    assert TrainConfig(backbone=backbone, freeze_blocks=n).freeze_blocks == n  # all of them
    with pytest.raises(ValueError) as e:
        TrainConfig(backbone=backbone, freeze_blocks=n + 1)
    assert str(e.value) == (f"freeze_blocks is {n + 1}, more than the {n} blocks of {backbone}; "
                            f"give at most {n} (all of them: the stem and every block stay frozen)"  # fmt: skip
                            if n < MAX_BLOCKS else f"classifier training field freeze_blocks is {n + 1}, expected a finite number in [0, {n}]")
