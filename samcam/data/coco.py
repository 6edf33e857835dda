"""COCO in VOC's label space: the COCO -> VOC class map and the conversion of COCO panoptic semantic masks."""

from __future__ import annotations

import numpy as np

from samcam.data.spaces import IGNORE_INDEX

#: COCO panoptic category id → VOC class index, for the 20 VOC classes (COCO "couch" is VOC "sofa",
#: "tv" is "tvmonitor", "motorcycle" is "motorbike", "airplane" is "aeroplane", "dining table" is
#: "diningtable", "potted plant" is "pottedplant"). Every other COCO category (things and stuff) is
#: VOC background; COCO's 0 ("unlabeled") is void (255).
COCO_TO_VOC: dict[int, int] = {
    5: 1, 2: 2, 16: 3, 9: 4, 44: 5, 6: 6, 3: 7, 17: 8, 62: 9, 21: 10,
    67: 11, 18: 12, 19: 13, 4: 14, 1: 15, 64: 16, 20: 17, 63: 18, 7: 19, 72: 20,
}  # fmt: skip


def coco_panoptic_to_voc(mask: np.ndarray) -> np.ndarray:
    """A COCO semantic mask (panoptic category ids, 0 = unlabeled) in VOC's label space."""
    lut = np.zeros(256, dtype=np.uint8)
    lut[0] = IGNORE_INDEX
    for coco_id, voc_id in COCO_TO_VOC.items():
        lut[coco_id] = voc_id
    return lut[np.asarray(mask, dtype=np.uint8)]
