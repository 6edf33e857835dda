"""Datasets: label spaces (``spaces``), the VOC tree and image-level labels (``voc``), COCO mapped to VOC (``coco``), pickles read safely (``safe_pickle``)."""
