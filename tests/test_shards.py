"""Shards and SLURM arrays: N shards cover any id list exactly once, a failed shard's rerun redoes only
its missing ids, and a finished array leaves the folder one process leaves. The generator is a cheap
fake here (tests/test_mask_runner.py runs the real MobileSAM through ``--shard auto``)."""

import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import examples, mask_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from samcam.pipeline.masks import parse_shard, run_masks, select_ids, slurm_shard
from samcam.sam.masks import MaskSet

IDS = st.lists(st.text("abcdefghij0123456789_", min_size=1, max_size=6), min_size=1, max_size=25, unique=True)


def _slurm(task: int, count: int, low: int, step: int | None = None) -> dict[str, str]:
    env = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": str(count), "SLURM_ARRAY_TASK_MIN": str(low)}
    return env if step is None else {**env, "SLURM_ARRAY_TASK_STEP": str(step)}


@settings(max_examples=examples(300), deadline=None)
@given(ids=IDS, n=st.integers(1, 12), low=st.sampled_from([0, 1, 5]))
def test_array_tasks_partition_any_id_list(ids, n, low):
    index = {i: None for i in ids}
    shards = [parse_shard("auto", _slurm(low + k, n, low)) for k in range(n)]
    assert shards == [(k, n) for k in range(n)]
    parts = [select_ids(index, ids, s) for s in shards]
    assert sorted(sum(parts, [])) == sorted(ids)  # every id once: none lost, none twice
    assert sum(map(len, parts)) == len(ids)


def test_slurm_shard_steps_and_errors():
    assert slurm_shard(_slurm(4, 3, 0, step=2)) == (2, 3)  # --array=0-4:2
    with pytest.raises(ValueError, match=r"--shard auto: SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT, SLURM_ARRAY_TASK_MIN not set"):
        parse_shard("auto", {})
    with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_MIN not set"):
        parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"})
    with pytest.raises(ValueError, match="task 4 is not one of 3 evenly spaced tasks from 1 by 2"):
        slurm_shard(_slurm(4, 3, 1, step=2))
    with pytest.raises(ValueError, match="task 9 is not one of 2"):
        slurm_shard(_slurm(9, 2, 0))
    with pytest.raises(ValueError, match="non-integer"):
        slurm_shard(_slurm(0, 2, 0) | {"SLURM_ARRAY_TASK_COUNT": "two"})
    for step in (0, -2):  # audit 12, F21: a step of 0 was taken as 1
        with pytest.raises(ValueError, match=f"^--shard auto: SLURM_ARRAY_TASK_STEP is {step}; a job array's step is at least 1$"):
            slurm_shard(_slurm(5, 2, 4, step=step))


class _Fake:
    """A generator that writes one mask per image (its bright pixels), counts its calls and fails once
    on ``fail_on``, as a shard killed part-way."""

    device = "cpu"

    def __init__(self, calls: list[str], fail_on: str | None = None) -> None:
        self.calls, self.fail_on = calls, fail_on

    def generate(self, image: np.ndarray) -> MaskSet:
        image_id = f"{int(image[0, 0, 0])}_{int(image[0, 0, 1])}"
        if image_id == self.fail_on:
            self.fail_on = None
            raise RuntimeError("shard killed")
        self.calls.append(image_id)
        return MaskSet((image.mean(axis=2) > 100)[None], predicted_iou=np.array([0.9]), stability_score=np.array([0.95]))


@pytest.fixture()
def fake_sam(monkeypatch):
    import samcam.sam.model as model

    state = {"calls": [], "fail_on": None}
    monkeypatch.setattr(model, "checkpoint_info", lambda t, c: {"model_type": t, "checkpoint": "fake.pt", "checkpoint_sha256": "0" * 64})
    monkeypatch.setattr(model, "build_generator", lambda *a, **k: _Fake(state["calls"], state.pop("fail_on", None)))
    return state


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(n_images=st.integers(1, 9), n=st.integers(1, 5), failed=st.integers(0, 4), fail_at=st.integers(0, 3), low=st.sampled_from([0, 1]))
def test_finished_array_with_a_failed_and_rerun_shard_equals_one_process(fake_sam, n_images, n, failed, fail_at, low):
    failed %= n
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        ids = []
        rng = np.random.default_rng(n_images)
        for k in range(n_images):
            image = rng.integers(0, 256, (16, 17, 3), dtype=np.uint8)
            image[0, 0, :2] = k, 7  # the fake's id of the image, in its first pixel
            ids.append(f"{k}_7")
            Image.fromarray(image).save(tmp / "images" / f"{k}_7.png")
        fake_sam["calls"].clear()
        run_masks(tmp / "images", tmp / "one", progress=False)
        assert sorted(fake_sam["calls"]) == sorted(ids)

        fake_sam["calls"].clear()
        for k in range(n):  # the array's tasks, one after another; task `failed` dies part-way
            shard = parse_shard("auto", _slurm(low + k, n, low))
            mine = select_ids({i: None for i in ids}, sorted(ids), shard)
            if k == failed and fail_at < len(mine):
                fake_sam["fail_on"] = mine[fail_at]
                with pytest.raises(RuntimeError, match="shard killed"):
                    run_masks(tmp / "images", tmp / "array", shard=shard, progress=False)
                assert len(list((tmp / "array").glob(".*.tmp"))) == 0
                s = run_masks(tmp / "images", tmp / "array", shard=shard, progress=False)  # the rerun
                assert (s.done, s.skipped) == (len(mine) - fail_at, fail_at)
            else:
                run_masks(tmp / "images", tmp / "array", shard=shard, progress=False)
        assert sorted(fake_sam["calls"]) == sorted(ids)  # every id generated exactly once, the rerun included
        assert mask_files(tmp / "array") == mask_files(tmp / "one")
        assert sorted(p.name for p in (tmp / "array").iterdir()) == sorted(p.name for p in (tmp / "one").iterdir())


def test_shard_auto_outside_an_array_is_one_line(tmp_path, capsys, monkeypatch):
    from samcam import cli

    for v in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"):
        monkeypatch.delenv(v, raising=False)
    assert cli.main(["masks", "--images", str(tmp_path), "--out", str(tmp_path / "o"), "--shard", "auto"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("samcam masks: error: --shard auto: SLURM_ARRAY_TASK_ID") and "--shard I/N" in err[0]
    assert cli.main(["masks", "--images", str(tmp_path), "--out", str(tmp_path / "o"), "--devices", "cpu,gpu"]) == 2
    assert capsys.readouterr().err.strip() == "samcam masks: error: --devices cpu,gpu: 'gpu' is not a device (use e.g. cuda:0,cuda:1 or cpu,cpu)"
