"""A plain, loop-by-loop statement of the merge rules, kept as the reference for samcam.merge.

Written from the rule's text: for each class c present, in ascending order, test each available mask
one by one, and paint the union of the taken masks and the CAM pixels no available mask covers.
"""

import numpy as np


def merge_loop(label, masks, n_classes, rule="max_iou_imp2", majority=0.5, coverage=0.85):
    out = np.zeros(label.shape, dtype=np.uint8)
    taken = [False] * len(masks)
    for c in range(1, n_classes):
        cls = label == c
        size_c = int(cls.sum())
        if size_c == 0:
            continue
        available_union = np.zeros(label.shape, dtype=bool)
        chosen = np.zeros(label.shape, dtype=bool)
        for i, s in enumerate(masks):
            if taken[i]:
                continue
            available_union |= s
            inter = int((s & cls).sum())
            area = int(s.sum())
            take = 2 * inter - area > 0 if majority == 0.5 else inter > majority * area
            if rule == "max_iou_imp2" and inter / size_c >= coverage:
                take = True
            if take:
                taken[i] = True
                chosen |= s
        if rule != "max_iou":
            chosen |= cls & ~available_union
        out[chosen] = c
    return out
