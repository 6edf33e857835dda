import hashlib
import subprocess
import sys
import http.server
import threading
from functools import partial

import pytest

from samcam.sam import weights


@pytest.fixture()
def http_folder(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetch_verifies_hash_and_caches(http_folder, tmp_path, monkeypatch):
    served, base = http_folder
    payload = b"fake checkpoint bytes" * 1000
    (served / "model.pth").write_bytes(payload)
    monkeypatch.setenv("SAMCAM_HOME", str(tmp_path / "home"))
    ck = weights.Checkpoint("test", "model.pth", len(payload), hashlib.sha256(payload).hexdigest(), f"{base}/model.pth")
    path = weights.fetch(ck, progress=False)
    assert path.read_bytes() == payload and path.parent == tmp_path / "home"
    (served / "model.pth").unlink()  # a second fetch uses the verified cache, no network
    assert weights.fetch(ck, progress=False) == path


def test_wrong_hash_is_refused_and_not_kept(http_folder, tmp_path, monkeypatch):
    served, base = http_folder
    (served / "model.pth").write_bytes(b"tampered")
    monkeypatch.setenv("SAMCAM_HOME", str(tmp_path / "home"))
    ck = weights.Checkpoint("test", "model.pth", 8, "0" * 64, f"{base}/model.pth")
    with pytest.raises(weights.HashMismatchError, match="wrong SHA-256"):
        weights.fetch(ck, progress=False, use_fallback=False)
    assert not (tmp_path / "home" / "model.pth").exists()


def test_unreachable_without_fallback_is_an_oserror(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMCAM_HOME", str(tmp_path))
    ck = weights.Checkpoint("test", "m.pth", 1, "0" * 64, "http://127.0.0.1:9/m.pth")
    with pytest.raises(OSError, match="could not download m.pth"):
        weights.fetch(ck, progress=False)


def test_verify_names_the_file(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"abc")
    with pytest.raises(weights.HashMismatchError, match=r"x\.pt: SHA-256 .* refusing"):
        weights.verify(tmp_path / "x.pt", "0" * 64)


def test_known_table():
    assert set(weights.CHECKPOINTS) == {"vit_h", "vit_l", "vit_b", "vit_t"}
    assert weights.CHECKPOINTS["vit_t"].sha256 == "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"


def test_cached_mobile_sam_is_the_official_file(mobile_sam_checkpoint):
    assert weights.sha256_file(mobile_sam_checkpoint) == weights.CHECKPOINTS["vit_t"].sha256


def test_a_cache_entry_that_is_no_file_is_named_not_read(http_folder, tmp_path, monkeypatch, capsys):
    """A pipe, a folder or a broken link where the cached checkpoint belongs is refused at once, by name
    (a pipe had made the fetch block forever; a dangling link would have been written through)."""
    import os

    from samcam.cli import main

    served, base = http_folder
    (served / "model.pth").write_bytes(b"x")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("SAMCAM_HOME", str(home))
    ck = weights.Checkpoint("test", "model.pth", 1, hashlib.sha256(b"x").hexdigest(), f"{base}/model.pth")
    for make, what in ((os.mkfifo, "not a regular file"), (os.mkdir, "not a regular file"), (lambda p: os.symlink(tmp_path / "gone", p), "a broken link")):
        make(home / "model.pth")
        with pytest.raises(ValueError, match=f"^{home / 'model.pth'}: the cache's model.pth is {what}; remove it"):
            weights.fetch(ck, progress=False)
        assert not (tmp_path / "gone").exists()
        (os.rmdir if (home / "model.pth").is_dir() and not (home / "model.pth").is_symlink() else os.unlink)(home / "model.pth")
    os.mkfifo(home / weights.CHECKPOINTS["vit_t"].filename)
    assert main(["weights", "fetch", "vit_t"]) == 2
    assert f"{home / weights.CHECKPOINTS['vit_t'].filename}: the cache's" in capsys.readouterr().err


_KERNEL = """
import os, sys, types, warnings
sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")  # what tqdm.autonotebook takes for a notebook kernel
sys.modules["ipywidgets"] = None  # not installed
import IPython
IPython.get_ipython = lambda: object()
os.environ.pop("SAMCAM_HOME", None)
warnings.simplefilter("always")
"""


@pytest.mark.parametrize("code, warns", [("import pooch", True), ("from skimage import data; data.chelsea()", True),
                                         ("from samcam.sam.weights import home; home()", False),
                                         ("from samcam.pipeline.demo import demo_images; demo_images()", False)])  # skimage.data imports pooch
def test_no_site_packages_warning_inside_a_notebook_kernel(code, warns):
    """In a kernel without ipywidgets, importing pooch makes tqdm.auto warn, naming the site-packages path,
    into the executed notebook (results/runs/*.ipynb); samcam imports pooch without it. The plain import is
    the control that the kernel is imitated well enough to warn."""
    r = subprocess.run([sys.executable, "-c", _KERNEL + code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert ("IProgress not found" in r.stderr) is warns, r.stderr
