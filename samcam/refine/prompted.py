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

from samcam.config import check_settings, setting

PROMPTS = ("box", "point", "box+point", "box+point+neg", "point+neg")
SELECT = ("overlap", "score", "both")


@dataclass(frozen=True)
class PromptConfig:
    """How a pseudo label prompts SAM (``samcam refine --mode prompted``; each setting declared once)."""

    prompts: str = setting("box", choices=PROMPTS, help="what prompts SAM for each component: its box, its CAM peak, both, with negative points")
    select: str = setting("overlap", choices=SELECT, help="which of SAM's three masks to keep")
    min_area: int = setting(100, 0, 2**31 - 1, "components smaller than this many pixels keep their CAM pixels")

    def __post_init__(self) -> None:
        check_settings(self, "prompt config")


@dataclass
class Component:
    cls: int
    mask: np.ndarray
    box: np.ndarray  # x0, y0, x1, y1 (inclusive pixel bounds, SAM's XYXY)
    interior: np.ndarray  # x, y


def components(label: np.ndarray, n_classes: int) -> list[Component]:
    """Connected components (8-connectivity) of each class 1..K-1 present, ascending class order;
    scikit-image's ``regionprops`` gives each one's box, SciPy's distance transform its most interior pixel."""
    from scipy import ndimage
    from skimage.measure import label as connected
    from skimage.measure import regionprops

    out = []
    for c in range(1, n_classes):
        region = label == c
        if not region.any():
            continue
        for prop in regionprops(connected(region, connectivity=2)):
            m = np.zeros(label.shape, bool)
            m[prop.slice] = prop.image
            y0, x0, y1, x1 = prop.bbox
            dist = ndimage.distance_transform_edt(np.pad(prop.image, 1))[1:-1, 1:-1]
            iy, ix = np.unravel_index(np.argmax(dist), dist.shape)
            out.append(Component(c, m, np.array([x0, y0, x1 - 1, y1 - 1], float), np.array([ix + x0, iy + y0], float)))
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


def select_mask(masks: np.ndarray, scores: np.ndarray, region: np.ndarray, select: str) -> int:
    """Which of SAM's candidate ``masks`` (``M × H × W``) to keep for a component ``region``: the best by
    ``overlap`` (IoU with the region), ``score`` (SAM's predicted IoU) or ``both`` (their product);
    ties go to the first candidate."""
    inter = (masks & region).reshape(len(masks), -1).sum(1)
    union = (masks | region).reshape(len(masks), -1).sum(1)
    overlap = inter / np.maximum(union, 1)
    key = {"overlap": overlap, "score": np.asarray(scores, float), "both": overlap * np.asarray(scores, float)}[select]
    return int(np.argmax(key))


def paint(regions: list[tuple[int, np.ndarray]], shape: tuple[int, int], cams: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """The label made of ``(class, region)`` pairs in order. Where regions of classes overlap, a pixel
    goes to the class with the higher CAM score when ``cams`` has that class's map (a strictly higher
    score wins, so an equal score keeps the earlier class), else to the later region."""
    out = np.zeros(shape, np.uint8)
    best = np.full(shape, -np.inf, np.float32)
    for cls, region in regions:
        if cams is not None and cls in cams:
            score = cams[cls].astype(np.float32)
            take = region & (score > best)
            best[take] = score[take]
        else:
            take = region
        out[take] = cls
    return out


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
    regions = []
    for comp in comps:
        if comp.mask.sum() < config.min_area:
            regions.append((comp.cls, comp.mask))
            continue
        pts, lbl, box = _prompt(comp, comps, None if cams is None else cams.get(comp.cls), kinds)
        masks, scores, _ = predictor.predict(point_coords=pts, point_labels=lbl, box=box, multimask_output=True)
        regions.append((comp.cls, masks[select_mask(masks, scores, comp.mask, config.select)]))
    return paint(regions, (h, w), cams)
