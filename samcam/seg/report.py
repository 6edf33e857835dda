"""Tables and figures from finished segmentation runs: run folders (``<runs>/<row>_s<seed>/{eval.json,last.pt,pred/}``,
made by ``train-seg --eval-gt``) or their records (``<runs>/<row>_s<seed>.json``, ``train-seg --record``:
what a table needs, kept where the 45 MB run folder is not).

:func:`collect` reads every run into one DataFrame (mIoU, per-class IoU, training cost);
:func:`summary` gives one line per row (each seed, mean, spread); :func:`paired_gaps` tests each
row's gap to a reference; the figure functions return matplotlib figures; :func:`write_table`
writes the results folder and the training benchmark.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from samcam.data.spaces import VOC, colorize
from samcam.io import find_image, json_loads, read_image, read_input, read_label, sha256_file, write_text
from samcam.outputs import machine_info
from samcam.report.figures import save

from .recipe import Recipe
from .train import CHECKPOINT, EVAL_JSON, read_checkpoint

RUN_NAME = re.compile(r"^(?P<row>.+)_s(?P<seed>\d+)$")

#: what a row's name may be (it becomes a table's row and a column's label)
ROW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+.-]*$")

#: the format of a run record (:func:`run_record`), the file a table is made from
RECORD_FORMAT = "samcam-seg-run/1"

#: the longest epoch a record may hold (a year): larger is no measurement, and sums of such overflow
MAX_EPOCH_SECONDS = 3.2e7
#: how far a record's ``eval.miou`` may lie from the mean of its per-class IoUs (float summation order)
MIOU_SLACK = 1e-9
#: what a run record keeps of the run's ``eval.json`` (paths and the recipe are kept elsewhere or not at all)
EVAL_KEYS = ("step", "n_images", "scored_on", "scales", "flip", "seconds", "threads", "miou", "pixel_accuracy", "iou")


def _number(v: Any, lo: float, hi: float | None, what: str, integer: bool = False) -> None:
    """``ValueError`` (the caller adds the file) unless ``v`` is a finite number (an int with
    ``integer``; never a bool) in ``[lo, hi]``."""
    kinds = (int,) if integer else (int, float)
    if isinstance(v, bool) or not isinstance(v, kinds) or not np.isfinite(v) or v < lo or (hi is not None and v > hi):
        raise ValueError(f"{what} is {v!r}, expected a{'n integer' if integer else ' finite number'} in [{lo}, {hi if hi is not None else 'inf'}]")


#: The most torch threads a run's record may say it trained with (a record may come from a larger machine than this one).
MAX_RECORD_THREADS = 4096


def check_record(rec: Any) -> dict[str, Any]:
    """``rec`` if it is a finished, evaluated run's record (:func:`run_record`'s fields, each of its type
    and range: scores in [0, 1] or null, the 21 VOC classes' IoU, positive counts, finite times, a
    valid recipe); else ``ValueError`` saying which field is wrong (the caller names the file)."""
    if not isinstance(rec, dict):
        raise ValueError(f"is a {type(rec).__name__}, not a {RECORD_FORMAT} record")
    for key, kind in (("recipe", dict), ("n_train", int), ("step", int), ("total_steps", int), ("history", dict), ("eval", dict)):
        if key not in rec:
            raise ValueError(f"lacks {key}")
        if not isinstance(rec[key], kind) or isinstance(rec[key], bool):
            raise ValueError(f"{key} is {rec[key]!r}, expected {'a mapping' if kind is dict else 'an integer'}")
    recipe = Recipe.from_dict(rec["recipe"])
    for key in ("n_train", "step", "total_steps"):
        _number(rec[key], 1, None, key, integer=True)
    if rec["total_steps"] != rec["n_train"] // recipe.batch_size * recipe.epochs:  # what train-seg runs
        raise ValueError(f"total_steps is {rec['total_steps']}, but {rec['n_train']} images in batches of {recipe.batch_size} for "
                         f"{recipe.epochs} epochs make {rec['n_train'] // recipe.batch_size * recipe.epochs}")  # fmt: skip
    hist, ev = rec["history"], rec["eval"]
    for key in ("epoch_seconds", "losses"):  # one finite number per epoch
        if not isinstance(hist.get(key), list) or len(hist[key]) != recipe.epochs:
            raise ValueError(f"history.{key} is not a list of one number per epoch ({recipe.epochs})")
        for k, v in enumerate(hist[key]):
            _number(v, 0, MAX_EPOCH_SECONDS if key == "epoch_seconds" else None, f"history.{key}[{k}]")
    if not isinstance(hist.get("load_average"), list):
        raise ValueError("history.load_average is not a list")
    for k, v in enumerate(hist["load_average"]):
        _number(v, 0, None, f"history.load_average[{k}]")
    _number(hist.get("peak_rss_mib"), 0, None, "history.peak_rss_mib")
    _number(hist.get("threads"), 1, MAX_RECORD_THREADS, "history.threads", integer=True)
    if not isinstance(hist.get("device"), str) or not hist["device"] or not hist["device"].isprintable() or len(hist["device"]) > 100:
        raise ValueError(f"history.device is {str(hist.get('device'))[:100]!r}, expected a device's name (one line of printable text)")
    commits = hist.get("commits", [])
    if not isinstance(commits, list) or not all(c is None or isinstance(c, str) and re.fullmatch(r"[0-9a-f]{7,40}(-dirty)?", c) for c in commits):
        raise ValueError(f"history.commits is {str(commits)[:100]}, expected a list of the commits that trained the run")
    _number(ev.get("n_images"), 1, None, "eval.n_images", integer=True)
    if "scored_on" in ev and not (isinstance(ev["scored_on"], str) and re.fullmatch(r"sha256:[0-9a-f]{64}", ev["scored_on"])):
        raise ValueError(f"eval.scored_on is {str(ev['scored_on'])[:80]!r}, expected the fingerprint of the val images' ground truth (sha256:…)")
    for key in ("miou", "pixel_accuracy"):
        if ev.get(key) is not None:
            _number(ev[key], 0, 1, f"eval.{key}")
    iou = ev.get("iou")
    if not isinstance(iou, dict) or list(iou) != list(VOC.class_names):
        raise ValueError(f"eval.iou must map the {len(VOC.class_names)} VOC classes, in their order, to an IoU")
    for c, v in iou.items():
        if v is not None:
            _number(v, 0, 1, f"eval.iou.{c}")
    present = [v for v in iou.values() if v is not None]
    mean = math.fsum(present) / len(present) if present else None  # the mIoU: the mean over the classes that occur
    if (ev.get("miou") is None) != (mean is None) or mean is not None and abs(mean - ev["miou"]) > MIOU_SLACK:
        raise ValueError(f"eval.miou is {ev.get('miou')!r}, but the mean of its per-class IoUs is {mean!r}")
    if "seconds" in ev:
        _number(ev["seconds"], 0, None, "eval.seconds")
    if "scales" in ev and (not isinstance(ev["scales"], list) or not ev["scales"]):
        raise ValueError("eval.scales is not a non-empty list")
    for k, v in enumerate(ev.get("scales") or []):
        _number(v, 1e-6, None, f"eval.scales[{k}]")
    if not isinstance(ev.get("flip", False), bool):
        raise ValueError(f"eval.flip is {ev['flip']!r}, expected true or false")
    if rec["step"] != rec["total_steps"] or ev.get("step", rec["step"]) != rec["step"]:
        raise ValueError(f"records step {rec['step']} of {rec['total_steps']}, scored at step {ev.get('step')}; not a finished run")
    return rec


def run_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A finished, evaluated run (``<run>/last.pt`` complete, ``<run>/eval.json`` scoring its last
    step) as one JSON-ready mapping without weights or paths: the recipe, the training labels'
    fingerprint, steps, the training history (seconds and loss per epoch, device, threads, peak
    memory) and the evaluation (:func:`check_record`). ``ValueError`` naming the run when it is
    unfinished or scored at an earlier step, or naming the file that is not what it should be."""
    d = Path(run_dir)
    ev = _read_json(d / EVAL_JSON, "record")
    ck = read_checkpoint(d / CHECKPOINT)
    if not isinstance(ev, dict):
        raise ValueError(f"{d / EVAL_JSON}: is a {type(ev).__name__}, not an evaluation")
    if "checkpoint_sha256" in ev and ev["checkpoint_sha256"] != sha256_file(d / CHECKPOINT):  # another run's evaluation
        raise ValueError(f"{d / EVAL_JSON}: scores another checkpoint than {d / CHECKPOINT}; remove it and evaluate this run again")
    if not ck["complete"] or ev.get("step", ck["step"]) != ck["step"]:  # a table holds finished runs, each scored as it ended
        raise ValueError(f"{d}: {EVAL_JSON} scores step {ev.get('step')} of a run at step {ck['step']} of {ck['total_steps']}; "
                         "finish the run and evaluate it again")  # fmt: skip
    rec = {"format": RECORD_FORMAT, "recipe": ck["recipe"], "n_train": ck["n_train"], "labels_fingerprint": ck["labels_fingerprint"],
           "step": ck["step"], "total_steps": ck["total_steps"], "history": ck["history"], "eval": {k: ev[k] for k in EVAL_KEYS if k in ev}}  # fmt: skip
    try:
        check_record(rec)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{d}: {e}") from None
    rec["recipe"] = Recipe.from_dict(ck["recipe"]).to_dict()  # fields added since: their defaults
    return rec


def _read_json(path: Path, what: str) -> Any:
    data = read_input(path, what)  # its own refusals (absent, a folder, a link, a size) name the file
    try:
        return json_loads(data)
    except (ValueError, UnicodeDecodeError) as e:  # a JSON error, or a key given twice
        raise ValueError(f"{path}: not a JSON {what} ({e})") from None
    except RecursionError:
        raise ValueError(f"{path}: not a JSON {what} (nested too deeply)") from None


def check_record_target(path: str | os.PathLike, recipe: dict[str, Any], labels_fingerprint: str | None = None) -> None:
    """A record is replaced only by a record of the same run: ``path`` absent, or a record
    (:func:`load_run`) of the same recipe, seed included (and training labels, when given); else
    ``ValueError`` naming it (another run's record was replaced, and its row then showed this run)."""
    if not os.path.lexists(path):
        return
    old = load_run(path)  # a file that is no record: its own message names it
    if Recipe.from_dict(old["recipe"]).to_dict() != Recipe.from_dict(recipe).to_dict() or \
            labels_fingerprint is not None and old.get("labels_fingerprint") != labels_fingerprint:  # fmt: skip
        raise ValueError(f"{path}: holds the record of another run (another recipe, seed or training labels); choose another file")


def write_record(run_dir: str | os.PathLike, path: str | os.PathLike) -> dict[str, Any]:
    """Write :func:`run_record` of ``run_dir`` to ``path`` (atomically) with its provenance: the
    checkout's commit and this machine. A record is what a table reads when the run folder (its
    weights, ~45 MB) is not kept."""
    from samcam.outputs import REPO, git_commit

    rec = {**run_record(run_dir), "commit": git_commit(REPO), "machine": machine_info()}
    check_record_target(path, rec["recipe"], rec["labels_fingerprint"])
    write_text(path, json.dumps(rec, indent=1, allow_nan=False) + "\n")
    return rec


def load_run(path: str | os.PathLike) -> dict[str, Any]:
    """A run's record: :func:`run_record` of a run folder, or a record file :func:`write_record` wrote,
    checked (:func:`check_record`; ``ValueError`` naming the file when it is not one)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        return run_record(path)
    rec = _read_json(path, "run record")
    if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT:
        raise ValueError(f"{path}: is not a {RECORD_FORMAT} record")
    try:
        check_record(rec)
        m = rec.get("machine")
        if not isinstance(m, dict) or not isinstance(m.get("cpu"), str) or isinstance(m.get("cores"), bool) or not isinstance(m.get("cores"), int):
            raise ValueError("machine is not the record of a machine (cpu, cores, ...)")
        if rec.get("commit") is not None and not isinstance(rec["commit"], str):
            raise ValueError(f"commit is {rec['commit']!r}, expected a commit name")
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: {e}") from None
    return rec


def _runs(runs_dir: Path) -> list[tuple[str, int, Path]]:
    """``(row, seed, path)`` of each run in ``runs_dir``: a folder ``<row>_s<seed>/`` holding
    ``eval.json`` (one without is unfinished, and left out), or a record ``<row>_s<seed>.json``. A name
    of that form with a row that is no plain name (:data:`ROW_NAME`) or a seed no recipe takes is refused."""
    from .recipe import MAX_SEED

    if not runs_dir.is_dir():
        raise FileNotFoundError(f"folder of runs not found: {runs_dir}")
    found = []
    for p in sorted(runs_dir.iterdir()):
        if p.name.startswith("."):  # hidden files are no runs (a macOS ._gt_s0.json, a temporary)
            continue
        record = p.suffix == ".json"
        m = RUN_NAME.match(p.stem if record else p.name)
        if not m or not (record or (p.is_dir() and os.path.lexists(p / EVAL_JSON))):
            continue
        if not ROW_NAME.match(m["row"]) or int(m["seed"]) > MAX_SEED:
            raise ValueError(f"{p}: not a run's name (<row>_s<seed>, the row letters, digits and _+.-, the seed at most {MAX_SEED})")
        found.append((m["row"], int(m["seed"]), p))
    return found


def _check_alike(r: dict, path: Path, row: str, first: list, of_row: dict) -> None:
    """A table compares runs that differ only in their labels and seed: the same recipe (but the seed),
    training set size and evaluation (images, scales, flip) for all, one label set per row;
    ``ValueError`` naming the two files that differ."""
    def key(x: dict) -> tuple:
        ev = x["eval"]
        recipe = {k: v for k, v in Recipe.from_dict(x["recipe"]).to_dict().items() if k != "seed"}
        return recipe, x["n_train"], ev["n_images"], ev.get("scales", [1.0]), ev.get("flip", False)

    if not first:
        first.append((key(r), path, r["eval"].get("scored_on")))
    elif key(r) != first[0][0]:
        what = ("recipe", "training set size", "evaluation images", "evaluation scales", "evaluation flip")
        differs = next(w for w, a, b in zip(what, key(r), first[0][0]) if a != b)
        raise ValueError(f"{path}: its {differs} differs from {first[0][1]}'s; a table compares runs that differ only in labels and seed")
    else:
        check_scored_alike(r["eval"].get("scored_on"), path, first[0][2], first[0][1], "a table compares runs on the same val images")
    labels = r.get("labels_fingerprint")
    if row in of_row and of_row[row][0] != labels:
        raise ValueError(f"{path}: trained on other labels than {of_row[row][1]} (fingerprint {str(labels)[:12]}…); one row, one label set")
    of_row.setdefault(row, (labels, path))


def check_scored_alike(scored_on: str | None, where: object, first: str | None, first_where: object, why: str) -> None:
    """Two scores compare only when made on the same images and ground truth: ``ValueError`` naming
    ``where`` when both record what they were scored on (``scored_on``, a fingerprint of the ids'
    ground truth) and it differs; a score that predates the fingerprint is compared by its count alone."""
    if isinstance(scored_on, str) and isinstance(first, str) and scored_on != first:
        raise ValueError(f"{where}: scored on other images or ground truth than {first_where} (scored_on {str(scored_on)[7:19]}… vs "
                         f"{str(first)[7:19]}…); {why}")  # fmt: skip


def collect(runs_dir: str | os.PathLike, rows: Sequence[str] | None = None, alike: bool = False) -> Any:
    """One record per finished run of ``runs_dir`` (run folders or record files, :func:`load_run`):
    row, seed, miou, IoU per class, cost columns and the recipe's fields (``recipe_*``). ``alike``: the
    runs must differ only in labels and seed (:func:`_check_alike`), as a table of label sets needs."""
    import pandas as pd

    found, seen = [(row, seed, path) for row, seed, path in _runs(Path(runs_dir)) if rows is None or row in rows], {}
    for row, seed, path in found:
        if (row, seed) in seen:
            raise ValueError(f"{runs_dir}: {row}_s{seed} is both {seen[row, seed].name} and {path.name}; keep one")
        seen[row, seed] = path
    records: list[dict] = []
    first: list = []  # (record, path) of the first run: every run of a table shares its recipe (but the seed) and evaluation
    of_row: dict[str, tuple] = {}  # row -> (labels fingerprint, path): one label set per row
    for row, seed, path in found:
        r = load_run(path)
        if r["recipe"].get("seed", 0) != seed:
            raise ValueError(f"{path}: named for seed {seed}, trained with seed {r['recipe'].get('seed', 0)}")
        ev, hist = r["eval"], r["history"]
        rec = {"row": row, "seed": seed, "miou": 100 * ev["miou"] if ev["miou"] is not None else float("nan"), "n_val": ev["n_images"],
               "scored_on": ev.get("scored_on"),
               "s_per_epoch": float(np.mean(hist["epoch_seconds"])), "epochs": len(hist["epoch_seconds"]), "steps": r["step"],
               "peak_rss_mib": hist.get("peak_rss_mib", float("nan")), "threads": hist.get("threads"),
               "load_average": float(np.mean(hist.get("load_average", [np.nan]))),
               "device": hist.get("device"), "eval_seconds": ev.get("seconds", float("nan")), "run": str(path),
               "cpu": (r.get("machine") or {}).get("cpu", "this machine (a run folder)")}  # fmt: skip
        rec["eval"] = ",".join(map(str, ev.get("scales", [1.0]))) + (" + flip" if ev.get("flip") else "")
        rec.update({f"recipe_{k}": v for k, v in Recipe.from_dict(r["recipe"]).to_dict().items()})  # fields added since: their defaults
        rec.update({f"iou_{c}": 100 * v if v is not None else float("nan") for c, v in ev["iou"].items()})
        records.append(rec)
        if alike:  # a table of label sets (a recipe search compares recipes)
            _check_alike(r, path, row, first, of_row)
    if not records:
        raise FileNotFoundError(f"no finished runs (<row>_s<seed>/eval.json or <row>_s<seed>.json) in {runs_dir}")
    df = pd.DataFrame(records)
    order = list(rows) if rows is not None else list(dict.fromkeys(df["row"]))
    df["row"] = pd.Categorical(df["row"], categories=order, ordered=True)
    return df.sort_values(["row", "seed"]).reset_index(drop=True)


def summary(df: Any) -> Any:
    """Per row: mIoU of each seed, mean, and spread = (max − min) / 2 over seeds."""
    wide = df.pivot_table(index="row", columns="seed", values="miou", observed=True)
    wide.columns = [f"seed {s}" for s in wide.columns]
    vals = wide.to_numpy()
    wide["mean"] = np.nanmean(vals, axis=1)
    wide["spread"] = (np.nanmax(vals, axis=1) - np.nanmin(vals, axis=1)) / 2
    wide["seeds"] = np.isfinite(vals).sum(axis=1)
    return wide.reset_index()


def paired_gaps(df: Any, reference: str) -> Any:
    """Each row's gap to ``reference`` paired by seed (a seed fixes the sample order and the
    augmentations, so the two runs see the same crops): per row the seeds both have, the mean
    difference of val mIoU, its standard deviation over seeds, Student's paired t and its two-sided
    p-value (``scipy.stats.ttest_rel``; NaN with fewer than two common seeds), and ``real`` — the
    gap is called real when p < 0.05."""
    import pandas as pd
    from scipy import stats

    wide = df.pivot_table(index="seed", columns="row", values="miou", observed=True)
    if reference not in wide.columns:
        raise ValueError(f"no finished run of the reference row {reference!r}")
    rows = []
    for row in wide.columns:
        if row == reference:
            continue
        both = wide[[row, reference]].dropna()
        d = (both[row] - both[reference]).to_numpy()
        n = len(d)
        t, p = stats.ttest_rel(both[row], both[reference]) if n >= 2 else (np.nan, np.nan)
        rows.append({"row": row, "reference": reference, "seeds": n, "mean_gap": d.mean() if n else np.nan,
                     "sd_gap": d.std(ddof=1) if n >= 2 else np.nan, "t": float(t), "p": float(p), "real": bool(p < 0.05)})  # fmt: skip
    return pd.DataFrame(rows)


#: the recipe fields of a recipe search's table, in its order (:class:`samcam.seg.recipe.Recipe`)
SEARCH_FIELDS = ("backbone", "crop", "scale_min", "scale_max", "epochs", "batch_size", "optimizer", "lr", "head_lr_mult",
                 "weight_decay", "freeze_early", "output_stride", "head_channels")  # fmt: skip


def search_table(df: Any) -> Any:
    """One line per run of a recipe search (:func:`collect`'s records): its configuration (the run's
    row), seed, recipe fields, optimiser steps, seconds per epoch, training minutes, where it ran,
    how it was evaluated and its val mIoU."""
    import pandas as pd

    t = pd.DataFrame({"config": df["row"].astype(str), "seed": df["seed"]})
    for f in SEARCH_FIELDS:
        t[f] = df[f"recipe_{f}"]
    t["steps"] = df["steps"]
    t["s_per_epoch"] = df["s_per_epoch"]
    t["train_minutes"] = df["s_per_epoch"] * df["epochs"] / 60
    t["device"], t["threads"], t["eval"] = df["device"], df["threads"], df["eval"]
    t["val_miou"] = df["miou"]
    return t


def search_markdown(t: Any) -> str:
    """:func:`search_table` as Markdown (seconds and minutes to 0.1, mIoU to 0.01 as every table here; the CSV keeps them whole)."""
    def cell(v: Any) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    rounded = t.assign(s_per_epoch=t["s_per_epoch"].round(1), train_minutes=t["train_minutes"].round(1),
                       val_miou=[f"{v:.2f}" for v in t["val_miou"]])  # fmt: skip
    lines = ["| " + " | ".join(t.columns) + " |", "|---" * len(t.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rounded.itertuples(index=False)]
    return "\n".join(lines) + "\n"


#: what :func:`write_search` writes into its folder (and all that folder may hold)
SEARCH_FILES = ("table.csv", "table.md")


def write_search(runs_dir: str | os.PathLike, out_dir: str | os.PathLike, configs: Sequence[str] | None = None) -> Any:
    """Write ``table.csv`` and ``table.md`` of a recipe search (every finished run in ``runs_dir``,
    or those of ``configs`` in their order) into ``out_dir``; returns the table. Runs evaluated on
    other numbers of val images are refused: their scores do not compare."""
    have = {row for row, _, _ in _runs(Path(runs_dir))} if configs is not None else set()
    if configs is not None and (missing := [c for c in configs if c not in have]):
        raise ValueError(f"{runs_dir}: no finished run of configuration {missing[0]!r} (<name>_s<seed>); --configs names runs there")
    df = collect(runs_dir, configs)
    first = df.iloc[0]
    for r in df.itertuples():  # recipes are ranked on one set of val images (how each was evaluated is the table's eval column)
        if r.n_val != first["n_val"]:
            raise ValueError(f"{r.run}: evaluated on {r.n_val} images, {first['run']} on {first['n_val']}; a search compares recipes on the same val images")
        check_scored_alike(r.scored_on, r.run, first["scored_on"], first["run"], "a search compares recipes on the same val images")
        if r.eval != first["eval"]:  # multi-scale + flip adds points of its own: the ranking would be the protocol's
            raise ValueError(f"{r.run}: evaluated at scales {r.eval}, {first['run']} at {first['eval']}; a search compares recipes "
                             "evaluated alike (eval-seg each run with the same --scales and --flip)")  # fmt: skip
    t = search_table(df)
    csv, md = SEARCH_FILES
    write_text(Path(out_dir) / csv, t.to_csv(index=False))
    write_text(Path(out_dir) / md, search_markdown(t))
    return t


def table_markdown(summ: Any, names: dict[str, str] | None = None, digits: int = 2) -> str:
    """A Markdown table of :func:`summary` (row, each seed, mean ± spread; a row of one seed has no spread)."""
    seeds = [c for c in summ.columns if c.startswith("seed ")]
    head = "| labels the network was trained on | " + " | ".join(f"val mIoU, {s}" for s in seeds) + " | mean ± spread |"
    lines = [head, "|---" * (len(seeds) + 2) + "|"]
    for _, r in summ.iterrows():
        cells = [f"{r[s]:.{digits}f}" if np.isfinite(r[s]) else "—" for s in seeds]
        name = (names or {}).get(r["row"], r["row"])
        last = f"{r['mean']:.{digits}f} ± {r['spread']:.{digits}f}" if r["seeds"] >= 2 else f"{r['mean']:.{digits}f} (one seed: no spread)"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {last} |")
    return "\n".join(lines) + "\n"


def per_class_figure(df: Any, names: dict[str, str] | None = None):
    """Grouped bars: per-class val IoU of each row (mean over seeds), error bars = spread over seeds."""
    import matplotlib.pyplot as plt

    classes = list(VOC.class_names)
    rows = [r for r in df["row"].cat.categories if r in set(df["row"])]
    fig, ax = plt.subplots(figsize=(15, 4.5))
    width = 0.8 / len(rows)
    x = np.arange(len(classes))
    for k, row in enumerate(rows):
        sub = df[df["row"] == row][[f"iou_{c}" for c in classes]].to_numpy()
        mean, spread = np.nanmean(sub, 0), (np.nanmax(sub, 0) - np.nanmin(sub, 0)) / 2
        label = f"{(names or {}).get(row, row)} ({np.nanmean(sub):.1f})"
        ax.bar(x + (k - (len(rows) - 1) / 2) * width, mean, width, yerr=spread, label=label, capsize=1.5)
    ax.set_xticks(x, classes, rotation=45, ha="right")
    ax.set_ylabel("val IoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Per-class IoU on VOC 2012 val ({int(df['n_val'].iloc[0])} images), mean over seeds; bars: ± spread")
    ax.legend(fontsize=8, ncol=2, loc="upper right")
    fig.tight_layout()
    return fig


def gallery_figure(ids: Sequence[str], images_dir: str | os.PathLike, pred_dir: str | os.PathLike,
                   gt_dir: str | os.PathLike, title: str = ""):  # fmt: skip
    """One line per id: image | prediction | ground truth (VOC palette; void in white)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(ids), 3, figsize=(9, 2.6 * len(ids)), squeeze=False)
    for r, i in enumerate(ids):
        panels = (read_image(find_image(Path(images_dir), i)), colorize(read_label(Path(pred_dir) / f"{i}.png")),
                  _void_white(read_label(Path(gt_dir) / f"{i}.png")))  # fmt: skip
        for c, (im, name) in enumerate(zip(panels, ("image", "prediction", "ground truth"))):
            axes[r, c].imshow(im)
            axes[r, c].set_axis_off()
            axes[r, c].set_title(f"{i} · {name}" if c == 0 else name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _void_white(label: np.ndarray) -> np.ndarray:
    rgb = colorize(label).copy()
    rgb[label == VOC.ignore_index] = 255
    return rgb


def benchmark(df: Any, command: str) -> dict[str, Any]:
    """Training cost over the finished runs: seconds per epoch and peak RSS (``ru_maxrss``), per run and overall."""
    ck = load_run(df["run"].iloc[0])
    per_run = [{"run": Path(r.run).stem, "s_per_epoch": round(r.s_per_epoch, 1), "epochs": int(r.epochs),
                "peak_rss_mib": round(r.peak_rss_mib), "eval_s_per_image": round(r.eval_seconds / r.n_val, 3),
                "load_average": round(r.load_average, 2), "cpu": r.cpu, "device": r.device}
               for r in df.itertuples()]  # fmt: skip
    s = df["s_per_epoch"].to_numpy()
    return {
        "recipe": ck["recipe"], "n_train": ck["n_train"], "steps_per_epoch": ck["total_steps"] // ck["recipe"]["epochs"],
        "device": str(df["device"].iloc[0]), "torch_threads": int(df["threads"].iloc[0]), "machine": ck.get("machine") or machine_info(),
        "machines": sorted(set(df["cpu"])),
        "s_per_epoch_median": round(float(np.median(s)), 1), "s_per_epoch_min": round(float(s.min()), 1),
        "s_per_epoch_max": round(float(s.max()), 1), "peak_rss_mib_max": round(float(df["peak_rss_mib"].max())),
        "eval_s_per_image_median": round(float(np.median(df["eval_seconds"] / df["n_val"])), 3),
        "runs": per_run, "command": command,
    }  # fmt: skip


def benchmark_markdown(b: dict[str, Any]) -> str:
    m, r = b["machine"], b["recipe"]
    rows = "\n".join(f"| {x['run']} | {x['s_per_epoch']} | {x['epochs']} | {x['peak_rss_mib']} | {x['eval_s_per_image']} | {x['load_average']} | {x['cpu']}, {x['device']} |"
                     for x in b["runs"])
    return f"""# Segmentation training cost on CPU (`samcam train-seg`)

Machine of the first run: {m['cpu']}, {m['cores']} cores, {m.get('memory_gib', '?')} GiB; Python {m.get('python', '?')}, torch {m.get('torch', '?')}; device `{b['device']}`,
{b['torch_threads']} torch thread(s); the runs ran on: {'; '.join(b['machines'])} (each run's machine in the last column:
times differ by machine). The 1-minute load average at the end of each epoch (mean per run; about the thread
count when the run had the machine to itself) shows whether other jobs shared it.
Recipe: EfficientNet-{r['backbone']} + LR-ASPP, crop {r['crop']}, batch {r['batch_size']}, {b['n_train']} train images =
{b['steps_per_epoch']} steps per epoch, {r['epochs']} epochs.

**{b['s_per_epoch_median']} s per epoch** (median over {len(b['runs'])} run{'s' if len(b['runs']) != 1 else ''}; range {b['s_per_epoch_min']}–{b['s_per_epoch_max']}),
peak resident memory **{b['peak_rss_mib_max']} MiB** (`resource.getrusage(RUSAGE_SELF).ru_maxrss`, largest run);
evaluation {b['eval_s_per_image_median']} s per val image (single scale, full size, median).

| run | s / epoch | epochs | peak RSS (MiB) | eval s / image | load average | machine |
|---|---|---|---|---|---|---|
{rows}

Command (one run): `{b['command']}`
"""


def gaps_markdown(gaps: Any, names: dict[str, str] | None = None, digits: int = 2) -> str:
    """A Markdown table of :func:`paired_gaps` (a statistic that needs two paired seeds reads —)."""
    def num(v: float, d: int = digits) -> str:
        return f"{v:+.{d}f}" if np.isfinite(v) else "—"

    ref = (names or {}).get(gaps["reference"].iloc[0], gaps["reference"].iloc[0]) if len(gaps) else ""
    lines = [f"| labels | seeds paired | mean gap to {ref} | sd over seeds | t | p | real (p < 0.05) |", "|---" * 7 + "|"]
    for _, r in gaps.iterrows():
        sd = f"{r['sd_gap']:.{digits}f}" if np.isfinite(r["sd_gap"]) else "—"
        p = f"{r['p']:.3f}" if np.isfinite(r["p"]) else "—"
        real = ("yes" if r["real"] else "no") if np.isfinite(r["p"]) else "untested (fewer than 2 seeds)"
        lines.append(f"| {(names or {}).get(r['row'], r['row'])} | {r['seeds']} | {num(r['mean_gap'])} | {sd} | {num(r['t'])} | {p} | {real} |")
    return "\n".join(lines) + "\n"


def write_table(runs_dir: str | os.PathLike, out_dir: str | os.PathLike, bench_dir: str | os.PathLike,
                rows: Sequence[str], names: dict[str, str], reference: str, command: str, recipe: Recipe | None = None) -> dict[str, Any]:  # fmt: skip
    """From the finished runs of ``runs_dir`` (record files or run folders), write into ``out_dir``
    ``table.md``/``table.csv`` (val mIoU per row and seed, mean ± spread; the CSV per run with per-class
    IoU and cost), ``gaps.md``/``gaps.csv`` (each row's gap to ``reference`` paired by seed,
    :func:`paired_gaps`) and ``per_class.png``; and ``seg_train_cpu.{md,json}`` (the training cost)
    into ``bench_dir``. Returns what it wrote. Every run of ``runs_dir`` belongs to one of ``rows`` (a
    row missing from the list would silently leave the table), and with ``recipe`` every run was
    trained with it (but the seed): a table never mixes recipes."""
    import matplotlib.pyplot as plt
    import pandas as pd

    out = Path(out_dir)
    if reference not in rows:
        raise ValueError(f"the reference row {reference!r} is not one of the rows {list(rows)}")
    unlisted = sorted({row for row, _, _ in _runs(Path(runs_dir))} - set(rows))
    if unlisted:
        raise ValueError(f"{runs_dir}: runs of rows {unlisted} that the table does not list (rows: {list(rows)})")
    df = collect(runs_dir, rows, alike=True)
    if recipe is not None:
        want = {k: v for k, v in recipe.to_dict().items() if k != "seed"}
        for r in df.itertuples():
            got = {k: getattr(r, f"recipe_{k}") for k in want}
            if got != want:
                diff = next(k for k in want if got[k] != want[k])
                raise ValueError(f"{r.run}: trained with {diff} {got[diff]!r}, the table's recipe has {want[diff]!r}")
    summ = summary(df)
    write_text(out / "table.md", table_markdown(summ, names))
    means = summ[["row", "mean", "spread"]].rename(columns={"mean": "miou_mean_over_seeds", "spread": "miou_spread_over_seeds"})
    table = df.drop(columns=["run", "device", "threads", "scored_on", *[c for c in df.columns if c.startswith("recipe_")]]).merge(means, on="row")
    table.insert(1, "labels", [names.get(r, r) for r in table["row"]])
    write_text(out / "table.csv", table.to_csv(index=False, float_format="%.4f"))
    if reference in set(df["row"]):
        gaps = paired_gaps(df, reference)
        gaps_md = gaps_markdown(gaps, names)
    else:  # a table in progress: the reference row has no finished run yet
        gaps = pd.DataFrame(columns=["row", "reference", "seeds", "mean_gap", "sd_gap", "t", "p", "real"])
        gaps_md = f"No finished run of the reference row {names.get(reference, reference)} yet: no gap is tested.\n"
    write_text(out / "gaps.csv", gaps.to_csv(index=False, float_format="%.4f"))
    write_text(out / "gaps.md", gaps_md)
    save(per_class_figure(df, names), out / "per_class.png")
    plt.close("all")
    b = benchmark(df, command)
    write_text(Path(bench_dir) / "seg_train_cpu.json", json.dumps(b, indent=1) + "\n")
    write_text(Path(bench_dir) / "seg_train_cpu.md", benchmark_markdown(b))
    return {"summary": summ, "runs": df, "gaps": gaps, "benchmark": b}
