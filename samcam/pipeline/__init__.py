"""The pipeline steps, one file per step (as IRN's ``step/`` folder): each walks folders, shows
progress, skips finished ids (so an interrupted run resumes) and writes every output atomically.

``masks`` (SAM masks) -> ``train_classifier`` -> ``cam`` (CAMs, CAM -> labels, threshold sweep) ->
``labels`` (a method's output -> PNG labels) -> ``merge`` (the paper's rule) / ``prompted`` ->
``evaluate`` -> ``enhance`` (one method before/after); ``coco`` and ``demo`` compose the others."""
