"""The paper-style table: one row per method, pseudo-label mIoU before and after SAM enhancement."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from samcam.cam.methods import METHODS

NOT_RUN_REASON = {
    "CLIMS": "its pseudo labels / CAMs are not available here (run its code, then 02_enhance_method)",
    "CLIP-ES": "its CAMs are not available here (run its code, then 02_enhance_method)",
    "EPS": "its CAMs / labels are not available here (run its code, then 02_enhance_method)",
    "L2G": "its attention maps / labels are not available here (run its code, then 02_enhance_method)",
    "SIPE": "its CAMs / labels are not available here (run its code, then 02_enhance_method)",
    "TransCAM": "not run yet: 02_enhance_method with the official labels",
}


def collect(results_dir: str | os.PathLike, dataset: str = "voc") -> list[dict]:
    """Every ``results/<dataset>/<method>/summary.json``."""
    root = Path(results_dir) / dataset
    return [json.loads(p.read_text()) for p in sorted(root.glob("*/summary.json"))]


def prompted_miou(results_dir: str | os.PathLike, method: str, config: str = "box") -> float | None:
    """mIoU (%) of prompted mode for ``method`` from ``results/prompted/<method>/ablation.csv``."""
    p = Path(results_dir) / "prompted" / method / "ablation.csv"
    if not p.exists():
        return None
    df = pd.read_csv(p)
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
