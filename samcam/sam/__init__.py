"""SAM: checkpoints (``weights``), models and mask generators (``model``, ``fast_amg``), mask sets and their file formats (``masks``)."""
