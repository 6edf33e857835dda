"""What every training loop of samcam shares: the poly learning rate, one descent step and the checkpoint write.

Used by the CAM classifier (``pipeline/train_classifier.py``), AffinityNet (``pipeline/affinity.py``)
and the segmentation network (``seg/train.py``); each keeps its own data, loss and checkpoint contents.
"""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from samcam.outputs import StepResult


@dataclass(frozen=True)
class TrainResult(StepResult):
    """A training step's result: ``out``, the checkpoint; ``done``, the epochs this call trained (the
    segmentation network counts steps); ``skipped``, those resumed from the checkpoint; ``losses``,
    the mean loss of every finished epoch so far."""

    losses: tuple[float, ...] = ()


def poly_lr(base: float, step: int, total: int, power: float = 0.9) -> float:
    """Polynomial decay ``base · (1 − step/total)^power`` (IRN, DeepLab), 0 from ``total`` on."""
    return base * max(0.0, 1.0 - step / max(total, 1)) ** power


def set_poly_lr(opt: torch.optim.Optimizer, base: float | Iterable[float], step: int, total: int, power: float = 0.9, mult_key: str | None = None) -> None:
    """Every parameter group's learning rate at ``step``: :func:`poly_lr` of its base, times the group's
    ``mult_key`` entry if given. ``base`` is one number for all groups or one per group, in order."""
    bases = [base] * len(opt.param_groups) if isinstance(base, (int, float)) else list(base)
    for group, b in zip(opt.param_groups, bases):
        group["lr"] = poly_lr(b, step, total, power) * (group[mult_key] if mult_key else 1.0)


def descend(opt: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    """One optimiser step on ``loss`` (gradients cleared first); returns the loss as a float.

    Training stops with a ``ValueError`` when the loss is not finite (before the step) or the step
    made a weight non-finite: the run's last checkpoint is kept, no NaN model is ever saved."""
    value = loss.item()
    if not math.isfinite(value):
        raise ValueError(f"training stopped: the loss is {value} (not finite); lower --lr or check the labels and images")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        bad = [p for g in opt.param_groups for p in g["params"] if p.grad is not None and not torch.isfinite(p).all()]
    if bad:
        raise ValueError(f"training stopped: a step at learning rate {opt.param_groups[0]['lr']:g} made {len(bad)} weight tensors non-finite; lower --lr")
    return value


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def resume_state(ck: dict, path: str | os.PathLike, opt: torch.optim.Optimizer | None = None) -> tuple[list[float], float]:
    """What every resumed run takes from its checkpoint: ``(losses, seconds)``, and the optimiser
    state into ``opt`` where the checkpoint has one; ``ValueError`` naming ``path`` when the losses
    are not finite numbers, the seconds not a finite number ≥ 0, or the optimiser state does not fit."""
    losses, seconds = ck.get("losses", []), ck.get("seconds", 0.0)
    if not (isinstance(losses, list) and all(_finite(v) for v in losses)):
        raise ValueError(f"{path}: its losses {str(losses)[:80]} are not a list of finite numbers")
    if not (_finite(seconds) and seconds >= 0):
        raise ValueError(f"{path}: its seconds {seconds!r} are not a number ≥ 0")
    if opt is not None and "optimizer" in ck:
        try:
            opt.load_state_dict(ck["optimizer"])
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as e:
            raise ValueError(f"{path}: its optimizer state does not fit this run ({type(e).__name__}: {str(e)[:120]})") from None
    return [float(v) for v in losses], float(seconds)


#: the mark each of samcam's trainings sets in its checkpoint: the command that writes it -> (key, value).
#: A classifier's checkpoint carries none (it predates the marks): its ``state_dict`` and ``config`` tell it.
MARKS = {"train-seg": ("format", "samcam-seg/1"), "train-affinity": ("kind", "samcam-affinity")}


def checkpoint_kind(ck: object) -> str | None:
    """The command whose checkpoint ``ck`` is (``train-seg``, ``train-affinity``, ``train-classifier``:
    :data:`MARKS`), or ``None`` where none of samcam's trainings wrote it (a SAM or IRN checkpoint, a
    bare state dict)."""
    if not isinstance(ck, dict):
        return None
    found = next((command for command, (key, mark) in MARKS.items() if ck.get(key) == mark), None)
    return found or ("train-classifier" if "state_dict" in ck and "config" in ck else None)


def check_kind(ck: object, path: str | os.PathLike, command: str, remedy: str | None = None) -> None:
    """``ValueError`` naming ``path`` and what it holds unless ``ck`` is a checkpoint of ``command``
    (:func:`checkpoint_kind`): a segmentation run given to train-classifier is said to be one."""
    found = checkpoint_kind(ck)
    if found != command:
        what = f"a {found} checkpoint, not a {command} one" if found else f"not a {command} checkpoint (none of samcam's trainings wrote it)"
        raise ValueError(f"{path}: {what}" + (f"; {remedy}" if remedy else ""))


def refuse_other_kind(ck: object, path: str | os.PathLike, expected: str | None, what: str) -> None:
    """``ValueError`` naming ``path`` when ``ck`` is the checkpoint of a samcam training other than
    ``expected`` (``None``: of none, as IRN's or SAM's weights): said as what it is, before its keys
    are compared with a network's (``what``: what was expected, in words)."""
    found = checkpoint_kind(ck)
    if found is not None and found != expected:
        raise ValueError(f"{path}: a {found} checkpoint, not {what}")


def ids_change(old: Sequence[str], new: Sequence[str]) -> str:
    """How the id list ``new`` differs from ``old``, a run's, in words (``4 -> 3 ids, 1 left out, e.g.
    'b'``; ``the same ids in another order``): what a refused resume names, for every training."""
    was, now = set(old), set(new)
    added, gone = [i for i in new if i not in was], [i for i in old if i not in now]
    if not added and not gone:
        return "the same ids in another order" if list(old) != list(new) else "the same ids"
    return ", ".join([f"{len(old)} -> {len(new)} ids", *([f"{len(added)} new, e.g. {added[0]!r}"] if added else []),
                      *([f"{len(gone)} left out, e.g. {gone[0]!r}"] if gone else [])])  # fmt: skip


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """``torch.save`` through a temporary file renamed into place: never a half-written checkpoint."""
    from samcam.io import atomic_path

    with atomic_path(path, suffix=".pt.tmp") as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as e:  # torch's writer says "[enforce fail at inline_container.cc] unexpected pos 128 vs 0" on a full disk
            import shutil

            free = shutil.disk_usage(Path(tmp).parent).free
            raise OSError(errno.EIO, f"{path}: cannot be written (torch could not write the checkpoint, {free} bytes free on its disk: "
                          f"{str(e).strip().splitlines()[0][:200]})") from None


def save_epoch(path: str | os.PathLike, state: dict[str, Any], opt: torch.optim.Optimizer, final: bool, seconds: float) -> None:
    """An epoch checkpoint: ``state`` plus the cumulative ``seconds`` and the machine, and the optimiser
    state while training is unfinished (so a rerun resumes; a finished run does not carry it)."""
    from samcam.outputs import machine

    state = {**state, "seconds": seconds, "machine": machine()}
    if not final:
        state["optimizer"] = opt.state_dict()
    save_checkpoint(path, state)
