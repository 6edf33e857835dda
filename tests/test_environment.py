"""pyproject.toml and environment.yml must list the same dependencies with the same pins."""

import re

import tomllib
import yaml
from conftest import REPO

CONDA_TO_PIP = {"pytorch": "torch"}
NOT_PACKAGES = {"python", "pip"}


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    name, spec = m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")
    return CONDA_TO_PIP.get(name, name), spec


def test_environment_yml_matches_pyproject():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pip_side = dict(_split(r) for r in pyproject["dependencies"] + pyproject["optional-dependencies"]["dev"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda_side = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for r in dep["pip"]:
                if not r.startswith("-e"):
                    conda_side.update([_split(r)])
        else:
            name, spec = _split(dep.replace("=", "==", 1) if re.match(r"^[\w\-]+=[^=]", dep) else dep)
            if name not in NOT_PACKAGES:
                conda_side[name] = spec
    assert conda_side == pip_side


def test_environment_pins_python_311():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]


def test_one_version_source():
    """The package's metadata takes its version from ``samcam.__version__`` (pyproject's dynamic
    version): the installed distribution, the ``--version`` flag and every run record agree."""
    import importlib.metadata
    import tomllib

    import samcam

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert importlib.metadata.version("samcam") == samcam.__version__
