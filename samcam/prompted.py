"""Beyond the paper: refine a pseudo label by *prompting* SAM with its own regions.

Instead of "segment everything" (a 32×32 point grid, ~1000 prompts) followed by the paper's
selection rule, every connected component of every class in the pseudo label becomes one prompt:

``box``    the component's bounding box;
``point``  one positive point: the CAM peak inside the component when a CAM is given, else the
           component's most interior pixel (largest distance to its border);
``neg``    negative points: the most interior pixel of each component of *other* classes;
combinations are written with ``+`` (``box+point``, ``box+point+neg``).

SAM returns three candidate masks per prompt; ``select`` picks one by ``overlap`` (IoU with the
component), ``score`` (SAM's predicted IoU) or ``both`` (their product). Components smaller than
``min_area`` pixels keep their CAM pixels (SAM is unreliable on specks). Where masks of different
classes overlap, the pixel goes to the class with the higher CAM score when CAMs are given, else to
the later class in ascending class order (the paper's overwrite order). Pixels no chosen mask covers
are background. One image embedding per image serves all its prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROMPTS = ("box", "point", "box+point", "box+point+neg", "point+neg")
SELECT = ("overlap", "score", "both")


@dataclass(frozen=True)
class PromptConfig:
    prompts: str = "box"
    select: str = "overlap"
    min_area: int = 100

    def __post_init__(self) -> None:
        if self.prompts not in PROMPTS:
            raise ValueError(f"unknown prompts {self.prompts!r}; known: {', '.join(PROMPTS)}")
        if self.select not in SELECT:
            raise ValueError(f"unknown select {self.select!r}; known: {', '.join(SELECT)}")


@dataclass
class Component:
    cls: int
    mask: np.ndarray
    box: np.ndarray  # x0, y0, x1, y1 (inclusive pixel bounds, SAM's XYXY)
    interior: np.ndarray  # x, y


def components(label: np.ndarray, n_classes: int) -> list[Component]:
    """Connected components (8-connectivity) of each class 1..K-1 present, ascending class order."""
    from scipy import ndimage

    out = []
    for c in range(1, n_classes):
        region = label == c
        if not region.any():
            continue
        lab, n = ndimage.label(region, structure=np.ones((3, 3)))
        for k in range(1, n + 1):
            m = lab == k
            ys, xs = np.nonzero(m)
            dist = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
            iy, ix = np.unravel_index(np.argmax(dist), m.shape)
            out.append(Component(c, m, np.array([xs.min(), ys.min(), xs.max(), ys.max()], float), np.array([ix, iy], float)))
    return out


def _prompt(comp: Component, comps: list[Component], cam: np.ndarray | None, kinds: set[str]):
    points, labels = [], []
    if "point" in kinds:
        if cam is not None:
            masked = np.where(comp.mask, cam, -np.inf)
            iy, ix = np.unravel_index(np.argmax(masked), masked.shape)
            points.append([ix, iy])
        else:
            points.append(comp.interior.tolist())
        labels.append(1)
    if "neg" in kinds:
        for other in comps:
            if other.cls != comp.cls:
                points.append(other.interior.tolist())
                labels.append(0)
    box = comp.box if "box" in kinds else None
    return (np.array(points, float) if points else None), (np.array(labels) if labels else None), box


def refine(predictor, label: np.ndarray, n_classes: int, cams: dict[int, np.ndarray] | None = None,
           config: PromptConfig = PromptConfig()) -> np.ndarray:  # fmt: skip
    """The refined label. ``predictor`` is a ``SamPredictor`` whose image is already set; ``cams``
    maps class index → CAM (H × W) when available."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"pseudo label must be 2-D, got shape {label.shape}")
    h, w = label.shape
    if tuple(predictor.original_size) != (h, w):
        raise ValueError(f"label size {(h, w)} differs from the image size {tuple(predictor.original_size)} set in the predictor")
    kinds = set(config.prompts.split("+"))
    comps = components(label, n_classes)
    out = np.zeros((h, w), np.uint8)
    best = np.full((h, w), -np.inf, np.float32)
    for comp in comps:
        area = comp.mask.sum()
        if area < config.min_area:
            region = comp.mask
        else:
            pts, lbl, box = _prompt(comp, comps, None if cams is None else cams.get(comp.cls), kinds)
            masks, scores, _ = predictor.predict(point_coords=pts, point_labels=lbl, box=box, multimask_output=True)
            inter = (masks & comp.mask).reshape(len(masks), -1).sum(1)
            union = (masks | comp.mask).reshape(len(masks), -1).sum(1)
            overlap = inter / np.maximum(union, 1)
            key = {"overlap": overlap, "score": scores, "both": overlap * scores}[config.select]
            region = masks[int(np.argmax(key))]
        if cams is not None and comp.cls in cams:
            score = cams[comp.cls].astype(np.float32)
            take = region & (score > best)
            best[take] = score[take]
        else:
            take = region  # later classes overwrite earlier ones
        out[take] = comp.cls
    return out


def refine_folder(images, pseudo, out, ids: list[str], configs: PromptConfig | dict[str, PromptConfig] = PromptConfig(),
                  cams_dir=None, model_type: str = "vit_t", checkpoint=None, device: str | None = None, fmt: str = "png",
                  threshold: float | None = None, progress: bool = True) -> dict:  # fmt: skip
    """Prompted refinement of ``pseudo`` labels for ``ids``, resumable and atomic.

    One config writes ``out/<id>.png``; a dict of named configs writes ``out/<name>/<id>.png``, all
    from one image embedding per image. Returns ``{"done", "skipped", "seconds_per_image"}`` where the
    seconds cover the embedding and every config's prompts.
    """
    import time
    from pathlib import Path

    from segment_anything import SamPredictor
    from tqdm.auto import tqdm

    from .cam import load_cam
    from .datasets import VOC, read_image, write_label
    from .mask_runner import image_index
    from .merge_runner import check_output_folder
    from .methods import load_pseudo_label
    from .sam import build_sam

    out, pseudo = Path(out), Path(pseudo)
    check_output_folder(out, Path(images), pseudo)
    named = configs if isinstance(configs, dict) else {"": configs}
    targets = {name: (out / name if name else out) for name in named}
    index = image_index(images)
    todo = [i for i in ids if not all((t / f"{i}.png").exists() for t in targets.values())]
    if not todo:
        return {"done": 0, "skipped": len(ids), "seconds_per_image": None}
    predictor = SamPredictor(build_sam(model_type, checkpoint, device))
    seconds = 0.0
    for image_id in tqdm(todo, desc="refine", unit="img", disable=not progress):
        image = read_image(index[image_id])
        label = load_pseudo_label(pseudo, image_id, fmt, threshold, VOC, shape=image.shape[:2])
        cams = None
        if cams_dir is not None:
            d = load_cam(Path(cams_dir) / f"{image_id}.npy")
            cams = {int(k) + 1: m for k, m in zip(d["keys"], d["high_res"])}
        t0 = time.perf_counter()
        predictor.set_image(image)
        refined = {name: refine(predictor, label, VOC.n_classes, cams, cfg) for name, cfg in named.items()}
        seconds += time.perf_counter() - t0
        for name, lab in refined.items():
            write_label(targets[name] / f"{image_id}.png", lab)
    return {"done": len(todo), "skipped": len(ids) - len(todo), "seconds_per_image": seconds / len(todo)}
