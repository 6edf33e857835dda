"""Prompted refinement: every prompt type and selection on a real photo, and bad input."""

import numpy as np
import pytest
from skimage import data

from samcam.refine.prompted import PROMPTS, SELECT, PromptConfig, components, refine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cat_predictor(mobile_sam_checkpoint):
    from segment_anything import SamPredictor

    from samcam.sam.model import build_sam

    p = SamPredictor(build_sam("vit_t", device="cpu"))
    p.set_image(data.chelsea())
    return p


def _rough_cat_label():
    """A coarse 'CAM' for chelsea (300 × 451): a box on the cat's head and body, class 8 (cat),
    plus a small speck of class 15 that must keep its CAM pixels."""
    label = np.zeros((300, 451), np.uint8)
    label[60:250, 120:330] = 8
    label[5:9, 5:9] = 15
    return label


@pytest.mark.parametrize("prompts", PROMPTS)
def test_each_prompt_type_refines_a_real_photo(cat_predictor, prompts):
    label = _rough_cat_label()
    out = refine(cat_predictor, label, 21, config=PromptConfig(prompts=prompts, min_area=50))
    assert set(np.unique(out)) <= {0, 8, 15}
    assert (out[5:9, 5:9] == 15).all()  # tiny component keeps its CAM pixels
    cat = out == 8
    assert 0.05 < cat.mean() < 0.9  # SAM returned an object-sized mask, not nothing or everything


@pytest.mark.parametrize("select", SELECT)
def test_selection_rules_and_cam_overlap(cat_predictor, select):
    label = _rough_cat_label()
    cams = {8: np.ones((300, 451), np.float32), 15: np.zeros((300, 451), np.float32)}
    out = refine(cat_predictor, label, 21, cams, PromptConfig(select=select))
    assert (out == 8).sum() > 0


def test_bad_input(cat_predictor):
    assert refine(cat_predictor, np.zeros((300, 451), np.uint8), 21).max() == 0  # empty label: nothing to prompt
    with pytest.raises(ValueError, match=r"label size \(10, 10\) differs from the image size \(300, 451\)"):
        refine(cat_predictor, np.zeros((10, 10), np.uint8), 21)
    with pytest.raises(ValueError, match="unknown prompt config field prompts"):
        PromptConfig(prompts="lasso")


def test_components_split_by_occlusion():
    label = np.zeros((10, 20), np.uint8)
    label[2:8, 1:6] = 3
    label[2:8, 12:18] = 3  # the same class, split in two
    comps = components(label, 21)
    assert [c.cls for c in comps] == [3, 3]
    assert comps[0].box.tolist() == [1, 2, 5, 7]
