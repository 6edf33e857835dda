"""Pipeline steps checked against independent computations: enhance's before/after scores on real
images, parallel merges, the threshold sweep's GT-tuned flag, reproduce's step states, and the
default-folder rule that notebook 02 once got wrong."""

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CACHED_MASKS
from merge_reference import merge_loop
from PIL import Image

from samcam.cam.files import save_cam
from samcam.cam.methods import default_pseudo_dir
from samcam.data.spaces import VOC
from samcam.pipeline.cam import threshold_sweep
from samcam.pipeline.enhance import enhance_method
from samcam.pipeline.merge import merge_folders
from samcam.refine.merge import MergeRule
from samcam.reproduce import Step, step_state
from samcam.sam.mask_files import MaskStore


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def _miou_by_hand(pairs, n=21):
    """Standard mIoU written out with bincount: one confusion matrix, 255 in gt ignored."""
    conf = np.zeros((n, n), np.int64)
    for gt, pred in pairs:
        keep = gt != 255
        conf += np.bincount(n * gt[keep].astype(np.int64) + pred[keep], minlength=n * n).reshape(n, n)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    present = union > 0
    return float(np.mean(tp[present] / union[present]))


def test_enhance_scores_equal_an_independent_computation(data_root, voc_root, train_with_images, tmp_path):
    if not CACHED_MASKS.is_dir():
        pytest.skip(f"cached masks not found at {CACHED_MASKS}")
    ids = train_with_images[:6]
    pseudo, gt_dir = data_root / "pseudo_labels" / "transcam", voc_root / "SegmentationClass"
    res = enhance_method(pseudo, CACHED_MASKS, gt_dir, ids, tmp_path / "enhanced", progress=False)
    store = MaskStore(CACHED_MASKS)
    gts = [_png(gt_dir / f"{i}.png") for i in ids]
    labels = [_png(pseudo / f"{i}.png") for i in ids]
    merged = [merge_loop(lab, store.read(i).masks, 21) for i, lab in zip(ids, labels)]
    for i, m in zip(ids, merged):
        assert (_png(tmp_path / "enhanced" / f"{i}.png") == m).all()
    s = res.summary()
    assert s["miou_before"] == pytest.approx(_miou_by_hand(zip(gts, labels)), abs=1e-12)
    assert s["miou_after"] == pytest.approx(_miou_by_hand(zip(gts, merged)), abs=1e-12)
    assert s["miou_after"] != pytest.approx(s["miou_before"])  # the merge changes these images
    per_image = res.per_image().set_index("id")
    for i, g, lab, m in zip(ids, gts, labels, merged):
        assert per_image.loc[i, "miou_before"] == pytest.approx(_miou_by_hand([(g, lab)]))
        assert per_image.loc[i, "miou_after"] == pytest.approx(_miou_by_hand([(g, m)]))


def test_parallel_merge_equals_serial(data_root, train_with_images, tmp_path):
    if not CACHED_MASKS.is_dir():
        pytest.skip(f"cached masks not found at {CACHED_MASKS}")
    ids = train_with_images[:10]
    pseudo = data_root / "pseudo_labels" / "transcam"
    serial = merge_folders(pseudo, CACHED_MASKS, tmp_path / "serial", VOC, MergeRule(), ids, workers=1, progress=False)
    parallel = merge_folders(pseudo, CACHED_MASKS, tmp_path / "parallel", VOC, MergeRule(), ids, workers=2, progress=False)
    assert serial.merged == parallel.merged == len(ids)
    assert sorted(p.name for p in (tmp_path / "parallel").glob("*.png")) == sorted(f"{i}.png" for i in ids)
    for i in ids:
        assert (_png(tmp_path / "serial" / f"{i}.png") == _png(tmp_path / "parallel" / f"{i}.png")).all()


def test_threshold_sweep_flags_exactly_the_best_threshold(tmp_path):
    rng = np.random.default_rng(3)
    gt_dir, cams = tmp_path / "gt", tmp_path / "cams"
    gt_dir.mkdir()
    ids, pairs_at = ["a", "b", "c"], {}
    thresholds = [0.1, 0.3, 0.5, 0.7]
    for i in ids:
        gt = np.zeros((12, 16), np.uint8)
        gt[2:9, 3:12] = 7
        Image.fromarray(gt).save(gt_dir / f"{i}.png")
        cam = np.clip(np.where(gt == 7, 0.6, 0.2) + rng.normal(0, 0.15, gt.shape), 0, 1).astype(np.float32)
        save_cam(cams / f"{i}.npy", np.array([6]), cam[None])
        for t in thresholds:
            pairs_at.setdefault(t, []).append((gt, np.where(cam > t, 7, 0).astype(np.uint8)))
    df = threshold_sweep(cams, gt_dir, ids, thresholds)
    expected = [_miou_by_hand(pairs_at[t]) for t in thresholds]
    assert df["miou"].tolist() == pytest.approx(expected)
    best = int(np.argmax(expected))
    assert df["gt_tuned"].tolist() == [k == best for k in range(len(thresholds))]


def test_step_state_answers_each_state(tmp_path):
    from samcam.reproduce import full_stamp

    (tmp_path / "in").write_text("x")
    step = Step("s", "demo.ipynb", {"a": 1}, ["in"], ["out.txt"])
    runs = tmp_path / "runs"
    runs.mkdir()
    assert step_state(Step("s", "demo.ipynb", {}, ["absent"], ["out.txt"]), runs, tmp_path) == "missing input absent"
    assert step_state(step, runs, tmp_path) == "stale (never run here)"  # no parameter stamp, no output
    (runs / "s.params.json").write_text(json.dumps({"notebook": "demo.ipynb", "parameters": {"a": 1}}))
    assert step_state(step, runs, tmp_path) == "stale (output out.txt missing)"
    (tmp_path / "out.txt").write_text("y")
    assert step_state(step, runs, tmp_path) == "stale (run before samcam fingerprinted a step's inputs)"
    (runs / "s.params.json").write_text(json.dumps(full_stamp(step, tmp_path)))
    assert step_state(step, runs, tmp_path) == "current"
    assert step_state(Step("s", "demo.ipynb", {"a": 2}, ["in"], ["out.txt"]), runs, tmp_path) == "stale (notebook or parameters changed)"
    assert step_state(Step("s", None, {}, ["in"], ["out.txt"], ["eval"]), runs, tmp_path) == "stale (command changed)"
    assert step_state(Step("s", None, {}, ["in"], ["out.txt"], script=["benchmarks/b.py"]), runs, tmp_path) == "stale (script or its arguments changed)"
    # file times play no part: an input touched (as a fresh clone touches every file) is still current
    later = time.time() + 100
    os.utime(tmp_path / "in", (later, later))
    assert step_state(step, runs, tmp_path) == "current"
    (tmp_path / "in").write_text("z")  # a changed input of the same size and time is noticed
    os.utime(tmp_path / "in", (later, later))
    assert step_state(step, runs, tmp_path) == "stale (input in changed since the last run)"
    (tmp_path / "in").write_text("x")
    assert step_state(step, runs, tmp_path) == "current"
    (tmp_path / "out.txt").write_text("edited by hand")  # an output changed since the run is not current either
    assert step_state(step, runs, tmp_path) == "stale (output out.txt changed since the last run)"
    (tmp_path / "out.txt").write_text("y")
    stamp = json.loads((runs / "s.params.json").read_text())
    stamp["fingerprints"]["notebook"] = "sha256:" + "0" * 64  # the notebook's source changed since the run
    (runs / "s.params.json").write_text(json.dumps(stamp))
    assert step_state(step, runs, tmp_path) == "stale (notebook demo.ipynb changed since the last run)"
    (runs / "s.params.json").write_text("[]")
    with pytest.raises(ValueError, match=r"s\.params\.json: unreadable reproduce stamp .*remove it to rerun step s"):
        step_state(step, runs, tmp_path)


def test_a_stamp_is_current_in_another_checkout(tmp_path, monkeypatch):
    """A stamp written in one checkout (paths under it and under the data root) is current in a copy
    at another path with another data root: keys are written relative, contents fingerprinted."""
    import shutil

    from samcam import reproduce
    from samcam.reproduce import full_stamp

    def checkout(root: Path):
        (root / "repo" / "results").mkdir(parents=True)
        (root / "data" / "labels").mkdir(parents=True)
        (root / "data" / "labels" / "a.png").write_bytes(b"label")
        (root / "repo" / "results" / "out.csv").write_text("1,2\n")
        return root / "repo", root / "data"

    repo, data = checkout(tmp_path / "one")
    monkeypatch.setattr(reproduce, "REPO", repo)
    monkeypatch.setenv("SAMCAM_DATA", str(data))
    step = Step("s", "demo.ipynb", {"labels": str(data / "labels")}, [str(data / "labels")], ["results/out.csv"])
    (repo / "runs").mkdir()
    (repo / "runs" / "s.params.json").write_text(json.dumps(full_stamp(step, repo)))
    assert str(tmp_path) not in (repo / "runs" / "s.params.json").read_text()  # no machine path in the stamp
    repo2, data2 = checkout(tmp_path / "two")
    shutil.copytree(repo / "runs", repo2 / "runs")
    monkeypatch.setattr(reproduce, "REPO", repo2)
    monkeypatch.setenv("SAMCAM_DATA", str(data2))
    moved = Step("s", "demo.ipynb", {"labels": str(data2 / "labels")}, [str(data2 / "labels")], ["results/out.csv"])
    assert step_state(moved, repo2 / "runs", repo2) == "current"
    (data2 / "labels" / "a.png").write_bytes(b"other")
    assert step_state(moved, repo2 / "runs", repo2).startswith("stale (input ${SAMCAM_DATA}/labels changed")


def test_command_steps_and_long_steps(tmp_path, capsys, monkeypatch):
    """A command step runs ``samcam <command>`` from the checkout and is stamped like a notebook; a long
    step runs only when named or with --long, and the plan says why it is skipped; a command resumes,
    so rerunning it over outputs made from other inputs (or with --force) is refused with the way out."""
    from samcam import cli, outputs, reproduce
    from samcam.io import write_label

    monkeypatch.setattr(reproduce, "REPO", tmp_path)  # a checkout of its own: the command runs there, writes there
    monkeypatch.setattr(reproduce, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(outputs, "git_commit", lambda path: "abc123")
    (tmp_path / "gt").mkdir()
    (tmp_path / "ids.txt").write_text("a\n")
    label = np.zeros((4, 5), np.uint8)
    label[1:3, 1:4] = 1
    write_label(tmp_path / "gt" / "a.png", label)
    (tmp_path / "pred").mkdir()
    write_label(tmp_path / "pred" / "a.png", label)
    cfg = tmp_path / "r.yml"
    cfg.write_text("steps:\n  - name: score\n    command: [eval, --pred, pred, --gt, gt, --ids, ids.txt, --csv, out/scores.csv]\n"
                   "    long: about a second\n    inputs: [pred, gt, ids.txt]\n    outputs: [out/scores.csv]\n")
    csv = tmp_path / "out" / "scores.csv"
    assert cli.main(["reproduce", "--config", str(cfg), "--list"]) == 0
    assert capsys.readouterr().out == "score: skip [stale (never run here)] (long: about a second) samcam eval -> out/scores.csv\n"
    assert cli.main(["reproduce", "--config", str(cfg)]) == 0
    assert "score: skipped (stale (never run here); a long step (about a second): name it with --only score, or give --long)" in capsys.readouterr().out
    assert not csv.exists()
    assert cli.main(["reproduce", "--config", str(cfg), "--long"]) == 0
    out = capsys.readouterr().out
    assert "score: running (stale (never run here)) — samcam eval (long: about a second)" in out and "score: done in" in out
    scores = pd.read_csv(csv)
    assert scores["iou"].tolist()[:2] == [1.0, 1.0] and scores["iou"][2:].isna().all()  # two classes present, predicted exactly
    assert scores["gt_pixels"].tolist()[:2] == [14, 6]
    stamp = json.loads((tmp_path / "runs" / "score.params.json").read_text())
    assert stamp["command"][0] == "eval" and set(stamp["fingerprints"]) == {"inputs", "outputs"} and stamp["commit"] == "abc123"
    assert cli.main(["reproduce", "--config", str(cfg), "--only", "score"]) == 0
    assert "score: skipped (current)" in capsys.readouterr().out
    assert cli.main(["reproduce", "--config", str(cfg), "--force"]) == 0  # forced, but long and not named: still skipped, and why
    assert "score: skipped (current; a long step (about a second): name it with --only score, or give --long)" in capsys.readouterr().out
    assert cli.main(["reproduce", "--config", str(cfg), "--only", "score", "--force"]) == 2
    assert "step score (--force): samcam eval resumes into out/scores.csv and would keep what is there; remove it to redo the step" in capsys.readouterr().err
    (tmp_path / "ids.txt").write_text("a\n\n")  # an input changed: refused, the stale output kept as it was and named
    assert cli.main(["reproduce", "--config", str(cfg), "--only", "score"]) == 2
    assert "step score (stale (input ids.txt changed since the last run)): samcam eval resumes into out/scores.csv" in capsys.readouterr().err
    csv.unlink()  # the way out: the step redoes its output
    assert cli.main(["reproduce", "--config", str(cfg), "--only", "score"]) == 0 and csv.exists()
    cfg.write_text(cfg.read_text().replace("--csv, out/scores.csv", "--nonsense, x"))
    csv.unlink()
    assert cli.main(["reproduce", "--config", str(cfg), "--only", "score"]) == 2  # the command failed: reproduce fails
    assert "step score: samcam eval exited with status 2" in capsys.readouterr().err


def test_a_stamp_records_the_inputs_a_step_read(tmp_path, monkeypatch):
    """Inputs and the notebook are fingerprinted before a step runs: an input edited while a long step
    runs leaves the step stale, not current with outputs of the old input."""
    from samcam import outputs, reproduce

    monkeypatch.setattr(reproduce, "REPO", tmp_path)
    monkeypatch.setattr(reproduce, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(outputs, "git_commit", lambda path: "abc123")
    (tmp_path / "in").write_text("first")

    def run(nb, out, params):  # the step reads its input, and meanwhile the input and the code are edited
        (tmp_path / "out").write_text((tmp_path / "in").read_text())
        (tmp_path / "in").write_text("second")
        monkeypatch.setattr(outputs, "git_commit", lambda path: "abc123-dirty")

    monkeypatch.setattr(reproduce, "execute", run)
    cfg = tmp_path / "r.yml"
    cfg.write_text("steps:\n  - name: s\n    notebook: demo.ipynb\n    inputs: [in]\n    outputs: [out]\n    parameters: {out_dir: out}\n")
    reproduce.reproduce(cfg)
    step = reproduce.load_config(cfg)[0]
    assert reproduce.step_state(step, tmp_path / "runs") == "stale (input in changed since the last run)"
    assert json.loads((tmp_path / "runs" / "s.params.json").read_text())["commit"] == "abc123"  # the code that ran, not the one after


def test_a_relative_data_root_and_an_unreadable_folder(tmp_path, monkeypatch):
    """``SAMCAM_DATA`` given relative (to where samcam runs) names the same data as its absolute form, so
    a stamp stays current; a dangling link inside an input folder gives a state, not a crash."""
    from samcam import reproduce
    from samcam.reproduce import full_stamp

    (tmp_path / "data" / "labels").mkdir(parents=True)
    (tmp_path / "data" / "labels" / "a.png").write_bytes(b"x")
    (tmp_path / "runs").mkdir()
    cfg = tmp_path / "r.yml"
    cfg.write_text("steps:\n  - name: s\n    notebook: 02_enhance_method.ipynb\n    parameters: {pseudo_dir: '${SAMCAM_DATA}/labels', results_dir: out, work_dir: out}\n"
                   "    inputs: ['${SAMCAM_DATA}/labels']\n    outputs: [out]\n")
    (tmp_path / "out").write_text("y")
    monkeypatch.setattr(reproduce, "REPO", tmp_path)
    monkeypatch.setenv("SAMCAM_DATA", str(tmp_path / "data"))
    step = reproduce.load_config(cfg)[0]
    (tmp_path / "runs" / "s.params.json").write_text(json.dumps(full_stamp(step)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAMCAM_DATA", "data")
    assert reproduce.step_state(reproduce.load_config(cfg)[0], tmp_path / "runs") == "current"
    (tmp_path / "data" / "labels" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    gone = tmp_path / "data" / "labels" / "gone.png"
    assert reproduce.step_state(step, tmp_path / "runs") == (f"stale (cannot read an input or output: {gone}: a broken link (to "
                                                             f"{tmp_path / 'nowhere.png'}) inside the input folder {gone.parent}; remove it "
                                                             "or point it at a file)")  # fmt: skip
    from samcam import outputs

    monkeypatch.setattr(outputs, "git_commit", lambda path: "abc")
    with pytest.raises(ValueError, match="^" + re.escape(f"step s: cannot fingerprint its inputs: {gone}: a broken link")):  # audit 9's R30
        reproduce.reproduce(cfg, runs=tmp_path / "runs", force=True)


@pytest.mark.parametrize("step, message", [
    ("{name: x, notebook: demo.ipynb, command: [eval]}", "needs exactly one of notebook, command and script"),
    ("{name: x}", "needs exactly one of notebook, command and script"),
    ("{name: x, command: []}", "command must be a non-empty list"),
    ("{name: x, command: [eval, '']}", "command must be a non-empty list"),
    ("{name: x, command: eval}", "command is a str, expected a list"),
    ("{name: x, command: [rm, -rf]}", "command 'rm' is not a samcam step"),
    ("{name: x, command: [reproduce]}", "command 'reproduce' is not a samcam step"),
    ("{name: x, command: [eval], parameters: {a: 1}}", "parameters are a notebook's"),
    ("{name: x, notebook: demo.ipynb, long: 3}", "long is a int, expected a str"),
    # a parameter of another kind than its default's (audit 9, F8: it failed inside the notebook)
    ("{name: x, notebook: demo.ipynb, parameters: {points_per_side: two}, outputs: [results/d]}",
     "parameter points_per_side is 'two'; demo.ipynb takes a whole number there (its default: 32)"),
    ("{name: x, notebook: demo.ipynb, parameters: {points_per_side: 7.5}, outputs: [results/d]}", "parameter points_per_side is 7.5; demo.ipynb takes a whole number"),
    ("{name: x, notebook: demo.ipynb, parameters: {points_per_side: true}, outputs: [results/d]}", "parameter points_per_side is True; demo.ipynb takes a whole number"),
    ("{name: x, notebook: 03_paper_table.ipynb, parameters: {dataset: 5}, outputs: [results/t]}",
     "parameter dataset is 5; 03_paper_table.ipynb takes text there (its default: 'voc')"),
    ("{name: x, notebook: demo.ipynb, long: ''}", "long is empty"),
    ("{name: x, notebook: demo.ipynb, output: [a]}", "unknown keys output"),
    ("{name: x, command: [eval, --pred, p, --gt, g, --csv, /elsewhere/x.csv], outputs: [/elsewhere/x.csv]}", "output '/elsewhere/x.csv' must be a relative path inside the checkout"),
    ("{name: x, command: [eval, --pred, p, --gt, g, --csv, ../x.csv], outputs: [../x.csv]}", "output '../x.csv' must be a relative path inside the checkout"),
    ("{name: x, command: [eval, --pred, p, --gt, g, --csv, x.csv], outputs: [y.csv]}", "command writes --csv x.csv, which is not among its outputs"),
    ("{name: x, command: [eval], script: [benchmarks/bench_eval.py]}", "needs exactly one of notebook, command and script"),
    ("{name: x, script: []}", "script must be a non-empty list"),
    ("{name: x, script: benchmarks/bench_eval.py}", "script is a str, expected a list"),
    ("{name: x, script: [rm.py]}", "script 'rm.py' must be a Python file in the checkout's benchmarks/"),
    ("{name: x, script: [samcam/cli.py]}", "script 'samcam/cli.py' must be a Python file in the checkout's benchmarks/"),
    ("{name: x, script: [scripts/relocate_records.py]}", "script 'scripts/relocate_records.py' must be a Python file in the checkout's benchmarks/"),
    ("{name: x, script: [benchmarks/../samcam/cli.py]}", "must be a Python file in the checkout's benchmarks/"),
    ("{name: x, script: [benchmarks/sub/x.py]}", "must be a Python file in the checkout's benchmarks/"),
    ("{name: x, script: [/usr/benchmarks/x.py]}", "must be a Python file in the checkout's benchmarks/"),
    ("{name: x, script: [benchmarks/gpu_bench.sh]}", "script 'benchmarks/gpu_bench.sh' must be a Python file"),
    ("{name: x, script: [benchmarks/no_such_bench.py]}", "script 'benchmarks/no_such_bench.py' is not a file of this checkout's benchmarks/"),
    ("{name: x, script: [benchmarks/bench_merge_e2e.py, --workdir, /elsewhere/x], outputs: [results/benchmarks/merge_e2e.json]}",
     "script writes --workdir /elsewhere/x, which is not among its outputs"),
    ("{name: x, script: [benchmarks/bench_merge_e2e.py, --official-masks=../elsewhere], inputs: [../baselines]}",
     "script argument '--official-masks=../elsewhere' names a path that is not among the step's inputs or outputs"),
    # a script's option that writes, given a declared input (outside the checkout) instead of an output
    ("{name: x, script: [benchmarks/bench_merge_e2e.py, --workdir, ../v], inputs: [../v], outputs: [results/benchmarks/merge_e2e.json]}",
     "script writes --workdir ../v, which is not among its outputs"),
    ("{name: x, script: [benchmarks/bench_merge_e2e.py, --official-masks, ../v], inputs: [../v], outputs: [results/benchmarks/merge_e2e.json]}",
     "script writes --official-masks ../v, which is not among its outputs"),
    ("{name: x, script: [benchmarks/bench_eval.py], parameters: {a: 1}}", "parameters are a notebook's; a script step's settings are its arguments"),
    ("{name: x, script: [benchmarks/bench_generator.py, --out, elsewhere], outputs: [results/benchmarks]}", "script writes --out elsewhere, which is not among its outputs"),
    ("{name: x, script: [benchmarks/bench_generator.py, --out=results/benchmarks], outputs: [results/benchmarks]}", "script argument '--out=results/benchmarks': give an option and its value as two items"),
    # what a script writes through its defaults (audit 8, F1: the committed results were overwritten)
    ("{name: x, script: [benchmarks/bench_eval.py], outputs: [results/a8bench]}",
     "script benchmarks/bench_eval.py writes results/benchmarks/eval.json (with these arguments, its defaults included), which is not among the step's outputs or scratch"),
    ("{name: x, script: [benchmarks/bench_merge_e2e.py, --limit, '1'], outputs: [results/benchmarks/merge_e2e.json, results/benchmarks/merge_e2e.md]}",
     "script benchmarks/bench_merge_e2e.py writes work/bench/masks_official/voc12_train_vit_t_p32 (with these arguments"),
    ("{name: x, command: [eval, --pred, p, --gt, g, --csv, results/x/table.md], outputs: [results/x/table.md]}",
     "command writes the table --csv results/x/table.md; a table is written as CSV: give a path ending with .csv"),  # review 10: at load
    ("{name: x, script: [benchmarks/bench_eval.py, --bogus], outputs: [results/benchmarks]}",
     "script benchmarks/bench_eval.py refuses its arguments: unrecognized arguments: --bogus"),
    ("{name: x, script: [benchmarks/bench_modes.py, --n, two], outputs: [results/benchmarks]}",
     "script benchmarks/bench_modes.py refuses its arguments: argument --n: invalid int value: 'two'"),
    # a command's input it does not declare is not fingerprinted: the step stayed current after it changed (audit 10, F1)
    ("{name: x, command: [eval, --pred, data/p, --gt, data/g, --csv, results/x.csv], inputs: [data/p], outputs: [results/x.csv]}",
     "command argument 'data/g' names a path that is not among the step's inputs or outputs; declare it"),
    ("{name: x, command: [eval, --pred, data/p, --gt, data/p/../g, --csv, results/x.csv], inputs: [data/p], outputs: [results/x.csv]}",
     "command argument 'data/p/../g' names a path"),
    ("{name: x, command: [eval, --pred, ./p, --gt, data/p, --csv, results/x.csv], inputs: [data/p], outputs: [results/x.csv]}",
     "command argument './p' names a path"),
    ("{name: x, command: [eval, --pred, notebooks, --gt, data/p, --csv, results/x.csv], inputs: [data/p], outputs: [results/x.csv]}",
     "command argument 'notebooks' names a path"),  # a folder of the checkout, named without a slash
    # audit 12, F3: a root above some declared parts is no declaration of what is read there; nor is a default root
    ("{name: x, command: [train-classifier, --voc, data, --ids, data/ids.txt, --out, work/c.pt], inputs: [data/JPEGImages, data/ids.txt], outputs: [work/c.pt]}",
     "command train-classifier reads data/SegmentationClass (the image-level labels of --voc data with --labels gt), which is not among the step's inputs"),
    ("{name: x, command: [cam, --voc, data, --images, data/JPEGImages, --out, work/c, --checkpoint, c.pt, --labels, xml], "
     "inputs: [data/JPEGImages, data/SegmentationClass, c.pt], outputs: [work/c]}", "command cam reads data/Annotations"),
    ("{name: x, command: [eval, --pred, ./data, --gt, data/g, --csv, results/x.csv], inputs: [data/p, data/g], outputs: [results/x.csv]}",
     "command argument './data' names a path that is not among the step's inputs"),
    ("{name: x, command: [train-classifier, --ids, data/ids.txt, --out, work/c.pt], inputs: [data/ids.txt], outputs: [work/c.pt]}",
     "command train-classifier reads a VOC tree and names none with --voc: it would read $SAMCAM_VOC_ROOT"),
])
def test_reproduce_config_refuses_malformed_steps(tmp_path, step, message):
    from samcam.reproduce import load_config

    cfg = tmp_path / "r.yml"
    cfg.write_text(f"steps:\n  - {step}\n")
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(cfg)


@pytest.mark.parametrize("key, step", [
    ("inputs", "{name: x, command: [eval, --pred, data/p, --gt, data/g, --csv, results/x.csv], inputs: [data/p, $SAMCAM_DATA/g], outputs: [results/x.csv]}"),
    ("command", "{name: x, command: [eval, --pred, data/p, --gt, $SAMCAM_DATA/g, --csv, results/x.csv], inputs: [data/p], outputs: [results/x.csv]}"),
    ("outputs", "{name: x, command: [eval, --pred, data/p, --gt, data/g, --csv, results/x.csv], inputs: [data/p, data/g], outputs: [$SAMCAM_DATA/x.csv]}"),
    ("scratch", "{name: x, notebook: demo.ipynb, scratch: [work/$SAMCAM_DATA]}"),
], ids=["inputs", "command", "outputs", "scratch"])
def test_a_variable_without_braces_is_refused_naming_it(tmp_path, key, step):
    """Audit 11, F17: ``$SAMCAM_DATA/g`` (no braces) is not expanded, and was taken as a relative path
    (planned as a missing input) where ``${NOPE}`` is refused by name."""
    from samcam.reproduce import load_config

    cfg = tmp_path / "r.yml"
    cfg.write_text(f"steps:\n  - {step}\n")
    with pytest.raises(ValueError, match=re.escape(f"{cfg}: step 0 (x) {key} ") + ".*" + re.escape("holds $SAMCAM_DATA without braces, which is not expanded; "
                                                                                                   "write ${SAMCAM_DATA}")):  # fmt: skip
        load_config(cfg)
    cfg.write_text(f"steps:\n  - {step.replace('$SAMCAM_DATA', '${SAMCAM_DATA}')}\n")  # with braces: past this check
    try:
        load_config(cfg)
    except ValueError as e:
        assert "without braces" not in str(e)


def test_a_config_without_steps_is_refused_naming_it(tmp_path, capsys):
    """Audit 11, F17: ``steps: []`` planned and ran nothing, silently, with exit 0."""
    from samcam import cli

    cfg = tmp_path / "r.yml"
    cfg.write_text("steps: []\n")
    for extra in (["--list"], []):
        assert cli.main(["reproduce", "--config", str(cfg), *extra]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.strip() == f"samcam reproduce: error: {cfg}: its steps list is empty; list the steps to run"


@pytest.mark.parametrize("read", ["made.csv", "made", "made/part.png"])
def test_a_step_reading_what_another_step_writes_must_declare_it_even_before_it_exists(tmp_path, read):
    # a bare name at the checkout's root is no path by its look, and before the first run nothing is there:
    # it is a path because a step writes it, and undeclared it would leave the reader current after a rerun upstream
    from samcam.reproduce import REPO, load_config

    assert not (REPO / read.split("/")[0]).exists()
    out = read.split("/")[0]
    write = f"{{name: a, command: [eval, --pred, data/p, --gt, data/g, --csv, {out}], inputs: [data/p, data/g], outputs: [{out}]}}"
    if not out.endswith(".csv"):
        write = f"{{name: a, command: [merge, --pseudo, data/p, --masks, data/m, --out, {out}], inputs: [data/p, data/m], outputs: [{out}]}}"
    cfg = tmp_path / "r.yml"
    cfg.write_text(f"steps:\n  - {write}\n  - {{name: b, command: [eval, --pred, {read}, --gt, data/g, --csv, results/b.csv], "
                   "inputs: [data/g], outputs: [results/b.csv]}\n")
    with pytest.raises(ValueError, match=re.escape(f"step 1 (b) command argument '{read}' names a path that is not among the step's inputs")):
        load_config(cfg)
    cfg.write_text(cfg.read_text().replace("inputs: [data/g], outputs: [results/b.csv]", f"inputs: [data/g, {out}], outputs: [results/b.csv]"))
    assert [s.name for s in load_config(cfg)] == ["a", "b"]


@pytest.mark.parametrize("command, inputs", [
    ("[eval, --pred, data/p, --gt, data/g, --csv, results/x.csv]", "[data/p, data/g]"),
    ("[eval, --pred, data/p/a, --gt, data/g, --csv, results/x.csv]", "[data/p, data/g]"),  # inside a declared input
    # a VOC root whose folders the command reads are declared (reproduce.voc_reads: its images, and its labels' ground truth); a number
    ("[train-classifier, --voc, data, --ids, data/ids.txt, --out, work/c.pt, --lr-head, '.5']", "[data/JPEGImages, data/SegmentationClass, data/ids.txt]"),
    ("[train-classifier, --voc, data, --labels, cls_labels, --cls-labels, data/cls.npy, --ids, data/ids.txt, --out, work/c.pt]",
     "[data/JPEGImages, data/cls.npy, data/ids.txt]"),  # IRN's labels file: no ground truth read
])
def test_a_command_step_reading_only_what_it_declares_is_accepted(tmp_path, command, inputs):
    from samcam.reproduce import load_config

    cfg = tmp_path / "r.yml"
    outputs = "[results/x.csv]" if "results/x.csv" in command else "[work/c.pt]"
    cfg.write_text(f"steps:\n  - {{name: x, command: {command}, inputs: {inputs}, outputs: {outputs}}}\n")
    assert [s.name for s in load_config(cfg)] == ["x"]


def test_notebook_defaults_are_its_parameters_cells_literals(tmp_path):
    """What a parameter takes is read off its default: a number takes an int or a float, a None or an
    expression takes anything, null is taken for any; a, b = 1, 2 assigns both."""
    import nbformat

    from samcam.reproduce import NOT_A_LITERAL, _check_parameter_type, notebook_defaults

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("a = 1\nb: float = 0.5\nc, d = 'x', [1]\ne = None\nf = str(3)\nfor g in range(2):\n    pass\nh = {'k': True}")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nbformat.write(nb, tmp_path / "n.ipynb")
    assert notebook_defaults(tmp_path / "n.ipynb") == {"a": 1, "b": 0.5, "c": "x", "d": [1], "e": None, "f": NOT_A_LITERAL, "h": {"k": True}}
    for key, value, default in [("b", 2, 0.5), ("b", 0.25, 0.5), ("e", "anything", None), ("f", 7, NOT_A_LITERAL), ("a", None, 1), ("d", [], [1]), ("s", 1, {1})]:
        _check_parameter_type(key, value, default, "step", "n.ipynb")
    for key, value, default in [("b", True, 0.5), ("a", 1.0, 1), ("c", 3, "x"), ("d", {}, [1]), ("h", [], {"k": True}), ("t", 1, False)]:
        with pytest.raises(ValueError, match=rf"^step parameter {key} is "):
            _check_parameter_type(key, value, default, "step", "n.ipynb")


def test_an_output_leading_out_of_the_checkout_through_a_link_is_refused(tmp_path, monkeypatch):
    """A result (under results/) reached through a link inside the checkout would be written (and
    stamped) outside it (audit 9, F6); work/ may be a link (another disk), outputs and scratch alike."""
    from samcam import reproduce

    repo, outside = tmp_path / "repo", tmp_path / "outside"
    (repo / "results").mkdir(parents=True)
    outside.mkdir()
    (repo / "results" / "away").symlink_to(outside)
    (repo / "work").symlink_to(outside)
    monkeypatch.setattr(reproduce, "REPO", repo)
    cfg = tmp_path / "r.yml"
    cfg.write_text("steps:\n  - {name: k, command: [eval, --pred, p, --gt, g, --csv, results/away/x.csv], outputs: [results/away/x.csv]}\n")
    with pytest.raises(ValueError, match=re.escape(f"step 0 (k) output 'results/away/x.csv' leads outside the checkout through a link (to {outside / 'x.csv'})")):
        reproduce.load_config(cfg)
    cfg.write_text("steps:\n  - {name: k, command: [eval, --pred, p, --gt, g, --csv, work/x.csv], outputs: [work/x.csv], scratch: [work/k]}\n")
    assert [s.name for s in reproduce.load_config(cfg)] == ["k"]  # work/ (intermediate files) may be a link to another disk


def test_a_script_step_writing_only_what_it_declares_loads(tmp_path):
    from samcam.reproduce import load_config

    cfg = tmp_path / "r.yml"
    cfg.write_text("steps:\n  - {name: g, script: [benchmarks/bench_generator.py, --out, results/g], outputs: [results/g]}\n"
                   "  - {name: e, script: [benchmarks/bench_merge_e2e.py], outputs: [results/benchmarks/merge_e2e.json, "
                   "results/benchmarks/merge_e2e.md], scratch: [work/bench]}\n")
    assert [s.name for s in load_config(cfg)] == ["g", "e"]


def test_a_script_that_does_not_say_what_it_writes_is_refused(tmp_path, monkeypatch):
    from samcam import reproduce

    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "bench_x.py").write_text("import sys\nsys.path.insert(0, 'nowhere')\n")
    monkeypatch.setattr(reproduce, "REPO", tmp_path)
    monkeypatch.setattr(reproduce, "SCRIPTS", tmp_path / "benchmarks")
    cfg = tmp_path / "r.yml"
    cfg.write_text("steps:\n  - {name: x, script: [benchmarks/bench_x.py], outputs: [results/x]}\n")
    path = list(sys.path)
    with pytest.raises(ValueError, match=re.escape("step 0 (x) script benchmarks/bench_x.py does not say what it writes (it defines no writes(argv))")):
        reproduce.load_config(cfg)
    assert sys.path == path  # the script's own sys.path change is undone


def test_reproduce_plans_reports_and_refuses_when_nothing_can_run(tmp_path, capsys, monkeypatch):
    from samcam import cli, outputs, reproduce

    monkeypatch.setattr(reproduce, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(reproduce, "REPO", tmp_path)  # the checkout: where relative outputs land
    monkeypatch.setattr(outputs, "git_commit", lambda path: "abc123")  # a clean checkout: no note
    cfg = tmp_path / "r.yml"
    cfg.write_text("steps:\n  - name: a\n    notebook: demo.ipynb\n    inputs: [does/not/exist]\n    outputs: [x]\n    parameters: {out_dir: x}\n")
    assert cli.main(["reproduce", "--config", str(cfg), "--list"]) == 0
    assert capsys.readouterr().out == "a: skip [missing input does/not/exist] demo.ipynb -> x\n"
    assert cli.main(["reproduce", "--config", str(cfg)]) == 2  # every step lacks its inputs: nothing reproduced
    assert "every selected step lacks an input" in capsys.readouterr().err
    ran = []
    monkeypatch.setattr(reproduce, "execute", lambda nb, out, params: ran.append((nb, out)) or (tmp_path / "out").write_text("o"))  # its output
    (tmp_path / "in").write_text("x")
    cfg.write_text(f"steps:\n  - name: a\n    notebook: demo.ipynb\n    inputs: [does/not/exist]\n    outputs: [x]\n    parameters: {{out_dir: x}}\n"
                   f"  - name: b\n    notebook: demo.ipynb\n    inputs: [{tmp_path / 'in'}]\n    outputs: [out]\n    parameters: {{out_dir: out}}\n")
    assert cli.main(["reproduce", "--config", str(cfg)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "a: skipped (missing input does/not/exist)" and lines[1].startswith("b: running (stale (never run here))")
    assert lines[2].startswith("b: done in ") and ran == [("demo.ipynb", tmp_path / "runs" / "b.ipynb")]
    assert (tmp_path / "runs" / "b.params.json").exists()  # the stamp lands beside the executed notebook, not in results/runs
    # a step whose input an earlier step of the same run writes is judged after it, not before
    def make(nb, out, params):
        out.parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / params["device"]).write_text("z")  # a stand-in: the notebook is not run

    monkeypatch.setattr(reproduce, "execute", make)
    cfg.write_text(f"steps:\n  - name: c\n    notebook: demo.ipynb\n    parameters: {{device: mid, out_dir: mid}}\n    inputs: [{tmp_path / 'in'}]\n    outputs: [mid]\n"
                   f"  - name: d\n    notebook: demo.ipynb\n    parameters: {{device: end, out_dir: end}}\n    inputs: [mid]\n    outputs: [end]\n")
    assert cli.main(["reproduce", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "d: done in" in out and (tmp_path / "end").exists() and "note:" not in out
    monkeypatch.setattr(outputs, "git_commit", lambda path: "abc123-dirty")  # uncommitted code: refused, or said before the steps run
    assert cli.main(["reproduce", "--config", str(cfg), "--force"]) == 2
    assert "uncommitted changes outside results/ (abc123-dirty)" in capsys.readouterr().err
    assert cli.main(["reproduce", "--config", str(cfg), "--force", "--allow-dirty"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == ("note: this checkout has uncommitted changes outside results/ (abc123-dirty); "
                                                      "commit results only from a run on a clean commit")
    assert json.loads((tmp_path / "runs" / "d.params.json").read_text())["commit"] == "abc123-dirty"


def test_default_pseudo_dir_only_for_shipped_labels(tmp_path):
    assert default_pseudo_dir("TransCAM", tmp_path) == tmp_path / "pseudo_labels" / "transcam"
    for method in ("CLIMS", "SIPE", "samcam-EfficientNet-Lite0-CAM"):
        with pytest.raises(ValueError, match=f"no {method} labels ship"):
            default_pseudo_dir(method, tmp_path)


@pytest.mark.slow
def test_notebook_02_refuses_a_method_without_its_folder(tmp_path, data_root):
    """The bug it guards against: any method silently scored TransCAM's labels."""
    from papermill.exceptions import PapermillExecutionError

    from samcam.reproduce import execute

    with pytest.raises(PapermillExecutionError, match="no SIPE labels ship"):
        execute("02_enhance_method.ipynb", tmp_path / "02.ipynb", {"method": "SIPE", "limit": 2, "results_dir": str(tmp_path)})
    assert not (tmp_path / "voc" / "SIPE").exists()


def test_git_commit_ignores_the_results_a_run_rewrites(tmp_path):
    import subprocess

    from samcam.outputs import git_commit

    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("a = 1\n")
    (tmp_path / "results" / "table.csv").write_text("1\n")
    subprocess.run([*git, "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_commit(tmp_path) == head
    (tmp_path / "results" / "table.csv").write_text("2\n")  # an earlier step of the same run rewrote a result
    (tmp_path / "results" / "new.csv").write_text("3\n")
    assert git_commit(tmp_path / "results") == head
    (tmp_path / ".gitignore").write_text("/work/\n")
    subprocess.run([*git, "add", ".gitignore"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "y"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "cams.npy").write_text("x")  # an ignored file does not count
    assert git_commit(tmp_path) == head
    (tmp_path / "helper.py").write_text("b = 1\n")  # a new source file not yet added: the code differs from the commit
    assert git_commit(tmp_path) == head + "-dirty"
    (tmp_path / "helper.py").unlink()
    (tmp_path / "code.py").write_text("a = 2\n")  # the code differs from the commit
    assert git_commit(tmp_path) == head + "-dirty"
    assert git_commit(tmp_path / "nowhere") is None  # no such folder


def test_reproduce_refuses_a_data_root_that_does_not_exist(tmp_path, capsys, monkeypatch):
    """With SAMCAM_DATA pointing nowhere every data step would be skipped and the run would seem to
    succeed (the steps without data inputs still running): said before anything runs, exit 2."""
    from samcam import cli, outputs, reproduce

    monkeypatch.setattr(reproduce, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(reproduce, "REPO", tmp_path)  # the checkout: where the steps' outputs x and y land
    monkeypatch.setattr(outputs, "git_commit", lambda path: "abc123")  # whatever state this checkout is in
    monkeypatch.setenv("SAMCAM_DATA", str(tmp_path / "nowhere"))
    ran = []
    monkeypatch.setattr(reproduce, "execute", lambda nb, out, params: ran.append(nb) or (tmp_path / {"data": "x", "plain": "y"}[out.stem]).write_text("o"))
    cfg = tmp_path / "r.yml"
    cfg.write_text("steps:\n  - name: data\n    notebook: demo.ipynb\n    inputs: ['${SAMCAM_DATA}/voc2012']\n    outputs: [x]\n    parameters: {out_dir: x}\n"
                   "  - name: plain\n    notebook: demo.ipynb\n    outputs: [y]\n    parameters: {out_dir: y}\n")
    assert cli.main(["reproduce", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"the data root {tmp_path / 'nowhere'} does not exist (SAMCAM_DATA={tmp_path / 'nowhere'})" in err and ran == []
    assert cli.main(["reproduce", "--config", str(cfg), "--only", "plain"]) == 0 and ran == ["demo.ipynb"]  # a step without data runs
    (tmp_path / "nowhere").mkdir()  # the root exists but lacks the step's input: that step is skipped, the other runs
    ran.clear()
    assert cli.main(["reproduce", "--config", str(cfg), "--force"]) == 0 and ran == ["demo.ipynb"]
    assert "data: skipped (missing input" in capsys.readouterr().out


def test_a_script_step_runs_the_checkouts_script_and_is_stale_when_the_script_changes(tmp_path, monkeypatch):
    """A script step runs samcam's interpreter on a file of the checkout's benchmarks/, from the
    checkout, without writing bytecode; its stamp fingerprints the script and the helpers beside it,
    so an edited script or helper makes the step stale; a run that leaves an output as it was (a
    benchmark that found no baseline and exited 0) is an error and stamps nothing."""
    from samcam import outputs, reproduce

    monkeypatch.setattr(reproduce, "REPO", tmp_path)
    monkeypatch.setattr(reproduce, "SCRIPTS", tmp_path / "benchmarks")
    monkeypatch.setattr(outputs, "git_commit", lambda path: "abc123")
    (tmp_path / "benchmarks").mkdir()
    helper = tmp_path / "benchmarks" / "_common.py"
    helper.write_text("STAMP = 1\n")
    script = tmp_path / "benchmarks" / "b.py"
    script.write_text("import os, pathlib, sys, time\ndef writes(argv):\n    return ['results/b.txt']\nif __name__ == '__main__':\n"
                      "    pathlib.Path('results').mkdir(exist_ok=True)\n"
                      "    pathlib.Path('results/b.txt').write_text(' '.join(sys.argv[1:]) + ' ' + str(pathlib.Path.cwd()) + ' '"
                      " + os.environ['PYTHONDONTWRITEBYTECODE'] + ' ' + str(time.time()))\n")
    (tmp_path / "in.txt").write_text("x")
    cfg = tmp_path / "r.yml"
    cfg.write_text("steps:\n  - name: b\n    script: [benchmarks/b.py, --n, '3']\n    inputs: [in.txt]\n    outputs: [results/b.txt]\n")
    runs = tmp_path / "runs"
    report = reproduce.reproduce(cfg, runs=runs)
    assert report[0][0] == "b" and report[0][1].startswith("ran in ")
    assert (tmp_path / "results" / "b.txt").read_text().startswith(f"--n 3 {tmp_path} 1 ")  # its arguments, from the checkout, no bytecode
    stamp = json.loads((runs / "b.params.json").read_text())
    assert stamp["script"] == ["benchmarks/b.py", "--n", "3"] and stamp["commit"] == "abc123"
    assert set(stamp["fingerprints"]) == {"inputs", "script", "outputs"}
    assert set(stamp["fingerprints"]["script"]) == {"benchmarks/b.py", "benchmarks/_common.py"}
    step = reproduce.load_config(cfg)[0]
    assert step.what == "python benchmarks/b.py"
    assert reproduce.step_state(step, runs, tmp_path) == "current"
    assert reproduce.reproduce(cfg, runs=runs) == [("b", "skipped (current)")]
    helper.write_text("STAMP = 2\n")
    assert reproduce.step_state(step, runs, tmp_path) == "stale (script benchmarks/_common.py changed since the last run)"
    helper.write_text("STAMP = 1\n")
    script.write_text(script.read_text() + "# edited\n")
    assert reproduce.step_state(step, runs, tmp_path) == "stale (script benchmarks/b.py changed since the last run)"
    stamped = (runs / "b.params.json").read_text()
    script.write_text("def writes(argv):\n    return ['results/b.txt']\nprint('SKIPPED: no baseline here. Nothing written.') if __name__ == '__main__' else None\n")
    with pytest.raises(RuntimeError, match=r"^step b: python benchmarks/b.py did not write results/b.txt; nothing is stamped \(an output left from an earlier run is never claimed: remove it to redo the step\)$"):
        reproduce.reproduce(cfg, runs=runs)
    assert (runs / "b.params.json").read_text() == stamped
    script.write_text("def writes(argv):\n    return ['results/b.txt']\nif __name__ == '__main__':\n    raise SystemExit(3)\n")
    with pytest.raises(RuntimeError, match=r"^step b: python benchmarks/b.py exited with status 3$"):
        reproduce.reproduce(cfg, runs=runs)
    script.write_text("raise SystemExit(3)\n")  # on import, too: refused before it runs
    with pytest.raises(ValueError, match=r"script benchmarks/b.py fails as it is imported \(SystemExit: 3\)"):
        reproduce.reproduce(cfg, runs=runs)


def test_a_notebook_step_writing_where_a_default_points_is_refused_before_it_runs(tmp_path):
    """Audit 9's F1: a notebook step writes through the writing parameters it leaves out too. 03 with
    no results_dir writes the committed paper table under results/, and 02 given only results_dir writes
    its labels under its default work_dir: both are refused at load, naming the path and the default."""
    from samcam.reproduce import load_config

    cfg = tmp_path / "r.yml"
    cfg.write_text("steps:\n  - {name: t, notebook: 03_paper_table.ipynb, outputs: [results/a9t]}\n")
    with pytest.raises(ValueError, match=re.escape("step 0 (t): 03_paper_table.ipynb writes results/table_pseudo_label_miou.csv (its default "
                                                   "results_dir), which the step declares neither among its outputs nor its scratch")):
        load_config(cfg)
    cfg.write_text("steps:\n  - {name: t, notebook: 03_paper_table.ipynb, parameters: {results_dir: results/a9t}, outputs: [results/a9t]}\n")
    assert [s.name for s in load_config(cfg)] == ["t"]  # its table, below the folder declared
    enh = ("steps:\n  - {name: e, notebook: 02_enhance_method.ipynb, parameters: {results_dir: results/a9enh, limit: 2%s}, "
           "outputs: [results/a9enh]%s}\n")
    cfg.write_text(enh % ("", ""))
    with pytest.raises(ValueError, match=re.escape("step 0 (e): 02_enhance_method.ipynb writes work/voc/TransCAM (its default work_dir, its default dataset, its default method)")):
        load_config(cfg)
    cfg.write_text(enh % (", method: Other", ", scratch: [work/voc/TransCAM]"))  # the method names the folders: TransCAM's is not Other's
    with pytest.raises(ValueError, match=re.escape("writes work/voc/Other (its default work_dir, its default dataset, its method)")):
        load_config(cfg)
    cfg.write_text(enh % (", method: Other", ", scratch: [work/voc]"))
    assert [s.name for s in load_config(cfg)] == ["e"]
    cfg.write_text(enh % (", work_dir: work/e", ", scratch: [work/e/voc/TransCAM]"))
    assert [s.name for s in load_config(cfg)] == ["e"]
    cfg.write_text(enh % (", work_dir: work/e", ", scratch: [work/e/voc/TransCAM/x]"))  # a folder below what it writes is not all of it
    with pytest.raises(ValueError, match=re.escape("writes work/e/voc/TransCAM (its work_dir, its default dataset, its default method)")):
        load_config(cfg)
    for key, nb in (("work_dir", "02_enhance_method.ipynb"), ("out_dir", "demo.ipynb")):  # review 10: null for a place it writes: no path
        cfg.write_text(f"steps:\n  - {{name: e, notebook: {nb}, parameters: {{{key}: null}}, outputs: [results/x], scratch: [work]}}\n")
        with pytest.raises(ValueError, match=re.escape(f"step 0 (e) parameter {key} is null; {nb} writes there, so it takes a path")):
            load_config(cfg)
    for method in ("a/../b", "a/b", ".hidden"):  # a name inside a written path is a name: it cannot lead elsewhere
        cfg.write_text(enh % (f", method: '{method}'", ", scratch: [work]"))
        with pytest.raises(ValueError, match=re.escape(f"parameter method is {method!r}; 02_enhance_method.ipynb writes into a folder of that name")):
            load_config(cfg)


def test_a_resumed_checkpoint_may_be_an_input_and_an_unwritten_one_needs_no_place(tmp_path):
    """08 reads its affinity checkpoints when they are there and trains them when not: a step may declare
    one among its inputs (the committed claims step does); another writing path may not be an input.
    A checkpoint given as null is not written at all."""
    from samcam.reproduce import load_config

    cfg = tmp_path / "r.yml"
    outs = ("results/c/labels, results/c/table.csv, results/c/per_class_iou.csv, results/c/per_class_errors.csv, results/c/claims.png, "
            "results/c/per_class_iou.png")
    step = ("steps:\n  - {name: c, notebook: 08_claims_affinity.ipynb, parameters: {labels_dir: results/c/labels, results_dir: results/c%s}, "
            "inputs: [work/a.pt%s], outputs: [" + outs + "]%s}\n")
    cfg.write_text(step % (", affinity_checkpoint: work/a.pt", "", ", scratch: [work/claims/affinity_lite2_samseeds.pt]"))
    assert [s.name for s in load_config(cfg)] == ["c"]
    cfg.write_text(step % (", affinity_checkpoint: work/a.pt, affinity_sam_checkpoint: null", "", ""))
    assert [s.name for s in load_config(cfg)] == ["c"]
    cfg.write_text(step % (", affinity_checkpoint: work/a.pt", "", ""))
    with pytest.raises(ValueError, match=re.escape("08_claims_affinity.ipynb writes work/claims/affinity_lite2_samseeds.pt (its default "
                                                   "affinity_sam_checkpoint)")):
        load_config(cfg)
    cfg.write_text(step.replace("labels_dir: results/c/labels", "labels_dir: work/lab").replace("results/c/labels, ", "")
                   % (", affinity_checkpoint: work/a.pt, affinity_sam_checkpoint: null", ", work/lab", ""))
    with pytest.raises(ValueError, match=re.escape("08_claims_affinity.ipynb writes work/lab (its labels_dir)")):
        load_config(cfg)  # labels are no checkpoint it resumes: an input there is not a place to write


def test_notebook_writes_covers_every_notebook_that_writes():
    """NOTEBOOK_WRITES names a path for each writing parameter of each notebook, each path starts with
    one (so WRITING_PARAMETERS, derived from it, is each notebook's writing parameters), and the other
    fields of a path are parameters of the notebook too."""
    import string

    from samcam.reproduce import NOTEBOOK_WRITES, NOTEBOOKS, RESUMED, WRITING_PARAMETERS, notebook_parameters

    assert set(WRITING_PARAMETERS) == set(NOTEBOOK_WRITES) and set(RESUMED) <= set(NOTEBOOK_WRITES)
    for nb, paths in NOTEBOOK_WRITES.items():
        names = notebook_parameters(NOTEBOOKS / nb)
        fields = [[f for _, f, _, _ in string.Formatter().parse(p) if f] for p in paths]
        assert all(f and p.startswith("{" + f[0] + "}") for f, p in zip(fields, paths)), nb
        assert {f for fs in fields for f in fs} <= names, nb
        assert WRITING_PARAMETERS[nb] == {f[0] for f in fields} and RESUMED.get(nb, frozenset()) <= WRITING_PARAMETERS[nb], nb


def test_reproduce_steps_read_the_weights_cache_but_never_fill_it(tmp_path, monkeypatch, capsys):
    """Audit 9's F14: a masks step without --checkpoint fetched into $SAMCAM_HOME, outside the checkout,
    undeclared. While reproduce runs its steps, fetch only finds a cached checkpoint: an absent one is
    refused in one line naming the command that fetches it, and nothing is downloaded."""
    from samcam import outputs, reproduce
    from samcam.sam import weights

    monkeypatch.setenv("SAMCAM_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(weights.NO_FETCH, raising=False)
    monkeypatch.setattr(weights, "_download", lambda *a, **k: (_ for _ in ()).throw(AssertionError("downloaded")))
    seen = []

    def step(nb, out, params):  # a notebook step that needs the SAM weights
        seen.append(os.environ.get(weights.NO_FETCH))
        (tmp_path / "o").mkdir()
        weights.fetch("vit_t")

    monkeypatch.setattr(reproduce, "execute", step)
    monkeypatch.setattr(reproduce, "REPO", tmp_path)
    monkeypatch.setattr(reproduce, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(outputs, "git_commit", lambda path: "abc123")
    cfg = tmp_path / "r.yml"
    cfg.write_text("steps:\n  - {name: m, notebook: demo.ipynb, parameters: {out_dir: o}, outputs: [o]}\n")
    with pytest.raises(FileNotFoundError, match="^" + re.escape(f"{tmp_path / 'cache' / 'mobile_sam.pt'}: the verified vit_t checkpoint is not in "
                                                                "the weights cache, and a reproduce step reads the cache without filling it")):
        reproduce.reproduce(cfg)
    assert seen == ["1"] and weights.NO_FETCH not in os.environ and not (tmp_path / "cache").exists()  # restored after the run
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "mobile_sam.pt").write_bytes(b"not the checkpoint")  # a wrong cached file is not replaced either
    shutil.rmtree(tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="run: samcam weights fetch vit_t$"):
        reproduce.reproduce(cfg)
    assert (tmp_path / "cache" / "mobile_sam.pt").read_bytes() == b"not the checkpoint" and "fetching it again" not in capsys.readouterr().err


def test_a_script_argument_asking_for_help_is_refused_without_printing_it(tmp_path, capsys):
    """Audit 9's R2list: `--help` among a script step's arguments printed the script's usage on stdout
    during `reproduce --list`, then the refusal. The refusal alone is said."""
    from samcam.reproduce import load_config

    cfg = tmp_path / "r.yml"
    cfg.write_text("steps:\n  - {name: x, script: [benchmarks/bench_eval.py, --help], outputs: [results/benchmarks]}\n")
    with pytest.raises(ValueError, match=re.escape("script benchmarks/bench_eval.py refuses its arguments: it exits at once (e.g. on --help)")):
        load_config(cfg)
    assert capsys.readouterr() == ("", "")
