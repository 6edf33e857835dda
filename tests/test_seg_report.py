"""samcam.seg.report: the segmentation table, its figures and the training benchmark, from run folders
made here (``eval.json`` + a checkpoint holding only what a finished run records), each cell
checked against numbers computed in the test."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samcam.data.spaces import VOC
from samcam.seg.recipe import Recipe
from samcam.seg.report import benchmark, benchmark_markdown, collect, gaps_markdown, load_run, paired_gaps, run_record, summary, table_markdown, write_record, write_table
from samcam.training import save_checkpoint

CLASSES = list(VOC.class_names)
RECIPE = Recipe(crop=64, batch_size=2, epochs=3)

# row -> seed -> (val mIoU as a fraction, epoch seconds); per-class IoU is derived from (row, seed) below
RUNS = {
    "gt": {0: (0.40, [10.0, 12.0, 14.0]), 1: (0.44, [11.0, 11.0, 11.0]), 2: (0.42, [9.0, 10.0, 20.0])},
    "cam": {0: (0.30, [8.0, 8.0, 8.0]), 2: (0.33, [7.0, 9.0, 8.0])},
}


def _iou(row: str, seed: int, miou: float | None = None) -> dict[str, float | None]:
    """Per-class IoU of a run whose mIoU (the mean of the classes that occur) is ``miou``, by default
    the run's in RUNS: class k gets miou + (k − 10)·d, with d = min(miou, 1 − miou)·(1 + seed mod 3)/31
    in row gt and −d in row cam, so every IoU lies in [0, 1] and their mean is miou; class 10, 'cow',
    is absent (null) from every cam run, which leaves the mean as it is."""
    miou = RUNS[row][seed][0] if miou is None else miou
    d = min(miou, 1 - miou) * (1 + seed % 3) / 31 * (1 if row == "gt" else -1)
    assert CLASSES[10] == "cow"
    return {c: (None if (row == "cam" and c == "cow") else miou + (k - 10) * d) for k, c in enumerate(CLASSES)}


def _make_runs(root: Path, n_val: int = 4) -> Path:
    for row, seeds in RUNS.items():
        for seed, (miou, secs) in seeds.items():
            d = root / f"{row}_s{seed}"
            d.mkdir(parents=True)
            ev = {"miou": miou, "n_images": n_val, "seconds": 2.0 * n_val * (seed + 1), "iou": _iou(row, seed)}
            (d / "eval.json").write_text(json.dumps(ev))
            history = {"losses": [1.0] * len(secs), "epoch_seconds": secs, "peak_rss_mib": 1000.0 + 10 * seed,
                       "threads": 2, "device": "cpu", "load_average": [1.0 + seed, 2.0 + seed, 3.0 + seed]}  # fmt: skip
            save_checkpoint(d / "last.pt", {"format": "samcam-seg/1", "recipe": {**RECIPE.to_dict(), "seed": seed}, "n_classes": 21, "dataset": "voc",
                                            "labels_dir": "labels", "labels_fingerprint": "0" * 64, "n_train": 6, "step": 9,
                                            "total_steps": 9, "complete": True, "history": history, "model": {}})  # fmt: skip
    (root / "gt_s7").mkdir()  # unfinished: no eval.json
    (root / "notes").mkdir()  # not a run
    return root


@pytest.fixture
def runs(tmp_path):
    return _make_runs(tmp_path / "runs")


def test_collect_reads_every_finished_run(runs):
    df = collect(runs)
    assert list(zip(df["row"], df["seed"])) == [("cam", 0), ("cam", 2), ("gt", 0), ("gt", 1), ("gt", 2)]  # folders in name order
    for r in df.itertuples():
        miou, secs = RUNS[r.row][r.seed]
        assert r.miou == pytest.approx(100 * miou)
        assert r.s_per_epoch == pytest.approx(np.mean(secs)) and r.epochs == 3 and r.n_val == 4
        assert r.peak_rss_mib == 1000.0 + 10 * r.seed and r.load_average == pytest.approx(2.0 + r.seed)
        assert r.eval_seconds == 8.0 * (r.seed + 1) and r.threads == 2 and r.device == "cpu"
        assert Path(r.run).name == f"{r.row}_s{r.seed}"
        for c, v in _iou(r.row, r.seed).items():
            got = getattr(r, f"iou_{c}")
            assert np.isnan(got) if v is None else got == pytest.approx(100 * v), c


def test_collect_keeps_the_rows_asked_for_in_their_order(runs, tmp_path):
    df = collect(runs, rows=["cam", "gt"])
    assert list(df["row"]) == ["cam", "cam", "gt", "gt", "gt"] and list(df["seed"]) == [0, 2, 0, 1, 2]
    assert list(collect(runs, rows=["cam"])["seed"]) == [0, 2]
    with pytest.raises(FileNotFoundError, match="no finished runs"):
        collect(runs, rows=["none"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        collect(tmp_path / "empty")


def test_a_run_with_an_undefined_miou_reads_as_nan(runs):
    """A run that scored no pixel of any class (every IoU null) has no mIoU: NaN in the table. A
    record whose mIoU is not the mean of its per-class IoUs contradicts itself and is refused."""
    ev = json.loads((runs / "cam_s0" / "eval.json").read_text())
    (runs / "cam_s0" / "eval.json").write_text(json.dumps({**ev, "miou": None, "iou": dict.fromkeys(ev["iou"])}))
    df = collect(runs)
    assert np.isnan(df.loc[(df["row"] == "cam") & (df["seed"] == 0), "miou"]).all()
    assert df.loc[(df["row"] == "cam") & (df["seed"] == 0), [f"iou_{c}" for c in CLASSES]].isna().all(axis=None)
    mean = np.mean([v for v in ev["iou"].values() if v is not None])
    for miou, iou in [(None, ev["iou"]), (0.9, {c: 0.0 if v is not None else None for c, v in ev["iou"].items()}),
                      (mean + 1e-6, ev["iou"]), (0.5, dict.fromkeys(ev["iou"]))]:  # fmt: skip
        (runs / "cam_s0" / "eval.json").write_text(json.dumps({**ev, "miou": miou, "iou": iou}))
        with pytest.raises(ValueError, match=r"cam_s0: eval\.miou is .*, but the mean of its per-class IoUs is "):
            collect(runs)
    (runs / "cam_s0" / "eval.json").write_text(json.dumps({**ev, "miou": mean + 1e-12}))  # the sum in another order
    assert collect(runs).loc[lambda d: (d["row"] == "cam") & (d["seed"] == 0), "miou"].tolist() == pytest.approx([100 * mean])


def test_summary_by_hand(runs):
    s = summary(collect(runs)).set_index("row")
    assert list(s.columns) == ["seed 0", "seed 1", "seed 2", "mean", "spread", "seeds"]
    assert s.loc["gt", "mean"] == pytest.approx(42.0) and s.loc["gt", "spread"] == pytest.approx(2.0) and s.loc["gt", "seeds"] == 3
    assert s.loc["cam", "mean"] == pytest.approx(31.5) and s.loc["cam", "spread"] == pytest.approx(1.5) and s.loc["cam", "seeds"] == 2
    assert np.isnan(s.loc["cam", "seed 1"]) and s.loc["cam", "seed 2"] == pytest.approx(33.0)


def test_table_markdown_cell_by_cell(runs):
    md = table_markdown(summary(collect(runs, ["gt", "cam"])), {"gt": "ground truth"}, digits=1)
    lines = md.splitlines()
    assert lines[0] == "| labels the network was trained on | val mIoU, seed 0 | val mIoU, seed 1 | val mIoU, seed 2 | mean ± spread |"
    assert lines[1] == "|---|---|---|---|---|"
    assert lines[2] == "| ground truth | 40.0 | 44.0 | 42.0 | 42.0 ± 2.0 |"
    assert lines[3] == "| cam | 30.0 | — | 33.0 | 31.5 ± 1.5 |"
    assert md.endswith("\n") and len(lines) == 4
    assert "| gt | 40.00 | 44.00 | 42.00 | 42.00 ± 2.00 |" in table_markdown(summary(collect(runs)))
    (runs / "cam_s0" / "eval.json").unlink()  # one seed left: a spread of 0 would claim a precision never measured
    assert table_markdown(summary(collect(runs, ["cam"]))).splitlines()[2] == "| cam | 33.00 | 33.00 (one seed: no spread) |"


def test_benchmark_by_hand(runs):
    b = benchmark(collect(runs), "samcam train-seg ...")
    per_epoch = [np.mean(s) for seeds in RUNS.values() for _, s in seeds.values()]
    assert b["s_per_epoch_median"] == round(float(np.median(per_epoch)), 1)
    assert b["s_per_epoch_min"] == round(min(per_epoch), 1) and b["s_per_epoch_max"] == round(max(per_epoch), 1)
    assert b["peak_rss_mib_max"] == 1020 and b["n_train"] == 6 and b["steps_per_epoch"] == 3  # 9 steps over 3 epochs
    assert b["recipe"] == RECIPE.to_dict() and b["device"] == "cpu" and b["torch_threads"] == 2
    assert b["eval_s_per_image_median"] == 4.0  # seeds 0, 2, 0, 1, 2 -> 2, 6, 2, 4, 6 s per image
    assert b["command"] == "samcam train-seg ..." and {"cpu", "cores"} <= set(b["machine"])
    first = b["runs"][0]
    here = "this machine (a run folder)"
    assert first == {"run": "cam_s0", "s_per_epoch": 8.0, "epochs": 3, "peak_rss_mib": 1000, "eval_s_per_image": 2.0, "load_average": 2.0, "cpu": here, "device": "cpu"}
    assert b["runs"][3] == {"run": "gt_s1", "s_per_epoch": 11.0, "epochs": 3, "peak_rss_mib": 1010, "eval_s_per_image": 4.0, "load_average": 3.0, "cpu": here, "device": "cpu"}
    assert b["machines"] == [here]
    md = benchmark_markdown(b)
    assert f"**{b['s_per_epoch_median']} s per epoch** (median over 5 runs;" in md
    assert "(median over 1 run;" in benchmark_markdown({**b, "runs": b["runs"][:1]})
    assert f"| gt_s0 | 12.0 | 3 | 1000 | 2.0 | 2.0 | {here}, cpu |" in md and f"| cam_s2 | 8.0 | 3 | 1020 | 6.0 | 4.0 | {here}, cpu |" in md and "Command (one run): `samcam train-seg ...`" in md
    assert "crop 64, batch 2, 6 train images =\n3 steps per epoch, 3 epochs" in md


def test_write_table_writes_the_table_the_gaps_and_the_figure(runs, tmp_path):
    out, bench = tmp_path / "out", tmp_path / "bench"
    names = {"gt": "ground truth", "cam": "CAM"}
    res = write_table(runs, out, bench, ["gt", "cam"], names, "gt", "cmd")
    import pandas as pd

    table = pd.read_csv(out / "table.csv")
    assert list(table["labels"]) == ["ground truth"] * 3 + ["CAM"] * 2
    assert table["miou_mean_over_seeds"].tolist() == pytest.approx([42.0] * 3 + [31.5] * 2)
    assert table["miou_spread_over_seeds"].tolist() == pytest.approx([2.0] * 3 + [1.5] * 2)
    assert "run" not in table.columns and "device" not in table.columns
    assert (out / "table.md").read_text() == table_markdown(res["summary"], names)
    # cam − gt at the common seeds 0 and 2: −10 and −9; mean −9.5, sd √0.5, t = −9.5 / (√0.5 / √2) = −19 on 1 degree
    # of freedom, where Student's t is Cauchy: p = 1 − (2/π)·atan(19)
    gaps = pd.read_csv(out / "gaps.csv")
    assert gaps.to_dict("records") == [{"row": "cam", "reference": "gt", "seeds": 2, "mean_gap": -9.5, "sd_gap": pytest.approx(0.5 ** 0.5, abs=1e-4),
                                        "t": pytest.approx(-19.0, abs=1e-4), "p": pytest.approx(1 - 2 / np.pi * np.arctan(19), abs=1e-4), "real": True}]  # fmt: skip
    assert (out / "gaps.md").read_text() == gaps_markdown(res["gaps"], names)
    assert "| CAM | 2 | -9.50 | 0.71 | -19.00 | 0.033 | yes |" in (out / "gaps.md").read_text()
    assert "mean gap to ground truth" in (out / "gaps.md").read_text()
    assert (out / "per_class.png").stat().st_size > 0 and not (out / "gallery.png").exists()
    assert json.loads((bench / "seg_train_cpu.json").read_text())["command"] == "cmd"
    assert (bench / "seg_train_cpu.md").read_text().startswith("# Segmentation training cost on CPU")
    with pytest.raises(ValueError, match=re.escape("the reference row 'transcam' is not one of the rows ['gt', 'cam']")):
        write_table(runs, tmp_path / "out2", bench, ["gt", "cam"], names, "transcam", "cmd")
    res = write_table(runs, tmp_path / "out3", bench, ["gt", "cam", "transcam"], names, "transcam", "cmd")  # a table in progress
    assert len(res["gaps"]) == 0 and (tmp_path / "out3" / "gaps.csv").read_text() == "row,reference,seeds,mean_gap,sd_gap,t,p,real\n"
    assert (tmp_path / "out3" / "gaps.md").read_text() == "No finished run of the reference row transcam yet: no gap is tested.\n"
    assert (tmp_path / "out3" / "table.md").read_text() == (out / "table.md").read_text()


def test_gaps_markdown_says_what_one_seed_cannot_test():
    import pandas as pd

    gaps = pd.DataFrame([{"row": "a", "reference": "r", "seeds": 1, "mean_gap": 1.234, "sd_gap": np.nan, "t": np.nan, "p": np.nan, "real": False},
                         {"row": "b", "reference": "r", "seeds": 3, "mean_gap": -0.5, "sd_gap": 0.25, "t": -3.4641, "p": 0.0742, "real": False}])  # fmt: skip
    assert gaps_markdown(gaps, {"r": "Ref", "b": "B"}).splitlines() == [
        "| labels | seeds paired | mean gap to Ref | sd over seeds | t | p | real (p < 0.05) |", "|---|---|---|---|---|---|---|",
        "| a | 1 | +1.23 | — | — | — | untested (fewer than 2 seeds) |", "| B | 3 | -0.50 | 0.25 | -3.46 | 0.074 | no |"]


def test_a_record_holds_what_the_table_reads_and_reads_back_as_its_run(runs, tmp_path):
    """write_record keeps the run without weights: the table from records equals the table from run
    folders; the record adds the commit and the machine; a bad record is named."""
    from samcam.outputs import REPO, git_commit

    records = tmp_path / "records"
    for d in sorted(runs.glob("*_s[0-9]")):
        if (d / "eval.json").exists():
            rec = write_record(d, records / f"{d.name}.json")
            assert rec["commit"] == git_commit(REPO) and {"cpu", "cores"} <= set(rec["machine"])
    rec = json.loads((records / "gt_s1.json").read_text())
    assert rec["recipe"] == {**RECIPE.to_dict(), "seed": 1} and rec["step"] == rec["total_steps"] == 9 and rec["n_train"] == 6
    assert rec["eval"] == {"miou": 0.44, "n_images": 4, "seconds": 16.0, "iou": _iou("gt", 1)}
    assert rec["history"]["epoch_seconds"] == [11.0, 11.0, 11.0] and rec["labels_fingerprint"] == "0" * 64
    assert "model" not in rec and "labels_dir" not in json.dumps(rec)
    assert load_run(records / "gt_s1.json") == rec and load_run(runs / "gt_s1") == run_record(runs / "gt_s1")
    by_folder, by_record = collect(runs), collect(records)
    assert by_folder.drop(columns=["run", "cpu"]).equals(by_record.drop(columns=["run", "cpu"]))
    assert set(by_record["cpu"]) == {rec["machine"]["cpu"]} and set(by_folder["cpu"]) == {"this machine (a run folder)"}
    assert by_record["run"].tolist()[0] == str(records / "cam_s0.json")
    for text in ("{", "[" * 100000 + "]" * 100000):  # broken, or nested past the decoder's recursion limit
        (records / "cam_s5.json").write_text(text)
        with pytest.raises(ValueError, match=re.escape(f"{records / 'cam_s5.json'}: not a JSON run record")):
            collect(records)
    for bad, why in (({"format": "x"}, "is not a samcam-seg-run/1 record"), ([rec], "is not a samcam-seg-run/1 record"),
                     ({k: v for k, v in rec.items() if k != "history"}, "lacks history"),
                     ({**rec, "step": 6}, "records step 6 of 9, scored at step None; not a finished run")):  # fmt: skip
        (records / "cam_s5.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=re.escape(f"{records / 'cam_s5.json'}: {why}")):
            collect(records)
    (records / "cam_s5.json").unlink()
    (records / "gt_s1").mkdir()
    (records / "gt_s1" / "eval.json").write_text("{}")
    with pytest.raises(ValueError, match=r"gt_s1 is both gt_s1 and gt_s1\.json; keep one"):
        collect(records)


def torch_load(path):
    import torch

    return torch.load(path, weights_only=True)


def test_search_table_cell_by_cell(tmp_path):
    """A recipe search's table: each run's recipe fields, steps, cost and score as its files hold them."""
    import pandas as pd

    from samcam.seg.report import SEARCH_FIELDS, search_markdown, search_table, write_search

    recipes = {"long": Recipe(crop=96, epochs=2, lr=0.01, output_stride=16, freeze_early=False, backbone="lite2", seed=1),
               "base": Recipe(crop=64, batch_size=4, epochs=3, seed=1)}  # fmt: skip
    secs = {"long": [30.0, 50.0], "base": [10.0, 11.0, 15.0]}
    runs = tmp_path / "runs"
    for name, r in recipes.items():
        d = runs / f"{name}_s1"
        d.mkdir(parents=True)
        flip = name == "long"
        ev = {"miou": 0.5123 if flip else 0.25, "n_images": 3, "seconds": 1.0, "scales": [0.75, 1.0] if flip else [1.0], "flip": flip,
              "iou": _iou("gt", 1, 0.5123 if flip else 0.25)}  # fmt: skip
        (d / "eval.json").write_text(json.dumps(ev))
        history = {"losses": [1.0] * len(secs[name]), "epoch_seconds": secs[name], "threads": 2, "device": "cpu", "peak_rss_mib": 10.0, "load_average": []}
        save_checkpoint(d / "last.pt", {"format": "samcam-seg/1", "recipe": r.to_dict(), "n_classes": 21, "dataset": "voc", "labels_dir": "l",
                                        "labels_fingerprint": "0" * 64, "n_train": 4 * r.batch_size, "step": 4 * len(secs[name]), "total_steps": 4 * len(secs[name]),
                                        "complete": True, "history": history, "model": {}})  # fmt: skip
    ck = torch_load(runs / "base_s1" / "last.pt")
    del ck["recipe"]["output_stride"]  # a checkpoint made before the field existed: its default
    save_checkpoint(runs / "base_s1" / "last.pt", ck)
    t = search_table(collect(runs, ["long", "base"]))
    assert t["output_stride"].tolist() == [16, 32]
    assert t["config"].tolist() == ["long", "base"] and t["seed"].tolist() == [1, 1]
    for k, name in enumerate(["long", "base"]):
        row = t.iloc[k]
        assert all(row[f] == getattr(recipes[name], f) for f in SEARCH_FIELDS), name
        assert row["steps"] == 4 * len(secs[name]) and row["s_per_epoch"] == pytest.approx(np.mean(secs[name]))
        assert row["train_minutes"] == pytest.approx(sum(secs[name]) / 60) and (row["device"], row["threads"]) == ("cpu", 2)
    assert t["eval"].tolist() == ["0.75,1.0 + flip", "1.0"] and t["val_miou"].tolist() == pytest.approx([51.23, 25.0])
    assert search_markdown(t).splitlines()[3].endswith(" | 1.0 | 25.00 |")  # two decimals, as every mIoU here
    assert list(t.columns) == ["config", "seed", *SEARCH_FIELDS, "steps", "s_per_epoch", "train_minutes", "device", "threads", "eval", "val_miou"]
    md = search_markdown(t).splitlines()
    assert md[0] == "| " + " | ".join(t.columns) + " |" and len(md) == 4
    assert md[2] == "| long | 1 | lite2 | 96 | 0.5 | 1.5 | 2 | 8 | adamw | 0.01 | 5 | 0.01 | False | 16 | 128 | 8 | 40 | 1.3 | cpu | 2 | 0.75,1.0 + flip | 51.23 |"
    base = json.loads((runs / "base_s1" / "eval.json").read_text())  # a search ranks runs evaluated alike
    (runs / "base_s1" / "eval.json").write_text(json.dumps({**base, "scales": [0.75, 1.0], "flip": True}))
    written = write_search(runs, tmp_path / "out")
    assert written["config"].tolist() == ["base", "long"]  # every run, in folder order
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out" / "table.csv"), written, check_dtype=False)
    assert (tmp_path / "out" / "table.md").read_text() == search_markdown(written)


def test_seg_search_command(runs, tmp_path, capsys):
    from samcam.cli import main

    assert main(["seg-search", "--runs", str(runs), "--out", str(tmp_path / "t"), "--configs", "gt"]) == 0
    assert capsys.readouterr().out == f"3 runs; best gt, val mIoU 44.00 -> {tmp_path / 't'}\n"  # gt_s1: 0.44
    assert (tmp_path / "t" / "table.csv").read_text().count("\n") == 4
    assert main(["seg-search", "--runs", str(runs), "--out", str(runs / "t")]) == 2  # never into the runs it reads
    assert f"output {runs / 't'}" in capsys.readouterr().err
    for mine in ("notes.txt", "my_table.csv", "old_table.md"):  # a folder holding what the table does not write is not the table's
        (tmp_path / "t" / mine).write_text("mine")
        assert main(["seg-search", "--runs", str(runs), "--out", str(tmp_path / "t")]) == 2
        assert f"{tmp_path / 't'}: holds files seg-search did not write ({mine})" in capsys.readouterr().err
        assert (tmp_path / "t" / "table.csv").read_text().count("\n") == 4 and (tmp_path / "t" / mine).read_text() == "mine"
        (tmp_path / "t" / mine).unlink()
    for k in range(5):  # the message names three of them, sorted
        (tmp_path / "t" / f"mine{k}.txt").write_text("mine")
    assert main(["seg-search", "--runs", str(runs), "--out", str(tmp_path / "t")]) == 2
    assert f"{tmp_path / 't'}: holds files seg-search did not write (mine0.txt, mine1.txt, mine2.txt); choose" in capsys.readouterr().err
    for k in range(5):
        (tmp_path / "t" / f"mine{k}.txt").unlink()
    (tmp_path / "file").write_text("mine")
    assert main(["seg-search", "--runs", str(runs), "--out", str(tmp_path / "file")]) == 2
    assert f"output {tmp_path / 'file'}: exists and is not a folder" in capsys.readouterr().err
    assert main(["seg-search", "--runs", str(runs), "--out", str(tmp_path / "t")]) == 0  # its own table: rewritten
    assert (tmp_path / "t" / "table.csv").read_text().count("\n") == 6
    capsys.readouterr()
    assert main(["seg-search", "--runs", str(runs), "--out", str(tmp_path / "u"), "--configs", "none"]) == 2
    assert "no finished run of configuration 'none'" in capsys.readouterr().err
    for d in ("cam_s0", "cam_s2"):  # runs that scored no pixel: no best to name
        ev = json.loads((runs / d / "eval.json").read_text())
        (runs / d / "eval.json").write_text(json.dumps({**ev, "miou": None, "iou": dict.fromkeys(ev["iou"])}))
    assert main(["seg-search", "--runs", str(runs), "--out", str(tmp_path / "v"), "--configs", "cam"]) == 0
    assert capsys.readouterr().out == f"2 runs -> {tmp_path / 'v'}\n"


def test_collect_fills_what_a_record_lacks_with_nan_and_skips_other_folders(runs):
    (runs / "a_notes").mkdir()  # sorted before every run: skipped, the listing goes on
    (runs / "._gt_s0.json").write_bytes(b"\x00\x05\x16\x07")  # a macOS AppleDouble file: hidden, no run
    ck_path = runs / "gt_s1" / "last.pt"
    ck = torch_load(ck_path)
    del ck["history"]["peak_rss_mib"]  # what every training records is required
    save_checkpoint(ck_path, ck)
    with pytest.raises(ValueError, match=re.escape(f"{runs / 'gt_s1'}: history.peak_rss_mib is None")):
        collect(runs)
    ck["history"]["peak_rss_mib"] = 5.0
    save_checkpoint(ck_path, ck)
    ev = json.loads((runs / "gt_s1" / "eval.json").read_text())
    del ev["seconds"]
    (runs / "gt_s1" / "eval.json").write_text(json.dumps(ev))
    df = collect(runs, ["gt", "cam", "absent"])
    assert len(df) == 5 and list(df.index) == list(range(5)) and "index" not in df.columns
    assert df["row"].cat.ordered and list(df["row"].cat.categories) == ["gt", "cam", "absent"]
    r = df[(df["row"] == "gt") & (df["seed"] == 1)].iloc[0]
    assert np.isnan(r["eval_seconds"]) and isinstance(r["eval_seconds"], float)  # an evaluation's time is optional
    s = summary(df)  # a row asked for without a run gets no line
    assert list(s["row"]) == ["gt", "cam"]


def test_paired_gaps_with_the_reference_first_and_two_common_seeds(runs):
    df = collect(runs, ["gt", "cam", "absent"])
    g = paired_gaps(df, "gt").set_index("row")
    assert list(g.index) == ["cam"] and list(g.columns) == ["reference", "seeds", "mean_gap", "sd_gap", "t", "p", "real"]
    d = np.array([30.0 - 40.0, 33.0 - 42.0])  # seeds 0 and 2
    assert g.loc["cam", "reference"] == "gt" and g.loc["cam", "seeds"] == 2
    assert g.loc["cam", "mean_gap"] == pytest.approx(d.mean()) and g.loc["cam", "sd_gap"] == pytest.approx(d.std(ddof=1))
    t = d.mean() / (d.std(ddof=1) / np.sqrt(2))
    assert g.loc["cam", "t"] == pytest.approx(t)
    from scipy import stats

    assert g.loc["cam", "p"] == pytest.approx(2 * stats.t.sf(abs(t), 1)) and g.loc["cam", "real"] == (g.loc["cam", "p"] < 0.05)


def test_benchmark_rounds_as_its_table_says_and_reads_the_first_run(runs):
    for d in runs.glob("*_s*"):
        if (d / "last.pt").exists():
            ck = torch_load(d / "last.pt")
            ck["history"]["epoch_seconds"] = [s + 0.04321 for s in ck["history"]["epoch_seconds"]]
            ck["history"]["load_average"] = [a + 0.00432 for a in ck["history"]["load_average"]]
            ck["history"]["threads"] = 2 if d.name == "cam_s0" else 5
            ck["history"]["device"] = "cpu" if d.name == "cam_s0" else "cuda:0"
            ck["n_train"] = 6 if d.name == "cam_s0" else 7  # 7 // 2 * 3 epochs: the same 9 steps
            save_checkpoint(d / "last.pt", ck)
        if (d / "eval.json").exists():
            ev = json.loads((d / "eval.json").read_text())
            (d / "eval.json").write_text(json.dumps({**ev, "seconds": ev["seconds"] + 0.0123}))
    df = collect(runs)
    b = benchmark(df, "c")
    assert (b["device"], b["torch_threads"], b["n_train"]) == ("cpu", 2, 6)  # cam_s0, the first run
    per_epoch = [np.mean(s) + 0.04321 for seeds in RUNS.values() for _, s in seeds.values()]
    assert b["s_per_epoch_median"] == round(float(np.median(per_epoch)), 1)
    assert b["s_per_epoch_min"] == round(min(per_epoch), 1) and b["s_per_epoch_max"] == round(max(per_epoch), 1)
    per_image = (df["eval_seconds"] / df["n_val"]).to_numpy()
    assert b["eval_s_per_image_median"] == round(float(np.median(per_image)), 3) != round(float(np.median(per_image)), 4)
    here = "this machine (a run folder)"
    assert b["runs"][0] == {"run": "cam_s0", "s_per_epoch": 8.0, "epochs": 3, "peak_rss_mib": 1000, "eval_s_per_image": 2.003, "load_average": 2.0,
                            "cpu": here, "device": "cpu"}  # fmt: skip
    md = benchmark_markdown(b).splitlines()
    rows = [ln for ln in md if ln.startswith("| cam_s") or ln.startswith("| gt_s")]
    assert rows[:2] == [f"| cam_s0 | 8.0 | 3 | 1000 | 2.003 | 2.0 | {here}, cpu |", f"| cam_s2 | 8.0 | 3 | 1020 | 6.003 | 4.0 | {here}, cuda:0 |"]


def test_per_class_figure_draws_each_rows_mean_and_spread(runs):
    import matplotlib.pyplot as plt

    from samcam.seg.report import per_class_figure

    df = collect(runs, ["gt", "cam"])
    fig = per_class_figure(df, {"gt": "ground truth"})
    ax = fig.axes[0]
    bars = [p for p in ax.patches]
    assert len(bars) == 2 * 21
    for k, row in enumerate(["gt", "cam"]):
        seeds = RUNS[row]
        ious = np.array([[np.nan if v is None else 100 * v for v in _iou(row, s).values()] for s in seeds])
        heights = [b.get_height() for b in bars[21 * k : 21 * (k + 1)]]
        np.testing.assert_allclose(heights, np.nanmean(ious, 0), rtol=1e-9)
        centres = [b.get_x() + b.get_width() / 2 for b in bars[21 * k : 21 * (k + 1)]]
        np.testing.assert_allclose(centres, np.arange(21) + (k - 0.5) * 0.4)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    gt_mean = np.nanmean([[100 * v for v in _iou("gt", s).values()] for s in RUNS["gt"]])
    assert legend[0] == f"ground truth ({gt_mean:.1f})" and legend[1].startswith("cam (")
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES and ax.get_ylim() == (0, 100)
    assert ax.get_ylabel() == "val IoU (%)" and ax.get_title().startswith("Per-class IoU on VOC 2012 val (4 images)")
    spreads = [seg for c in ax.containers if hasattr(c, "errorbar") and c.errorbar for seg in c.errorbar.lines[2][0].get_segments()]
    gt_ious = np.array([[100 * v for v in _iou("gt", s).values()] for s in RUNS["gt"]])
    half = (gt_ious.max(0) - gt_ious.min(0)) / 2
    np.testing.assert_allclose([s[1, 1] - s[0, 1] for s in spreads[:21]], 2 * half)
    plt.close(fig)


def test_gallery_shows_image_prediction_and_ground_truth_with_void_white(tmp_path):
    import matplotlib.pyplot as plt

    from samcam.data.spaces import colorize
    from samcam.seg.report import gallery_figure

    for d in ("img", "pred", "gt"):
        (tmp_path / d).mkdir()
    img = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    Image.fromarray(img).save(tmp_path / "img" / "v1.png")
    pred = np.full((6, 8), 3, np.uint8)
    gt = np.full((6, 8), 1, np.uint8)
    gt[0] = 255
    Image.fromarray(pred, mode="L").save(tmp_path / "pred" / "v1.png")
    Image.fromarray(gt, mode="L").save(tmp_path / "gt" / "v1.png")
    fig = gallery_figure(["v1"], tmp_path / "img", tmp_path / "pred", tmp_path / "gt", title="T")
    axes = fig.axes
    assert len(axes) == 3 and fig._suptitle.get_text() == "T"
    shown = [ax.get_images()[0].get_array() for ax in axes]
    assert np.array_equal(shown[0], img) and np.array_equal(shown[1], colorize(pred))
    expected = colorize(gt).copy()
    expected[0] = 255
    assert np.array_equal(shown[2], expected) and (shown[2][1:] == VOC.palette[1]).all()
    assert [ax.get_title() for ax in axes] == ["v1 · image", "prediction", "ground truth"]
    plt.close(fig)


def test_write_table_files_and_figures_as_a_reader_sees_them(runs, tmp_path, monkeypatch):
    """The table's text cell by cell (4 decimals, no index, labels second, a row without a name by its
    key), the figure it saves, nothing left open, the benchmark JSON indented by one."""
    import matplotlib.pyplot as plt

    import samcam.seg.report as report

    saved = {}
    real_save = report.save
    monkeypatch.setattr(report, "save", lambda fig, path: (saved.__setitem__(Path(path).name, fig), real_save(fig, path)))
    out, bench = tmp_path / "a" / "out", tmp_path / "bench"
    res = write_table(runs, out, bench, ["gt", "cam"], {"gt": "ground truth"}, "gt", "cmd")
    lines = (out / "table.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:3] == ["row", "labels", "seed"] and header[-2:] == ["miou_mean_over_seeds", "miou_spread_over_seeds"]
    first = dict(zip(header, lines[1].split(",")))
    assert (first["row"], first["labels"], first["seed"], first["miou"]) == ("gt", "ground truth", "0", "40.0000")
    assert first["miou_mean_over_seeds"] == "42.0000" and first["iou_aeroplane"] == f"{100 * _iou('gt', 0)['aeroplane']:.4f}"
    assert dict(zip(header, lines[4].split(",")))["labels"] == "cam"  # no name given: the row's key
    assert sorted(saved) == ["per_class.png"]
    assert [t.get_text() for t in saved["per_class.png"].axes[0].get_legend().get_texts()][0].startswith("ground truth (")
    assert plt.get_fignums() == []
    text = (bench / "seg_train_cpu.json").read_text()
    assert text == json.dumps(res["benchmark"], indent=1) + "\n" and set(res) == {"summary", "runs", "gaps", "benchmark"}
    assert (out / "gaps.csv").read_text().splitlines()[1].startswith("cam,gt,2,-9.5000,0.7071,-19.0000,")


def test_collect_refuses_an_unfinished_run_or_a_stale_evaluation(runs):
    ck = torch_load(runs / "gt_s1" / "last.pt")
    save_checkpoint(runs / "gt_s1" / "last.pt", {**ck, "complete": False, "step": 6})
    with pytest.raises(ValueError, match=re.escape(f"{runs / 'gt_s1'}: eval.json scores step None of a run at step 6 of 9; finish the run")):
        collect(runs)
    save_checkpoint(runs / "gt_s1" / "last.pt", ck)
    ev = json.loads((runs / "gt_s1" / "eval.json").read_text())
    (runs / "gt_s1" / "eval.json").write_text(json.dumps({**ev, "step": 6}))  # scored before the run went on
    with pytest.raises(ValueError, match=re.escape(f"{runs / 'gt_s1'}: eval.json scores step 6 of a run at step 9 of 9")):
        collect(runs)
    (runs / "gt_s1" / "eval.json").write_text(json.dumps({**ev, "step": 9}))
    assert len(collect(runs)) == 5


def _record(seed: int = 0) -> dict:
    """A valid record of a finished run (as `train-seg --record` writes it, less its provenance)."""
    from samcam.seg.report import RECORD_FORMAT

    return {"format": RECORD_FORMAT, "recipe": {**RECIPE.to_dict(), "seed": seed}, "n_train": 6, "labels_fingerprint": "0" * 64, "step": 9,
            "total_steps": 9, "history": {"epoch_seconds": [1.0, 2.0, 3.0], "losses": [1.0, 1.0, 1.0], "threads": 2, "device": "cpu",
                                          "peak_rss_mib": 900.0, "load_average": [1.0, 2.0, 2.0]},
            "eval": {"n_images": 4, "miou": 0.4, "seconds": 1.0, "scales": [1.0], "flip": False, "iou": _iou("gt", seed, 0.4)},
            "commit": "abc123", "machine": {"cpu": "Some CPU", "cores": 2}}  # fmt: skip


def _set(path: str, value):
    """A change to a record: ``value`` at the dotted ``path`` (``...`` removes the key)."""
    def change(rec):
        *keys, last = path.split(".")
        d = rec
        for k in keys:
            d = d[k]
        if value is ...:
            del d[last]
        else:
            d[last] = value
        return rec

    return change


@pytest.mark.parametrize("change, message", [
    (_set("eval.iou", [0.5] * 21), "eval.iou must map the 21 VOC classes, in their order, to an IoU"),
    (_set("eval.iou.unicorn", 0.5), "eval.iou must map the 21 VOC classes"),
    (_set("eval.iou.boat", "0.3"), "eval.iou.boat is '0.3', expected a finite number in [0, 1]"),
    (_set("eval", []), "eval is [], expected a mapping"),
    (_set("history", []), "history is [], expected a mapping"),
    (_set("history.epoch_seconds", ["a", 1.0, 1.0]), "history.epoch_seconds[0] is 'a', expected a finite number in [0, 32000000.0]"),
    (_set("history.epoch_seconds", []), "history.epoch_seconds is not a list of one number per epoch (3)"),
    (_set("history.epoch_seconds", ...), "history.epoch_seconds is not a list of one number per epoch (3)"),
    # the record against itself (audit 9, F9): steps, epochs, sizes that overflow a sum
    (_set("history.epoch_seconds", [1.0] * 5), "history.epoch_seconds is not a list of one number per epoch (3)"),
    (_set("history.epoch_seconds", [1.7e308] * 3), "history.epoch_seconds[0] is 1.7e+308, expected a finite number in [0, 32000000.0]"),
    (_set("history.losses", ["abc", 1.0, 1.0]), "history.losses[0] is 'abc', expected a finite number in [0, inf]"),
    (_set("history.losses", [1.0]), "history.losses is not a list of one number per epoch (3)"),
    (_set("total_steps", 1000), "total_steps is 1000, but 6 images in batches of 2 for 3 epochs make 9"),
    (_set("history.threads", "many"), "history.threads is 'many', expected an integer in [1, 4096]"),
    (_set("history.threads", 10 ** 9), "history.threads is 1000000000, expected an integer in [1, 4096]"),  # audit 10, F7
    (_set("history.device", "\x1b[31m"), "history.device is '\\x1b[31m', expected a device's name (one line of printable text)"),
    (_set("history.commits", [123, None]), "history.commits is [123, None], expected a list of the commits that trained the run"),
    (_set("history.load_average", [float("nan")]), "history.load_average[0] is nan"),
    (_set("history.device", 3), "history.device is '3', expected a device's name"),
    (_set("history.load_average", ...), "history.load_average is not a list"),
    (_set("history.load_average", None), "history.load_average is not a list"),
    (_set("history.peak_rss_mib", ...), "history.peak_rss_mib is None"),
    (_set("history.threads", None), "history.threads is None"),
    (_set("machine", "x"), "machine is not the record of a machine"),
    (_set("machine", ...), "machine is not the record of a machine"),
    (_set("commit", 3), "commit is 3, expected a commit name"),
    (_set("eval.n_images", 0), "eval.n_images is 0, expected an integer in [1, inf]"),
    (_set("eval.scored_on", "abc"), "eval.scored_on is 'abc', expected the fingerprint of the val images' ground truth (sha256:…)"),
    (_set("eval.n_images", ...), "eval.n_images is None"),
    (_set("eval.miou", 57.3), "eval.miou is 57.3, expected a finite number in [0, 1]"),
    (_set("eval.miou", "0.5"), "eval.miou is '0.5'"),
    (_set("eval.seconds", -1.0), "eval.seconds is -1.0"),
    (_set("eval.scales", []), "eval.scales is not a non-empty list"),
    (_set("eval.scales", [0]), "eval.scales[0] is 0"),
    (_set("eval.flip", "yes"), "eval.flip is 'yes', expected true or false"),
    (_set("step", 1.5), "step is 1.5, expected an integer"),
    (_set("step", True), "step is True, expected an integer"),
    (_set("n_train", 0), "n_train is 0, expected an integer in [1, inf]"),
    (_set("step", 6), "records step 6 of 9, scored at step None; not a finished run"),
    (_set("recipe.crop", 5), "recipe field crop is 5"),
    (_set("history", ...), "lacks history"),
    (_set("format", "x"), "is not a samcam-seg-run/1 record"),
    (lambda rec: [rec], "is not a samcam-seg-run/1 record"),
])  # fmt: skip
def test_a_bad_record_is_named_in_one_line(tmp_path, capsys, change, message):
    """Every field a table reads is checked for its type and range before it is read: `seg-search` says
    which file and which field, in one line, exit 2 (a record that passed would put 5730.00 in a table)."""
    from samcam.cli import main

    runs = tmp_path / "rows"
    runs.mkdir()
    (runs / "ref_s0.json").write_text(json.dumps(_record()))
    (runs / "x_s0.json").write_text(json.dumps(change(_record())))
    assert main(["seg-search", "--runs", str(runs), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("samcam seg-search: error: ") and f"{runs / 'x_s0.json'}: {message}" in err[0]
    assert not (tmp_path / "out").exists()


def test_run_names_files_and_seeds_are_checked(tmp_path):
    """A run's name is a plain row and a seed a recipe takes; the seed in the name is the one trained; an
    entry named as a run that cannot be read is named, never dropped; a folder's eval.json is checked too."""
    import os

    runs = tmp_path / "rows"
    runs.mkdir()
    (runs / "ref_s0.json").write_text(json.dumps(_record()))
    (runs / "README.md").write_text("not a run")  # other files are no runs
    (runs / "partial_s0").mkdir()  # a run folder without eval.json is unfinished: left out
    assert collect(runs)["row"].tolist() == ["ref"]
    (runs / ".._s0.json").write_text(json.dumps(_record()))  # a hidden file is no run (a macOS ._ref_s0.json)
    assert collect(runs)["row"].tolist() == ["ref"]
    (runs / ".._s0.json").unlink()
    for name, why in (("x\x1b[31m_s0.json", "not a run's name"), (f"x_s{2**32}.json", "not a run's name")):
        (runs / name).write_text(json.dumps(_record()))
        with pytest.raises(ValueError, match=re.escape(f"{runs / name}: {why}")):
            collect(runs)
        (runs / name).unlink()
    (runs / "x_s0.json").write_text(json.dumps(_record(seed=7)))
    with pytest.raises(ValueError, match=re.escape(f"{runs / 'x_s0.json'}: named for seed 0, trained with seed 7")):
        collect(runs)
    (runs / "x_s0.json").unlink()
    (runs / "x_s0.json").symlink_to(tmp_path / "gone.json")
    with pytest.raises(FileNotFoundError, match=re.escape(f"run record not found: {runs / 'x_s0.json'}")):
        collect(runs)
    (runs / "x_s0.json").unlink()
    os.mkfifo(runs / "x_s0.json")
    with pytest.raises(ValueError, match=re.escape(f"{runs / 'x_s0.json'}: is a pipe, not a regular file")):
        collect(runs)
    (runs / "x_s0.json").unlink()
    (runs / "y_s0").mkdir()
    (runs / "y_s0" / "eval.json").write_text("{")
    with pytest.raises(ValueError, match=re.escape(f"{runs / 'y_s0' / 'eval.json'}: not a JSON record")):
        collect(runs)
    (runs / "y_s0" / "eval.json").write_text("[1]")
    save_checkpoint(runs / "y_s0" / "last.pt", {"format": "samcam-seg/1", "recipe": RECIPE.to_dict(), "n_classes": 21, "dataset": "voc", "labels_dir": "l",
                                              "labels_fingerprint": "0" * 64, "n_train": 6, "step": 9, "total_steps": 9, "complete": True,
                                              "history": {"epoch_seconds": [1.0] * 3, "losses": [1.0] * 3, "load_average": [], "peak_rss_mib": 1.0, "threads": 1, "device": "cpu"},
                                              "model": {}})  # fmt: skip
    with pytest.raises(ValueError, match=re.escape(f"{runs / 'y_s0' / 'eval.json'}: is a list, not an evaluation")):
        collect(runs)
    (runs / "y_s0" / "eval.json").write_text(json.dumps({"miou": 5.0, "n_images": 2, "iou": _iou("gt", 0)}))
    with pytest.raises(ValueError, match=re.escape(f"{runs / 'y_s0'}: eval.miou is 5.0, expected a finite number in [0, 1]")):
        collect(runs)
    with pytest.raises(FileNotFoundError, match=re.escape(f"folder of runs not found: {tmp_path / 'none'}")):
        collect(tmp_path / "none")


def test_seg_search_refuses_a_configuration_named_twice(tmp_path, capsys):
    from samcam.cli import main

    runs = tmp_path / "rows"
    runs.mkdir()
    (runs / "ref_s0.json").write_text(json.dumps(_record()))
    assert main(["seg-search", "--runs", str(runs), "--out", str(tmp_path / "o"), "--configs", "ref", "ref"]) == 2
    assert "--configs names 'ref' twice" in capsys.readouterr().err
    assert main(["seg-search", "--runs", str(runs), "--out", str(tmp_path / "o"), "--configs", "ref", "b", "b"]) == 2
    assert "--configs names 'b' twice" in capsys.readouterr().err  # the one named twice, not the first
    assert not (tmp_path / "o").exists()


def test_a_table_holds_runs_that_differ_only_in_labels_and_seed(tmp_path):
    """Records of another recipe, training set, evaluation, or a second label set in one row are refused,
    naming both files; write_table refuses a run of a row it does not list, and a run of another recipe."""
    from samcam.seg.report import write_table

    runs = tmp_path / "rows"
    runs.mkdir()
    (runs / "ref_s0.json").write_text(json.dumps(_record()))
    for change, what in ((_set("recipe.crop", 96), "recipe"), (_set("n_train", 7), "training set size"), (_set("eval.n_images", 5), "evaluation images"),
                         (_set("eval.scales", [0.5, 1.0]), "evaluation scales"), (_set("eval.flip", True), "evaluation flip")):  # fmt: skip
        (runs / "x_s0.json").write_text(json.dumps(change(_record())))
        with pytest.raises(ValueError, match=re.escape(f"{runs / 'x_s0.json'}: its {what} differs from {runs / 'ref_s0.json'}'s")):
            collect(runs, alike=True)
    (runs / "x_s0.json").unlink()
    (runs / "ref_s1.json").write_text(json.dumps(_set("labels_fingerprint", "1" * 64)(_record(seed=1))))
    with pytest.raises(ValueError, match=re.escape(f"{runs / 'ref_s1.json'}: trained on other labels than {runs / 'ref_s0.json'}")):
        collect(runs, alike=True)
    (runs / "ref_s1.json").write_text(json.dumps(_record(seed=1)))
    assert collect(runs, alike=True)["seed"].tolist() == [0, 1]
    (runs / "z_s0.json").write_text(json.dumps(_set("recipe.crop", 96)(_record())))
    assert len(collect(runs)) == 3  # a recipe search compares recipes
    (runs / "z_s0.json").unlink()
    (runs / "y_s0.json").write_text(json.dumps(_record()))
    with pytest.raises(ValueError, match=re.escape(f"{runs}: runs of rows ['y'] that the table does not list (rows: ['ref'])")):
        write_table(runs, tmp_path / "o", tmp_path / "b", ["ref"], {}, "ref", "cmd")
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match=re.escape(f"{runs / 'ref_s0.json'}: trained with crop 64, the table's recipe has 320")):
        write_table(runs, tmp_path / "o", tmp_path / "b", ["ref", "y"], {}, "ref", "cmd", Recipe(crop=320, epochs=20, output_stride=16))
    res = write_table(runs, tmp_path / "o", tmp_path / "b", ["ref", "y"], {}, "ref", "cmd", Recipe(**{**RECIPE.to_dict(), "seed": 5}))
    assert len(res["runs"]) == 3 and "Some CPU" in (tmp_path / "b" / "seg_train_cpu.md").read_text()


def _records(tmp_path: Path, *named: tuple[str, dict]) -> Path:
    """A folder of run records: each ``(file stem, record)``."""
    runs = tmp_path / "rows"
    runs.mkdir(exist_ok=True)
    for stem, rec in named:
        (runs / f"{stem}.json").write_text(json.dumps(rec))
    return runs


def test_what_a_record_may_leave_out_reads_as_its_default(tmp_path):
    """A recipe without a seed is seed 0; an evaluation without scales or flip is single-scale without
    flip (alike a record that says so); one without seconds has no time; two rows may hold two label sets."""
    from samcam.seg.report import benchmark

    no_seed = _record()
    del no_seed["recipe"]["seed"]
    plain = _record(seed=1)
    for k in ("scales", "flip", "seconds"):
        del plain["eval"][k]
    other = _set("labels_fingerprint", "1" * 64)(_record())
    del other["eval"]["seconds"]
    runs = _records(tmp_path, ("ref_s0", no_seed), ("ref_s1", plain), ("other_s0", other))
    df = collect(runs, ["ref", "other"], alike=True)
    assert list(zip(df["row"], df["seed"])) == [("ref", 0), ("ref", 1), ("other", 0)]
    assert df["eval"].tolist() == ["1.0", "1.0", "1.0"]
    assert df["eval_seconds"].dtype == float and np.isnan(df["eval_seconds"].iloc[1:]).all() and df["eval_seconds"].iloc[0] == 1.0
    (runs / "ref_s0.json").unlink()
    df = collect(runs, ["ref", "other"], alike=True)
    assert df["eval_seconds"].dtype == float and np.isnan(df["eval_seconds"]).all()  # no run timed its evaluation
    assert np.isnan(benchmark(df, "c")["eval_s_per_image_median"])
    (runs / "ref_s1.json").write_text(json.dumps(no_seed))
    with pytest.raises(ValueError, match=re.escape(f"{runs / 'ref_s1.json'}: named for seed 1, trained with seed 0")):
        collect(runs)


def test_record_checks_at_their_bounds(tmp_path):
    """A score of exactly 1 and the largest seed are valid; an integer field holding a float, a pixel
    accuracy out of range, an evaluation of another step, or a record that is no mapping are not."""
    from samcam.seg.recipe import MAX_SEED
    from samcam.seg.report import check_record

    top = _set("eval.iou", _iou("gt", 0, 1.0))(_set("eval.miou", 1.0)(_set("eval.pixel_accuracy", 1.0)(_record(seed=MAX_SEED))))
    runs = _records(tmp_path, (f"ref_s{MAX_SEED}", top))
    assert collect(runs)["miou"].tolist() == [100.0]
    for change, why in ((_set("history.threads", 2.0), "history.threads is 2.0, expected an integer in [1, 4096]"),
                        (_set("eval.n_images", 4.0), "eval.n_images is 4.0, expected an integer in [1, inf]"),
                        (_set("eval.pixel_accuracy", 1.5), "eval.pixel_accuracy is 1.5, expected a finite number in [0, 1]"),
                        (_set("eval.step", 6), "records step 9 of 9, scored at step 6; not a finished run"),
                        (_set("machine.cores", True), "machine is not the record of a machine"),
                        (_set("machine.cpu", 5), "machine is not the record of a machine")):  # fmt: skip
        (runs / "x_s0.json").write_text(json.dumps(change(_record())))
        with pytest.raises(ValueError, match=re.escape(f"{runs / 'x_s0.json'}: {why}")):
            collect(runs)
    assert check_record(_set("eval.step", 9)(_record()))["step"] == 9
    for bad, kind in (([1], "list"), (None, "NoneType"), ("x", "str")):
        with pytest.raises(ValueError, match=re.escape(f"is a {kind}, not a samcam-seg-run/1 record")):
            check_record(bad)


def test_run_names_are_whole_names(tmp_path):
    """A folder ``gt_s1.old`` (a copy put aside) is no run of row gt; a record's name is its stem."""
    runs = _records(tmp_path, ("ref_s0", _record()))
    (runs / "ref_s1.old").mkdir()
    (runs / "ref_s1.old" / "eval.json").write_text("{")
    assert collect(runs)["seed"].tolist() == [0]


def test_a_second_label_set_names_its_fingerprint(tmp_path):
    runs = _records(tmp_path, ("ref_s0", _record()), ("ref_s1", _set("labels_fingerprint", "abcdef0123456789" * 4)(_record(seed=1))))
    with pytest.raises(ValueError, match=re.escape("(fingerprint abcdef012345…); one row, one label set")):
        collect(runs, alike=True)


def test_benchmark_rounds_to_tenths_and_names_the_first_records_machine(tmp_path):
    from samcam.seg.report import benchmark

    recs = [(f"ref_s{s}", _set("history.epoch_seconds", [10.26 + s, 10.26 + s, 10.26 + s])(_record(seed=s))) for s in range(3)]
    recs[0][1]["machine"] = {"cpu": "First CPU", "cores": 64, "memory_gib": 3}
    b = benchmark(collect(_records(tmp_path, *recs)), "c")
    assert (b["s_per_epoch_min"], b["s_per_epoch_median"], b["s_per_epoch_max"]) == (10.3, 11.3, 12.3)
    assert b["machine"] == {"cpu": "First CPU", "cores": 64, "memory_gib": 3} and b["machines"] == ["First CPU", "Some CPU"]
    assert "Machine of the first run: First CPU, 64 cores, 3 GiB;" in benchmark_markdown(b)


def test_gaps_markdown_names_the_reference_by_its_key_without_a_name():
    import pandas as pd

    gaps = pd.DataFrame([{"row": "a", "reference": "r", "seeds": 2, "mean_gap": 1.0, "sd_gap": 0.5, "t": 2.0, "p": 0.01, "real": True}])
    assert gaps_markdown(gaps, {"a": "A"}).splitlines()[0] == "| labels | seeds paired | mean gap to r | sd over seeds | t | p | real (p < 0.05) |"
    assert gaps_markdown(gaps).splitlines()[2] == "| a | 2 | +1.00 | 0.50 | +2.00 | 0.010 | yes |"
    empty = gaps.iloc[:0]
    assert gaps_markdown(empty).splitlines() == ["| labels | seeds paired | mean gap to  | sd over seeds | t | p | real (p < 0.05) |", "|---" * 7 + "|"]


def test_run_record_fills_recipe_fields_added_since(runs):
    ck = torch_load(runs / "gt_s1" / "last.pt")
    del ck["recipe"]["output_stride"]
    save_checkpoint(runs / "gt_s1" / "last.pt", ck)
    rec = run_record(runs / "gt_s1")
    assert rec["recipe"] == {**RECIPE.to_dict(), "seed": 1} and "output_stride" not in ck["recipe"]


def test_write_record_text_and_the_checkouts_commit(runs, tmp_path, monkeypatch):
    """The record file is the record, indented by one; its commit is the checkout's, wherever the command runs."""
    import samcam.outputs as outputs

    monkeypatch.chdir(tmp_path)  # not a checkout
    rec = write_record(runs / "gt_s1", tmp_path / "r.json")
    assert (tmp_path / "r.json").read_text() == json.dumps(rec, indent=1) + "\n"
    assert rec["commit"] == outputs.git_commit(outputs.REPO) and rec["commit"] is not None or outputs.git_commit(outputs.REPO) is None


def test_search_markdown_rounds_seconds_to_tenths(tmp_path):
    from samcam.seg.report import search_markdown, search_table

    runs = _records(tmp_path, ("base_s0", _set("history.epoch_seconds", [10.26, 10.26, 10.26])(_record())))
    md = search_markdown(search_table(collect(runs))).splitlines()
    assert md[1] == "|---" * 22 + "|"
    cells = md[2].split(" | ")
    assert cells[-6:-4] == ["10.3", "0.5"] and md[2].endswith(" | 40.00 |")  # s per epoch, minutes (30.78 s)


def test_write_table_checks_runs_alike_and_names_the_missing_reference(tmp_path):
    """Without a recipe to check, write_table still refuses runs evaluated otherwise; a table without
    its reference row says so by the row's name; the CSV holds no recipe columns."""
    runs = _records(tmp_path, ("a_s0", _record()), ("b_s0", _set("eval.scales", [0.5, 1.0])(_record())))
    with pytest.raises(ValueError, match=re.escape(f"{runs / 'b_s0.json'}: its evaluation scales differs")):
        write_table(runs, tmp_path / "o", tmp_path / "b", ["a", "b", "ref"], {}, "ref", "cmd")
    (runs / "b_s0.json").unlink()
    write_table(runs, tmp_path / "o", tmp_path / "b", ["a", "ref"], {"ref": "The Reference"}, "ref", "cmd")
    assert (tmp_path / "o" / "gaps.md").read_text() == "No finished run of the reference row The Reference yet: no gap is tested.\n"
    header = (tmp_path / "o" / "table.csv").read_text().splitlines()[0].split(",")
    assert not [h for h in header if h.startswith("recipe")] and "run" not in header and "device" not in header


def test_a_search_ranks_recipes_on_one_set_of_images(tmp_path):
    """Runs scored on another number of val images, or at other scales or flip, are not ranked together:
    named, with both counts or protocols (audit 12, F17: a run scored with flip was ranked beside
    single-scale runs, its gain the protocol's)."""
    from samcam.seg.report import write_search

    runs = _records(tmp_path, ("a_s0", _record()), ("b_s0", _set("eval.flip", True)(_set("recipe.crop", 96)(_record()))))
    with pytest.raises(ValueError) as e:
        write_search(runs, tmp_path / "out")
    assert str(e.value) == (f"{runs / 'b_s0.json'}: evaluated at scales 1.0 + flip, {runs / 'a_s0.json'} at 1.0; a search compares "
                            "recipes evaluated alike (eval-seg each run with the same --scales and --flip)")  # fmt: skip
    for stem in ("a_s0", "b_s0"):  # both at one protocol: ranked
        (runs / f"{stem}.json").write_text(json.dumps(_set("eval.scales", [0.75, 1.0])(_set("eval.flip", True)(_record()))))
    assert write_search(runs, tmp_path / "ok")["eval"].tolist() == ["0.75,1.0 + flip"] * 2
    (runs / "b_s0.json").write_text(json.dumps(_set("eval.scales", [1.0, 1.25])(_set("eval.flip", True)(_record()))))
    with pytest.raises(ValueError, match=re.escape("evaluated at scales 1.0,1.25 + flip")):
        write_search(runs, tmp_path / "out")
    (runs / "a_s0.json").write_text(json.dumps(_record()))
    (runs / "b_s0.json").write_text(json.dumps(_set("eval.n_images", 5)(_record())))
    with pytest.raises(ValueError, match=re.escape(f"{runs / 'b_s0.json'}: evaluated on 5 images, {runs / 'a_s0.json'} on 4; a search compares recipes on the same val images")):
        write_search(runs, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # as many images, but others (audit 11, F4: a copy of one checkpoint, scored on other val images, was ranked best)
    on = {k: "sha256:" + k * 64 for k in "ab"}
    for stem, scored in (("a_s0", on["a"]), ("b_s0", on["b"])):
        (runs / f"{stem}.json").write_text(json.dumps(_set("eval.scored_on", scored)(_record())))
    with pytest.raises(ValueError, match=re.escape(f"{runs / 'b_s0.json'}: scored on other images or ground truth than {runs / 'a_s0.json'}")):
        write_search(runs, tmp_path / "out")
    with pytest.raises(ValueError, match=re.escape(f"{runs / 'b_s0.json'}: scored on other images or ground truth than {runs / 'a_s0.json'}")):
        collect(runs, alike=True)
    (runs / "b_s0.json").write_text(json.dumps(_record()))  # a record that predates scored_on: compared by its count
    assert len(write_search(runs, tmp_path / "out")) == 2 and len(collect(runs, alike=True)) == 2


def test_an_evaluation_replaces_only_one_of_the_same_checkpoint(tmp_path):
    """eval-seg --json over another run's eval.json had replaced it, and seg-search then ranked that run
    by this score: the file is replaced only by an evaluation of the same checkpoint (its SHA-256, or
    the path in a summary that predates it); a run folder whose eval.json scores another checkpoint is refused."""
    import hashlib

    from samcam.seg.evaluate import check_evaluation_target

    ck = tmp_path / "a" / "last.pt"
    ck.parent.mkdir()
    ck.write_bytes(b"weights a")
    sha = hashlib.sha256(b"weights a").hexdigest()
    target = tmp_path / "eval.json"
    check_evaluation_target(target, ck, sha)  # absent: fine
    for old, ok in [({"checkpoint": str(ck), "checkpoint_sha256": sha, "iou": {}}, True),
                    ({"checkpoint": str(ck), "checkpoint_sha256": "0" * 64, "iou": {}}, False),
                    ({"checkpoint": str(tmp_path / "moved" / "last.pt"), "iou": {}}, True)]:  # written before the SHA-256 was: replaced  # fmt: skip
        target.write_text(json.dumps(old))
        if ok:
            check_evaluation_target(target, ck)
        else:
            with pytest.raises(ValueError, match=re.escape(f"{target}: holds the evaluation of another checkpoint ({old['checkpoint']}); choose another file, or remove it")):
                check_evaluation_target(target, ck, sha)
    for text in ("notes of mine\n", json.dumps({"miou": 0.5})):
        target.write_text(text)
        with pytest.raises(ValueError, match=re.escape(f"{target}: exists and is not an evaluation samcam wrote; choose another file")):
            check_evaluation_target(target, ck, sha)


def test_a_run_folder_whose_evaluation_scores_another_checkpoint_is_refused(runs):
    import hashlib

    ev = json.loads((runs / "gt_s0" / "eval.json").read_text())
    right = hashlib.sha256((runs / "gt_s0" / "last.pt").read_bytes()).hexdigest()
    (runs / "gt_s0" / "eval.json").write_text(json.dumps({**ev, "checkpoint_sha256": right}))
    assert collect(runs).loc[lambda d: (d["row"] == "gt") & (d["seed"] == 0), "miou"].tolist() == pytest.approx([40.0])
    (runs / "gt_s0" / "eval.json").write_text(json.dumps({**ev, "checkpoint_sha256": "0" * 64}))
    with pytest.raises(ValueError, match=re.escape(f"{runs / 'gt_s0' / 'eval.json'}: scores another checkpoint than {runs / 'gt_s0' / 'last.pt'}")):
        collect(runs)


def test_a_record_replaces_only_a_record_of_the_same_run(tmp_path):
    """train-seg --record over another run's record had replaced it: only a record of the same recipe
    (seed included) and training labels is replaced; a file that is no record is named."""
    from samcam.seg.report import check_record_target

    target = tmp_path / "a_s0.json"
    rec = _record(seed=0)
    check_record_target(target, rec["recipe"], rec["labels_fingerprint"])  # absent
    target.write_text(json.dumps(rec))
    check_record_target(target, rec["recipe"], rec["labels_fingerprint"])
    check_record_target(target, rec["recipe"])  # before training: the labels are not fingerprinted yet
    for recipe, labels in [({**rec["recipe"], "seed": 1}, None), ({**rec["recipe"], "lr": 0.5}, None), (rec["recipe"], "f" * 64)]:
        with pytest.raises(ValueError, match=re.escape(f"{target}: holds the record of another run (another recipe, seed or training labels); choose another file")):
            check_record_target(target, recipe, labels)
    target.write_text("my notes\n")
    with pytest.raises(ValueError, match=re.escape(str(target))):
        check_record_target(target, rec["recipe"])


def test_train_seg_refuses_a_record_of_other_labels_before_it_trains(tmp_path, capsys):
    """Review 9: `train-seg --record` compared the training labels with the record's only after the
    training. They are fingerprinted as the labels are (samcam.seg.train.labels_fingerprint, what the
    run records) and compared before anything is trained or written."""
    import hashlib

    from samcam import cli
    from samcam.seg.train import labels_fingerprint

    for d in ("img", "lab"):
        (tmp_path / d).mkdir()
    for i in ("a", "b"):
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "img" / f"{i}.png")
        Image.fromarray(np.full((40, 40), 3, np.uint8)).save(tmp_path / "lab" / f"{i}.png")
    (tmp_path / "ids.txt").write_text("a\nb\n")
    want = hashlib.sha256(b"".join(i.encode() + b"\0" + hashlib.sha256((tmp_path / "lab" / f"{i}.png").read_bytes()).digest() for i in "ab"))
    assert labels_fingerprint(tmp_path / "lab", ["a", "b"]) == want.hexdigest()  # by hand: each id and its file's bytes, in order
    rec = _record()
    (tmp_path / "r.json").write_text(json.dumps(rec))  # the same recipe (RECIPE, seed 0), other labels ("0" * 64)
    args = ["train-seg", "--images", tmp_path / "img", "--labels", tmp_path / "lab", "--ids", tmp_path / "ids.txt", "--out", tmp_path / "run",
            "--crop", "64", "--batch-size", "2", "--epochs", "3", "--eval-gt", tmp_path / "lab", "--eval-ids", tmp_path / "ids.txt",
            "--record", tmp_path / "r.json"]  # fmt: skip
    assert cli.main([str(a) for a in args]) == 2
    assert f"{tmp_path / 'r.json'}: holds the record of another run (another recipe, seed or training labels)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and json.loads((tmp_path / "r.json").read_text()) == rec
