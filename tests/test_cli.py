"""Every ``samcam`` subcommand called through the command line at least once, on small real inputs.

``test_every_subcommand_is_exercised`` fails when a subcommand is added without a test here.
"""

import argparse
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from samcam import cli


def run(args, code=0):
    assert cli.main([str(a) for a in args]) == code


@pytest.fixture(scope="module")
def small_voc(tmp_path_factory, voc_root, train_with_images):
    """A VOC tree of 4 real train images (copied into a temporary folder)."""
    root = tmp_path_factory.mktemp("voc")
    ids = train_with_images[:4]
    for sub, ext in (("JPEGImages", "jpg"), ("SegmentationClass", "png")):
        (root / sub).mkdir()
        for i in ids:
            shutil.copy(voc_root / sub / f"{i}.{ext}", root / sub / f"{i}.{ext}")
    (root / "ids.txt").write_text("\n".join(ids) + "\n")
    return root, ids


def test_weights_list_and_path(capsys, mobile_sam_checkpoint):
    run(["weights", "list"])
    run(["weights", "path", "vit_t"])
    assert capsys.readouterr().out.strip().endswith(mobile_sam_checkpoint.name)
    run(["weights", "path"], code=2)


def test_eval_merge_refine_everything_and_labels(tmp_path, data_root, voc_root, capsys):
    from conftest import CACHED_MASKS

    ids = tmp_path / "ids.txt"
    ids.write_text("2007_000032\n2007_000039\n")
    pseudo = data_root / "pseudo_labels" / "transcam"
    run(["labels", "--method", "TransCAM", "--input", pseudo, "--out", tmp_path / "labels", "--ids", ids])
    run(["merge", "--pseudo", tmp_path / "labels", "--masks", CACHED_MASKS, "--out", tmp_path / "merged", "--ids", ids])
    run(["refine", "--mode", "everything", "--pseudo", tmp_path / "labels", "--masks", CACHED_MASKS, "--out", tmp_path / "everything", "--ids", ids])
    for name in ("2007_000032.png", "2007_000039.png"):
        a, b = (np.asarray(Image.open(tmp_path / d / name)) for d in ("merged", "everything"))
        assert (a == b).all()
    capsys.readouterr()
    run(["eval", "--pred", tmp_path / "merged", "--gt", voc_root / "SegmentationClass", "--ids", ids])
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("mIoU: ")


@pytest.mark.integration
def test_train_classifier_cam_and_cam2label(tmp_path, small_voc, capsys):
    root, ids = small_voc
    ck = tmp_path / "clf.pt"
    train = ["train-classifier", "--voc", root, "--ids", root / "ids.txt", "--out", ck, "--epochs", "1", "--batch-size", "2",
             "--crop", "64", "--head-only", "--output-stride", "16", "--lr-head", "0.3"]
    run([*train, "--eval-ids", root / "ids.txt"], code=2)  # its own training images are no held-out images (audit 12, F4)
    assert "4 of its 4 ids are training images of --ids" in capsys.readouterr().err and not ck.exists()
    run(train)
    assert "trained efficientnet-lite0 on 4 images" in capsys.readouterr().out
    run(["cam", "--images", root / "JPEGImages", "--out", tmp_path / "cams", "--checkpoint", ck, "--voc", root, "--ids", root / "ids.txt"])
    assert sorted(p.stem for p in (tmp_path / "cams").glob("*.npy")) == sorted(ids)
    assert '"output_stride": 16' in (tmp_path / "cams" / "samcam_run.json").read_text()
    # one worker per device: the same CAM files as one process (threads pinned alike: torch's CPU sums
    # depend on the thread count), one cost record naming both devices
    run(["cam", "--images", root / "JPEGImages", "--out", tmp_path / "cams2", "--checkpoint", ck, "--voc", root, "--ids", root / "ids.txt",
         "--devices", "cpu,cpu", "--threads", "1"])
    run(["cam", "--images", root / "JPEGImages", "--out", tmp_path / "cams1", "--checkpoint", ck, "--voc", root, "--ids", root / "ids.txt",
         "--devices", "cpu", "--threads", "1"])
    from samcam.cam.files import load_cam

    for i in ids:
        one, two = load_cam(tmp_path / "cams1" / f"{i}.npy"), load_cam(tmp_path / "cams2" / f"{i}.npy")
        assert np.array_equal(one["keys"], two["keys"]) and np.array_equal(one["high_res"], two["high_res"])
    assert '"device": "cpu, cpu"' in (tmp_path / "cams2" / "samcam_cost.json").read_text()
    run(["cam", "--images", root / "JPEGImages", "--out", tmp_path / "cams3", "--checkpoint", ck, "--voc", root, "--devices", "cpu,cpu",
         "--device", "cpu"], code=2)
    # AffinityNet on those CAMs: train the head, then the random walk
    aff = tmp_path / "aff.pt"
    run(["train-affinity", "--images", root / "JPEGImages", "--cams", tmp_path / "cams", "--ids", root / "ids.txt", "--out", aff,
         "--epochs", "1", "--batch-size", "2", "--crop", "16"])
    assert "trained the affinity head on 4 images" in capsys.readouterr().out
    run(["affinity", "--images", root / "JPEGImages", "--cams", tmp_path / "cams", "--checkpoint", aff, "--out", tmp_path / "aff_labels",
         "--steps", "16"])
    assert "4 labels done, 0 already there, " in capsys.readouterr().out and len(list((tmp_path / "aff_labels").glob("*.png"))) == 4
    run(["affinity", "--images", root / "JPEGImages", "--cams", tmp_path / "cams", "--checkpoint", aff, "--out", tmp_path / "aff_labels",
         "--steps", "8"], code=2)  # other settings into the same folder: refused
    # the alphas by the threshold rule, seeds from a label folder, and the walk on ground-truth affinity
    import torch

    run(["train-affinity", "--images", root / "JPEGImages", "--cams", tmp_path / "cams", "--ids", root / "ids.txt", "--out", tmp_path / "aff2.pt",
         "--epochs", "1", "--batch-size", "2", "--crop", "16", "--threshold", "0.25", "--no-crf"])
    capsys.readouterr()
    cfg = torch.load(tmp_path / "aff2.pt", weights_only=False)["record"]["config"]
    assert cfg["low_alpha"] == pytest.approx(np.log(0.25) / np.log(0.75) / 4) and cfg["high_alpha"] == pytest.approx(2 * np.log(0.25) / np.log(0.75))
    assert cfg["crf"] is False and cfg["momentum"] == 0.0
    run(["train-affinity", "--images", root / "JPEGImages", "--seed-labels", root / "SegmentationClass", "--ids", root / "ids.txt",
         "--out", tmp_path / "aff4.pt", "--epochs", "1", "--batch-size", "2", "--crop", "16"])
    assert "trained the affinity head on 4 images" in capsys.readouterr().out
    base = ["train-affinity", "--images", root / "JPEGImages", "--ids", root / "ids.txt", "--out", tmp_path / "aff3.pt"]
    for extra, needle in ((["--cams", tmp_path / "cams", "--threshold", "1"], "argument --threshold: 1 is outside [1e-06, 0.999999]"),
                          (["--cams", tmp_path / "cams", "--threshold", "0.2", "--low-alpha", "2"], "give either the threshold or the powers"),
                          (["--seed-labels", root / "SegmentationClass", "--no-crf"], "apply to CAM seeds only"),
                          (["--cams", tmp_path / "cams", "--seed-labels", root / "SegmentationClass"], "not allowed with argument")):  # fmt: skip
        run([*base, *extra], code=2)
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err
    run(["affinity", "--cams", tmp_path / "cams", "--gt-affinity", root / "SegmentationClass", "--out", tmp_path / "g0", "--alpha", "3",
         "--threshold", "0.2"], code=2)
    assert "not allowed with argument" in capsys.readouterr().err
    run(["affinity", "--cams", tmp_path / "cams", "--checkpoint", aff, "--out", tmp_path / "g0"], code=2)
    assert "--images is needed with --checkpoint" in capsys.readouterr().err
    run(["affinity", "--cams", tmp_path / "cams", "--gt-affinity", root / "SegmentationClass",
         "--out", tmp_path / "gt_walk", "--steps", "16", "--threshold", "0.15"])
    assert "4 labels walked on ground-truth affinity (uses ground truth: a diagnostic) done, 0 already there" in capsys.readouterr().out and len(list((tmp_path / "gt_walk").glob("*.png"))) == 4
    assert '"uses_ground_truth": true' in (tmp_path / "gt_walk" / "samcam_run.json").read_text()
    assert '"alpha": 11.67' in (tmp_path / "gt_walk" / "samcam_run.json").read_text()
    run(["cam2label", "--cams", tmp_path / "cams", "--out", tmp_path / "labels", "--threshold", "0.2",
         "--sweep-gt", root / "SegmentationClass", "--thresholds", "0.1:0.3:0.1"])
    out = capsys.readouterr().out
    assert "GT-tuned" in out and len(list((tmp_path / "labels").glob("*.png"))) == 4
    # cam-eval scores the same CAMs in memory: the same sweep as the CAM files, the same mAP as train-classifier
    import pandas as pd

    run(["cam2label", "--cams", tmp_path / "cams", "--sweep-gt", root / "SegmentationClass", "--thresholds", "0.1:0.3:0.1",
         "--sweep-csv", tmp_path / "sweep.csv"])
    run(["cam-eval", "--checkpoint", ck, "--voc", root, "--ids", root / "ids.txt", "--thresholds", "0.1:0.3:0.1", "--csv", tmp_path / "ev.csv"], code=2)
    assert f"{root / 'ids.txt'}: 4 of its 4 ids are images the classifier {ck} was trained on" in capsys.readouterr().err  # held-out only
    state = torch.load(ck, weights_only=False)
    torch.save({**state, "ids": None}, tmp_path / "anon.pt")  # the same weights, no training ids recorded (as IRN's checkpoints)
    run(["cam-eval", "--checkpoint", tmp_path / "anon.pt", "--voc", root, "--ids", root / "ids.txt", "--thresholds", "0.1:0.3:0.1", "--csv", tmp_path / "ev.csv"])
    ev, sweep = pd.read_csv(tmp_path / "ev.csv"), pd.read_csv(tmp_path / "sweep.csv")
    assert ev["miou"].tolist() == pytest.approx(sweep["miou"].tolist(), abs=1e-12)
    from samcam.cam.infer import predict_scores
    from samcam.cam.nets import build_camnet
    from samcam.data.voc import VocTree, image_labels, one_hot
    from samcam.metrics import average_precision

    tree = VocTree(root)  # the mAP of the network's image scores, each piece tested on its own (test_cam)
    y = np.stack([one_hot(image_labels(tree, ids, "gt", None)[i], tree.spec) for i in ids])
    scores = predict_scores(build_camnet("efficientnet-lite0", checkpoint=tmp_path / "anon.pt"), [tree.read_image(i) for i in ids])
    m_ap = 100 * float(np.nanmean(average_precision(scores, y)))
    assert f"classification mAP {m_ap:.2f};" in capsys.readouterr().out and ev["map"].to_numpy() == pytest.approx(m_ap, abs=1e-9)
    # and what it scored: the ids' ground truth by content, the same on every row (audit 11, F4: cam-select compares alike only)
    import hashlib

    ids = (root / "ids.txt").read_text().split()
    h = hashlib.sha256()
    for i in sorted(ids):
        data = (root / "SegmentationClass" / f"{i}.png").read_bytes()
        h.update(f"{i}\0{len(data)}\0{hashlib.sha256(data).hexdigest()}\n".encode())
    assert ev["scored_on"].tolist() == ["sha256:" + h.hexdigest()] * len(ev)
    # and which classifier it scored (audit 12, F12): another classifier's evaluation does not replace it
    assert ev["checkpoint_sha256"].tolist() == [hashlib.sha256((tmp_path / "anon.pt").read_bytes()).hexdigest()] * len(ev)
    other = tmp_path / "other.pt"
    torch.save({**state, "ids": None, "state_dict": {k: v + 1 if v.is_floating_point() else v for k, v in state["state_dict"].items()}}, other)
    before = (tmp_path / "ev.csv").read_bytes()
    run(["cam-eval", "--checkpoint", other, "--voc", root, "--ids", root / "ids.txt", "--thresholds", "0.1:0.3:0.1", "--csv", tmp_path / "ev.csv"], code=2)
    err = capsys.readouterr().err
    assert (f"{tmp_path / 'ev.csv'}: holds the scores of another classifier (checkpoint_sha256 {ev['checkpoint_sha256'][0][:12]}…); "
            "choose another file, or remove it") in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "ev.csv").read_bytes() == before
    run(["cam-eval", "--checkpoint", tmp_path / "anon.pt", "--voc", root, "--ids", root / "ids.txt", "--thresholds", "0.1:0.2:0.1", "--csv", tmp_path / "ev.csv"])
    assert len(pd.read_csv(tmp_path / "ev.csv")) == 2  # the same classifier's table: replaced


def test_reproduce_rejects_unknown_steps_and_skips_missing_inputs(tmp_path, capsys):
    cfg = tmp_path / "r.yml"
    cfg.write_text("steps:\n  - name: a\n    notebook: demo.ipynb\n    inputs: [does/not/exist]\n    outputs: [x]\n    parameters: {out_dir: x}\n")
    run(["reproduce", "--config", cfg, "--only", "nope"], code=2)
    assert "no step named nope" in capsys.readouterr().err
    run(["reproduce", "--config", cfg], code=2)  # its only step lacks its input: nothing could be reproduced
    assert "every selected step lacks an input (e.g. a: missing input does/not/exist)" in capsys.readouterr().err


@pytest.mark.slow
def test_masks_refine_prompted_and_demo(tmp_path, small_voc, mobile_sam_checkpoint, capsys):
    root, ids = small_voc
    one = tmp_path / "one.txt"
    one.write_text(ids[0] + "\n")
    run(["masks", "--images", root / "JPEGImages", "--out", tmp_path / "masks", "--ids", one, "--points-per-side", "4", "--device", "cpu"])
    run(["refine", "--mode", "prompted", "--pseudo", root / "SegmentationClass", "--images", root / "JPEGImages",
         "--out", tmp_path / "prompted", "--ids", one, "--device", "cpu"])
    assert (tmp_path / "prompted" / f"{ids[0]}.png").exists()
    # one worker per device: the same labels as one process (threads pinned alike), one cost record
    two = tmp_path / "two.txt"
    two.write_text("\n".join(ids[:2]) + "\n")
    for name, devices in (("p1", "cpu"), ("p2", "cpu,cpu")):
        run(["refine", "--mode", "prompted", "--pseudo", root / "SegmentationClass", "--images", root / "JPEGImages",
             "--out", tmp_path / name, "--ids", two, "--devices", devices, "--threads", "1"])
    for i in ids[:2]:
        assert (tmp_path / "p1" / f"{i}.png").read_bytes() == (tmp_path / "p2" / f"{i}.png").read_bytes()
    import json

    (cost,) = json.loads((tmp_path / "p2" / "samcam_cost.json").read_text())["runs"]
    assert cost["images"] == 2 and cost["device"] == "cpu"
    # the demo, offline: its notebook run by the command (the one run of the demo in the suite)
    run(["demo", "--points-per-side", "4", "--out", tmp_path / "demo"])
    assert (tmp_path / "demo" / "demo_gallery.png").stat().st_size > 10_000 and (tmp_path / "demo" / "demo.ipynb").exists()
    assert len(list((tmp_path / "demo" / "enhanced").glob("*.png"))) == 4


def test_a_commands_threads_are_its_own(tmp_path, capsys):
    """`--threads` sets torch's thread count for that command only: a caller running several commands in one
    process (a notebook, this suite) keeps its own, since torch's CPU sums depend on it (a CAM file made at
    2 threads and the same CAM in memory at 1 can differ in the last bit)."""
    import torch

    before = torch.get_num_threads()
    ids = tmp_path / "ids.txt"
    ids.write_text("a\n")
    try:
        torch.set_num_threads(2)
        argv = ["cam", "--images", tmp_path / "im", "--out", tmp_path / "out", "--checkpoint", tmp_path / "ck.pt", "--voc", tmp_path / "voc",
                "--ids", ids, "--threads", "1"]  # fails after setting the threads
        assert cli.main([str(a) for a in argv]) == 2 and torch.get_num_threads() == 2
        assert "VOC root is not a folder" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
    # the first command of a fresh process, before anything imported torch (masks imports it only as it runs)
    code = ("import sys\nfrom samcam.cli import main\nassert 'torch' not in sys.modules\n"
            f"main(['masks', '--images', {str(tmp_path / 'none')!r}, '--out', {str(tmp_path / 'm')!r}, '--threads', '1'])\n"
            "import torch; print(torch.get_num_threads())")  # fmt: skip
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    own = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], capture_output=True, text=True, env=env, timeout=120)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert own.stdout.split() == ["2"] and out.stdout.split() == ["2"], (own, out)  # torch's own count, after a command set 1


def test_every_subcommand_is_exercised():
    """Every registered subcommand is called through the CLI (``run([...])`` here, ``main([...])`` in
    another test file) somewhere in the tests."""
    import re
    from pathlib import Path

    text = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    called = set(re.findall(r'(?:run|main)\(\["([a-z0-9-]+)"', text))
    missing = sorted(set(cli.COMMANDS) - called)
    assert not missing, f"subcommands without a CLI test: {missing}"


def test_every_id_list_is_declared_once_and_read_once(tmp_path, monkeypatch):
    """Every command's --ids (and --eval-ids) comes from cli.ids_option: an IdFile, whose ids are read
    once however often a command asks."""
    import argparse

    import samcam.io

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    id_options = [(name, a) for name, sp in sub.choices.items() for a in sp._actions if {"--ids", "--eval-ids"} & set(a.option_strings)]
    assert len(id_options) >= 15 and all(a.type is cli.IdFile and a.metavar == "IDS" for _, a in id_options), id_options
    assert {name for name, _ in id_options} >= {"eval", "merge", "masks", "train-classifier", "cam", "cam-eval", "train-seg", "eval-seg", "affinity-sweep"}
    (tmp_path / "ids.txt").write_text("a\nb\n")
    calls = []
    real = samcam.io.read_ids
    monkeypatch.setattr(samcam.io, "read_ids", lambda p: calls.append(p) or real(p))
    f = cli.IdFile(str(tmp_path / "ids.txt"))
    assert f.ids == ["a", "b"] and f.ids == ["a", "b"] and len(calls) == 1 and f == str(tmp_path / "ids.txt")
    assert cli.ids_of(None) is None and cli.ids_of(f) == ["a", "b"]


# What a user must give each command (its usage, as the README and the reproduce steps call it): a
# command run without them stops before any work, naming every one that is missing.
REQUIRED = {
    "affinity": ["--cams", "--out"], "affinity-sweep": ["--images", "--cams", "--gt", "--checkpoint", "--alphas"],
    "cam": ["--images", "--out", "--checkpoint"], "cam-eval": ["--checkpoint", "--ids"], "cam-select": ["--evals", "--out"],
    "cam2label": ["--cams"], "demo": [], "eval": ["--pred", "--gt"], "eval-seg": ["--checkpoint", "--images", "--gt", "--ids"],
    "labels": ["--method", "--input", "--out", "--ids"], "masks": ["--images", "--out"], "merge": ["--pseudo", "--masks", "--out"],
    "refine": ["--pseudo", "--out", "--ids"], "reproduce": [], "seg-search": ["--runs", "--out"],
    "train-affinity": ["--images", "--ids", "--out"], "train-classifier": ["--ids", "--out"],
    "train-seg": ["--images", "--labels", "--ids", "--out"], "weights": [],
}  # fmt: skip
ONE_OF = {"affinity": (["--cams", "c", "--out", "o"], "--checkpoint --gt-affinity"),
          "train-affinity": (["--images", "i", "--ids", "i", "--out", "o"], "--cams --seed-labels")}  # fmt: skip


def test_an_option_given_twice_is_refused_not_the_first_value_dropped(tmp_path, capsys):
    (tmp_path / "ids.txt").write_text("a\n")
    for argv, option in ((["cam2label", "--cams", "c", "--threshold", "0.2", "--threshold", "0.9"], "--threshold"),
                         (["eval", "--pred", "p", "--gt", "g", "--ids", str(tmp_path / "ids.txt"), "--ids", str(tmp_path / "ids.txt")], "--ids"),
                         (["train-seg", "--images", "i", "--labels", "l", "--ids", str(tmp_path / "ids.txt"), "--out", "o", "--lr", "0.1",
                           "--lr", "0.2"], "--lr")):  # fmt: skip
        assert cli.main(argv) == 2
        assert capsys.readouterr().err == f"samcam {argv[0]}: error: argument {option}: given twice; give it once (see --help)\n"
    assert cli.main(["eval", "--pred", str(tmp_path / "nope"), "--gt", "g", "--dataset", "voc"]) == 2  # once: parsed, then the folder named
    parser = cli.build_parser(["eval"])  # one parser, many parses: each counts its own options
    assert all(parser.parse_args(["eval", "--pred", "p", "--gt", "g"]).pred == "p" for _ in range(50))
    assert "prediction folder not found" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_every_command_names_what_it_requires(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file here: nothing a command could read or write
    (tmp_path / "i").write_text("a\n")
    if REQUIRED[command]:
        assert cli.main([command]) == 2
        err = capsys.readouterr().err
        assert f"the following arguments are required: {', '.join(REQUIRED[command])}" in err and len(err.strip().splitlines()) == 1, err
    if command in ONE_OF:
        given, options = ONE_OF[command]
        assert cli.main([command, *given]) == 2
        assert f"one of the arguments {options} is required" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["i"]
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert [a.option_strings[0] for a in sub.choices[command]._actions if a.required and a.option_strings] == REQUIRED[command]  # no other


def test_every_option_of_every_command_says_what_it_does():
    """``samcam COMMAND --help`` documents each option: no option without a help text, and no
    argument group without a title (a user reads these, not the source)."""
    import argparse

    from samcam.cli import COMMANDS, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(sub.choices) == sorted(COMMANDS)
    for name, p in sub.choices.items():
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help.strip(), f"samcam {name} {'/'.join(action.option_strings) or action.dest}: no help"
        for group in p._action_groups:
            assert group.title, f"samcam {name}: an option group without a title"


def test_a_printed_table_shows_scores_rounded_and_settings_as_they_are():
    # audit 10, F11's display: `affinity-sweep --alphas 1e-300` printed its power as 0.0 (every column was rounded)
    import pandas as pd

    from samcam.cli import shown_table

    df = pd.DataFrame({"alpha": [1e-300, 0.125], "miou": [0.512345, 0.1], "false_pct": [12.3449, 7.0], "map": [81.456, 81.456], "best": [True, False]})
    rows = [line.split() for line in shown_table(df).splitlines()]
    assert rows[0] == ["alpha", "miou", "false_pct", "map", "best"]
    assert [float(v) for v in rows[1][:4]] == [1e-300, 51.23, 12.34, 81.46] and rows[1][4] == "True"
    assert [float(v) for v in rows[2][:4]] == [0.125, 10.0, 7.0, 81.46]
    assert df.miou.tolist() == [0.512345, 0.1]  # the table written to CSV is left as it is
