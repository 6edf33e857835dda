"""Progress bars are chosen by the caller or by whether stderr is a terminal, never by what happens to
be imported: a process that imported IPython (a notebook run earlier in the same process) once got
notebook bars from ``samcam merge``."""

import io
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samcam import cli
from samcam.progress import progress_bar, show_progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("ipython", [False, True])
def test_show_progress_follows_the_option_then_the_terminal(monkeypatch, ipython):
    if ipython:
        monkeypatch.setitem(sys.modules, "IPython", types.ModuleType("IPython"))
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert show_progress(True) and not show_progress(False) and not show_progress(None)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert show_progress(True) and not show_progress(False) and show_progress(None)


def test_progress_bar_writes_to_stderr_only_when_shown(monkeypatch):
    monkeypatch.setitem(sys.modules, "IPython", types.ModuleType("IPython"))
    for stream, progress, shown in [(io.StringIO(), None, False), (io.StringIO(), True, True),
                                    (_Terminal(), None, True), (_Terminal(), False, False)]:  # fmt: skip
        monkeypatch.setattr(sys, "stderr", stream)
        assert list(progress_bar(range(3), progress=progress, desc="work")) == [0, 1, 2]
        assert ("work" in stream.getvalue()) == shown, (progress, stream.getvalue())


def _merge_args(tmp_path: Path) -> list[str]:
    from samcam.sam.masks import MaskSet
    from samcam.sam.mask_files import write_compact

    masks = np.zeros((2, 6, 8), bool)
    masks[0, :3] = True
    masks[1, 3:] = True
    (tmp_path / "m").mkdir()
    (tmp_path / "p").mkdir()
    write_compact(tmp_path / "m" / "a.json.gz", MaskSet(masks))
    Image.fromarray(np.full((6, 8), 7, np.uint8)).save(tmp_path / "p" / "a.png")
    return [str(a) for a in ["merge", "--pseudo", tmp_path / "p", "--masks", tmp_path / "m", "--out", tmp_path / "o"]]


def test_merge_shows_no_bar_in_logs_with_ipython_imported(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "IPython", types.ModuleType("IPython"))
    assert cli.main(_merge_args(tmp_path)) == 0
    assert "merge:" not in capsys.readouterr().err
