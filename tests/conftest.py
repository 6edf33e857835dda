"""Shared fixtures. Real data comes from ``$SAMCAM_DATA`` or ``../shared/data`` beside the checkout;
tests that need it skip with the reason when it is absent. Nothing is ever written there."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def examples(n: int) -> int:
    """Hypothesis examples per property: ``n``, or a tenth (at least 20) while mutmut runs a mutant,
    where each of hundreds of mutants reruns the property tests (`make mutation` sets SAMCAM_MUTATION)."""
    return max(20, n // 10) if os.environ.get("SAMCAM_MUTATION") else n
CACHED_MASKS = REPO / "results" / "masks" / "voc12_train_vit_t_p32"


def mask_files(folder: Path) -> dict:
    """Every compact mask file of ``folder``, decoded, without the seconds each image took (the one
    field two runs of the same settings differ in): for comparing the folders two runs wrote."""
    import gzip
    import json

    docs = {}
    for p in sorted(Path(folder).glob("*.json.gz")):
        doc = json.loads(gzip.decompress(p.read_bytes()))
        doc["meta"].pop("seconds")
        docs[p.name] = doc
    return docs


@pytest.fixture(scope="session")
def data_root() -> Path:
    from samcam.io import data_root as _data_root

    root = _data_root()
    if not (root / "voc2012" / "SegmentationClass").is_dir():
        pytest.skip(f"real VOC data not found at {root} (set SAMCAM_DATA to the shared data folder)")
    return root


@pytest.fixture(scope="session")
def voc_root(data_root: Path) -> Path:
    return data_root / "voc2012"


@pytest.fixture(scope="session")
def train_with_images(voc_root: Path) -> list[str]:
    from samcam.io import read_ids

    return read_ids(voc_root / "ImageSets" / "Segmentation" / "train_with_images.txt")


@pytest.fixture(scope="session")
def mobile_sam_checkpoint() -> Path:
    from samcam.sam.weights import cached_path

    p = cached_path("vit_t")
    if p is None:
        pytest.skip("MobileSAM checkpoint not cached; run `samcam weights fetch vit_t` (make test does)")
    return p


@pytest.fixture(scope="session")
def gt_cams(tmp_path_factory, voc_root, train_with_images):
    """CAM files for 3 real images made from their ground truth: each class's mask, shrunk (partial)
    and blurred, so seeds and labels are meaningful without training a classifier."""
    from scipy import ndimage

    from samcam.cam.files import save_cam
    from samcam.io import read_label

    out = tmp_path_factory.mktemp("gt_cams")
    ids = train_with_images[:3]
    for i in ids:
        gt = read_label(voc_root / "SegmentationClass" / f"{i}.png")
        keys = [c - 1 for c in np.unique(gt) if 0 < c < 255]
        maps = [ndimage.gaussian_filter(ndimage.binary_erosion(gt == k + 1, iterations=6).astype(np.float32), 6) for k in keys]
        maps = [m / max(m.max(), 1e-6) for m in maps]
        save_cam(out / f"{i}.npy", np.array(keys), np.stack(maps))
    return out, ids


def pytest_terminal_summary(terminalreporter, config):
    """Print pytest-randomly's seed even under ``-q`` (which hides the header that names it), so a
    failing order can be rerun."""
    if config.pluginmanager.hasplugin("randomly"):
        seed = config.getoption("randomly_seed")
        terminalreporter.write_line(f"tests ran in random order; rerun this order with -p randomly --randomly-seed={seed}")
