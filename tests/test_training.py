"""The pieces every training loop shares (samcam/training.py), against hand computations."""

import pytest
import torch

from samcam.training import descend, poly_lr, save_checkpoint, save_epoch, set_poly_lr


def test_poly_lr_by_hand():
    assert poly_lr(0.1, 0, 100) == 0.1
    assert poly_lr(0.1, 50, 100) == pytest.approx(0.1 * 0.5**0.9)
    assert poly_lr(2.0, 3, 4, power=2.0) == pytest.approx(2.0 * 0.25**2)
    assert poly_lr(0.1, 100, 100) == 0.0
    assert poly_lr(0.1, 120, 100) == 0.0  # past the end: zero, not a complex power
    assert poly_lr(0.1, 0, 0) == 0.1  # no steps at all


def test_set_poly_lr_per_group_and_multiplier():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr_mult": 1.0}, {"params": [b], "lr_mult": 10.0}], lr=1.0)
    set_poly_lr(opt, [0.2, 0.4], 10, 20, power=1.0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.2])
    set_poly_lr(opt, 0.2, 10, 20, power=1.0, mult_key="lr_mult")
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 1.0])


def test_descend_is_one_plain_sgd_step():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = torch.optim.SGD([w], lr=0.5)
    w.grad = torch.tensor([100.0, 100.0])  # a stale gradient must be cleared first
    loss = (w**2).sum()  # gradient 2w
    assert descend(opt, loss) == pytest.approx(5.0)
    assert torch.allclose(w.detach(), torch.tensor([1.0 - 0.5 * 2.0, -2.0 + 0.5 * 4.0]))


def test_save_epoch_keeps_the_optimizer_only_while_unfinished(tmp_path):
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    path = tmp_path / "run.pt"
    save_epoch(path, {"epoch": 1}, opt, final=False, seconds=12.5)
    ck = torch.load(path, weights_only=False)
    assert ck["epoch"] == 1 and ck["seconds"] == 12.5 and "optimizer" in ck and ck["machine"]
    assert ck["optimizer"]["param_groups"][0]["momentum"] == 0.9 and ck["optimizer"]["param_groups"][0]["lr"] == 0.1  # what a resume loads
    save_epoch(path, {"epoch": 2}, opt, final=True, seconds=20.0)
    ck = torch.load(path, weights_only=False)
    assert ck["epoch"] == 2 and "optimizer" not in ck
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]  # no temporary file left behind


def test_save_checkpoint_leaves_the_old_file_when_saving_fails(tmp_path):
    path = tmp_path / "run.pt"
    save_checkpoint(path, {"a": 1})
    with pytest.raises(Exception):
        save_checkpoint(path, {"bad": lambda: None})  # not picklable
    assert torch.load(path, weights_only=False) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]


def test_descend_leaves_parameters_the_loss_does_not_reach():
    """Gradients are cleared to None, not zero: a parameter outside this loss (a frozen branch) is
    skipped by the optimiser, so weight decay and momentum never move it."""
    used, unused = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([used, unused], lr=0.1, momentum=0.9, weight_decay=0.5)
    unused.grad = torch.ones(2)  # a gradient from an earlier step
    descend(opt, used.sum())
    assert torch.equal(unused.detach(), torch.ones(2)) and unused.grad is None


def test_poly_lr_of_a_one_step_schedule():
    assert poly_lr(0.1, 0, 1) == 0.1 and poly_lr(0.1, 1, 1) == 0.0 and poly_lr(0.1, 0, 0) == 0.1


def test_save_checkpoint_writes_through_a_hidden_tmp_file(tmp_path, monkeypatch):
    """The temporary name ends in ``.tmp`` and starts with a dot, so a killed run's leftover is
    cleaned by samcam.outputs.clean_temporaries and never taken for a checkpoint."""
    written = []
    real = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: written.append(f.name) or real(obj, f))
    save_checkpoint(tmp_path / "run.pt", {"a": 1})
    from samcam.outputs import is_temporary

    name = written[0].rsplit("/", 1)[-1]
    assert len(written) == 1 and name.startswith(".run.pt.samcam-") and name.endswith(".pt.tmp") and is_temporary(name)
