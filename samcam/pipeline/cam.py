"""Batch steps around CAMs: image-level labels for a split, CAM extraction, CAM → label, sweeps.

Every output file is written atomically and ids already done are skipped (resume).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from samcam.cam.files import load_cam, save_cam
from samcam.cam.infer import SCALES, multiscale_cam
from samcam.cam.label import cam_to_label, check_threshold
from samcam.cam.nets import CamNet
from samcam.data.spaces import VOC, DatasetSpec
from samcam.io import common_folder, folder_ids, read_image, read_label, read_labelled_image, write_label
from samcam.outputs import SCORED_NETWORK, StepResult, claim_output, finish_step, pending
from samcam.metrics import Evaluator

if TYPE_CHECKING:
    import pandas as pd


def extract_cams(
    net: CamNet,
    images: dict[str, Path],
    labels: dict[str, np.ndarray],
    out: str | os.PathLike,
    scales=SCALES,
    progress: bool | None = None,
    provenance: dict | None = None,
    devices: list[str] | None = None,
    threads: int | None = None,
    label_source: str | os.PathLike | None = None,
) -> StepResult:
    """Write ``out/<id>.npy`` (IRN layout) for every id of ``labels`` not done yet.

    The network's own provenance (backbone, checkpoint SHA-256, set by
    :func:`samcam.cam.nets.build_camnet`), the scales and ``provenance`` (e.g. the label source) are
    recorded in ``out/samcam_run.json``, with the content of the images, of the checkpoint and of
    ``label_source`` (the file or folder ``labels`` were read from,
    :func:`samcam.data.voc.label_source_path`); a rerun with other settings, another network or other
    labels is refused, and one with the same checkpoint or labels at another path resumes. ``devices`` (two or
    more, e.g. ``["cuda:0", "cuda:1"]``) runs one spawned process per device on a disjoint slice of the
    pending ids (:func:`samcam.pipeline.workers.run_on_devices`), one progress bar for all; the files
    are those one process writes.
    """
    from samcam.pipeline.workers import run_on_devices
    from samcam.progress import progress_bar

    params = {"scales": list(scales), **getattr(net, "provenance", {"backbone": net.name}), **(provenance or {})}
    checkpoint = params.pop("checkpoint", None)  # an input, compared by content: a copy of it elsewhere is the same network
    with claim_output(out, "cam", {"images": common_folder(images.values()), "labels": label_source, "checkpoint": checkpoint}, params):
        out = Path(out)
        todo = pending(list(labels), out, ".npy")
        t0 = time.perf_counter()
        bar = progress_bar(total=len(todo), desc="cams", unit="img", progress=progress)
        work = (net, {i: images[i] for i in todo}, {i: labels[i] for i in todo}, out, tuple(scales))
        try:
            run_on_devices(cams_into, list(devices or [None]), todo, work, lambda image_id, n: bar.update(), threads)
            where = ", ".join(devices) if devices else device_name(net)
        finally:
            bar.close()
        return finish_step(out, list(labels), todo, time.perf_counter() - t0, where)


def cams_into(device: str | None, ids: list[str], report, net: CamNet, images: dict[str, Path], labels: dict[str, np.ndarray],
              out: Path, scales: tuple[float, ...]) -> None:  # fmt: skip
    """The CAM files of ``ids`` written into ``out`` by ``net`` (moved to ``device`` if given), calling
    ``report(image_id, number of classes)`` after each: the loop of one process, or of one device's worker."""
    if device is not None:
        net = net.to(device)
    for image_id in ids:
        keys, cam = image_cams(net, images[image_id], labels[image_id], scales)
        save_cam(out / f"{image_id}.npy", keys, cam)
        report(image_id, len(keys))


def image_cams(net: CamNet, image: Path, classes: np.ndarray, scales: tuple[float, ...], pixels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The CAMs of one image for its 1-based image-level ``classes``: the 0-based keys (IRN's file
    layout) and their ``K × H × W`` maps. ``pixels``: the image, when the caller has read it already."""
    keys = np.asarray(classes, dtype=np.int64) - 1
    pixels = read_image(image) if pixels is None else pixels
    return keys, multiscale_cam(net, pixels, keys.tolist(), scales, source=image)


def device_name(net: CamNet) -> str:
    """Where ``net`` computes, for cost records: ``cpu``, or the accelerator and its model name."""
    import torch

    from samcam.cam.infer import net_device

    dev = net_device(net)
    return "cpu" if dev.type == "cpu" else f"{dev} ({torch.cuda.get_device_name(dev)})"


def cam_label(cam_file: Path, threshold: float, spec: DatasetSpec, size: tuple[int, int] | None = None) -> np.ndarray:
    """The label of one IRN CAM file; ``ValueError`` naming the file when its maps are not ``size``
    (the image's H, W) or give classes outside the label space."""
    d = load_cam(cam_file, size)
    try:
        return cam_to_label(d["high_res"], d["keys"], threshold, spec.n_classes)
    except ValueError as e:
        raise ValueError(f"{cam_file}: {e}") from None


def cams_to_labels(cams: str | os.PathLike, out: str | os.PathLike, threshold: float, ids: list[str] | None = None,
                   spec: DatasetSpec = VOC, note: str | None = None, progress: bool | None = None,
                   sizes: dict[str, tuple[int, int]] | None = None) -> StepResult:  # fmt: skip
    """``out/<id>.png`` from ``cams/<id>.npy`` at background threshold ``threshold`` (recorded, with
    ``note`` such as "tuned on ground truth", in ``out/samcam_run.json``). ``sizes`` (id -> image H, W)
    checks each CAM against its image."""
    from samcam.progress import progress_bar

    check_threshold(threshold)
    ids = folder_ids(cams, ".npy", "CAM", ids)
    cams = Path(cams)
    with claim_output(out, "cam2label", {"cams": cams}, {"threshold": threshold, "dataset": spec.name,
                     "rule": "IRN cam_eval_thres (constant background score, argmax)"}, notes={"note": note} if note else None):  # fmt: skip
        out = Path(out)
        todo = pending(ids, out)
        t0 = time.perf_counter()
        for image_id in progress_bar(todo, desc="cam2label", unit="img", progress=progress):
            label = cam_label(cams / f"{image_id}.npy", threshold, spec, (sizes or {}).get(image_id))
            write_label(out / f"{image_id}.png", label, spec)
        return finish_step(out, ids, todo, time.perf_counter() - t0)


def threshold_sweep(cams: str | os.PathLike, gt: str | os.PathLike, ids: list[str], thresholds, spec: DatasetSpec = VOC):
    """mIoU and error pixels of CAM labels at each background threshold (each CAM file read once).

    The best row is marked ``gt_tuned``: choosing a threshold this way uses ground truth, a known leak
    in the WSSS literature; report it as such.
    """
    thresholds = _checked(thresholds)
    ids = folder_ids(cams, ".npy", "CAM", ids)
    evs = [Evaluator(spec, keep_per_image=False) for _ in thresholds]
    for image_id in ids:
        g = read_label(Path(gt) / f"{image_id}.png", spec)
        for t, ev in zip(thresholds, evs):
            ev.add(image_id, g, cam_label(Path(cams) / f"{image_id}.npy", t, spec, g.shape))
    return sweep_table(thresholds, evs).rename(columns={"best": "gt_tuned"})


def score_cams(net: CamNet, images: dict[str, Path], gt: str | os.PathLike, labels: dict[str, np.ndarray], thresholds,
               scales=SCALES, spec: DatasetSpec = VOC, progress: bool | None = None):  # fmt: skip
    """The same sweep as :func:`threshold_sweep` for ``net``'s CAMs of ``images`` computed in memory
    (no CAM files): for scoring a classifier on held-out images, where the best row (``best``) is a
    threshold chosen without the scored training ids' ground truth."""
    from samcam.progress import progress_bar

    thresholds = _checked(thresholds)
    evs = [Evaluator(spec, keep_per_image=False) for _ in thresholds]
    for image_id in progress_bar(list(labels), desc="cam-eval", unit="img", progress=progress):
        image, g = read_labelled_image(images[image_id], Path(gt) / f"{image_id}.png", spec, "ground-truth")
        keys, cams = image_cams(net, images[image_id], labels[image_id], scales, image)
        for t, ev in zip(thresholds, evs):
            ev.add(image_id, g, cam_to_label(cams, keys, t, spec.n_classes))
    return sweep_table(thresholds, evs)


def _checked(thresholds) -> list[float]:
    thresholds = [float(t) for t in thresholds]
    for t in thresholds:
        check_threshold(t)
    return thresholds


def sweep_table(thresholds: list[float], evs: list[Evaluator], key: str = "threshold"):
    """One row per threshold (or other setting, named by ``key``): mIoU, and the paper's partial and
    false pixels (and the false pixels on background) in % of the ground-truth object pixels;
    ``best`` marks the highest mIoU, the first of ties (the one a choice takes)."""
    import pandas as pd

    from samcam.metrics import error_rates

    rows = [{key: t, "miou": ev.scores().miou, **error_rates(ev.conf)} for t, ev in zip(thresholds, evs)]
    df = pd.DataFrame(rows)
    df["best"] = False
    if df["miou"].notna().any():
        df.loc[df["miou"].idxmax(), "best"] = True  # one row: two marked best named two choices (audit 10, F11)
    return df


CAM_EVAL_COLUMNS = ("threshold", "miou", "map", "partial_pct", "false_pct")


def read_cam_eval(path: str | os.PathLike) -> "pd.DataFrame":
    """A ``samcam cam-eval --csv`` table, checked: ``ValueError`` naming the file when it is not a
    CSV with those columns and rows, a value is not a finite number, a threshold or mIoU lies outside
    0..1, the mAP (percent) or the partial share outside 0..100, the mAP is a fraction (0 < map ≤ 1,
    which would be compared with other tables' percents), the false share is negative, or a
    threshold is listed twice."""
    import pandas as pd

    from samcam.io import read_csv

    df = read_csv(path, "cam-eval table")
    if "gt_tuned" in df.columns:  # cam2label --sweep-csv marks its sweep so: chosen on the scored ids' ground truth
        raise ValueError(f"{path}: a sweep tuned on the scored images' ground truth (its gt_tuned column), not a held-out cam-eval table")
    missing = sorted(set(CAM_EVAL_COLUMNS) - set(df.columns))
    if missing or df.empty:
        raise ValueError(f"{path}: not a cam-eval table (missing {missing or 'rows'})")
    if kinds := [f"{c} ({df[c].dtype})" for c in CAM_EVAL_COLUMNS if df[c].dtype.kind not in "iuf" and df[c].dtype != object]:
        raise ValueError(f"{path}: {', '.join(kinds)} not numbers; not a cam-eval table")  # True/False would be read as 1/0
    values = df[list(CAM_EVAL_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    if not np.isfinite(values.to_numpy(float)).all():
        raise ValueError(f"{path}: a cam-eval table whose {', '.join(CAM_EVAL_COLUMNS)} are not all finite numbers")
    for col, hi in (("threshold", 1.0), ("miou", 1.0), ("map", 100.0), ("partial_pct", 100.0), ("false_pct", np.inf)):
        if not values[col].between(0.0, hi).all():
            raise ValueError(f"{path}: {col} values outside 0..{hi:g} (found {values[col].min():g} to {values[col].max():g}); not a cam-eval table")
    fraction = values["map"].between(0.0, 1.0, inclusive="right")
    if fraction.any():  # cam-eval writes mAP in percent: 0.8 beside another table's 80
        raise ValueError(f"{path}: map {values['map'][fraction].iloc[0]:g} looks like a fraction; cam-eval tables give the mAP in percent "
                         "(0..100), and candidates are compared by it")  # fmt: skip
    if values["map"].nunique() > 1:  # one classifier per table: its mAP is one number, repeated on every row
        raise ValueError(f"{path}: map differs between rows ({values['map'].min():g} to {values['map'].max():g}); one table is one classifier")
    if values["threshold"].duplicated().any():
        raise ValueError(f"{path}: threshold {values['threshold'][values['threshold'].duplicated()].iloc[0]:g} is listed twice")
    if "scored_on" in df.columns:  # what cam-eval scored (its ids' ground truth, by content): one fingerprint on every row
        if df["scored_on"].nunique(dropna=False) != 1 or not re.fullmatch(r"sha256:[0-9a-f]{64}", str(df["scored_on"].iloc[0])):
            raise ValueError(f"{path}: its scored_on column is not one fingerprint (sha256:…) on every row; not a cam-eval table")
    if SCORED_NETWORK in df.columns:  # the classifier it scored, by its checkpoint's SHA-256: one on every row
        if df[SCORED_NETWORK].nunique(dropna=False) != 1 or not re.fullmatch(r"[0-9a-f]{64}", str(df[SCORED_NETWORK].iloc[0])):
            raise ValueError(f"{path}: its {SCORED_NETWORK} column is not one SHA-256 on every row; not a cam-eval table")
    return df.assign(**{c: values[c] for c in CAM_EVAL_COLUMNS})


def best_rows(evals: dict[str, "pd.DataFrame"]) -> dict[str, "pd.Series"]:
    """Each candidate's row of its held-out sweep with the highest mIoU (the first of ties)."""
    return {name: df.loc[df["miou"].idxmax()] for name, df in evals.items()}


def _scored_on(df: "pd.DataFrame") -> str | None:
    """A cam-eval table's ``scored_on`` fingerprint; ``None`` for a table made before it was recorded."""
    return str(df["scored_on"].iloc[0]) if "scored_on" in df.columns else None


def select_classifier(evals: dict[str, "pd.DataFrame"]) -> tuple[str, float]:
    """The search protocol's choice among candidate classifiers, from their held-out sweeps
    (:func:`score_cams` tables, ``map`` column included): the highest CAM mIoU at each candidate's
    best held-out threshold; ties go to the higher mAP, then to the first listed. Returns the
    candidate's name and its threshold, both chosen without the training ids' ground truth.
    ``ValueError`` when candidates were swept over other thresholds or scored on other images or
    ground truth (``scored_on``; a table that predates it is compared with others that lack it)."""
    if not evals:
        raise ValueError("no candidate to select from")
    (first, ref), *others = evals.items()
    for name, df in others:  # a choice among candidates scored alike: one threshold grid, the same images and ground truth
        if sorted(df["threshold"]) != sorted(ref["threshold"]):
            raise ValueError(f"candidate {name!r} was swept over other thresholds than {first!r}; candidates are compared on one threshold grid")
        if _scored_on(df) != _scored_on(ref):
            raise ValueError(f"candidate {name!r} was scored on other images or ground truth than {first!r} (their scored_on differ, "
                             "or one table lacks it); candidates are compared on the same held-out images")  # fmt: skip
    networks: dict[str, str] = {}
    for name, df in evals.items():  # a copy of one table, or one classifier scored twice, is no second candidate
        if SCORED_NETWORK in df.columns:
            same = networks.setdefault(str(df[SCORED_NETWORK].iloc[0]), name)
            if same != name:
                raise ValueError(f"candidates {same!r} and {name!r} scored one classifier ({SCORED_NETWORK} {str(df[SCORED_NETWORK].iloc[0])[:12]}…); "
                                 "each candidate is another classifier")  # fmt: skip
    best = best_rows(evals)
    name = max(best, key=lambda n: (round(float(best[n]["miou"]), 6), float(best[n]["map"]), -list(best).index(n)))
    return name, float(best[name]["threshold"])
