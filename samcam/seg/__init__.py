"""Close the WSSS loop: train a small segmentation network on a pseudo-label folder, score it on VOC val.

``model`` (EfficientNet-Lite + LR-ASPP head), ``recipe`` (the frozen training recipe and pure
augmentations), ``train`` (seeded, resumable training), ``evaluate`` (val mIoU, optional multi-scale +
flip), ``report`` (tables and figures from result files), ``commands`` (``samcam train-seg`` /
``samcam eval-seg``).
"""
