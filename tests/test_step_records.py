"""Resume through the step, and the records a step writes against what it did.

A fake mask generator and a fake CAM keep these fast: what is tested is the step around them (which
ids it redoes on a resume, what it records), each compared with what the test itself did to the
output folder — never with the step's own earlier output."""

import json
import os
import re

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samcam.io import read_image
from samcam.outputs import COST_RECORD


def _images(folder, n=3, shape=(16, 20)):  # SAM takes sides of 16 pixels or more
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(folder / f"im{k}.png")
    return [f"im{k}" for k in range(n)]


def _fake_masks(image):
    """Two masks that depend on the image: its bright pixels, and the rest."""
    bright = image.mean(axis=2) > 127
    return np.stack([bright, ~bright])


class _FakeGenerator:
    device = "cpu"

    def __init__(self):
        self.calls = []

    def generate(self, image):
        from samcam.sam.masks import MaskSet

        self.calls.append(image.copy())
        return MaskSet(_fake_masks(image))


def _cost_runs(folder):
    return json.loads((folder / COST_RECORD).read_text())["runs"]


def test_mask_step_redoes_a_truncated_file_and_only_it(tmp_path, monkeypatch):
    import samcam.sam.model
    from samcam.pipeline.masks import run_masks
    from samcam.sam.mask_files import MaskStore

    _images(tmp_path / "images")
    gen = _FakeGenerator()
    monkeypatch.setattr(samcam.sam.model, "build_generator", lambda *a, **k: gen)
    checkpoint = tmp_path / "fake.pt"
    checkpoint.write_bytes(b"a checkpoint")
    run = lambda: run_masks(tmp_path / "images", tmp_path / "masks", checkpoint=checkpoint, progress=False)  # noqa: E731
    s = run()
    assert (s.done, s.skipped, len(gen.calls)) == (3, 0, 3)

    target = tmp_path / "masks" / "im1.json.gz"
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])  # a copy cut short, as by a full disk
    stale = tmp_path / "masks" / ".im2.json.gz.samcam-x1234567.gz.tmp"
    stale.write_bytes(b"half")  # and a temporary left by a run killed a day ago
    os.utime(stale, (stale.stat().st_atime - 86400, stale.stat().st_mtime - 86400))
    gen.calls.clear()
    s = run()
    assert (s.done, s.skipped, len(gen.calls)) == (1, 2, 1)
    image = read_image(tmp_path / "images" / "im1.png")
    np.testing.assert_array_equal(gen.calls[0], image)  # the truncated id, and only it, was generated again
    np.testing.assert_array_equal(MaskStore(tmp_path / "masks").read("im1").masks, _fake_masks(image))
    assert not stale.exists()
    gen.calls.clear()
    assert run().done == 0 and not gen.calls  # all done: nothing generated


def _merge_inputs(tmp_path, ids):
    from samcam.sam.masks import MaskSet
    from samcam.sam.mask_files import write_compact

    (tmp_path / "p").mkdir()
    (tmp_path / "m").mkdir()
    for i in ids:
        Image.fromarray(np.full((6, 8), 7, np.uint8)).save(tmp_path / "p" / f"{i}.png")
        masks = np.zeros((2, 6, 8), bool)
        masks[0, :3], masks[1, 3:] = True, True
        write_compact(tmp_path / "m" / f"{i}.json.gz", MaskSet(masks))


def test_merge_cost_record_counts_the_ids_each_run_merged(tmp_path):
    from samcam.data.spaces import VOC
    from samcam.pipeline.merge import merge_folders
    from samcam.refine.merge import MergeRule

    ids = [f"im{k}" for k in range(5)]
    _merge_inputs(tmp_path, ids)
    merge = lambda: merge_folders(tmp_path / "p", tmp_path / "m", tmp_path / "o", VOC, MergeRule(), ids, progress=False)  # noqa: E731
    assert merge().merged == 5
    removed = ids[1:3]
    for i in removed:
        (tmp_path / "o" / f"{i}.png").unlink()
    before = {i: os.stat(tmp_path / "o" / f"{i}.png").st_mtime_ns for i in ids if i not in removed}
    s = merge()
    assert (s.merged, s.skipped) == (len(removed), len(ids) - len(removed))
    assert all(os.stat(tmp_path / "o" / f"{i}.png").st_mtime_ns == t for i, t in before.items())  # the others untouched
    runs = _cost_runs(tmp_path / "o")
    assert [r["images"] for r in runs] == [5, len(removed)]
    assert all(r["seconds"] >= 0 and r["device"] == "cpu" for r in runs)
    merge()
    assert len(_cost_runs(tmp_path / "o")) == 2  # a run that merged nothing records no run


def test_cam_cost_record_counts_the_ids_each_run_extracted(tmp_path, monkeypatch):
    import samcam.pipeline.cam
    from samcam.pipeline.cam import extract_cams

    ids = _images(tmp_path / "images", 4)
    seen = []

    def fake_cam(net, image, keys, scales, source=None):
        seen.append(image.shape)
        return np.ones((len(keys), *image.shape[:2]), np.float32)

    monkeypatch.setattr(samcam.pipeline.cam, "multiscale_cam", fake_cam)
    net = type("Net", (), {"name": "fake"})()
    images = {i: tmp_path / "images" / f"{i}.png" for i in ids}
    labels = {i: np.array([1, 15]) for i in ids}
    first = extract_cams(net, images, labels, tmp_path / "cams", progress=False)
    assert (first.out, first.done, first.skipped) == (tmp_path / "cams", 4, 0)
    (tmp_path / "cams" / "im3.npy").write_bytes((tmp_path / "cams" / "im3.npy").read_bytes()[:-8])  # cut short
    (tmp_path / "cams" / "im0.npy").unlink()
    seen.clear()
    again = extract_cams(net, images, labels, tmp_path / "cams", progress=False)
    assert (again.done, again.skipped) == (2, 2) and again.seconds >= 0
    assert len(seen) == 2
    assert [r["images"] for r in _cost_runs(tmp_path / "cams")] == [4, 2]


def test_cam_files_hold_the_0_based_classes_of_the_1_based_labels(tmp_path):
    """Image-level labels are VOC classes 1..20; the files hold keys 0..19 and each key's map is
    that class's CAM (class 20 included), computed here directly from the network."""
    import torch
    from torch import nn

    from samcam.cam.files import load_cam
    from samcam.cam.infer import multiscale_cam
    from samcam.cam.nets import CamNet
    from samcam.io import read_image
    from samcam.pipeline.cam import extract_cams

    ids = _images(tmp_path / "images", 2, shape=(24, 32))
    torch.manual_seed(0)
    net = CamNet(nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU()), 8, 20).eval()
    images = {i: tmp_path / "images" / f"{i}.png" for i in ids}
    labels = {"im0": np.array([1, 20]), "im1": np.array([7])}
    extract_cams(net, images, labels, tmp_path / "cams", scales=(1.0,), progress=False)
    for i, classes in labels.items():
        d = load_cam(tmp_path / "cams" / f"{i}.npy")
        np.testing.assert_array_equal(d["keys"], classes - 1)
        expected = multiscale_cam(net, read_image(images[i]), list(classes - 1), scales=(1.0,))
        np.testing.assert_allclose(d["high_res"], expected, rtol=1e-6, atol=1e-6)
        other = multiscale_cam(net, read_image(images[i]), list(classes % 20), scales=(1.0,))  # one class off
        assert not np.allclose(d["high_res"], other)


@pytest.mark.parametrize("cut", [0, 1])
def test_truncated_or_empty_merge_output_is_merged_again(tmp_path, cut):
    from samcam.data.spaces import VOC
    from samcam.io import read_label
    from samcam.pipeline.merge import merge_folders
    from samcam.refine.merge import MergeRule

    ids = ["a", "b"]
    _merge_inputs(tmp_path, ids)
    merge_folders(tmp_path / "p", tmp_path / "m", tmp_path / "o", VOC, MergeRule(), ids, progress=False)
    data = (tmp_path / "o" / "b.png").read_bytes()
    (tmp_path / "o" / "b.png").write_bytes(data[: len(data) // 2] if cut else b"")
    assert merge_folders(tmp_path / "p", tmp_path / "m", tmp_path / "o", VOC, MergeRule(), ids, progress=False).merged == 1
    np.testing.assert_array_equal(read_label(tmp_path / "o" / "b.png"), np.full((6, 8), 7))  # both masks lie in class 7's label


def test_merge_step_applies_its_rule_and_dataset_and_records_them(tmp_path):
    """The step merges with the rule it was given (not the default), reads and writes labels in its
    dataset's label space, keeps the CAM label of an id without masks when asked and counts it, and
    its record says what it did: the step, both inputs, the rule, the dataset and the missing-mask policy."""
    from samcam.data.spaces import COCO
    from samcam.io import read_label
    from samcam.pipeline.merge import merge_folders
    from samcam.refine.merge import MergeRule, merge
    from samcam.sam.mask_files import MaskStore

    from samcam.sam.mask_files import write_compact
    from samcam.sam.masks import MaskSet

    ids = ["a", "b", "c"]
    (tmp_path / "p").mkdir()
    (tmp_path / "m").mkdir()
    cols = np.zeros((2, 6, 8), bool)
    cols[0, :, :5], cols[1, :, 5:] = True, True  # mask 0 is 4/5 inside the label
    for i in ids[:2]:
        write_compact(tmp_path / "m" / f"{i}.json.gz", MaskSet(cols))
    label = np.zeros((6, 8), np.uint8)
    label[:, :4] = 50  # a COCO class: outside VOC's label space
    for i in ids:
        Image.fromarray(label).save(tmp_path / "p" / f"{i}.png")  # c has no mask set
    strict = MergeRule(majority=0.9, coverage=None)  # mask 0 is taken by the default rule only
    s = merge_folders(tmp_path / "p", tmp_path / "m", tmp_path / "o", COCO, strict, ids, workers=1, missing="keep-cam", progress=False)
    assert (s.merged, s.kept_cam, s.skipped) == (2, 1, 0)
    masks = MaskStore(tmp_path / "m").read_masks("a", label.shape)
    want = merge(label, masks, COCO.n_classes, strict).label
    assert not np.array_equal(want, merge(label, masks, COCO.n_classes, MergeRule()).label)  # the rule matters here
    for i in ids[:2]:
        np.testing.assert_array_equal(read_label(tmp_path / "o" / f"{i}.png", COCO), want)
    np.testing.assert_array_equal(read_label(tmp_path / "o" / "c.png", COCO), label)  # kept as it was
    record = json.loads((tmp_path / "o" / "samcam_run.json").read_text())
    assert record["step"] == "merge" and sorted(record["inputs"]) == ["masks", "pseudo"]
    assert record["inputs"] == {"pseudo": "../p", "masks": "../m"}
    assert record["parameters"] == {"rule": {"name": strict.name, "majority": 0.9, "coverage": None, "keep_uncovered": True}, "dataset": "coco",
                                    "missing_masks": "keep-cam"}  # fmt: skip
    assert record["notes"] == {}
    # the policy decides what a label holds: a rerun with the other one is refused, not mixed in (audit 9, F5)
    with pytest.raises(ValueError, match=r"this folder holds outputs made with other settings \(parameters.missing_masks: 'keep-cam' -> 'error'\)"):
        merge_folders(tmp_path / "p", tmp_path / "m", tmp_path / "o", COCO, strict, ids, workers=1, missing="error", progress=False)
    # a record of an earlier samcam, which kept the policy as a note: compared as the parameter it is
    old = {**record, "parameters": {k: v for k, v in record["parameters"].items() if k != "missing_masks"}, "notes": {"missing_masks": "keep-cam"}}
    (tmp_path / "o" / "samcam_run.json").write_text(json.dumps(old))
    s = merge_folders(tmp_path / "p", tmp_path / "m", tmp_path / "o", COCO, strict, ids, workers=1, missing="keep-cam", progress=False)
    assert (s.merged, s.kept_cam, s.skipped) == (0, 0, 3)
    with pytest.raises(ValueError, match=r"parameters.missing_masks: 'keep-cam' -> 'error'"):
        merge_folders(tmp_path / "p", tmp_path / "m", tmp_path / "o", COCO, strict, ids, workers=1, missing="error", progress=False)


def test_merge_step_names_what_is_wrong(tmp_path):
    """Each refusal of the merge step names its cause: a label value outside the dataset's classes
    (the label file), a missing mask folder, pseudo labels missing for listed ids, an unknown policy."""
    from samcam.data.spaces import VOC
    from samcam.pipeline.merge import merge_folders
    from samcam.refine.merge import MergeRule
    from samcam.sam.mask_files import write_compact
    from samcam.sam.masks import MaskSet

    rule = MergeRule()
    (tmp_path / "p").mkdir()
    (tmp_path / "m").mkdir()
    write_compact(tmp_path / "m" / "a.json.gz", MaskSet(np.ones((1, 6, 8), bool)))
    label = np.zeros((6, 8), np.uint8)
    label[:, :4] = 30  # no VOC class
    Image.fromarray(label).save(tmp_path / "p" / "a.png")
    with pytest.raises(ValueError, match=r"a\.png"):
        merge_folders(tmp_path / "p", tmp_path / "m", tmp_path / "o", VOC, rule, ids=["a"], workers=1, progress=False)
    with pytest.raises(FileNotFoundError, match=f"mask folder not found: {tmp_path / 'nowhere'}"):
        merge_folders(tmp_path / "p", tmp_path / "nowhere", tmp_path / "o2", VOC, rule, ids=["a"], workers=1, progress=False)
    with pytest.raises(FileNotFoundError, match=r"1 pseudo-label files missing: .*b\.png"):
        merge_folders(tmp_path / "p", tmp_path / "m", tmp_path / "o3", VOC, rule, ids=["b"], workers=1, progress=False)
    with pytest.raises(ValueError, match=r"^unknown --missing-masks policy 'ignore'; known: error, keep-cam$"):
        merge_folders(tmp_path / "p", tmp_path / "m", tmp_path / "o4", VOC, rule, ids=["a"], workers=1, missing="ignore", progress=False)


def test_evaluate_step_reads_its_dataset_and_names_what_is_wrong(tmp_path):
    """Labels are read in the given label space (COCO's class 50 is no error there), a missing
    ground-truth file is named as ground truth, a size mismatch names both files."""
    from samcam.data.spaces import COCO
    from samcam.pipeline.evaluate import evaluate_folders

    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
    gt = np.zeros((6, 8), np.uint8)
    gt[:, :4] = 50
    pred = np.zeros((6, 8), np.uint8)
    pred[:, :2] = 50
    for i in ("a", "b"):
        Image.fromarray(gt).save(tmp_path / "gt" / f"{i}.png")
        Image.fromarray(pred).save(tmp_path / "pred" / f"{i}.png")
    ev = evaluate_folders(tmp_path / "pred", tmp_path / "gt", COCO, ["a", "b"], workers=1)
    iou = ev.scores().iou
    assert iou[50] == pytest.approx(12 / 24) and iou[0] == pytest.approx(24 / 36)  # by hand: per image 12 of 24, and 24 of 36
    with pytest.raises(FileNotFoundError, match=r"ground-truth.*c"):
        Image.fromarray(pred).save(tmp_path / "pred" / "c.png")
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", COCO, ["a", "c"])
    Image.fromarray(np.zeros((5, 8), np.uint8)).save(tmp_path / "gt" / "c.png")
    with pytest.raises(ValueError, match=r"pred/c\.png: prediction size \(6, 8\) differs from ground truth .*gt/c\.png \(5, 8\)"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", COCO, ["c"])


def test_merge_and_evaluate_show_their_progress_when_asked(tmp_path, capsys):
    from samcam.data.spaces import VOC
    from samcam.pipeline.evaluate import evaluate_folders
    from samcam.pipeline.merge import merge_folders
    from samcam.refine.merge import MergeRule

    _merge_inputs(tmp_path, ["a", "b"])
    merge_folders(tmp_path / "p", tmp_path / "m", tmp_path / "o", VOC, MergeRule(), ["a", "b"], workers=1, progress=True)
    err = capsys.readouterr().err
    assert "merge: 100%" in err and "2/2" in err and "img/s" in err
    evaluate_folders(tmp_path / "o", tmp_path / "p", VOC, ["a", "b"], progress=True)
    err = capsys.readouterr().err
    assert "eval: 100%" in err and "2/2" in err and "img/s" in err
    merge_folders(tmp_path / "p", tmp_path / "m", tmp_path / "o2", VOC, MergeRule(), ["a", "b"], workers=1, progress=False)
    evaluate_folders(tmp_path / "o2", tmp_path / "p", VOC, ["a", "b"], progress=False)
    assert capsys.readouterr().err == ""


def test_every_step_returns_one_result_shape():
    """IRN's one ``run`` per step: every step that writes a folder or a checkpoint returns a
    ``StepResult`` (``out``, ``done``, ``skipped``, ``seconds``), or a subclass that adds to it."""
    from typing import get_type_hints

    from samcam.outputs import StepResult
    from samcam.pipeline.affinity import affinity_labels, ground_truth_walk_labels, train_affinity
    from samcam.pipeline.cam import cams_to_labels, extract_cams
    from samcam.pipeline.labels import export_labels
    from samcam.pipeline.masks import run_masks
    from samcam.pipeline.merge import merge_folders
    from samcam.pipeline.prompted import refine_folder
    from samcam.pipeline.train_classifier import train_classifier
    from samcam.seg.train import train

    steps = [run_masks, merge_folders, extract_cams, cams_to_labels, export_labels, refine_folder, affinity_labels,
             ground_truth_walk_labels, train_classifier, train_affinity, train]  # fmt: skip
    assert {f.__name__: issubclass(get_type_hints(f)["return"], StepResult) for f in steps} == {f.__name__: True for f in steps}


def test_a_step_result_reports_its_rate_and_resume():
    from samcam.outputs import StepResult

    r = StepResult(Path("out"), 4, 1, 2.0)
    assert r.seconds_per_item == 0.5 and r.line("labels") == "4 labels done, 1 already there, 0.50 s each -> out"
    idle = StepResult(Path("out"), 0, 5, 0.0)
    assert idle.seconds_per_item is None and idle.line() == "0 images done, 5 already there -> out"
    with pytest.raises(AttributeError):
        r.done = 3  # frozen: a result is what happened


def test_a_cam_folder_records_its_label_source_by_content(tmp_path, monkeypatch):
    """The labels a CAM folder's keys come from are part of its record: a rerun whose label source
    holds other labels (for ids already done or not) is refused, naming it, never mixed in."""
    import samcam.pipeline.cam
    from samcam.pipeline.cam import extract_cams

    ids = _images(tmp_path / "images", 3)
    monkeypatch.setattr(samcam.pipeline.cam, "multiscale_cam", lambda net, image, keys, scales, source=None: np.ones((len(keys), *image.shape[:2]), np.float32))
    net = type("Net", (), {"name": "fake"})()
    images = {i: tmp_path / "images" / f"{i}.png" for i in ids}
    source = tmp_path / "cls_labels.npy"
    source.write_bytes(b"the labels, first version")
    labels = {i: np.array([1]) for i in ids}
    extract_cams(net, images, {i: labels[i] for i in ids[:2]}, tmp_path / "cams", progress=False, label_source=source)
    assert extract_cams(net, images, labels, tmp_path / "cams", progress=False, label_source=source).done == 1  # same labels: resumed
    source.write_bytes(b"the labels, edited")
    with pytest.raises(ValueError, match=rf"the input labels \({re.escape(str(source))}\) differs in content"):
        extract_cams(net, images, labels, tmp_path / "cams", progress=False, label_source=source)
    record = json.loads((tmp_path / "cams" / "samcam_run.json").read_text())  # as a samcam that did not record the label source wrote it
    for k in ("inputs", "fingerprints"):
        del record[k]["labels"]
    (tmp_path / "cams" / "samcam_run.json").write_text(json.dumps(record))
    (tmp_path / "cams" / f"{ids[2]}.npy").unlink()
    assert extract_cams(net, images, labels, tmp_path / "cams", progress=False, label_source=source).done == 1  # resumed, as before
    assert json.loads((tmp_path / "cams" / "samcam_run.json").read_text())["fingerprints"]["labels"].startswith("sha256:")  # recorded from now on
    source.write_bytes(b"the labels, edited again")
    with pytest.raises(ValueError, match="the input labels .* differs in content"):
        extract_cams(net, images, labels, tmp_path / "cams", progress=False, label_source=source)


def test_the_label_source_is_the_file_or_folder_the_labels_are_read_from(tmp_path):
    from samcam.data.voc import VocTree, label_source_path

    tree = VocTree(tmp_path, must_exist=False)
    assert label_source_path(tree, "gt") == tmp_path / "SegmentationClass" == tree.gt_dir
    assert label_source_path(tree, "xml") == tmp_path / "Annotations"
    assert label_source_path(tree, "cls_labels", tmp_path / "c.npy") == tmp_path / "c.npy"
    with pytest.raises(ValueError, match="label source"):
        label_source_path(tree, "other")


def test_a_refinement_records_its_sam_checkpoint_by_content(tmp_path, monkeypatch):
    """Prompted refinement with --checkpoint: other weights at the same path are another run, refused."""
    import samcam.pipeline.workers
    from samcam.io import write_label
    from samcam.pipeline.prompted import refine_folder

    ids = _images(tmp_path / "images", 2)
    (tmp_path / "pseudo").mkdir()
    for i in ids:
        write_label(tmp_path / "pseudo" / f"{i}.png", np.zeros((16, 20), np.uint8))

    def fake(work, devices, todo, args, done, threads):  # what refine_into writes, without SAM
        for i in todo:
            write_label(args[4][""] / f"{i}.png", np.zeros((16, 20), np.uint8))
            done(i, (0.0, "cpu"))

    monkeypatch.setattr(samcam.pipeline.workers, "run_on_devices", fake)
    ck = tmp_path / "sam.pt"
    ck.write_bytes(b"weights, first version")
    refine_folder(tmp_path / "images", tmp_path / "pseudo", tmp_path / "out", ids[:1], checkpoint=ck, progress=False)
    ck.write_bytes(b"weights, fine-tuned since")
    with pytest.raises(ValueError, match=rf"the input checkpoint \({re.escape(str(ck))}\) differs in content"):
        refine_folder(tmp_path / "images", tmp_path / "pseudo", tmp_path / "out", ids, checkpoint=ck, progress=False)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [f"{ids[0]}.png"]
