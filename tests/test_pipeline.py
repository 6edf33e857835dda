"""Pipeline steps checked against independent computations: enhance's before/after scores on real
images, parallel merges, the threshold sweep's GT-tuned flag, reproduce's step states, and the
default-folder rule that notebook 02 once got wrong."""

import json
import os
import time
from pathlib import Path

import numpy as np
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
    (tmp_path / "in").write_text("x")
    step = Step("s", "demo.ipynb", {"a": 1}, ["in"], ["out.txt"])
    runs = tmp_path / "runs"
    runs.mkdir()
    assert step_state(Step("s", "demo.ipynb", {}, ["absent"], ["out.txt"]), runs, tmp_path) == "missing input absent"
    assert step_state(step, runs, tmp_path) == "stale (never run here)"  # no parameter stamp, no output
    (runs / "s.params.json").write_text(json.dumps({"notebook": "demo.ipynb", "parameters": {"a": 1}}))
    assert step_state(step, runs, tmp_path) == "stale (output out.txt missing)"
    (tmp_path / "out.txt").write_text("y")
    assert step_state(step, runs, tmp_path) == "current"
    assert step_state(Step("s", "demo.ipynb", {"a": 2}, ["in"], ["out.txt"]), runs, tmp_path) == "stale (notebook or parameters changed)"
    later = time.time() + 100
    os.utime(tmp_path / "in", (later, later))
    assert step_state(step, runs, tmp_path) == "stale (an input is newer than the outputs)"


def test_reproduce_plans_reports_and_refuses_when_nothing_can_run(tmp_path, capsys, monkeypatch):
    from samcam import cli, reproduce

    monkeypatch.setattr(reproduce, "RUNS", tmp_path / "runs")
    cfg = tmp_path / "r.yml"
    cfg.write_text("steps:\n  - name: a\n    notebook: demo.ipynb\n    inputs: [does/not/exist]\n    outputs: [x]\n")
    assert cli.main(["reproduce", "--config", str(cfg), "--list"]) == 0
    assert capsys.readouterr().out == "a: skip [missing input does/not/exist] demo.ipynb -> x\n"
    assert cli.main(["reproduce", "--config", str(cfg)]) == 2  # every step lacks its inputs: nothing reproduced
    assert "every selected step lacks an input" in capsys.readouterr().err
    ran = []
    monkeypatch.setattr(reproduce, "execute", lambda nb, out, params: ran.append((nb, out)) or out.parent.mkdir(parents=True, exist_ok=True))
    (tmp_path / "in").write_text("x")
    cfg.write_text(f"steps:\n  - name: a\n    notebook: demo.ipynb\n    inputs: [does/not/exist]\n    outputs: [x]\n"
                   f"  - name: b\n    notebook: demo.ipynb\n    inputs: [{tmp_path / 'in'}]\n    outputs: [{tmp_path / 'out'}]\n")
    assert cli.main(["reproduce", "--config", str(cfg)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "a: skipped (missing input does/not/exist)" and lines[1].startswith("b: running (stale (never run here))")
    assert lines[2].startswith("b: done in ") and ran == [("demo.ipynb", tmp_path / "runs" / "b.ipynb")]
    assert (tmp_path / "runs" / "b.params.json").exists()  # the stamp lands beside the executed notebook, not in results/runs
    # a step whose input an earlier step of the same run writes is judged after it, not before
    def make(nb, out, params):
        out.parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / params["writes"]).write_text("z")

    monkeypatch.setattr(reproduce, "execute", make)
    cfg.write_text(f"steps:\n  - name: c\n    notebook: demo.ipynb\n    parameters: {{writes: mid}}\n    inputs: [{tmp_path / 'in'}]\n    outputs: [{tmp_path / 'mid'}]\n"
                   f"  - name: d\n    notebook: demo.ipynb\n    parameters: {{writes: end}}\n    inputs: [{tmp_path / 'mid'}]\n    outputs: [{tmp_path / 'end'}]\n")
    assert cli.main(["reproduce", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "d: done in" in out and (tmp_path / "end").exists()


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

    from samcam.pipeline.enhance import git_commit

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
    assert git_commit(tmp_path / "results") == head
    (tmp_path / "code.py").write_text("a = 2\n")  # the code differs from the commit
    assert git_commit(tmp_path) == head + "-dirty"
    assert git_commit(tmp_path / "nowhere") is None  # no such folder
