"""The ``samcam`` command: one subcommand per pipeline step.

Each subcommand is a thin wrapper: it parses arguments and calls the module that owns the step.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

COMMANDS: dict[str, Callable[[argparse.ArgumentParser], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str):
    """Register ``fn(parser) -> run(args)`` as subcommand ``name``."""

    def deco(fn):
        COMMANDS[name] = (help, fn)
        return fn

    return deco


def _ids_arg(path: str | None) -> list[str] | None:
    from .datasets import read_ids

    return read_ids(path) if path else None


# ----------------------------------------------------------------------------- eval


@command("eval", "score pseudo labels against ground truth (standard confusion-matrix mIoU)")
def _eval(p: argparse.ArgumentParser):
    p.add_argument("--pred", required=True, help="folder of predicted label PNGs (<id>.png)")
    p.add_argument("--gt", required=True, help="folder of ground-truth label PNGs")
    p.add_argument("--ids", help="id list file; default: every .png in --pred")
    p.add_argument("--dataset", default="voc", help="label space: voc (default) or coco")
    p.add_argument("--csv", help="write the per-class table to this CSV file")
    p.add_argument("--per-image-csv", help="write per-image rows (id, mIoU, per-class IoU) to this CSV")

    def run(a: argparse.Namespace) -> int:
        from .atomic import write_text
        from .datasets import get_dataset
        from .metrics import evaluate_folders, format_table

        spec = get_dataset(a.dataset)
        ids = _ids_arg(a.ids)
        ev = evaluate_folders(a.pred, a.gt, spec, ids, progress=sys.stderr.isatty())
        where = f"the {len(ids)} ids of {a.ids}" if ids is not None else f"every prediction in {a.pred}"
        print(f"evaluated {len(ev.image_ids)} images ({where})")
        if a.csv:
            write_text(a.csv, ev.per_class_table().to_csv(index=False))
        if a.per_image_csv:
            write_text(a.per_image_csv, ev.per_image_table().to_csv(index=False))
        print(format_table(ev))
        return 0

    return run


# ----------------------------------------------------------------------------- weights


@command("weights", "list, fetch or verify SAM checkpoints (cached in $SAMCAM_HOME)")
def _weights(p: argparse.ArgumentParser):
    p.add_argument("action", choices=["list", "fetch", "path"], help="list known checkpoints, fetch one, or print its cached path")
    p.add_argument("name", nargs="?", help="checkpoint name: vit_t, vit_b, vit_l, vit_h")

    def run(a: argparse.Namespace) -> int:
        from . import weights

        if a.action == "list":
            print(f"cache: {weights.home()}")
            for ck in weights.CHECKPOINTS.values():
                state = "cached" if weights.cached_path(ck.name) else "-"
                print(f"{ck.name:6} {ck.filename:22} {ck.size / 2**20:8.1f} MiB  sha256 {ck.sha256[:12]}…  {state}")
            return 0
        if not a.name:
            raise ValueError(f"weights {a.action} needs a checkpoint name")
        path = weights.fetch(a.name, progress=sys.stderr.isatty()) if a.action == "fetch" else weights.cached_path(a.name)
        if path is None:
            raise FileNotFoundError(f"{a.name} is not cached; run: samcam weights fetch {a.name}")
        print(path)
        return 0

    return run


# ----------------------------------------------------------------------------- masks


def _add_amg_args(p: argparse.ArgumentParser) -> None:
    from .sam import AMG_DEFAULTS, GENERATORS, MODEL_TYPES

    p.add_argument("--model", default="vit_t", choices=MODEL_TYPES, help="SAM model type (default vit_t = MobileSAM)")
    p.add_argument("--checkpoint", help="checkpoint file; default: the verified official one, fetched into the cache")
    p.add_argument("--generator", default="fast", choices=GENERATORS, help="samcam's fast generator or the official one")
    p.add_argument("--device", help="cuda or cpu (default: cuda if present)")
    for key, value in AMG_DEFAULTS.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value, help=f"default {value}")


def _amg_kwargs(a: argparse.Namespace) -> dict:
    from .sam import AMG_DEFAULTS

    return {k: getattr(a, k) for k in AMG_DEFAULTS}


@command("masks", "generate SAM 'segment everything' masks for a folder of images (resumable)")
def _masks(p: argparse.ArgumentParser):
    p.add_argument("--images", required=True, help="folder of images (<id>.jpg or .png)")
    p.add_argument("--out", required=True, help="mask folder (created; ids already there are skipped)")
    p.add_argument("--ids", help="id list file; default: every image in --images")
    p.add_argument("--format", default="compact", choices=["compact", "official"], help="compact (<id>.json.gz, RLE) or official (amg.py folders)")
    p.add_argument("--shard", help="I/N: process every N-th id starting at I (0-based), for job arrays")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    _add_amg_args(p)

    def run(a: argparse.Namespace) -> int:
        from .mask_runner import parse_shard, run_masks

        if a.threads:
            import torch

            torch.set_num_threads(a.threads)
        s = run_masks(a.images, a.out, a.ids, a.model, a.checkpoint, a.format, parse_shard(a.shard),
                      a.generator, a.device, progress=True, **_amg_kwargs(a))  # fmt: skip
        rate = f", {s.seconds / s.done:.2f} s/img" if s.done else ""
        print(f"{s.done} images done, {s.skipped} already there{rate} -> {s.out}")
        return 0

    return run


# ----------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="samcam", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"samcam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help, fn) in COMMANDS.items():
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(_run=fn(sp))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (FileNotFoundError, ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"samcam {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
