"""The batch runner: formats, resume, shards, provenance, and bad input."""

import json
import re

import pytest
from conftest import mask_files
from PIL import Image
from skimage import data

from samcam import cli
from samcam.pipeline.masks import parse_shard, run_masks, select_ids
from samcam.sam.mask_files import MaskStore

pytestmark = pytest.mark.slow


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    small = lambda a: a[::4, ::4]  # noqa: E731 - small images keep the decoder cheap
    Image.fromarray(small(data.chelsea())).save(folder / "cat.jpg")
    Image.fromarray(small(data.astronaut())).save(folder / "person.png")
    Image.fromarray(small(data.camera())).save(folder / "gray.png")  # grayscale: converted
    Image.fromarray(small(data.chelsea())).convert("RGBA").save(folder / "rgba.png")
    return folder


def test_run_resume_and_provenance(images, tmp_path, mobile_sam_checkpoint):
    out = tmp_path / "masks"
    s = run_masks(images, out, points_per_side=2, progress=False, device="cpu")
    assert (s.done, s.skipped) == (4, 0)
    store = MaskStore(out)
    assert store.ids() == ["cat", "gray", "person", "rgba"]
    record = json.loads((out / "samcam_run.json").read_text())  # the record every step writes
    assert record["step"] == "masks" and record["inputs"] == {"images": "../images"} and record["fingerprints"] == {}
    meta = record["parameters"]
    assert meta["checkpoint_sha256"].startswith("6dbb9052") and meta["settings"]["points_per_side"] == 2
    assert meta["model_type"] == "vit_t" and meta["generator"] == "fast" and meta["format"] == "compact"
    cost = json.loads((out / "samcam_cost.json").read_text())["runs"]  # one run, of the 4 images it made, here
    assert [(r["images"], r["device"]) for r in cost] == [(4, "cpu")] and cost[0]["seconds"] >= sum(store.read(i).meta["seconds"] for i in store.ids())
    ms = store.read("cat")
    assert ms.shape == (75, 113) and ms.meta["image_id"] == "cat"
    # a second run skips everything; other settings into the same folder are refused
    assert run_masks(images, out, points_per_side=2, progress=False).done == 0
    (out / "cat.json.gz").unlink()
    with pytest.raises(ValueError, match="other settings"):
        run_masks(images, out, points_per_side=3, progress=False)
    assert run_masks(images, out, points_per_side=2, progress=False, device="cpu").done == 1
    cost = json.loads((out / "samcam_cost.json").read_text())["runs"]  # the resumed run adds a run of the one image it redid
    assert [r["images"] for r in cost] == [4, 1]
    assert json.loads((out / "samcam_run.json").read_text()) == record  # a resumed run keeps the record


def test_a_samcam_0_1_mask_folder_is_resumed_and_its_record_moved(images, tmp_path, mobile_sam_checkpoint):
    """A folder whose record is samcam 0.1's samcam_masks.json (the committed train masks were made so)
    resumes: the record moves into samcam_run.json with its version and checkpoint name; other
    settings are refused naming the old record."""
    out = tmp_path / "masks"
    run_masks(images, out, ids=["cat"], points_per_side=2, progress=False, device="cpu")
    record = json.loads((out / "samcam_run.json").read_text())
    legacy = {**record["parameters"], "checkpoint": "old_sam.pt", "samcam_version": "0.1.0"}  # names the new run does not write
    (out / "samcam_run.json").unlink()
    (out / "samcam_masks.json").write_text(json.dumps(legacy))
    with pytest.raises(ValueError, match=r"samcam_masks\.json: this folder holds masks made with other settings \(settings\.points_per_side: 2 -> 3\); "):
        run_masks(images, out, points_per_side=3, progress=False, device="cpu")
    assert (out / "samcam_masks.json").exists() and not (out / "samcam_run.json").exists()
    assert run_masks(images, out, ids=["cat"], points_per_side=2, progress=False, device="cpu").done == 0
    moved = json.loads((out / "samcam_run.json").read_text())
    assert not (out / "samcam_masks.json").exists()
    assert moved["samcam_version"] == "0.1.0" and moved["parameters"] == {k: legacy[k] for k in moved["parameters"]}
    assert moved["parameters"]["checkpoint"] == "old_sam.pt" and moved["step"] == "masks"
    (out / "samcam_masks.json").write_text(json.dumps(legacy))  # both records (a run stopped between the two writes): the old one goes
    assert run_masks(images, out, ids=["cat"], points_per_side=2, progress=False, device="cpu").done == 0
    assert not (out / "samcam_masks.json").exists() and json.loads((out / "samcam_run.json").read_text()) == moved


def test_official_format_and_cli(images, tmp_path, capsys, mobile_sam_checkpoint):
    out = tmp_path / "official"
    args = ["masks", "--images", str(images), "--out", str(out), "--format", "official", "--points-per-side", "2", "--shard", "1/2", "--device", "cpu"]
    assert cli.main(args) == 0
    assert "2 images done" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["gray", "rgba"]
    assert (out / "gray" / "metadata.csv").exists()


def test_shards_partition_the_ids():
    index = {i: None for i in "abcdefg"}
    parts = [select_ids(index, None, (i, 3)) for i in range(3)]
    assert sorted(sum(parts, [])) == list("abcdefg") and parts[0] == ["a", "d", "g"]
    with pytest.raises(ValueError, match="I/N"):
        parse_shard("3")
    with pytest.raises(ValueError, match="0 <= I < N"):
        parse_shard("2/2")


def test_bad_input(tmp_path, images):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no .jpg/.png"):
        run_masks(tmp_path / "empty", tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        run_masks(tmp_path / "nope", tmp_path / "o")
    with pytest.raises(FileNotFoundError, match=r"images: no image for 1 of the ids given, e.g. dog"):
        run_masks(images, tmp_path / "o", ids=["cat", "dog"])
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"broken\.jpg: unreadable image"):
        run_masks(images, tmp_path / "o", ids=["broken"], points_per_side=2, progress=False, device="cpu")


def test_devices_write_what_one_process_writes(images, tmp_path, capsys, mobile_sam_checkpoint):
    import torch

    one, two = tmp_path / "one", tmp_path / "two"
    threads = torch.get_num_threads()
    try:  # the same torch threads per process: other counts change float sums in their last bits
        torch.set_num_threads(1)
        assert run_masks(images, one, points_per_side=2, progress=False, device="cpu").done == 4
        args = ["masks", "--images", str(images), "--out", str(two), "--points-per-side", "2", "--devices", "cpu,cpu", "--threads", "1"]
        assert cli.main(args) == 0
    finally:
        torch.set_num_threads(threads)
    assert "4 images done, 0 already there" in capsys.readouterr().out
    assert mask_files(two) == mask_files(one) and len(mask_files(one)) == 4
    assert (two / "samcam_run.json").read_bytes() == (one / "samcam_run.json").read_bytes()
    # resume: only the missing image is redone, by the workers
    (two / "person.json.gz").unlink()
    s = run_masks(images, two, points_per_side=2, progress=False, devices=["cpu", "cpu"], threads=1)
    assert (s.done, s.skipped) == (1, 3) and mask_files(two) == mask_files(one)
    # a worker's error comes back as itself, naming the file
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"broken\.jpg: unreadable image"):
        run_masks(images, tmp_path / "three", ids=["broken", "cat"], points_per_side=2, progress=False, devices=["cpu", "cpu"], threads=1)
    with pytest.raises(ValueError, match="--device or --devices, not both"):
        run_masks(images, tmp_path / "four", device="cpu", devices=["cpu", "cpu"])


def test_a_finished_slurm_array_equals_one_process(images, tmp_path, monkeypatch, mobile_sam_checkpoint):
    one, array = tmp_path / "one", tmp_path / "array"
    assert run_masks(images, one, points_per_side=2, progress=False, device="cpu").done == 4
    for task in (1, 2, 3):  # sbatch --array=1-3, its tasks one after another
        for name, value in (("ID", task), ("COUNT", 3), ("MIN", 1)):
            monkeypatch.setenv(f"SLURM_ARRAY_TASK_{name}", str(value))
        assert cli.main(["masks", "--images", str(images), "--out", str(array), "--points-per-side", "2", "--device", "cpu", "--shard", "auto"]) == 0
    assert mask_files(array) == mask_files(one) and len(mask_files(one)) == 4
    assert sorted(p.name for p in array.iterdir()) == sorted(p.name for p in one.iterdir())


def test_a_mask_sets_seconds_time_the_generator_only(tmp_path, monkeypatch):
    """meta["seconds"] of each written mask set is the generation alone: reading the image (here made
    to take 0.3 s) is not counted."""
    import time

    import numpy as np

    import samcam.pipeline.masks as masks_step
    import samcam.sam.model
    from samcam.sam.masks import MaskSet

    class Instant:
        device = "cpu"

        def generate(self, image):
            return MaskSet(np.zeros((1, *image.shape[:2]), bool))

    real_read = masks_step.read_image

    def slow_read(path):
        time.sleep(0.3)
        return real_read(path)

    monkeypatch.setattr(masks_step, "read_image", slow_read)
    monkeypatch.setattr(samcam.sam.model, "build_generator", lambda *a, **k: Instant())
    Image.fromarray(data.astronaut()[:64, :48]).save(tmp_path / "a.png")
    out = tmp_path / "masks"
    out.mkdir()
    masks_step.generate_into(None, ["a"], lambda i, n: None, {"a": tmp_path / "a.png"}, out, "compact", {"m": 1}, "vit_t", None, "fast", {})
    meta = MaskStore(out).read("a").meta
    assert meta["image_id"] == "a" and meta["m"] == 1 and 0 <= meta["seconds"] < 0.1


def test_a_mask_folder_takes_masks_of_one_image_folder(tmp_path, monkeypatch, mobile_sam_checkpoint):
    """A resumed run from another existing image folder is refused (the record names the first one, and
    would describe masks of images it never held); the same folder by another path, or a recorded
    folder that was moved away, is the same folder."""
    import numpy as np

    import samcam.sam.model
    from samcam.sam.masks import MaskSet

    class Instant:
        device = "cpu"

        def generate(self, image):
            return MaskSet(np.zeros((1, *image.shape[:2]), bool))

    monkeypatch.setattr(samcam.sam.model, "build_generator", lambda *a, **k: Instant())
    import shutil

    for name, crop in (("a", data.astronaut()[:16, :24]), ("b", data.astronaut()[16:32, :24])):
        (tmp_path / name).mkdir()
        Image.fromarray(crop).save(tmp_path / name / "x.png")
    out = tmp_path / "m"
    assert run_masks(tmp_path / "a", out, checkpoint=mobile_sam_checkpoint, progress=False).done == 1
    with pytest.raises(ValueError, match=re.escape(f"samcam_run.json: this folder holds masks of the images in {out / '..' / 'a'}, "
                                                   f"not of --images {tmp_path / 'b'} (whose images of those ids differ")):  # fmt: skip
        run_masks(tmp_path / "b", out, checkpoint=mobile_sam_checkpoint, progress=False)
    assert MaskStore(out).ids() == ["x"]
    shutil.copytree(tmp_path / "a", tmp_path / "copy")  # a copy (node-local scratch) holds the same images: the same folder
    Image.fromarray(data.astronaut()[:16, :16]).save(tmp_path / "copy" / "y.png")
    assert run_masks(tmp_path / "copy", out, checkpoint=mobile_sam_checkpoint, progress=False).done == 1
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert run_masks(tmp_path / "link", out, checkpoint=mobile_sam_checkpoint, progress=False).skipped == 1
    (tmp_path / "a").rename(tmp_path / "moved")
    assert run_masks(tmp_path / "moved", out, checkpoint=mobile_sam_checkpoint, progress=False).skipped == 1
