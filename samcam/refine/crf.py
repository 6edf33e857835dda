"""A fully connected CRF (Krähenbühl & Koltun 2011) over class score maps, with the settings
AffinityNet (Ahn & Kwak 2018) uses to refine its seeds. Arrays in, arrays out; the inference is
``pydensecrf2``'s (the maintained PyPI build of ``pydensecrf``).

The unary of class ``k`` at a pixel is ``−log(score_k)`` (scores clipped to ``[1e-5, 1]``,
``pydensecrf.utils.unary_from_softmax``): the scores are taken as they are, not normalised first, as
AffinityNet passes its ``[(1 − max M)^α, M_1, …]`` maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CRFConfig:
    """Kernel settings; the defaults are AffinityNet's (``tool/imutils.crf_inference``: 10 mean-field
    iterations, a smoothness kernel of 3 px with weight 3, an appearance kernel of 80 px and 13 grey
    levels with weight 10)."""

    iterations: int = 10
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise ValueError(f"iterations must be ≥ 0, not {self.iterations}")
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            v = getattr(self, name)
            if not (v > 0 and np.isfinite(v)):
                raise ValueError(f"{name} must be a positive number, not {v}")
        for name in ("gaussian_compat", "bilateral_compat"):
            v = getattr(self, name)
            if not (v >= 0 and np.isfinite(v)):
                raise ValueError(f"{name} must be a number ≥ 0, not {v}")


def dense_crf(image: np.ndarray, scores: np.ndarray, config: CRFConfig = CRFConfig()) -> np.ndarray:
    """Mean-field marginals ``K × H × W`` (float32, summing to 1 per pixel) of score maps
    ``K × H × W`` (non-negative) on the ``H × W × 3`` uint8 RGB ``image``."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    scores = np.asarray(scores, np.float32)
    image = np.asarray(image)
    if scores.ndim != 3 or image.shape[:2] != scores.shape[1:] or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"scores {scores.shape} and image {image.shape} must be K × H × W and H × W × 3")
    if not np.isfinite(scores).all() or (scores < 0).any():
        raise ValueError("scores must be finite and non-negative")
    k, h, w = scores.shape
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(scores)))
    crf.addPairwiseGaussian(sxy=config.gaussian_sxy, compat=config.gaussian_compat)
    crf.addPairwiseBilateral(sxy=config.bilateral_sxy, srgb=config.bilateral_srgb, rgbim=np.ascontiguousarray(image, np.uint8),
                             compat=config.bilateral_compat)  # fmt: skip
    return np.asarray(crf.inference(config.iterations), np.float32).reshape(k, h, w)
