"""Every constant that decides a number, against its published value (typed here from the source
named beside it, never taken from the code): input normalisation, the VOC palette, the class order."""

import numpy as np
import pytest
import torch
from PIL import Image

# torchvision's ImageNet normalisation (RGB order), as IRN's ``imutils.Normalize`` uses it on 0..255 images.
IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406]) * 255
IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225]) * 255

# The VOC devkit's class order (VOCdevkit/VOCcode/VOCinit.m, VOCopts.classes), background first.
VOC_DEVKIT_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip

# The VOC devkit's colour map (VOCdevkit/VOCcode/labelcolormap.m) for classes 0..20, and void (255).
VOC_DEVKIT_COLOURS = [
    (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128),
    (128, 128, 128), (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0), (64, 0, 128), (192, 0, 128),
    (64, 128, 128), (192, 128, 128), (0, 64, 0), (128, 64, 0), (0, 192, 0), (128, 192, 0), (0, 64, 128),
]  # fmt: skip
VOC_VOID_COLOUR = (224, 224, 192)


def _channels(r: float, g: float, b: float) -> torch.Tensor:
    """A 1 × 3 × 2 × 2 image whose three channels differ, so a channel-order swap shows."""
    return torch.tensor([r, g, b], dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 2, 2).clone()


def test_resnet50_irn_normalises_with_imagenet_mean_and_std_in_rgb_order():
    from samcam.cam.nets import resnet50_irn

    net = resnet50_irn()
    rgb = np.array([10.0, 120.0, 250.0])
    got = net.normalize(_channels(*rgb))[0, :, 0, 0].numpy()
    np.testing.assert_allclose(got, (rgb - IMAGENET_MEAN_RGB) / IMAGENET_STD_RGB, rtol=1e-6, atol=1e-6)


def test_efficientnet_lite_scales_by_its_own_127_and_128():
    """EfficientNet-Lite's published input scaling (its TFLite models: mean 127, std 128 on every
    channel), in the CAM network and in the segmentation network."""
    from samcam.cam.nets import efficientnet_lite
    from samcam.seg.model import SegNet

    rgb = np.array([0.0, 127.0, 255.0])
    expected = (rgb - 127.0) / 128.0
    net = efficientnet_lite("lite0", pretrained=False)
    np.testing.assert_allclose(net.normalize(_channels(*rgb))[0, :, 0, 0].numpy(), expected, rtol=1e-6)
    seg = SegNet("lite0", pretrained=False)
    np.testing.assert_allclose(((_channels(*rgb) - seg.mean) / seg.std)[0, :, 0, 0].numpy(), expected, rtol=1e-6)


def test_voc_class_order_is_the_devkit_order():
    from samcam.data.spaces import VOC

    assert list(VOC.class_names) == VOC_DEVKIT_CLASSES
    assert [VOC.class_index(n) for n in ("aeroplane", "person", "tvmonitor")] == [1, 15, 20]


def test_voc_palette_is_the_devkit_colour_map():
    from samcam.data.spaces import VOC

    assert [tuple(c) for c in VOC.palette[:21].tolist()] == VOC_DEVKIT_COLOURS
    assert tuple(VOC.palette[255].tolist()) == VOC_VOID_COLOUR


@pytest.mark.parametrize("k", [0, 1])
def test_voc_palette_equals_the_palette_of_the_dataset_pngs(voc_root, train_with_images, k):
    from samcam.data.spaces import VOC

    with Image.open(voc_root / "SegmentationClass" / f"{train_with_images[k]}.png") as im:
        assert im.mode == "P"
        published = np.array(im.getpalette()[: 3 * 256], np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(VOC.palette[:21], published[:21])
    np.testing.assert_array_equal(VOC.palette[255], published[255])


# IRN's CAM scales (jiwoon-ahn/irn, run_sample.py: --cam_scales (1.0, 0.5, 1.5, 2.0)), each with its flip.
IRN_CAM_SCALES = (1.0, 0.5, 1.5, 2.0)


def test_cams_are_made_at_irns_scales_by_default():
    """The fast suite passes its scales explicitly, so only this says which scales a user's `samcam cam`
    and `cam-eval` run at (dropping 2.0 changed every committed CAM label, caught only by a slow test)."""
    import inspect

    from samcam.cam.infer import SCALES
    from samcam.pipeline.cam import extract_cams, score_cams

    assert SCALES == IRN_CAM_SCALES
    for f in (extract_cams, score_cams):
        assert inspect.signature(f).parameters["scales"].default == IRN_CAM_SCALES, f.__name__


# The paper's rule (Chen et al. 2023, Sec. 3, and its code's max_iou_imp2): a mask S is taken for class
# region C if 2|S∩C| − |S| > 0, i.e. |S∩C| > 0.5·|S|, or if |S∩C| / |C| ≥ 0.85.
PAPER_MAJORITY, PAPER_COVERAGE = 0.5, 0.85


def test_the_merge_rule_defaults_are_the_papers_thresholds():
    from samcam.cli import build_parser
    from samcam.refine.merge import MergeRule

    assert (MergeRule().majority, MergeRule().coverage) == (PAPER_MAJORITY, PAPER_COVERAGE)
    assert (MergeRule.named("max_iou_imp2").majority, MergeRule.named("max_iou_imp2").coverage) == (PAPER_MAJORITY, PAPER_COVERAGE)
    a = build_parser(["merge"]).parse_args(["merge", "--pseudo", "p", "--masks", "m", "--out", "o"])
    assert (a.rule, a.majority, a.coverage) == ("max_iou_imp2", PAPER_MAJORITY, PAPER_COVERAGE)
