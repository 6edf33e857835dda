"""The paper-style table: one row per method, pseudo-label mIoU before and after SAM enhancement."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from samcam.cam.methods import METHODS
from samcam.io import json_loads, read_csv, read_input

NOT_RUN_REASON = {
    "CLIMS": "its pseudo labels / CAMs are not available here (run its code, then 02_enhance_method)",
    "CLIP-ES": "its CAMs are not available here (run its code, then 02_enhance_method)",
    "EPS": "its CAMs / labels are not available here (run its code, then 02_enhance_method)",
    "L2G": "its attention maps / labels are not available here (run its code, then 02_enhance_method)",
    "SIPE": "its CAMs / labels are not available here (run its code, then 02_enhance_method)",
    "TransCAM": "not run yet: 02_enhance_method with the official labels",
}


#: the claims table's rows (notebook 08) and the folder of each row's labels under ``<labels_dir>/``
CLAIMS_ROWS = {
    "CAM": "cam",
    "CAM + SAM": "cam+sam",
    "CAM + SAM prompted": "cam+sam_prompted",
    "CAM + AffinityNet": "cam+affinitynet",
    "CAM + AffinityNet + SAM": "cam+affinitynet+sam",
    "CAM + AffinityNet (CAM + SAM seeds)": "cam+affinitynet_samseeds",
    "CAM + walk on GT affinity (uses GT)": "cam+gt_walk",
}


def collect(results_dir: str | os.PathLike, dataset: str = "voc") -> list[dict]:
    """Every ``results/<dataset>/<method>/summary.json``."""
    root = Path(results_dir) / dataset
    return [json_loads(read_input(p, "record")) for p in sorted(root.glob("*/summary.json")) if not p.parent.name.startswith(".")]


def prompted_miou(results_dir: str | os.PathLike, method: str, config: str = "box") -> float | None:
    """mIoU (%) of prompted mode for ``method`` from ``results/prompted/<method>/ablation.csv``."""
    p = Path(results_dir) / "prompted" / method / "ablation.csv"
    if not p.exists():
        return None
    df = read_csv(p, "table")
    row = df[df["configuration"] == config]
    return float(row["miou"].iloc[0]) if len(row) else None


def paper_table(results_dir: str | os.PathLike, dataset: str = "voc") -> pd.DataFrame:
    """Rows for the paper's methods (marked *not run* with the reason when absent) and every other run.

    ``miou_after`` is everything-mode + the paper's rule; ``miou_prompted`` is samcam's prompted mode
    (box prompts) where ``05_prompted_ablation`` was run for the method on the same ids."""
    found = {s["method"]: s for s in collect(results_dir, dataset)}
    names = list(METHODS) + [m for m in found if m not in METHODS]
    rows = []
    for name in names:
        s = found.get(name)
        if s is None:
            rows.append({"method": name, "status": "not run", "reason": NOT_RUN_REASON.get(name, "")})
            continue
        masks = s.get("masks") or {}
        rows.append({
            "method": name, "status": "run", "reason": "",
            "miou_before": 100 * s["miou_before"], "miou_after": 100 * s["miou_after"], "gain": 100 * s["miou_gain"],
            "miou_prompted": prompted_miou(results_dir, name),
            "n_images": s["n_images"], "measured_on": s.get("measured_on", ""),
            "sam_model": masks.get("model_type"), "points_per_side": (masks.get("settings") or {}).get("points_per_side"),
            "rule": (s.get("rule") or {}).get("name"),
        })  # fmt: skip
    return pd.DataFrame(rows)


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub table by pandas' ``to_markdown`` (numbers to two decimals; empty cells for rows not run)."""
    cols = ["method", "status", "miou_before", "miou_after", "gain", "miou_prompted", "n_images", "sam_model", "points_per_side", "rule", "measured_on", "reason"]
    cols = [c for c in cols if c in df.columns]
    decimals = {"miou_before", "miou_after", "gain", "miou_prompted"}
    table = df[cols].astype(object).where(df[cols].notna(), "")
    return table.to_markdown(index=False, tablefmt="github", floatfmt=[".2f" if c in decimals else ".0f" for c in cols]) + "\n"


def table_figure(df: pd.DataFrame):
    """Bars of mIoU before/after for the methods that were run."""
    from samcam.report.figures import _plt

    plt = _plt()
    run = df[df["status"] == "run"]
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(run) + 2), 3.5))
    x = np.arange(len(run))
    ax.bar(x - 0.2, run["miou_before"], 0.4, label="pseudo labels", color="#9aa5b1")
    ax.bar(x + 0.2, run["miou_after"], 0.4, label="+ SAM (paper's rule)", color="#d9480f")
    for xi, (b, a) in enumerate(zip(run["miou_before"], run["miou_after"])):
        ax.text(xi + 0.2, a + 0.5, f"{a - b:+.1f}", ha="center", fontsize=8)
    ax.set_xticks(x, run["method"])
    ax.set_ylabel("mIoU (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def score_tables(evaluators: dict, digits: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """For named :class:`samcam.metrics.Evaluator` objects: a summary table (images, mIoU, mean
    precision and recall, in %) and a per-class IoU table (%), one column per name."""
    summary = pd.DataFrame([{"labels": name, "images": len(ev.image_ids), "miou": 100 * ev.scores().miou,
                             "precision": 100 * ev.scores().mean_precision, "recall": 100 * ev.scores().mean_recall}
                            for name, ev in evaluators.items()]).round(digits)  # fmt: skip
    first = next(iter(evaluators.values()))
    per_class = pd.DataFrame({name: 100 * ev.scores().iou for name, ev in evaluators.items()}, index=list(first.spec.class_names))
    return summary, per_class.round(digits - 1)


def error_table(evaluators: dict, digits: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's two error kinds for named :class:`samcam.metrics.Evaluator` objects
    (:func:`samcam.metrics.error_pixels`): a summary (mIoU; partial and false pixels in millions and
    as % of the ground-truth object pixels; the part of false on background) and a per-class table
    of partial and false pixels in % of each class's object pixels."""
    from samcam.metrics import error_pixels, error_rates

    rows, per_class = [], {}
    for name, ev in evaluators.items():
        e, r = error_pixels(ev.conf), error_rates(ev.conf)
        rows.append({"labels": name, "images": len(ev.image_ids), "miou": 100 * ev.scores().miou,
                     "partial_mpx": e["partial"].sum() / 1e6, "partial_pct": r["partial_pct"],
                     "false_mpx": e["false"].sum() / 1e6, "false_pct": r["false_pct"],
                     "false_on_background_pct": r["false_on_background_pct"]})  # fmt: skip
        with np.errstate(divide="ignore", invalid="ignore"):
            per_class[(name, "partial_pct")] = 100 * e["partial"] / e["object"]
            per_class[(name, "false_pct")] = 100 * e["false"] / e["object"]
    first = next(iter(evaluators.values()))
    table = pd.DataFrame(per_class, index=list(first.spec.class_names[1:]))
    summary = pd.DataFrame(rows)
    pct = [c for c in summary.columns if c.endswith("_pct") or c == "miou"]
    summary[pct] = summary[pct].round(digits)
    return summary, table.round(digits - 1)


def cost_table(rows: dict, recipes: dict, cams, masks, classifier_checkpoint=None, mask_benchmark=None) -> pd.DataFrame:
    """What each row of the claims table costs, from the cost records the steps wrote
    (``samcam_cost.json`` of each folder, ``seconds`` of each checkpoint) and, for everything-mode
    masks, their files' own ``meta`` (seconds and device of each image) and the CPU generator
    benchmark. ``rows`` maps row names to their label folders; ``recipes[name] = (steps, trainings)``:
    the per-image steps the row runs after the CAM, each ``"masks"`` (SAM everything-mode, charged
    at the CPU benchmark) or the name of a row whose folder's cost it adds, and the checkpoints
    whose training seconds it adds to the classifier's.

    Columns: ``training_s`` (one-off: the classifier plus the row's trainings) and its
    ``extra_training_s`` beyond the CAM; ``cam_s_per_image``; ``extra_cpu_s_per_image`` (every
    per-image step after the CAM, on this CPU) and their sum ``cpu_s_per_image``; NaN where a record
    is missing or a step ran elsewhere than on the CPU; ``masks_s_per_image`` and ``masks_device``
    (how the mask sets used were actually made)."""
    from samcam.io import load_checkpoint
    from samcam.outputs import read_cost
    from samcam.sam.mask_files import read_meta

    def ck_seconds(path):
        return float(load_checkpoint(path).get("seconds", np.nan)) if path is not None and Path(path).exists() else np.nan

    def spi(folder):  # CPU seconds per image of a step's folder; NaN when unknown or not all on the CPU
        c = read_cost(folder)
        return np.nan if c["seconds_per_image"] is None or c["devices"] != ["cpu"] else c["seconds_per_image"]

    unknown = sorted({t for steps, _ in recipes.values() for t in steps} - {"masks", *rows}) + sorted(set(recipes) - set(rows))
    if unknown:
        raise ValueError(f"cost recipes name steps or rows that are not rows: {unknown}")
    if set(rows) - set(recipes):
        raise ValueError(f"rows without a cost recipe: {sorted(set(rows) - set(recipes))}")
    clf = ck_seconds(classifier_checkpoint)
    metas = [read_meta(p) for p in sorted(Path(masks).glob("*.json.gz")) if not p.name.startswith(".")]  # hidden files are no mask sets
    made = np.mean([m["seconds"] for m in metas if "seconds" in m]) if metas else np.nan
    devices = ", ".join(sorted({str(m.get("device", "?")) for m in metas}))
    sam_cpu = np.nan
    if mask_benchmark is not None and Path(mask_benchmark).exists():
        b = json_loads(read_input(mask_benchmark, "record"))
        sam_cpu = float(np.mean([r["fast_s"] for r in b["rows"]]))
    cam = spi(cams)
    out = []
    for name in rows:
        steps, trainings = recipes[name]
        extra = float(sum(sam_cpu if t == "masks" else spi(rows[t]) for t in steps))
        trained = float(sum(ck_seconds(c) for c in trainings))
        out.append({"labels": name, "training_s": clf + trained, "extra_training_s": trained, "cam_s_per_image": cam,
                    "extra_cpu_s_per_image": extra, "cpu_s_per_image": cam + extra,
                    "masks_s_per_image": made if "masks" in steps else np.nan, "masks_device": devices if "masks" in steps else ""})  # fmt: skip
    return pd.DataFrame(out)
