"""Pipeline step: prompted SAM refinement of a folder of pseudo labels (resumable, atomic); the per-image rule is :func:`samcam.refine.prompted.refine`."""

from __future__ import annotations

from samcam.outputs import StepResult
from samcam.refine.prompted import PromptConfig, refine


def refine_folder(images, pseudo, out, ids: list[str], configs: PromptConfig | dict[str, PromptConfig] = PromptConfig(),
                  cams_dir=None, model_type: str = "vit_t", checkpoint=None, device: str | None = None, fmt: str = "png",
                  threshold: float | None = None, progress: bool | None = None, devices: list[str] | None = None,
                  threads: int | None = None) -> StepResult:  # fmt: skip
    """Prompted refinement of ``pseudo`` labels for ``ids``, resumable and atomic.

    One config writes ``out/<id>.png``; a dict of named configs writes ``out/<name>/<id>.png``, all
    from one image embedding per image. The result's seconds (of the images done, so
    ``seconds_per_item`` is per image) cover the embedding and every config's prompts, and the cost
    record the whole wall time (model building included); ``out`` is the parent folder of named configs. ``devices`` (two or more) runs one spawned
    process per device on a disjoint slice of the pending ids, one progress bar for all.
    """
    import contextlib
    import time
    from pathlib import Path

    from samcam.io import image_index, near_miss
    from samcam.outputs import add_cost, claim_output, pending
    from samcam.pipeline.workers import run_on_devices
    from samcam.progress import progress_bar

    if devices and device:
        raise ValueError("give --device or --devices, not both")
    out, pseudo = Path(out), Path(pseudo)
    named = configs if isinstance(configs, dict) else {"": configs}
    targets = {name: (out / name if name else out) for name in named}
    with contextlib.ExitStack() as claimed:  # every folder locked and recorded while the step writes
        for name, target in targets.items():
            claimed.enter_context(claim_output(target, "refine-prompted", {"images": images, "pseudo": pseudo, "cams": cams_dir, "checkpoint": checkpoint},
                                               {"config": vars(named[name]), "model_type": model_type, "checkpoint": checkpoint, "format": fmt, "threshold": threshold}))
        index = image_index(images)
        missing = [i for i in ids if i not in index]
        if missing:
            raise FileNotFoundError(f"{images}: no image for {len(missing)} ids, e.g. {missing[0]}{near_miss(missing, index.__contains__)}")
        undone = set().union(*(pending(ids, t) for t in targets.values()))
        todo = [i for i in ids if i in undone]
        if not todo:
            return StepResult(out, 0, len(ids), 0.0)
        seconds, where = [0.0], []
        bar = progress_bar(total=len(todo), desc="refine", unit="img", progress=progress)

        def done(image_id: str, info: tuple[float, str]) -> None:
            seconds[0] += info[0]
            where.append(info[1])
            bar.update()

        work = ({i: index[i] for i in todo}, pseudo, cams_dir, named, targets, model_type, checkpoint, fmt, threshold)
        t0 = time.perf_counter()
        try:
            run_on_devices(refine_into, list(devices or [device]), todo, work, done, threads)
        finally:
            bar.close()
        device_names = ", ".join(dict.fromkeys(where))
        for target in targets.values():  # one embedding serves every config: each folder is charged all of it
            add_cost(target, time.perf_counter() - t0, len(todo), device_names)  # wall time, model building included, as every step
        return StepResult(out, len(todo), len(ids) - len(todo), seconds[0])


def refine_into(device: str | None, ids: list[str], report, paths: dict, pseudo, cams_dir, named: dict[str, PromptConfig],
                targets: dict, model_type: str, checkpoint, fmt: str, threshold: float | None) -> None:  # fmt: skip
    """Build MobileSAM/SAM on ``device`` and write the refined labels of ``ids``, calling
    ``report(image_id, (seconds, device))`` after each (seconds: the embedding and every config's
    prompts): the loop of one process, or of one device's worker."""
    import time
    from pathlib import Path

    from segment_anything import SamPredictor

    from samcam.cam.files import load_cam
    from samcam.cam.methods import load_pseudo_label
    from samcam.data.spaces import VOC
    from samcam.io import read_image, write_label
    from samcam.sam.model import build_sam, check_sam_size

    predictor = SamPredictor(build_sam(model_type, checkpoint, device))
    for image_id in ids:
        image = read_image(paths[image_id])
        check_sam_size(image.shape, paths[image_id])
        label = load_pseudo_label(pseudo, image_id, fmt, threshold, VOC, shape=image.shape[:2])
        cams = None
        if cams_dir is not None:
            d = load_cam(Path(cams_dir) / f"{image_id}.npy", image.shape[:2])
            cams = {int(k) + 1: m for k, m in zip(d["keys"], d["high_res"])}
        t0 = time.perf_counter()
        predictor.set_image(image)
        refined = {name: refine(predictor, label, VOC.n_classes, cams, cfg) for name, cfg in named.items()}
        seconds = time.perf_counter() - t0
        for name, lab in refined.items():
            write_label(targets[name] / f"{image_id}.png", lab)
        report(image_id, (seconds, str(predictor.device)))
