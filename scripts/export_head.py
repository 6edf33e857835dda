"""Ship the classifier head of a head-only checkpoint inside the package (used by the demo).

Usage::

    python scripts/export_head.py work/claims/clf_lite0_s16_head.pt voc_lite0_s16 \
        --val-map 81.49 --trained-on "..." --command "samcam train-classifier ..." [--threshold 0.25 --threshold-from "..."]

writes ``samcam/cam/heads/<name>.npz`` (:func:`samcam.cam.nets.export_head`): 20 × C floats and a
record of the checkpoint's configuration, SHA-256, training seconds and what is given here.
"""

from __future__ import annotations

import sys

from samcam.cam.nets import SHIPPED_HEADS, export_head
from samcam.config import number
from samcam.io import check_id
from samcam.cli import Parser, one_line


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="export_head", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a samcam train-classifier --head-only checkpoint")
    p.add_argument("name", help="the shipped head's name (samcam/cam/heads/<name>.npz)")
    p.add_argument("--val-map", type=number(float, 0, 100), required=True, help="its held-out classification mAP (%%), as train-classifier printed it")
    p.add_argument("--trained-on", required=True, type=one_line, help="which images and labels it was trained on")
    p.add_argument("--command", required=True, type=one_line, help="the command that trained it")
    p.add_argument("--threshold", type=number(float, 0, 1), help="its background threshold, chosen without the scored images' ground truth (the demo uses it)")
    p.add_argument("--threshold-from", type=one_line, help="how the threshold was chosen (required with --threshold)")
    a = p.parse_args(argv)
    if (a.threshold is None) != (a.threshold_from is None):
        print("export_head: error: --threshold and --threshold-from go together", file=sys.stderr)
        return 2
    try:
        check_id(a.name, "the head's name")  # a name inside samcam/cam/heads/, never a path out of it
    except ValueError as e:
        print(f"export_head: error: {e}", file=sys.stderr)
        return 2
    record = {"val_map_561": a.val_map, "trained_on": a.trained_on, "command": a.command}
    if a.threshold is not None:
        record.update(threshold=a.threshold, threshold_from=a.threshold_from)
    try:
        export_head(a.checkpoint, SHIPPED_HEADS / f"{a.name}.npz", record)
    except (OSError, ValueError, KeyError) as e:
        print(f"export_head: error: {e}", file=sys.stderr)
        return 2
    print(f"-> {SHIPPED_HEADS / f'{a.name}.npz'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
