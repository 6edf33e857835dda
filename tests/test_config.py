"""Settings declared once (samcam.config): a field's default, range and help serve both the command
line and the check of a config read back from a checkpoint."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace

import pytest

from samcam.config import add_options, check_settings, from_args, number, setting
from samcam.seg.recipe import Recipe


@dataclass(frozen=True)
class Toy:
    size: int = setting(8, 2, 64, "a size")
    rate: float = setting(0.5, 0.0, 1.0, "a rate")
    power: float = setting(2.0, 0.5, None, "no upper bound")
    mode: str = setting("a", choices=("a", "b"), help="a mode")
    on: bool = setting(True, flag="--off", help="switch it off")
    extra: bool = setting(False, help="switch it on")
    plain: int = 3  # not a setting: neither an option nor checked

    def __post_init__(self):
        check_settings(self, "toy")


def _error(p, args) -> str:
    try:
        p.parse_args(args)
    except argparse.ArgumentError as e:
        return str(e)
    raise AssertionError(f"{args} parsed")


def _parser(cls=Toy):
    p = argparse.ArgumentParser(exit_on_error=False)
    add_options(p, cls)
    return p


def test_options_carry_the_fields_defaults_ranges_and_help():
    p = _parser()
    assert from_args(Toy, p.parse_args([])) == Toy()
    a = p.parse_args(["--size", "64", "--rate", "0", "--power", "1e6", "--mode", "b", "--off", "--extra"])
    assert from_args(Toy, a) == Toy(size=64, rate=0.0, power=1e6, mode="b", on=False, extra=True)
    assert from_args(Toy, a, size=2) == Toy(size=2, rate=0.0, power=1e6, mode="b", on=False, extra=True)
    assert not hasattr(a, "plain")
    helps = {a.dest: a.help for a in p._actions}
    assert helps["size"] == "a size (default 8)" and helps["rate"] == "a rate (default 0.5)" and helps["on"] == "switch it off"
    assert helps["mode"] == "a mode (default a)"
    for bad in (["--size", "65"], ["--size", "1"], ["--size", "2.5"], ["--rate", "1.01"], ["--rate", "nan"], ["--power", "0.4"],
                ["--power", "inf"], ["--mode", "c"]):
        with pytest.raises((argparse.ArgumentError, SystemExit)):
            p.parse_args(bad)


def test_given_only_options_leave_the_rest_to_a_base():
    """``given_only``: an option not given sets nothing, so ``base`` (a file's values) fills it, and an
    option given wins over the base; the help still names the class's default."""
    p = argparse.ArgumentParser(exit_on_error=False)
    add_options(p, Toy, given_only=True)
    assert vars(p.parse_args([])) == {}
    a = p.parse_args(["--size", "16", "--off"])
    assert vars(a) == {"size": 16, "on": False}
    assert from_args(Toy, a, base={"size": 32, "rate": 0.25, "extra": True}) == Toy(size=16, rate=0.25, on=False, extra=True)
    assert from_args(Toy, p.parse_args([]), base={"mode": "b"}) == Toy(mode="b")
    assert from_args(Toy, p.parse_args([])) == Toy()
    helps = {x.dest: x.help for x in p._actions}
    assert helps["size"] == "a size (default 8)" and helps["mode"] == "a mode (default a)"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"size": 65}, r"toy field size is 65, expected a finite number in \[2, 64\]"),
        ({"size": 1}, r"field size is 1, expected a finite number in \[2, 64\]"),
        ({"size": 8.0}, r"field size is 8.0, expected an int"),
        ({"size": True}, "field size is True, expected an int"),
        ({"rate": float("nan")}, r"field rate is nan, expected a finite number in \[0.0, 1.0\]"),
        ({"rate": -0.1}, "field rate is -0.1"),
        ({"power": float("inf")}, r"field power is inf, expected a finite number in \[0.5, inf\]"),
        ({"mode": "c"}, "^unknown toy field mode 'c'; known: a, b$"),
        ({"on": 1}, "field on is 1, expected a bool"),
        ({"rate": "0.5"}, "field rate is '0.5', expected a float"),
    ],
)
def test_a_config_outside_its_declared_settings_is_refused(values, message):
    with pytest.raises(ValueError, match=message):
        Toy(**values)


def test_bounds_are_inclusive_and_ints_are_floats():
    assert Toy(size=2, rate=1, power=0.5).rate == 1
    assert Toy(size=64).size == 64 and Toy(plain=-5).plain == -5  # undeclared fields are not checked


def test_number_type_names_the_text():
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'x' is not a number$"):
        number(float)("x")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^1.5 is not an integer$|^'1.5' is not an integer$"):
        number(int)("1.5")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^7 is outside \[-inf, 5\]$"):
        number(int, None, 5)("7")
    assert number(float, 0, 1)("1") == 1.0 and number(int, 0)("0") == 0


def _configs():
    from samcam.pipeline.affinity import AffinityTrainConfig
    from samcam.pipeline.train_classifier import TrainConfig
    from samcam.refine.prompted import PromptConfig

    return [Recipe, AffinityTrainConfig, TrainConfig, PromptConfig]


#: edges a field's range allows but another field's rule forbids (crop ≥ 2 radius)
CROSS = {("AffinityTrainConfig", "crop", 1), ("TrainConfig", "freeze_blocks", 21)}  # 21 blocks: Lite1/2's, not the default Lite0's


@pytest.mark.parametrize("cls", _configs(), ids=lambda c: c.__name__)
def test_a_config_is_checked_where_its_command_checks_it(cls):
    """Every numeric field: its option refuses what the dataclass refuses, at both ends; the
    defaults parse back to the default config."""
    p = _parser(cls)
    assert from_args(cls, p.parse_args([])) == cls()
    numeric = [f for f in fields(cls) if "help" in f.metadata and type(f.default) in (int, float) and f.metadata["choices"] is None]
    assert numeric
    for f in numeric:
        m = f.metadata
        step = 1 if type(f.default) is int else 1e-6
        for edge, outside in ((m["lo"], -step), (m["hi"], step)):
            if edge is None:
                continue
            if m["open_lo"] and edge == m["lo"]:  # a rate that must be positive: its lower edge is outside
                edge, outside = edge + step, -step
            flag = f"--{f.name.replace('_', '-')}"
            ok = {"scale_min": {"scale_max": 8.0}, "scale_max": {"scale_min": 0.01}, "radius": {"crop": 64}}.get(f.name, {})  # other rules kept
            if (cls.__name__, f.name, edge) not in CROSS:
                assert getattr(replace(cls(), **ok, **{f.name: edge}), f.name) == edge
                assert getattr(from_args(cls, p.parse_args([flag, str(edge)]), **ok), f.name) == edge
            with pytest.raises(ValueError, match=f"field {f.name} is"):
                replace(cls(), **ok, **{f.name: edge + outside})
            with pytest.raises((argparse.ArgumentError, SystemExit)):
                p.parse_args([flag, str(edge + outside)])


def test_cross_field_rules_stay():
    from samcam.pipeline.affinity import AffinityTrainConfig
    from samcam.pipeline.train_classifier import TrainConfig

    with pytest.raises(ValueError, match="scale_min ≤ scale_max"):
        Recipe(scale_min=1.0, scale_max=0.5)
    with pytest.raises(ValueError, match="at least twice the radius"):
        AffinityTrainConfig(crop=9, radius=5)
    for cfg in (lambda: AffinityTrainConfig(lr=0.0), lambda: Recipe(head_lr_mult=0.0), lambda: TrainConfig(lr_backbone=0.0)):
        with pytest.raises(ValueError, match=r"expected a finite number in \(0.0, "):
            cfg()
    assert "0 is outside (0.0, 10.0]" in _error(_parser(Recipe), ["--lr", "0"])
    with pytest.raises(ValueError, match="cannot be used head only"):
        TrainConfig(train_backbone=False, freeze_blocks=2)
    with pytest.raises(ValueError, match="field output_stride 8; known: 16, 32$"):
        TrainConfig(output_stride=8)
    assert _parser(TrainConfig).parse_args(["--output-stride", "16", "--head-only"]).output_stride == 16


def test_a_huge_whole_number_is_out_of_range_not_a_crash():
    big = "1" + "0" * 400
    with pytest.raises(argparse.ArgumentTypeError, match="is outside"):
        number(int, 0, 10)(big)
    assert number(int, 0)(big) == int(big)  # no upper bound: taken as it is
    with pytest.raises(ValueError, match="recipe field seed is"):
        Recipe(seed=2**1100)


def test_a_setting_made_at_run_time_records_its_default_range_choices_flag_and_help():
    """``setting`` called inside the test (a module-level class is built at import, before any
    mutant or patch could act): its field holds exactly what was declared, and a boolean without a
    flag of its own gets ``--its-name`` with dashes, after which the later fields still get options."""

    @dataclass(frozen=True)
    class Late:
        keep_going: bool = setting(False, help="go on")
        max_count: int = setting(5, 1, 9, "a count", open_lo=True)
        kind: str = setting("x", choices=("x", "y"), help="a kind", flag=None)

    f = {x.name: x for x in fields(Late)}
    assert Late() == Late(False, 5, "x")
    assert dict(f["max_count"].metadata) == {"lo": 1, "hi": 9, "help": "a count", "choices": None, "flag": None, "open_lo": True}
    assert dict(f["kind"].metadata) == {"lo": None, "hi": None, "help": "a kind", "choices": ("x", "y"), "flag": None, "open_lo": False}
    assert f["keep_going"].metadata["open_lo"] is False
    p = argparse.ArgumentParser(exit_on_error=False)
    add_options(p, Late)
    a = p.parse_args(["--keep-going", "--max-count", "9", "--kind", "y"])
    assert from_args(Late, a) == Late(True, 9, "y")
    assert "--max-count" in p.format_help() and "--kind" in p.format_help()
    q = argparse.ArgumentParser(exit_on_error=False)
    add_options(q, Late, only=("kind",))  # the fields before it are skipped, not the end of the walk
    assert "--kind" in q.format_help() and "--max-count" not in q.format_help() and "--keep-going" not in q.format_help()


def test_every_numeric_setting_has_both_bounds():
    """Rule 6 of the bad-input issue: no option runs without end (third audit: --epochs 10**9 trained
    until killed); each number a config declares has a lower and an upper bound, and a config read back
    from a checkpoint holds no field its class lacks (samcam.config.recorded_config)."""
    from samcam.config import _declared, recorded_config
    from samcam.pipeline.affinity import AffinityTrainConfig
    from samcam.pipeline.train_classifier import TrainConfig
    from samcam.refine.affinity import AffinityConfig
    from samcam.refine.prompted import PromptConfig
    from samcam.seg.recipe import Recipe

    unbounded = [f"{cls.__name__}.{f.name}" for cls in (AffinityTrainConfig, TrainConfig, AffinityConfig, PromptConfig, Recipe)
                 for f in _declared(cls) if type(f.default) in (int, float) and f.metadata["choices"] is None
                 and (f.metadata["lo"] is None or f.metadata["hi"] is None)]  # fmt: skip
    assert unbounded == []
    assert recorded_config(TrainConfig, {"epochs": 3, "rescale": None}, "c.pt") == TrainConfig(epochs=3)
    with pytest.raises(ValueError, match=r"^c\.pt: its recorded config is a list, not a mapping$"):
        recorded_config(TrainConfig, [1], "c.pt")
    with pytest.raises(ValueError, match=r"^c\.pt: recorded config: classifier training field epochs is 0, expected a finite number in \[1, 10000\]$"):
        recorded_config(TrainConfig, {"epochs": 0}, "c.pt")
