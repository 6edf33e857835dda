"""samcam: SAM-enhanced CAM pseudo labels for weakly supervised semantic segmentation.

A reproducibility package for Chen, Mai, Li, Chao (2023), *Segment Anything Model (SAM) Enhanced
Pseudo Labels for Weakly Supervised Semantic Segmentation*.  One concept per module:

- :mod:`samcam.datasets`     -- label spaces (VOC, COCO), VOC trees, label-map I/O, image-level labels
- :mod:`samcam.safe_pickle`  -- pickled ``.npy`` files read without executing code
- :mod:`samcam.metrics`      -- the standard confusion-matrix mIoU and the official repo's per-image statistic
- :mod:`samcam.masks`        -- class-agnostic mask sets and their on-disk formats
- :mod:`samcam.merge`        -- the paper's rules that label SAM masks with a pseudo label
- :mod:`samcam.merge_runner` -- merging folders (resumable, parallel, atomic)
- :mod:`samcam.weights`      -- known SAM checkpoints, download and verification
- :mod:`samcam.sam`          -- building SAM / MobileSAM models and mask generators
- :mod:`samcam.fast_amg`     -- a faster automatic mask generator, same masks as the official one
- :mod:`samcam.mask_runner`  -- batch mask generation (resumable, shardable)
- :mod:`samcam.cam`          -- CAM networks, multi-scale CAMs, Grad-CAM, IRN CAM files, CAM → label
- :mod:`samcam.classifier`   -- training a CAM classifier on image-level labels
- :mod:`samcam.cam_runner`   -- CAM extraction, CAM → label folders, threshold sweeps
- :mod:`samcam.methods`      -- the WSSS methods' registry and output loaders
- :mod:`samcam.prompted`     -- beyond the paper: SAM prompted by the pseudo label's regions
- :mod:`samcam.enhance`      -- one method enhanced and scored before/after
- :mod:`samcam.figures`, :mod:`samcam.report`, :mod:`samcam.demo`, :mod:`samcam.notebooks`, :mod:`samcam.cli`
"""

__version__ = "0.1.0"
