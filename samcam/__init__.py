"""samcam: SAM-enhanced CAM pseudo labels for weakly supervised semantic segmentation.

A reproducibility package for Chen, Mai, Li, Chao (2023), *Segment Anything Model (SAM) Enhanced
Pseudo Labels for Weakly Supervised Semantic Segmentation*.  One concept per module:

- :mod:`samcam.datasets` -- dataset descriptions (VOC, COCO), VOC trees, label-map I/O, image labels
- :mod:`samcam.metrics`  -- the standard confusion-matrix mIoU and the official repo's per-image statistic
- :mod:`samcam.masks`    -- class-agnostic mask sets and their on-disk formats
- :mod:`samcam.merge`    -- the paper's rules that label SAM masks with a pseudo label
- :mod:`samcam.weights`  -- known SAM checkpoints, download and verification
- :mod:`samcam.sam`      -- building SAM / MobileSAM mask generators
- :mod:`samcam.fast_amg` -- a faster automatic mask generator, same masks as the official one
- :mod:`samcam.cli`      -- the ``samcam`` command
"""

__version__ = "0.1.0"
