"""Bad input never passes silently: every case ends in one line naming the file, exit code 2, and
nothing the user gave is written over. Each test states the failure it guards against. The tests are
grouped by the principle they hold (issue 21): ids are names; inputs are checked before decoding; a
mask set belongs to its image; the official layout is strict; outputs land where they belong; options
and checkpoint fields are range-checked; every failure is one line; parallelism is bounded."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samcam import cli
from samcam.cam.files import save_cam
from samcam.io import REPO, read_ids
from samcam.outputs import RUN_RECORD, clean_temporaries, is_complete, pending





def fails(args, capsys, *needles):
    """Run the CLI, expect exit 2 and one error line (after any progress bars) holding every needle."""
    assert cli.main([str(a) for a in args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    err = lines[-1]
    assert err.startswith("samcam ") and ": error: " in err and not any("Traceback" in ln for ln in lines), lines
    for n in needles:
        assert str(n) in err, err
    return err

def _labels(folder: Path, ids, value=7, shape=(6, 8)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in ids:
        Image.fromarray(np.full(shape, value, np.uint8)).save(folder / f"{i}.png")

@pytest.fixture()
def scored(tmp_path):
    _labels(tmp_path / "pred", ["a", "b"])
    _labels(tmp_path / "gt", ["a", "b"], 7)
    (tmp_path / "ids.txt").write_text("a\nb\n")
    return tmp_path

def _cams(folder: Path, keys, maps):
    folder.mkdir(parents=True, exist_ok=True)
    save_cam(folder / "a.npy", np.array(keys), np.asarray(maps, np.float32))

def _mask_folder(tmp_path, edit=None):
    import gzip
    import json

    from samcam.sam.masks import MaskSet
    from samcam.sam.mask_files import write_compact

    masks = np.zeros((2, 6, 8), bool)
    masks[0, :3] = True
    masks[1, 3:] = True
    (tmp_path / "m").mkdir(exist_ok=True)
    write_compact(tmp_path / "m" / "a.json.gz", MaskSet(masks))
    if edit:
        doc = json.loads(gzip.decompress((tmp_path / "m" / "a.json.gz").read_bytes()))
        edit(doc)
        (tmp_path / "m" / "a.json.gz").write_bytes(gzip.compress(json.dumps(doc).encode()))
    _labels(tmp_path / "p", ["a"], 7, (6, 8))
    return ["merge", "--pseudo", tmp_path / "p", "--masks", tmp_path / "m", "--out", tmp_path / "o"]

def _digest(root: Path, out: str = "out") -> dict:
    """SHA-256 of every file under ``root`` except those in folders named ``out``: the inputs."""
    import hashlib

    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file() and out not in p.parts}


# ============================================================================ 1. an id is a name, never a path


@pytest.mark.parametrize("content,needle", [("", "holds no ids"), ("# only a comment\n\n", "holds no ids"),
                                            ("a\nb\na\n", "id a is listed more than once"), (b"a\n\xff\xfe\n", "not UTF-8")])
def test_id_lists_empty_duplicated_or_not_text(scored, capsys, content, needle):
    p = scored / "bad_ids.txt"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    fails(["eval", "--pred", scored / "pred", "--gt", scored / "gt", "--ids", p], capsys, "bad_ids.txt", needle)

def test_id_list_with_bom_and_folder_as_file(scored, capsys):
    p = scored / "bom.txt"
    p.write_bytes("\ufeffa\r\nb\r\n".encode("utf-8"))
    assert read_ids(p) == ["a", "b"]
    for text in (b"a\rb\r", b"a\rb", b"a\n\rb\r\n", b"  a \r  b\t\r"):  # old Mac line ends: every id, none dropped
        p.write_bytes(text)
        assert read_ids(p) == ["a", "b"], text
    fails(["eval", "--pred", scored / "pred", "--gt", scored / "gt", "--ids", scored / "pred"], capsys, "is a folder")

def test_folder_ids_lists_checks_and_names(tmp_path):
    from samcam.io import folder_ids

    (tmp_path / "f").mkdir()
    for name in ("b.png", "a.png", "c.npy", "a.b.png"):
        (tmp_path / "f" / name).write_bytes(b"x")
    assert folder_ids(tmp_path / "f", ".png", "label") == ["a", "a.b", "b"]
    assert folder_ids(tmp_path / "f", ".npy", "CAM", ["c"]) == ["c"]
    with pytest.raises(FileNotFoundError, match=r"1 label files missing: .*z\.png"):
        folder_ids(tmp_path / "f", ".png", "label", ["a", "z"])
    with pytest.raises(FileNotFoundError, match=r"^label folder not found: .*nope$"):
        folder_ids(tmp_path / "nope", ".png", "label")
    with pytest.raises(FileNotFoundError, match=r"f: holds no <id>\.gz mask files$"):
        folder_ids(tmp_path / "f", ".gz", "mask")

def test_an_id_may_hold_a_space_and_is_listed_whole_but_a_hidden_file_is_no_id(scored, capsys):
    """An id list's line is one id (`a b`, as a folder lists `a b.png`; its first word would score `a`
    in its place); a leading dot is refused (a hidden file: no listing or fingerprint counts it, so its
    changes would pass unnoticed), and a folder's hidden files are never listed."""
    from samcam.io import folder_ids

    for folder, value in (("pred", 3), ("gt", 3)):
        _labels(scored / folder, ["a b"], value)
    (scored / "sp.txt").write_text("  a b \n")
    assert read_ids(scored / "sp.txt") == ["a b"]
    assert cli.main(["eval", "--pred", str(scored / "pred"), "--gt", str(scored / "gt"), "--ids", str(scored / "sp.txt"),
                     "--per-image-csv", str(scored / "per.csv")]) == 0  # fmt: skip
    assert (scored / "per.csv").read_text().splitlines()[1].startswith("a b,")
    (scored / "hid.txt").write_text("a\n.b\n")
    fails(["eval", "--pred", scored / "pred", "--gt", scored / "gt", "--ids", scored / "hid.txt"], capsys, "hid.txt: id '.b' is not a name", "no leading dot")
    _labels(scored / "pred", [".h"])
    assert ".h" not in folder_ids(scored / "pred", ".png", "prediction") and "a b" in folder_ids(scored / "pred", ".png", "prediction")


def test_an_image_too_thin_for_sam_is_named(tmp_path, capsys, mobile_sam_checkpoint):
    """SAM resizes an image to a 1024-pixel long side (rounding as ResizeLongestSide does): a 1 × 2049
    image would be 0 pixels high, and SAM's own error ("height and width must be > 0") named no image."""
    from samcam.sam.model import check_sam_size

    check_sam_size((16, 32768, 3), "ok")  # 0.5 + 0.5 rounds to 1 pixel
    check_sam_size((16, 16), "ok")
    for shape in ((1, 2049), (3000, 1), (16, 32769)):
        with pytest.raises(ValueError, match=re.escape(f"thin.png: {shape[0]}×{shape[1]} pixels is too thin for SAM (resized to its 1024-pixel long side: ")):
            check_sam_size(shape, "thin.png")
    for shape in ((1, 1), (1, 2048), (15, 15), (15, 400)):  # audit 9's F19: a 1 × 1 image gave 8 masks
        with pytest.raises(ValueError, match=re.escape(f"small.png: {shape[0]}×{shape[1]} pixels is too small for SAM (each side at least 16 pixels")):
            check_sam_size(shape, "small.png")
    (tmp_path / "im").mkdir()
    Image.fromarray(np.zeros((1, 3000, 3), np.uint8)).save(tmp_path / "im" / "th.png")
    Image.fromarray(np.zeros((1, 3000), np.uint8)).save(tmp_path / "th_label.png")
    (tmp_path / "pl").mkdir()
    Image.fromarray(np.zeros((1, 3000), np.uint8)).save(tmp_path / "pl" / "th.png")
    (tmp_path / "ids.txt").write_text("th\n")
    fails(["masks", "--images", tmp_path / "im", "--out", tmp_path / "m", "--checkpoint", mobile_sam_checkpoint, "--points-per-side", "1",
           "--device", "cpu"], capsys, f"{tmp_path / 'im' / 'th.png'}: 1×3000 pixels is too thin for SAM")
    fails(["refine", "--mode", "prompted", "--pseudo", tmp_path / "pl", "--images", tmp_path / "im", "--out", tmp_path / "r", "--ids",
           tmp_path / "ids.txt", "--checkpoint", mobile_sam_checkpoint, "--device", "cpu"], capsys, f"{tmp_path / 'im' / 'th.png'}: 1×3000 pixels")
    (tmp_path / "one").mkdir()
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "one" / "dot.png")
    fails(["masks", "--images", tmp_path / "one", "--out", tmp_path / "m1", "--checkpoint", mobile_sam_checkpoint, "--points-per-side", "1",
           "--device", "cpu"], capsys, f"{tmp_path / 'one' / 'dot.png'}: 1×1 pixels is too small for SAM")
    assert not list((tmp_path / "m1").glob("*.json.gz"))


def test_a_file_named_in_another_unicode_form_is_pointed_at(tmp_path, capsys):
    import unicodedata

    nfd, nfc = unicodedata.normalize("NFD", "caf\u00e9"), unicodedata.normalize("NFC", "caf\u00e9")
    for folder in ("pred", "gt"):
        _labels(tmp_path / folder, [nfd])
    (tmp_path / "ids.txt").write_text(nfc + "\n")
    fails(["eval", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--ids", tmp_path / "ids.txt"], capsys,
          f"1 prediction files missing: {tmp_path / 'pred' / nfc}.png ({nfd!r} exists: the same name in another Unicode normal form")
    from samcam.io import find_image
    from samcam.pipeline.masks import select_ids

    with pytest.raises(FileNotFoundError, match=re.escape(f"({nfd!r} exists: the same name in another Unicode normal form")):
        select_ids({nfd: tmp_path / "x.png"}, [nfc], (0, 1), "im")  # masks, refine: an image folder's index
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / f"{nfd}.jpg")
    with pytest.raises(FileNotFoundError, match=re.escape(f"({nfd!r} exists: the same name in another Unicode normal form")):
        find_image(tmp_path, nfc)


def test_a_list_with_a_second_column_is_pointed_at(scored, capsys):
    """A line is one whole id (an id may hold a space), so VOC's `ImageSets/Main` lists (`a  1`) name ids
    that do not exist: the message says the line's first word does."""
    (scored / "main.txt").write_text("a  1\nb -1\n")
    fails(["eval", "--pred", scored / "pred", "--gt", scored / "gt", "--ids", scored / "main.txt"], capsys,
          "2 prediction files missing", "('a' exists: an id list's line is one whole id, here 'a  1'; does the list have a second column?)")


def test_the_demo_and_the_mask_step_name_an_output_at_a_broken_link(tmp_path, capsys):
    from samcam.pipeline.masks import run_masks

    (tmp_path / "dl").symlink_to(tmp_path / "gone")
    fails(["demo", "--out", tmp_path / "dl"], capsys, f"output {tmp_path / 'dl'}: is a link to {tmp_path / 'gone'}, which does not exist")
    (tmp_path / "im").mkdir()
    with pytest.raises(ValueError, match=re.escape(f"output {tmp_path / 'dl'}: is a link to {tmp_path / 'gone'}, which does not exist")):
        run_masks(tmp_path / "im", tmp_path / "dl")  # as notebook 01 calls it
    assert not (tmp_path / "gone").exists()


def test_eval_of_ground_truth_that_is_all_void_is_refused_not_a_nan_score(tmp_path, capsys):
    _labels(tmp_path / "pred", ["a", "b"], 255)
    _labels(tmp_path / "gt", ["a", "b"], 255)
    fails(["eval", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--csv", tmp_path / "e.csv"], capsys,
          f"{tmp_path / 'gt'}: every pixel of the 2 ground-truth labels scored is void (255); the mIoU is undefined")
    assert not (tmp_path / "e.csv").exists()
    _labels(tmp_path / "gt", ["b"], 0)  # one pixel scored is a score
    assert cli.main(["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]) == 0


NOT_NAMES = ["../../v/evil", "/etc/evil", "a\\b", "..", "a\x00b", "a\x1bb", ".b"]

@pytest.fixture()
def escape(tmp_path):
    """A work folder ``w`` (labels, CAMs, masks, ids) and a victim file ``v/evil.png`` two levels up
    from any output, which an id ``../../v/evil`` would reach."""
    w = tmp_path / "w"
    _labels(w / "pred", ["a"], 7, (4, 4))
    _labels(w / "gt", ["a"], 7, (4, 4))
    _labels(tmp_path / "v", ["evil"], 3, (4, 4))
    _cams(w / "cams", [3], np.ones((1, 4, 4)))
    return tmp_path, w

def _write_ids(path: Path, bad: str) -> Path:
    path.write_bytes(f"a\n{bad}\n".encode())
    return path

COMMANDS_WITH_IDS = {
    "eval": lambda w, ids: ["eval", "--pred", w / "pred", "--gt", w / "gt", "--ids", ids],
    "merge": lambda w, ids: ["merge", "--pseudo", w / "pred", "--masks", w / "pred", "--out", w / "out" / "x", "--ids", ids],
    "labels": lambda w, ids: ["labels", "--method", "CLIMS", "--format", "irn_npy", "--threshold", "0.15", "--input", w / "cams",
                              "--out", w / "out" / "x", "--ids", ids],
    "cam2label": lambda w, ids: ["cam2label", "--cams", w / "cams", "--out", w / "out" / "x", "--threshold", "0.2", "--ids", ids],
    "eval-seg": lambda w, ids: ["eval-seg", "--checkpoint", w / "none.pt", "--images", w / "pred", "--gt", w / "gt", "--ids", ids,
                                "--save-predictions", w / "out" / "x"],
}

@pytest.mark.parametrize("bad", NOT_NAMES)
@pytest.mark.parametrize("cmd", sorted(COMMANDS_WITH_IDS))
def test_an_id_list_naming_a_path_is_refused_by_every_command(escape, capsys, cmd, bad):
    root, w = escape
    ids = _write_ids(w / "ids.txt", bad)
    before = _digest(root)
    fails(COMMANDS_WITH_IDS[cmd](w, ids), capsys, "ids.txt", "is not a name")
    assert _digest(root) == before
    assert not (w / "out").exists()

@pytest.mark.parametrize("cmd", sorted(COMMANDS_WITH_IDS))
def test_an_id_too_long_for_a_file_name_is_refused_by_every_command(escape, capsys, cmd):
    """A 300-byte id failed as its file was written, after the work (audit 10, F6): a name is at most
    200 bytes of UTF-8, counted in bytes (an e-acute is two)."""
    from samcam.io import check_id

    root, w = escape
    long_id = "\u00e9" * 100 + "a"  # 201 bytes, 101 characters
    ids = _write_ids(w / "ids.txt", long_id)
    before = _digest(root)
    fails(COMMANDS_WITH_IDS[cmd](w, ids), capsys, "ids.txt", "is 201 bytes long; a name is at most 200 bytes")
    assert _digest(root) == before and not (w / "out").exists()
    assert check_id("\u00e9" * 100, "x") == "\u00e9" * 100  # 200 bytes: a name


def test_an_official_metadata_row_naming_a_path_is_refused(escape, capsys):
    root, w = escape
    official = w / "masks" / "a"
    official.mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 255, np.uint8)).save(official / "0.png")
    (official / "metadata.csv").write_text("id,area,predicted_iou,stability_score\n../../../../v/evil,16,0.9,0.9\n")
    before = _digest(root)
    fails(["merge", "--pseudo", w / "pred", "--masks", w / "masks", "--out", w / "out"], capsys, "metadata.csv", "is not a name")
    assert _digest(root) == before

def test_a_file_name_that_is_not_utf8_is_no_id_and_no_crash(scored, capsys):
    """A stray name of undecodable bytes (surrogates in Python) beside the inputs: ignored when not
    listed (the fingerprint hashes the name's bytes), refused as no name when it would be an id."""
    import os

    os.rename(scored / "pred" / "b.png", os.fsdecode(os.fsencode(str(scored / "pred")) + b"/x\xff.png"))
    fails(["eval", "--pred", scored / "pred", "--gt", scored / "gt", "--per-image-csv", scored / "pi.csv"], capsys,
          "pred: id 'x\\udcff' is not a name", "not UTF-8")  # fmt: skip
    assert not (scored / "pi.csv").exists()
    (scored / "one.txt").write_text("a\n")
    assert cli.main(["eval", "--pred", str(scored / "pred"), "--gt", str(scored / "gt"), "--ids", str(scored / "one.txt")]) == 0
    _cams(scored / "cams", [6], np.ones((1, 6, 8)))
    (scored / "cams" / "a.npy").rename(os.fsdecode(os.fsencode(str(scored / "cams")) + b"/\xffa.npy"))
    _cams(scored / "cams", [6], np.ones((1, 6, 8)))
    assert cli.main(["cam2label", "--cams", str(scored / "cams"), "--out", str(scored / "o"), "--threshold", "0.2", "--ids", str(scored / "one.txt")]) == 0
    fails(["cam2label", "--cams", scored / "cams", "--out", scored / "o2", "--threshold", "0.2"], capsys, "is not a name")


def test_a_listed_file_whose_name_is_no_id_is_refused(tmp_path, capsys):
    _labels(tmp_path / "pred", ["a", "b\x1bc"], 7, (4, 4))
    _labels(tmp_path / "gt", ["a"], 7, (4, 4))
    fails(["eval", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt"], capsys, "pred", "is not a name")

@pytest.mark.parametrize("name", ["#hash", "trail ", " lead"])
def test_a_listed_file_whose_name_no_id_list_can_hold_is_refused(tmp_path, capsys, name):
    # audit 11, F7: "#hash.png" was scored when the folder was listed, but an id list drops "#hash" as a comment,
    # and strips "trail "; a list written from the folder scored fewer images, without a word
    _labels(tmp_path / "pred", ["a", name], 7, (4, 4))
    _labels(tmp_path / "gt", ["a", name], 7, (4, 4))
    fails(["eval", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt"], capsys, "pred", f"id {name!r} is not a name", "no leading dot or #, no space at either end")


def test_a_reproduce_step_name_that_is_a_path_is_refused(tmp_path, capsys):
    (tmp_path / "r.yml").write_text("steps:\n  - name: ../../escape\n    notebook: demo.ipynb\n")
    fails(["reproduce", "--config", tmp_path / "r.yml"], capsys, "r.yml", "step 0 name", "is not a name")


@pytest.mark.parametrize("steps,needle", [
    ("  - name: x\n    notebook: demo.ipynb\n    outputs: [results/demo]\n    parameters: {out_dir: results/demo}\n  - name: x\n    notebook: demo.ipynb\n", "step 1 repeats the name 'x'"),  # one executed notebook for two steps
    ("  - name: x\n    notebook: ../../etc/evil.ipynb\n", "step 0 (x) notebook '../../etc/evil.ipynb' must be a relative path inside notebooks/"),
    ("  - name: x\n    notebook: /srv/evil.ipynb\n", "must be a relative path inside notebooks/"),
])
def test_a_reproduce_config_names_each_step_once_and_its_notebook_inside_notebooks(tmp_path, capsys, steps, needle):
    (tmp_path / "r.yml").write_text("steps:\n" + steps)
    fails(["reproduce", "--config", tmp_path / "r.yml", "--list"], capsys, "r.yml", needle)


@pytest.mark.parametrize("line", ["a\u00a0b", "a\u202eb", "a\u200bb"])  # no-break space, right-to-left override, zero-width space
def test_an_id_holding_an_invisible_or_unicode_space_character_is_refused(scored, capsys, line):
    """``a<NBSP>b`` was read as ``a`` (str.split splits on it) and U+202E turned messages around."""
    (scored / "ids.txt").write_text(line + "\n")
    fails(["eval", "--pred", scored / "pred", "--gt", scored / "gt", "--ids", scored / "ids.txt"], capsys, "ids.txt", "is not a name")

def test_a_reproduce_config_with_aliases_or_non_path_entries_is_refused(tmp_path, capsys):
    bomb = "a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\nsteps: []\n"  # each level multiplies the nodes
    (tmp_path / "r.yml").write_text(bomb)
    fails(["reproduce", "--config", tmp_path / "r.yml", "--list"], capsys, "r.yml", "YAML aliases")
    for key, value, shown in (("outputs", "[3]", "3"), ("inputs", "[null]", "None"), ("outputs", "['']", "''")):
        (tmp_path / "r.yml").write_text(f"steps:\n  - name: x\n    notebook: demo.ipynb\n    {key}: {value}\n")
        fails(["reproduce", "--config", tmp_path / "r.yml", "--list"], capsys, "r.yml", f"{key} holds {shown}; expected paths")


@pytest.mark.parametrize("step,needle", [
    ("notebook: demo.ipynb\n    outputs: [{t}/evil]", "must be a relative path inside the checkout"),  # every step kind, not only commands
    ("notebook: demo.ipynb\n    outputs: [../../evil]", "must be a relative path inside the checkout"),
    ("notebook: demo.ipynb\n    outputs: [notebooks/reproduce.yml]", "part of samcam itself"),
    ("command: [eval, --pred, results/p, --gt, results/g, --csv, samcam/x.csv]\n    outputs: [samcam/x.csv]", "part of samcam itself"),
    ("notebook: demo.ipynb\n    parameters: {{out: {t}/evil}}", "parameter out = "),  # a notebook's paths stay in the checkout or the data root
    ("notebook: demo.ipynb\n    parameters: {{a: {{b: [../../evil]}}}}", "parameter a.b[0] = '../../evil' names a path outside"),
    ("notebook: reproduce.yml", "is not a notebook (.ipynb)"),
    ("command: [weights, fetch, vit_h]", "command 'weights' is not a samcam step"),  # writes the weights cache, outside the checkout
    ("name: y\n    notebook: demo.ipynb", "the key 'name' is given twice"),
])
def test_a_reproduce_config_never_names_a_place_outside_the_checkout(tmp_path, capsys, step, needle):
    (tmp_path / "r.yml").write_text("steps:\n  - name: x\n    " + step.format(t=tmp_path) + "\n")
    fails(["reproduce", "--config", tmp_path / "r.yml", "--list"], capsys, "r.yml", needle)


def test_a_notebook_parameter_may_name_the_data_root_and_plain_text(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAMCAM_DATA", str(tmp_path / "data"))
    (tmp_path / "r.yml").write_text("steps:\n  - name: x\n    notebook: 00_tutorial.ipynb\n    parameters: {data: '${SAMCAM_DATA}/voc', "
                                    "masks_dir: results/x, rule: 'a / b text', image_id: '2007_000032'}\n")  # fmt: skip
    assert cli.main(["reproduce", "--config", str(tmp_path / "r.yml"), "--list"]) == 0
    (tmp_path / "r.yml").write_text("steps:\n  - name: x\n    notebook: 00_tutorial.ipynb\n    parameters: {image_id: [1, 2]}\n")
    assert cli.main(["reproduce", "--config", str(tmp_path / "r.yml"), "--list"]) == 2  # its default is text: a list is refused
    assert "parameter image_id is [1, 2]; 00_tutorial.ipynb takes text there (its default: '2007_007908')" in capsys.readouterr().err


# ============================================================================ 2. every input is checked before it is decoded (regular file, size, intact, what its name says)


def _bomb_png(path: Path, side: int = 30000) -> Path:
    """A few hundred bytes of valid PNG declaring ``side``² gray pixels (one IDAT of a tiny stream)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path

def test_a_png_declaring_a_huge_size_is_refused_before_decoding(tmp_path, capsys):
    _cams(tmp_path / "cams", [3], np.ones((1, 4, 4)))
    (tmp_path / "img").mkdir()
    _bomb_png(tmp_path / "img" / "a.png")
    fails(["cam2label", "--cams", tmp_path / "cams", "--out", tmp_path / "out", "--threshold", "0.2", "--images", tmp_path / "img"],
          capsys, "a.png", "pixels")
    fails(["masks", "--images", tmp_path / "img", "--out", tmp_path / "m", "--checkpoint", _bomb_png(tmp_path / "x.pt")], capsys)
    _labels(tmp_path / "gt", ["a"], 7, (4, 4))
    (tmp_path / "pred").mkdir()
    _bomb_png(tmp_path / "pred" / "a.png")
    fails(["eval", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt"], capsys, "a.png", "pixels")

def test_a_label_that_is_jpeg_data_named_png_is_refused(tmp_path, capsys):
    _labels(tmp_path / "gt", ["a"], 7, (4, 4))
    (tmp_path / "pred").mkdir()
    Image.fromarray(np.full((4, 4, 3), 7, np.uint8)).save(tmp_path / "pred" / "a.png", format="JPEG")
    fails(["eval", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt"], capsys, "a.png", "not PNG data")

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_pipe_given_as_an_input_is_refused_not_waited_on(tmp_path, capsys):
    _labels(tmp_path / "pred", ["a"], 7, (4, 4))
    _labels(tmp_path / "gt", ["a"], 7, (4, 4))
    os.mkfifo(tmp_path / "ids.txt")
    fails(["eval", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--ids", tmp_path / "ids.txt"], capsys, "ids.txt", "a pipe")
    (tmp_path / "pred" / "a.png").unlink()
    os.mkfifo(tmp_path / "pred" / "a.png")
    fails(["eval", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt"], capsys, "a.png", "a pipe")

def test_a_gzip_bomb_and_a_truncated_mask_file_are_refused(tmp_path, capsys, monkeypatch):
    import gzip

    import samcam.io

    args = _mask_folder(tmp_path)
    whole = (tmp_path / "m" / "a.json.gz").read_bytes()
    (tmp_path / "m" / "a.json.gz").write_bytes(whole[:-9])
    fails(args, capsys, "a.json.gz", "truncated")
    (tmp_path / "m" / "a.json.gz").write_bytes(gzip.compress(b" " * (2 << 20)))
    # audit 9's F10: a mask file has its own limit, far below samcam's 4 GiB for any input
    from samcam.sam import mask_files

    assert mask_files.MAX_MASK_FILE_BYTES == 256 << 20
    monkeypatch.setattr(mask_files, "MAX_MASK_FILE_BYTES", 1 << 20)
    fails(args, capsys, "a.json.gz", "inflates beyond the 1 MiB limit of a mask file")
    for n, ok in ((1 << 20, True), ((1 << 20) + 1, False)):  # exactly the limit is read whole; one byte more is refused
        (tmp_path / "g.gz").write_bytes(gzip.compress(b"x" * n))
        if ok:
            assert samcam.io.read_gzip(tmp_path / "g.gz", "g", 1 << 20) == b"x" * n
        else:
            with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'g.gz'}: not a readable gzip stream (inflates beyond the 1 MiB limit of a g)")):
                samcam.io.read_gzip(tmp_path / "g.gz", "g", 1 << 20)

def test_an_npy_header_declaring_more_than_the_file_holds_is_refused(tmp_path, capsys):
    (tmp_path / "cams").mkdir()
    with open(tmp_path / "cams" / "a.npy", "wb") as f:  # 100000² float32 declared (40 GB), 64 bytes held
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (100000, 100000)})
        f.write(b"\0" * 64)
    fails(["cam2label", "--cams", tmp_path / "cams", "--out", tmp_path / "out", "--threshold", "0.2"], capsys, "a.npy", "header declares")

def test_incomplete_outputs_are_redone_and_stale_temporaries_cleaned(tmp_path):
    _labels(tmp_path, ["ok"])
    (tmp_path / "empty.png").write_bytes(b"")
    whole = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    assert is_complete(tmp_path / "ok.png") and not is_complete(tmp_path / "empty.png") and not is_complete(tmp_path / "cut.png")
    assert pending(["ok", "empty", "cut", "absent"], tmp_path) == ["empty", "cut", "absent"]
    old, fresh = tmp_path / ".x.png.samcam-ab_c1234.png.tmp", tmp_path / ".y.png.samcam-def56789.png.tmp"
    legacy = tmp_path / ".z.json.gz.k2j3h4g5.gz.tmp"  # named as samcam named temporaries before .samcam- (a run killed then)
    users = [tmp_path / n for n in (".draft.tmp", ".x.png.abc.png.tmp", ".x.png.samcam-abc.png.tmp", ".x.samcam-ABCDEFGH.tmp", ".x.png.k2j3h4g5.gz.tmp")]
    for p in (old, fresh, legacy, *users):
        p.write_bytes(b"")
        os.utime(p, (time.time() - 3600, time.time() - 3600))
    os.utime(fresh, None)
    assert clean_temporaries(tmp_path) == 2 and not old.exists() and not legacy.exists() and fresh.exists()  # a live run's file stays
    assert all(p.exists() for p in users)  # a user's hidden files are not samcam's temporaries, however old

def test_a_users_hidden_tmp_file_makes_the_folder_the_users(tmp_path, capsys):
    """A folder holding only a user's ``.draft.tmp`` (old enough to pass for a killed run's leftover) is
    not adopted as an output folder, and the file is neither removed nor written beside."""
    _cams(tmp_path / "cams", [3], np.linspace(0, 1, 16).reshape(1, 4, 4))
    out = tmp_path / "out"
    out.mkdir()
    (out / ".draft.tmp").write_text("keep")
    os.utime(out / ".draft.tmp", (time.time() - 7200, time.time() - 7200))
    fails(["cam2label", "--cams", tmp_path / "cams", "--out", out, "--threshold", "0.2"], capsys, str(out), "did not write", ".draft.tmp")
    assert sorted(p.name for p in out.iterdir()) == [".draft.tmp"] and (out / ".draft.tmp").read_text() == "keep"


def test_truncated_label_in_out_is_redone_by_cam2label(tmp_path):
    _cams(tmp_path / "cams", [3], np.linspace(0, 1, 16).reshape(1, 4, 4))
    assert cli.main(["cam2label", "--cams", str(tmp_path / "cams"), "--out", str(tmp_path / "out"), "--threshold", "0.2"]) == 0
    good = (tmp_path / "out" / "a.png").read_bytes()
    (tmp_path / "out" / "a.png").write_bytes(good[:20])
    assert cli.main(["cam2label", "--cams", str(tmp_path / "cams"), "--out", str(tmp_path / "out"), "--threshold", "0.2"]) == 0
    assert (tmp_path / "out" / "a.png").read_bytes() == good

def test_truncated_mask_files_count_as_not_done(tmp_path):
    import gzip

    with gzip.open(tmp_path / "a.json.gz", "wb") as f:
        f.write(b"{}" * 1000)
    whole = (tmp_path / "a.json.gz").read_bytes()
    (tmp_path / "b.json.gz").write_bytes(whole[: len(whole) // 2])
    assert is_complete(tmp_path / "a.json.gz") and not is_complete(tmp_path / "b.json.gz")


def test_a_mask_file_its_reader_refuses_counts_as_not_done(tmp_path, monkeypatch):
    """A resume redoes what a merge would refuse: a second gzip member after the stream, and a
    stream that inflates past the mask file's limit (shrunk here so the test stays small)."""
    import gzip

    from samcam.sam import mask_files

    whole = gzip.compress(b"{}" * 1000)
    (tmp_path / "a.json.gz").write_bytes(whole)
    (tmp_path / "two.json.gz").write_bytes(whole + gzip.compress(b"{}"))
    done = mask_files.FORMATS["compact"].complete
    assert done(tmp_path / "a.json.gz") and not done(tmp_path / "two.json.gz")
    assert not is_complete(tmp_path / "two.json.gz")
    monkeypatch.setattr(mask_files, "MAX_MASK_FILE_BYTES", 1999)  # a.json.gz inflates to 2000 bytes
    assert not done(tmp_path / "a.json.gz") and is_complete(tmp_path / "a.json.gz")
    monkeypatch.setattr(mask_files, "MAX_MASK_FILE_BYTES", 2000)
    assert done(tmp_path / "a.json.gz")

@pytest.mark.parametrize("edit,needle", [
    (lambda d: d["masks"][1]["segmentation"].update(counts="6p"), "a.json.gz"),      # a corrupt RLE string
    (lambda d: d["masks"][0].pop("segmentation"), "a.json.gz"),                     # a mask entry without its key
    (lambda d: d["masks"][0]["segmentation"].pop("counts"), "a.json.gz"),
])
def test_corrupt_mask_files_are_named_by_merge(tmp_path, capsys, edit, needle):
    fails(_mask_folder(tmp_path, edit), capsys, needle)


def test_a_compact_mask_file_whose_json_is_broken_is_refused(tmp_path, capsys):
    """The merge found a compact file's RLE strings by pattern and never parsed the rest: a file in
    write_compact's layout holding '"predicted_iou":NOTJSON' was merged, exit 0 (audit 12, F14). What
    the merge reads is parsed whole, as json itself (the independent reader here) refuses it."""
    import gzip
    import json

    from samcam.sam.mask_files import read_compact, read_compact_runs

    args = _mask_folder(tmp_path)
    path = tmp_path / "m" / "a.json.gz"
    text = gzip.decompress(path.read_bytes()).decode()
    broken = re.sub(r'"predicted_iou":[^,]*,', '"predicted_iou":NOTJSON,"x":', text, count=1)
    assert broken != text
    path.write_bytes(gzip.compress(broken.encode()))
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken)
    for read in (read_compact_runs, read_compact):
        with pytest.raises(ValueError, match=r"a\.json\.gz: not a samcam compact mask file \(Expecting value"):
            read(path)
    fails(args, capsys, "a.json.gz", "not a samcam compact mask file (Expecting value")
    assert not list((tmp_path / "o").glob("*.png"))


#: mask records that are not as write_compact writes them, each with what the refusal says
BAD_RECORDS = [
    (lambda m: m.update(predicted_iou="0.9"), "its predicted_iou '0.9' is not a number"),
    (lambda m: m.update(stability_score=True), "its stability_score True is not a number"),
    (lambda m: m.pop("stability_score"), "its stability_score '(absent)' is not a number"),
    (lambda m: m.update(point_coords=[[1.0]]), "its point_coords [[1.0]] are not one [x, y]"),
    (lambda m: m.update(point_coords=[1.0, 2.0]), "its point_coords [1.0, 2.0] are not one [x, y]"),
    (lambda m: m.update(point_coords=[[1.0, "2"]]), "its point_coords [[1.0, '2']] are not one [x, y]"),
    (lambda m: m.update(crop_box=[0, 0, 8]), "its crop_box [0, 0, 8] is not four numbers"),
    (lambda m: m.update(crop_box=[0, 0, 8, None]), "its crop_box [0, 0, 8, None] is not four numbers"),
    (lambda m: m["segmentation"].update(counts=[3, 4]), "its counts are a JSON list, not an RLE string"),
    (lambda m: m["segmentation"].update(extra=1), "its segmentation is not an object of size and counts"),
    (lambda m: m.pop("segmentation"), "its segmentation is not an object of size and counts"),
]


@pytest.mark.parametrize("edit,needle", BAD_RECORDS)
@pytest.mark.parametrize("which", [0, 1])
def test_a_compact_mask_record_not_as_samcam_writes_it_is_refused_by_every_reader(tmp_path, capsys, edit, needle, which):
    """The merge's reader checks each record whole, as the full reader reads it (audit 12, F14): a
    score that is text or a bool, point coordinates or a crop box of another shape, counts that are
    not a string."""
    from samcam.sam.mask_files import read_compact, read_compact_runs

    args = _mask_folder(tmp_path, lambda d: edit(d["masks"][which]))
    path = tmp_path / "m" / "a.json.gz"
    for read in (read_compact_runs, read_compact):
        with pytest.raises(ValueError, match=re.escape(f"a.json.gz: bad mask record {which} in a samcam compact mask file ({needle}")):
            read(path)
    fails(args, capsys, "a.json.gz", f"bad mask record {which}", needle)


def test_the_record_checks_of_a_compact_file_agree():
    """mask_files._compact_masks tests each record by type first and asks _record_fault what is wrong
    only when that fails: the two agree on every record, good or bad."""
    import copy

    from samcam.sam.mask_files import _compact_masks, _record_fault

    good = {"segmentation": {"size": [6, 8], "counts": "0"}, "predicted_iou": 0.9, "stability_score": None,
            "point_coords": [[1, 2.5]], "crop_box": [0, 0, 8, 6]}  # fmt: skip
    edits = [lambda m: None, lambda m: m.pop("crop_box"), *(e for e, _ in BAD_RECORDS), lambda m: m.update(predicted_iou=1),
             lambda m: m.update(point_coords=[[None, None]]), lambda m: m.update(crop_box=[0.5, 0, 8, 6]), lambda m: m.update(crop_box=[0, 0, 8, True]),
             lambda m: m["segmentation"].update(size=[6, 9]), lambda m: m["segmentation"].update(size=(6, 8)), lambda m: m.update(x=1)]  # fmt: skip
    for edit in edits:
        for crop in (True, False):
            m = copy.deepcopy(good)
            edit(m)
            doc = {"height": 6, "width": 8, "masks": [copy.deepcopy(good) if crop else {k: v for k, v in good.items() if k != "crop_box"}, m]}
            try:
                _compact_masks(doc, "f")
                passed = True
            except ValueError:
                passed = False
            assert passed == (_record_fault(m, [6, 8], crop) is None), (m, crop)
    assert _record_fault(["a list"], [6, 8], True) == "a JSON list, not an object"

@pytest.mark.parametrize("record", [True, False], ids=["with its record", "without a record"])
def test_merge_refuses_a_mask_folder_mixing_sets_of_two_settings(tmp_path, capsys, record):
    # audit 11, F9: a set made at 16 points per side among sets made at 32 was merged without a word
    import json

    from samcam.sam.masks import MaskSet
    from samcam.sam.mask_files import write_compact

    made = {"model_type": "vit_t", "checkpoint_sha256": "ab" * 32, "generator": "official", "settings": {"points_per_side": 32, "pred_iou_thresh": 0.88}}
    masks = np.zeros((2, 6, 8), bool)
    masks[0, :3], masks[1, 3:] = True, True
    (tmp_path / "m").mkdir()
    for i, pps in (("a", 32), ("b", 32)):
        write_compact(tmp_path / "m" / f"{i}.json.gz", MaskSet(masks, meta={**made, "image_id": i, "settings": {**made["settings"], "points_per_side": pps}}))
    if record:
        (tmp_path / "m" / "samcam_masks.json").write_text(json.dumps({**made, "format": "compact"}))
    _labels(tmp_path / "p", ["a", "b"], 7, (6, 8))
    args = ["merge", "--pseudo", tmp_path / "p", "--masks", tmp_path / "m", "--workers", "1"]
    assert cli.main([str(a) for a in [*args, "--out", tmp_path / "same"]]) == 0  # one setting: merged
    write_compact(tmp_path / "m" / "b.json.gz", MaskSet(masks, meta={**made, "image_id": "b", "settings": {**made["settings"], "points_per_side": 16}}))
    fails([*args, "--out", tmp_path / "mixed"], capsys, f"{tmp_path / 'm' / 'b.json.gz'}: made with other settings than the folder's mask sets",
          "settings.points_per_side: 32 -> 16")  # fmt: skip


def test_corrupt_checkpoint_names_the_file(tmp_path, capsys, voc_root):
    (tmp_path / "clf.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "ids.txt").write_text("2007_000032\n")
    fails(["cam", "--images", voc_root / "JPEGImages", "--out", tmp_path / "cams", "--checkpoint", tmp_path / "clf.pt",
           "--voc", voc_root, "--ids", tmp_path / "ids.txt"], capsys, "clf.pt", "not a readable PyTorch checkpoint")


def test_one_id_with_two_images_is_refused(tmp_path, capsys):
    """``a.jpg`` and ``a.png`` in one folder: which one is the image cannot be told, so neither is taken."""
    _cams(tmp_path / "cams", [3], np.ones((1, 6, 8)))
    (tmp_path / "img").mkdir()
    for suffix in ("jpg", "png"):
        Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "img" / f"a.{suffix}")
    fails(["cam2label", "--cams", tmp_path / "cams", "--out", tmp_path / "out", "--threshold", "0.2", "--images", tmp_path / "img"],
          capsys, "img", "two images for a, a.jpg and a.png; keep one")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("high_res,needle", [
    ({"x": 1}, "high_res is a dict"),                                   # was an internal TypeError
    ([[[0.5] * 4] * 4], "high_res is a list"),                          # a nest of one shared list can expand to GBs: never converted
    (np.full((1, 4, 4), np.inf, np.float32), "not finite numbers"),      # +inf won every argmax
    (np.ones((1, 4, 4), np.complex64), "complex64 values"),              # the imaginary part was dropped with a warning
    (np.ones((1, 4, 4), object), "object values"),
])
def test_a_cam_whose_maps_are_not_a_finite_real_array_is_refused(tmp_path, capsys, high_res, needle):
    from samcam.data.safe_pickle import load_object_npy  # noqa: F401 - the reader whose output is checked

    (tmp_path / "cams").mkdir()
    arr = np.empty((), object)
    arr[()] = {"keys": np.array([3]), "high_res": high_res}
    np.save(tmp_path / "cams" / "a.npy", arr, allow_pickle=True)
    fails(["cam2label", "--cams", tmp_path / "cams", "--out", tmp_path / "out", "--threshold", "0.2"], capsys, "a.npy", needle)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.png"))

def test_cam_keys_that_are_a_nest_or_too_many_are_refused(tmp_path):
    from samcam.cam.files import MAX_KEYS, class_keys

    with pytest.raises(ValueError, match=r"f\.npy: CAM keys are a list that is not a flat list"):
        class_keys([[1, 2]] * 3, "f.npy")
    with pytest.raises(ValueError, match=f"more than {MAX_KEYS} classes"):
        class_keys(np.arange(MAX_KEYS + 1), "f.npy")
    assert class_keys([3, 5.0], "f.npy").tolist() == [3, 5]

def test_a_gzip_mask_file_with_bytes_after_its_end_is_refused(tmp_path, capsys):
    import gzip

    args = _mask_folder(tmp_path)
    whole = (tmp_path / "m" / "a.json.gz").read_bytes()
    for tail in (gzip.compress(b"{}"), b"\0" * 100):  # a second member, or padding
        (tmp_path / "m" / "a.json.gz").write_bytes(whole + tail)
        fails(args, capsys, "a.json.gz", "bytes after the end of the gzip stream")

def test_a_16_bit_image_is_scaled_not_clipped(tmp_path):
    from samcam.io import read_image

    gray = (np.arange(48, dtype=np.uint32).reshape(6, 8) * 1365).astype(np.uint16)  # 0..64155
    Image.fromarray(gray).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode == "I;16"
    rgb = read_image(tmp_path / "a.png")
    assert rgb.shape == (6, 8, 3) and (rgb == (gray >> 8).astype(np.uint8)[..., None]).all()
    Image.fromarray(np.ones((6, 8), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match=r"f\.tif: .*a floating-point image \(mode F\)"):
        read_image(tmp_path / "f.tif")


# ============================================================================ 3. a mask set or CAM belongs to its image


def test_cam_smaller_than_its_image_is_refused(tmp_path, capsys):
    _cams(tmp_path / "cams", [3], np.ones((1, 4, 4)))
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / "a.jpg")
    fails(["cam2label", "--cams", tmp_path / "cams", "--out", tmp_path / "out", "--threshold", "0.2", "--images", tmp_path / "img"],
          capsys, "a.npy", "differs from its image size")

def test_an_image_too_small_for_the_affinity_backbone_is_named(tmp_path, capsys):
    """train-affinity, affinity and affinity-sweep run the backbone on each image: one too small for
    its kernels is named as cam names it, not torch's bare error (third audit)."""
    (tmp_path / "img").mkdir()
    (tmp_path / "cams").mkdir()
    for i in ("a", "b"):
        Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "img" / f"{i}.jpg")
        save_cam(tmp_path / "cams" / f"{i}.npy", np.array([6]), np.ones((1, 6, 8), np.float32))
    (tmp_path / "ids.txt").write_text("a\nb\n")
    fails(["train-affinity", "--images", tmp_path / "img", "--cams", tmp_path / "cams", "--ids", tmp_path / "ids.txt", "--out", tmp_path / "t.pt",
           "--epochs", "1", "--batch-size", "2"], capsys, "img/a.jpg: 6×8 pixels is too small for this network")  # fmt: skip
    assert not (tmp_path / "t.pt").exists()


def test_refine_with_a_cam_of_another_size_names_the_cam(tmp_path, capsys):
    from samcam.cam.files import load_cam

    _cams(tmp_path / "cams", [3], np.ones((1, 4, 4)))
    with pytest.raises(ValueError, match=r"a\.npy: CAM size \(4, 4\) differs from its image size \(6, 8\)"):
        load_cam(tmp_path / "cams" / "a.npy", (6, 8))

def test_cam_keys_that_are_not_whole_numbers_are_refused_not_truncated(tmp_path, capsys):
    (tmp_path / "cams").mkdir()
    np.save(tmp_path / "cams" / "a.npy", {"keys": np.array([0.9, 14.7]), "high_res": np.ones((2, 4, 4), np.float32)}, allow_pickle=True)
    fails(["cam2label", "--cams", tmp_path / "cams", "--out", tmp_path / "out", "--threshold", "0.2"], capsys, "a.npy", "not whole class indices")

@pytest.mark.parametrize("keys,maps,needle", [
    ([23], np.ones((1, 4, 4)), "outside the foreground classes"),   # would have been class 24
    ([253], np.ones((1, 4, 4)), "outside the foreground classes"),  # would have been void
    ([-1], np.ones((1, 4, 4)), "negative class index"),           # would have been background
    ([3], np.full((1, 4, 4), np.nan), "NaN"),                        # an all-NaN CAM labelled everything
])
def test_cam2label_refuses_class_values_outside_the_label_space(tmp_path, capsys, keys, maps, needle):
    _cams(tmp_path / "cams", keys, maps)
    fails(["cam2label", "--cams", tmp_path / "cams", "--out", tmp_path / "out", "--threshold", "0.2"], capsys, "a.npy", needle)
    assert not list((tmp_path / "out").glob("*.png"))

def test_labels_refuses_a_cam_key_outside_the_label_space(tmp_path, capsys):
    _cams(tmp_path / "irn", [23], np.ones((1, 4, 4)))
    (tmp_path / "ids.txt").write_text("a\n")
    fails(["labels", "--method", "CLIMS", "--format", "irn_npy", "--threshold", "0.15", "--input", tmp_path / "irn",
           "--out", tmp_path / "out", "--ids", tmp_path / "ids.txt"], capsys, "a.npy", "outside")


def test_one_id_with_mask_sets_in_both_formats_is_refused(tmp_path, capsys):
    args = _mask_folder(tmp_path)
    (tmp_path / "m" / "a").mkdir()  # an amg.py folder beside a.json.gz
    fails(args, capsys, "a has two mask sets, a.json.gz and a/; keep one")
    assert not list((tmp_path / "o").glob("*.png"))

def test_a_mask_set_made_from_another_image_is_refused(tmp_path, capsys):
    args = _mask_folder(tmp_path, lambda d: d["meta"].update(image_id="b"))  # b's masks copied in as a's
    fails(args, capsys, "a.json.gz", "this mask set was made from image 'b', not 'a'")
    from samcam.sam.mask_files import MaskStore

    with pytest.raises(ValueError, match="made from image 'b'"):
        MaskStore(tmp_path / "m").read("a")  # the dense reader checks it too

def test_an_empty_mask_set_of_another_size_is_refused(tmp_path, capsys):
    from samcam.sam.mask_files import write_compact
    from samcam.sam.masks import MaskSet

    args = _mask_folder(tmp_path)
    write_compact(tmp_path / "m" / "a.json.gz", MaskSet(np.zeros((0, 5, 5), bool)))  # no masks, but made for a 5 × 5 image
    fails(args, capsys, "a.json.gz", "mask size (5, 5) differs from label size (6, 8)")
    write_compact(tmp_path / "m" / "a.json.gz", MaskSet(np.zeros((0, 6, 8), bool)))  # the right size: the label is kept as it is
    assert cli.main([str(a) for a in args]) == 0


@pytest.mark.parametrize("size", [(0, 0), (0, 8), (6, 0)])
def test_a_compact_mask_set_that_says_no_size_is_refused(tmp_path, capsys, size):
    """A compact file of height 0 or width 0 (no masks) passed as the empty set of any image and was
    counted as merged (audit 12, F13): a mask set says the size of its image, which it must match."""
    from samcam.sam.mask_files import MaskStore, write_compact
    from samcam.sam.masks import MaskSet

    h, w = size
    args = _mask_folder(tmp_path, lambda d: d.update(height=h, width=w, masks=[]))
    for command in (args, ["refine", "--mode", "everything", "--pseudo", tmp_path / "p", "--masks", tmp_path / "m", "--out", tmp_path / "r",
                           "--ids", _ids(tmp_path, "a")]):  # fmt: skip
        fails(command, capsys, "a.json.gz", f"records an image size of {h}×{w} pixels")
    with pytest.raises(ValueError, match=f"records an image size of {h}×{w}"):
        MaskStore(tmp_path / "m").read("a")
    assert not list((tmp_path / "o").glob("*.png")) and not list((tmp_path / "r").glob("*.png"))
    with pytest.raises(ValueError, match=f"new.json.gz: records an image size of {h}×{w}"):  # nor is one written
        write_compact(tmp_path / "new.json.gz", MaskSet(np.zeros((0, h, w), bool)))
    assert not (tmp_path / "new.json.gz").exists()


@pytest.mark.parametrize("side,needle", [
    ({}, "a: an id folder of the official layout without mask PNGs, whose samcam_meta.json records no image_shape"),
    ({"meta": {"image_id": "a"}}, "records no image_shape"),
    ({"image_shape": [0, 0]}, "records an image size of 0×0 pixels"),
    ({"image_shape": [6, 0]}, "records an image size of 6×0 pixels"),
    ({"image_shape": [True, 8]}, "image_shape [True, 8] is not [height, width]"),
])
def test_an_official_set_without_masks_says_its_size(tmp_path, capsys, side, needle):
    """An official id folder with no mask PNGs and a samcam_meta.json of {} (or without image_shape)
    passed as an empty set and counted as merged (audit 12, F13); samcam's writer records the size
    of an empty set, and with it the set is read (and must match its image)."""
    import json

    from samcam.io import read_label
    from samcam.sam.mask_files import read_official, read_official_packed, write_official
    from samcam.sam.masks import MaskSet

    folder, args = _official(tmp_path, [])
    (folder / "samcam_meta.json").write_text(json.dumps(side))
    fails(args, capsys, "samcam_meta.json", needle)
    for read in (read_official, read_official_packed):
        with pytest.raises(ValueError, match=re.escape(needle.split(": ", 1)[-1])):
            read(folder)
    assert not list((tmp_path / "o").glob("*.png"))
    # samcam's own empty set records its size: read, and the label kept as it is
    import shutil

    shutil.rmtree(folder)
    write_official(folder, MaskSet(np.zeros((0, 6, 8), bool)))
    assert json.loads((folder / "samcam_meta.json").read_text())["image_shape"] == [6, 8]
    assert read_official(folder).shape == (6, 8) and read_official_packed(folder).shape == (6, 8)
    label = np.arange(48, dtype=np.uint8).reshape(6, 8) % 21
    Image.fromarray(label).save(tmp_path / "p" / "a.png")
    assert cli.main([str(a) for a in args]) == 0
    np.testing.assert_array_equal(read_label(tmp_path / "o" / "a.png"), label)
    shutil.rmtree(folder)
    write_official(folder, MaskSet(np.zeros((0, 5, 8), bool)))  # an empty set of another image's size
    fails(args[:-1] + [tmp_path / "o2"], capsys, "mask size (5, 8) differs from label size (6, 8)")


class _InstantSam:
    """A generator that makes one mask, the image's brighter half, at once (no SAM)."""

    device = "cpu"

    def generate(self, image):
        from samcam.sam.masks import MaskSet

        return MaskSet((image.mean(axis=2) > image.mean())[None])


@pytest.mark.parametrize("fmt", ["compact", "official"])
def test_a_mask_folder_refuses_an_image_changed_since_its_masks_were_made(tmp_path, capsys, monkeypatch, mobile_sam_checkpoint, fmt):
    """A rerun of masks reported 'already there' for an image changed in place, or given from another
    folder after the recorded one was gone, and merge then labelled the new image with the old image's
    masks (audit 12, F1). Each set records its image's SHA-256 (here checked against hashlib's of the
    file), and a rerun given another image of an id already done is refused, naming the set and the
    image, the folder left as it was and finished."""
    import hashlib
    import shutil

    import samcam.sam.model
    from samcam.outputs import check_finished
    from samcam.sam.mask_files import MaskStore
    from skimage import data

    monkeypatch.setattr(samcam.sam.model, "build_generator", lambda *a, **k: _InstantSam())
    img = tmp_path / "img"
    img.mkdir()
    Image.fromarray(data.astronaut()[:32, :48]).save(img / "a.png")
    Image.fromarray(data.astronaut()[100:132, 100:148]).save(img / "b.png")
    out = tmp_path / "m"
    masks = lambda images: ["masks", "--images", images, "--out", out, "--format", fmt, "--checkpoint", mobile_sam_checkpoint, "--device", "cpu"]  # noqa: E731
    assert cli.main([str(a) for a in masks(img)]) == 0
    assert "2 images done" in capsys.readouterr().out
    store = MaskStore(out)
    for i in "ab":
        assert store.read(i).meta["image_sha256"] == hashlib.sha256((img / f"{i}.png").read_bytes()).hexdigest()
    where = store.path("a", fmt).name
    before = _digest(tmp_path)
    Image.fromarray(data.astronaut()[200:232, 200:248]).save(img / "a.png")  # another picture of the same size, in place
    now = hashlib.sha256((img / "a.png").read_bytes()).hexdigest()
    fails(masks(img), capsys, f"{where}: made from another image than {img / 'a.png'} (image_sha256: ", f"-> '{now[:12]}…')",
          "the image changed since its masks were made; use another --out folder")  # fmt: skip
    check_finished(out)  # refused before the run marked the folder: it is as finished as it was
    Image.fromarray(data.astronaut()[:32, :48]).save(img / "a.png")  # the image as it was: resumed, nothing to do
    assert cli.main([str(a) for a in masks(img)]) == 0
    assert "0 images done, 2 already there" in capsys.readouterr().out
    assert {p: h for p, h in _digest(tmp_path).items() if "samcam_cost" not in p.name and ".samcam.lock" not in p.name} == \
        {p: h for p, h in before.items() if "samcam_cost" not in p.name and ".samcam.lock" not in p.name}  # fmt: skip
    # the recorded folder gone, another image of an id given from elsewhere
    img.rename(tmp_path / "gone")
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(data.astronaut()[300:332, 300:348]).save(other / "a.png")
    fails(masks(other), capsys, f"{where}: made from another image than {other / 'a.png'}")
    shutil.copy(tmp_path / "gone" / "a.png", other / "a.png")  # the same image by content, elsewhere: the same
    assert cli.main([str(a) for a in masks(other)]) == 0
    assert "0 images done, 1 already there" in capsys.readouterr().out


def test_a_mask_set_made_before_it_recorded_its_image_is_compared_by_size(tmp_path, capsys, monkeypatch, mobile_sam_checkpoint):
    """A set that records no image_sha256 (samcam before audit 12) is compared by what it has: an image
    of another size than its masks is refused; one of the same size cannot be told and resumes."""
    import gzip

    import samcam.sam.model
    from skimage import data

    monkeypatch.setattr(samcam.sam.model, "build_generator", lambda *a, **k: _InstantSam())
    img, out = tmp_path / "img", tmp_path / "m"
    img.mkdir()
    Image.fromarray(data.astronaut()[:32, :48]).save(img / "a.png")
    masks = ["masks", "--images", img, "--out", out, "--checkpoint", mobile_sam_checkpoint, "--device", "cpu"]
    assert cli.main([str(a) for a in masks]) == 0
    doc = json.loads(gzip.decompress((out / "a.json.gz").read_bytes()))
    doc["meta"].pop("image_sha256", None)  # as samcam wrote it before
    (out / "a.json.gz").write_bytes(gzip.compress(json.dumps(doc).encode()))
    Image.fromarray(data.astronaut()[50:82, :48]).save(img / "a.png")  # same size: resumed
    assert cli.main([str(a) for a in masks]) == 0
    Image.fromarray(data.astronaut()[:40, :48]).save(img / "a.png")
    fails(masks, capsys, f"a.json.gz: masks of a 32×48 image, but {img / 'a.png'} is 40×48")


# ============================================================================ 4. the official layout is read strictly


def _official(tmp_path, masks, mode=None, csv=True, side=False):
    """An official-layout mask folder ``m/a/`` of ``masks`` (saved as given, in ``mode``), a label
    ``p/a.png`` and the merge command over them."""
    folder = tmp_path / "m" / "a"
    folder.mkdir(parents=True)
    for i, m in enumerate(masks):
        im = Image.fromarray(m)  # a bool array makes a 1-bit (mode "1") PNG
        assert im.mode == (mode or im.mode)
        im.save(folder / f"{i}.png")
    if csv:
        from samcam.sam.mask_files import OFFICIAL_HEADER

        rows = "".join(f"{i},36,0,0,6,6,3,3,0.9,0.9,0,0,8,6\n" for i in range(len(masks)))
        (folder / "metadata.csv").write_text(",".join(OFFICIAL_HEADER) + "\n" + rows)
    _labels(tmp_path / "p", ["a"], 0, (6, 8))
    return folder, ["merge", "--pseudo", tmp_path / "p", "--masks", tmp_path / "m", "--out", tmp_path / "o"]

def _half(value, dtype=np.uint8):
    m = np.zeros((6, 8), dtype)
    m[:, :6] = value
    return m

@pytest.mark.parametrize("inside,mode", [(255, None), (1, None), (True, "1")])
def test_binary_official_masks_are_read_as_binary(tmp_path, capsys, inside, mode):
    from samcam.io import read_label
    from samcam.sam.mask_files import read_official

    m = _half(inside, bool if mode else np.uint8)
    folder, args = _official(tmp_path, [m], mode)
    assert read_official(folder).masks[0].sum() == 36
    # a label of class 7 over most of the mask: the merge paints the whole mask
    Image.fromarray(_half(7)).save(tmp_path / "p" / "a.png")
    assert cli.main([str(a) for a in args]) == 0
    assert (read_label(tmp_path / "o" / "a.png")[:, :6] == 7).all()

@pytest.mark.parametrize("mask,needle", [(_half(254), "neither 0/255 nor 0/1"), (np.stack([_half(255)] * 3, -1), "one 8-bit or 1-bit channel"),
                                         (_half(255) // 255 * 7, "neither 0/255 nor 0/1")])
def test_other_official_masks_are_errors_naming_the_file(tmp_path, capsys, mask, needle):
    _, args = _official(tmp_path, [mask])
    fails(args, capsys, "0.png", needle)
    assert not list((tmp_path / "o").glob("*.png"))

def test_an_official_folder_without_masks_or_unlisted_pngs_is_an_error(tmp_path, capsys):
    folder, args = _official(tmp_path, [])
    (folder / "metadata.csv").unlink()
    fails(args, capsys, "holds no mask PNGs")
    (folder / "metadata.csv").write_text("id,area,predicted_iou,stability_score\n0,1,0.9,0.9\n")
    Image.fromarray(_half(255)).save(folder / "0.png")
    Image.fromarray(_half(255)).save(folder / "1.png")
    fails(args, capsys, "metadata.csv", "does not list 1.png")

@pytest.mark.parametrize("what,content,needle", [
    ("metadata.csv", b"\x89PNG\x00\xff\xfe binary", "metadata.csv"),
    ("samcam_meta.json", b"{not json", "samcam_meta.json"),
    ("samcam_meta.json", b"[]", "samcam_meta.json"),
])
def test_unreadable_official_metadata_is_named(tmp_path, capsys, what, content, needle):
    folder, args = _official(tmp_path, [])
    (folder / what).write_bytes(content)
    fails(args, capsys, needle)


def test_the_binary_note_is_said_once_per_command_across_workers(tmp_path, capfd):
    """Two images of 0/1 masks merged by two workers: one note, not one per worker; a second command
    says it again."""
    _, args = _official(tmp_path, [_half(1)])
    (tmp_path / "m" / "b").mkdir()
    for f in (tmp_path / "m" / "a").iterdir():
        (tmp_path / "m" / "b" / f.name).write_bytes(f.read_bytes())
    _labels(tmp_path / "p", ["a", "b"], 7, (6, 8))
    for out in ("o", "o2"):
        assert cli.main([str(a) for a in args[:-1]] + [str(tmp_path / out), "--workers", "2"]) == 0
        notes = [ln for ln in capfd.readouterr().err.splitlines() if "0/1 mask PNGs are read as binary" in ln]
        assert len(notes) == 1, notes


def test_official_metadata_listing_an_id_twice_or_bad_scores_is_named(tmp_path, capsys):
    from samcam.sam.mask_files import OFFICIAL_HEADER

    folder, args = _official(tmp_path, [_half(255)])
    row = "0,36,0,0,6,6,3,3,0.9,0.9,0,0,8,6\n"
    (folder / "metadata.csv").write_text(",".join(OFFICIAL_HEADER) + "\n" + row + row)
    fails(args, capsys, "metadata.csv", "lists id 0 twice")  # was "list index out of range"
    for bad in ("abc", "inf", "-inf", ""):
        (folder / "metadata.csv").write_text(",".join(OFFICIAL_HEADER) + "\n" + row.replace(",0.9,0.9,", f",{bad},0.9,"))
        fails(args, capsys, "metadata.csv", f"row 1's predicted_iou is '{bad}', not a number")
    # nan is an unknown score, as samcam's own writer puts it for masks made without one: read
    from samcam.sam.mask_files import read_official, write_official
    from samcam.sam.masks import MaskSet

    write_official(tmp_path / "own", MaskSet(_half(255)[None] > 0))
    assert "nan" in (tmp_path / "own" / "metadata.csv").read_text()
    assert read_official(tmp_path / "own").masks.sum() == 36

def test_an_official_folder_without_metadata_holding_another_png_is_named(tmp_path, capsys):
    folder, args = _official(tmp_path, [_half(255)], csv=False)
    Image.fromarray(_half(255)).save(folder / "notes.png")
    fails(args, capsys, "notes.png", "not a mask PNG name")


@pytest.mark.parametrize("name", ["\u00b2", "\u0663", "\uff11"])  # a superscript 2, an Arabic-Indic 3, a full-width 1
def test_an_official_mask_named_by_digits_that_are_not_ascii_is_named(tmp_path, capsys, name):
    """str.isdigit takes these, and amg.py writes none of them: "2.png" (superscript) ended in a bare
    int() error naming no file, and "3.png" (Arabic-Indic) was read as mask 3 (audit 10, F8)."""
    folder, args = _official(tmp_path, [_half(255)], csv=False)
    Image.fromarray(_half(255)).save(folder / f"{name}.png")
    fails(args, capsys, f"{name}.png", "not a mask PNG name")
    folder, args = _official(tmp_path / "listed", [_half(255)])
    (folder / "metadata.csv").write_text((folder / "metadata.csv").read_text().replace("\n0,", f"\n{name},", 1))
    Image.fromarray(_half(255)).save(folder / f"{name}.png")
    (folder / "0.png").unlink()
    fails(args, capsys, "metadata.csv", f"id {name!r} is not a mask's number")


@pytest.mark.parametrize("csv", [True, False])
def test_an_official_mask_png_with_an_upper_case_suffix_is_named(tmp_path, capsys, csv):
    """``1.PNG`` beside ``0.png`` was passed over without a word (the glob is case-sensitive), its
    mask lost from the set; with metadata.csv listing it, it was reported as absent."""
    folder, args = _official(tmp_path, [_half(255), _half(255)], csv=csv)
    (folder / "1.png").rename(folder / "1.PNG")
    fails(args, capsys, "1.PNG", "named <i>.png, in lower case")


def test_official_side_metadata_of_another_size_is_named(tmp_path, capsys):
    """samcam_meta.json records the image size (for an empty set); one that disagrees with the mask
    PNGs beside it says the folder was put together from two images."""
    import json

    from samcam.sam.mask_files import read_official, read_official_packed

    folder, args = _official(tmp_path, [_half(255)])
    (folder / "samcam_meta.json").write_text(json.dumps({"image_shape": [6, 8]}))
    assert read_official(folder).masks.shape == (1, 6, 8) and read_official_packed(folder).shape == (6, 8)  # agreeing: read
    (folder / "samcam_meta.json").write_text(json.dumps({"image_shape": [8, 6]}))
    for read in (read_official, read_official_packed):
        with pytest.raises(ValueError, match=r"samcam_meta\.json: image_shape \[8, 6\] differs from the size of the mask PNGs beside it \[6, 8\]"):
            read(folder)
    fails(args, capsys, "samcam_meta.json", "image_shape [8, 6] differs")


def _palette_png(path: Path, indices: np.ndarray, colours: list, bits: int | None = None) -> None:
    """A palette PNG of ``indices`` and ``colours``: Pillow's (``bits``: its bit depth), or, where an
    index lies past the palette (which Pillow would not write), one made chunk by chunk."""
    if indices.max() < len(colours):
        im = Image.fromarray(indices.astype(np.uint8), mode="P")
        im.putpalette([v for c in colours for v in c])
        im.save(path, **({"bits": bits} if bits else {}))
        return
    import struct
    import zlib

    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))  # noqa: E731
    h, w = indices.shape
    rows = b"".join(b"\0" + r.astype(np.uint8).tobytes() for r in indices)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
                     + chunk(b"PLTE", bytes(v for c in colours for v in c)) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("indices,colours,bits", [
    ((1, 0), [(255, 255, 255), (0, 0, 0)], None),   # 0/1 indices, index 0 white: shows the complement of the indices
    ((255, 0), [(255, 255, 255)] + [(9, 9, 9)] * 254 + [(0, 0, 0)], None),  # 0/255, 0 white and 255 black
    ((0, 1), [(0, 0, 0), (255, 255, 255)], None),   # black and white in index order: as the indices
    ((1, 0), [(255, 255, 255), (0, 0, 0)], 1),      # a 1-bit palette PNG (Pillow's reader, not samcam's own)
    ((3, 7), [(12, 12, 12)] * 3 + [(0, 0, 0)] + [(200, 0, 0)] * 3 + [(255, 255, 255)], None),  # unused colours do not count
])  # (outside, inside): the indices of the pixels shown black and white
def test_a_palette_mask_png_is_read_by_the_colours_it_shows(tmp_path, capsys, indices, colours, bits):
    """A palette (P) mask PNG was read by its indices, its palette ignored: masks painted [white, black]
    were merged as their complement (audit 12, F6). Each is read as what it shows, black outside and
    white inside, as Pillow's own conversion to grey shows it, and merges as the grey PNG of that."""
    from samcam.io import read_label
    from samcam.sam.mask_files import read_official, read_official_packed

    shown = np.zeros((6, 8), bool)
    shown[1:4, 2:7] = True
    outside, inside = indices
    ids = np.where(shown, inside, outside)
    folder, args = _official(tmp_path, [], csv=False)
    _palette_png(folder / "0.png", ids, colours, bits)
    with Image.open(folder / "0.png") as im:
        assert im.mode == "P"
        grey = np.asarray(im.convert("L"))
    assert set(np.unique(grey)) <= {0, 255}
    np.testing.assert_array_equal(read_official(folder).masks[0], grey == 255)
    np.testing.assert_array_equal(read_official_packed(folder).to_masks()[0], grey == 255)
    np.testing.assert_array_equal(grey == 255, shown)
    label = np.where(shown, 7, 0)
    label[1, 2] = 0  # most of the shown mask is class 7: the merge paints all of it, and nothing else
    Image.fromarray(label.astype(np.uint8)).save(tmp_path / "p" / "a.png")
    assert cli.main([str(a) for a in args]) == 0
    np.testing.assert_array_equal(read_label(tmp_path / "o" / "a.png"), np.where(shown, 7, 0))


@pytest.mark.parametrize("indices,colours,needle", [
    ((0, 1), [(0, 0, 0), (128, 0, 0)], "showing colour #800000, neither black nor white"),  # a VOC-coloured label as a mask
    ((0, 1), [(255, 255, 255), (254, 254, 254)], "showing colour #fefefe"),
    ((0, 2), [(0, 0, 0), (255, 255, 255)], "using index 2, past its 2-colour palette"),
])
def test_a_palette_mask_png_showing_other_colours_is_named(tmp_path, capsys, indices, colours, needle):
    outside, inside = indices
    folder, args = _official(tmp_path, [], csv=False)
    m = np.zeros((6, 8), np.uint8)
    m[:, :4] = inside
    m[:, 4:] = outside
    _palette_png(folder / "0.png", m, colours)
    fails(args, capsys, "0.png", needle)
    assert not list((tmp_path / "o").glob("*.png"))


@pytest.mark.parametrize("csv", [True, False])
def test_one_mask_number_has_one_file_named_as_amg_py_names_it(tmp_path, capsys, csv):
    """amg.py names mask i ``str(i)``.png: 10.png is mask 10 (read in numeric order), but a ``00.png``
    beside ``0.png`` was read as a fifth mask, mask 0 twice (audit 12, F15), and alone it is no name
    amg.py writes either; a metadata.csv id ``00`` likewise."""
    from samcam.sam.mask_files import read_official, read_official_packed

    masks = [np.where(np.arange(48).reshape(6, 8) == k, 255, 0).astype(np.uint8) for k in range(11)]  # mask k: pixel k alone
    folder, args = _official(tmp_path, masks, csv=csv)
    assert read_official(folder).masks.reshape(11, 48).argmax(axis=1).tolist() == list(range(11))  # 10.png is the 11th, not the 2nd
    assert read_official_packed(folder).to_masks().reshape(11, 48).argmax(axis=1).tolist() == list(range(11))
    (folder / "00.png").write_bytes((folder / "0.png").read_bytes())
    fails(args, capsys, f"{folder}: 00.png names mask 0 otherwise than amg.py (0.png) beside 0.png, two files for mask 0")
    (folder / "0.png").unlink()
    fails(args, capsys, f"{folder}: 00.png names mask 0 otherwise than amg.py (0.png);")
    assert not list((tmp_path / "o").glob("*.png"))
    if csv:  # listed as amg.py never writes it
        (folder / "00.png").rename(folder / "0.png")
        (folder / "metadata.csv").write_text((folder / "metadata.csv").read_text().replace("\n0,", "\n00,", 1))
        fails(args, capsys, "metadata.csv", "id '00' is not a mask's number (ASCII digits without leading zeros")


# ============================================================================ 5. outputs land only where they belong


@pytest.mark.parametrize("target", ["ids.txt", "pred/a.png", "gt/b.png", "pred/new.csv"])
@pytest.mark.parametrize("flag", ["--csv", "--per-image-csv"])
def test_eval_never_writes_over_or_into_an_input(scored, capsys, flag, target):
    before = {p: p.read_bytes() for p in scored.rglob("*") if p.is_file()}
    fails(["eval", "--pred", scored / "pred", "--gt", scored / "gt", "--ids", scored / "ids.txt", flag, scored / target], capsys, target.split("/")[0])
    assert {p: p.read_bytes() for p in scored.rglob("*") if p.is_file()} == before

@pytest.mark.parametrize("foreign", ["notes.txt", "holiday.jpg", "mylabels/a.png", "02_enhance_method.ipynb"])
def test_no_step_writes_into_a_folder_holding_files_it_did_not_write(tmp_path, capsys, foreign):
    """Principle 5: a folder with a user's files (notes, photos, a folder of labels, notebooks) is not
    adopted as an output folder, by a step with a run record or by the mask step."""
    _cams(tmp_path / "cams", [3], np.ones((1, 4, 4)))
    out = tmp_path / "out"
    (out / foreign).parent.mkdir(parents=True)
    (out / foreign).write_bytes(b"mine")
    fails(["cam2label", "--cams", tmp_path / "cams", "--out", out, "--threshold", "0.2"], capsys, str(out), "holds files samcam did not write",
          foreign.split("/")[0])
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [foreign]
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    (tmp_path / "c.pt").write_bytes(b"a checkpoint the folder check comes before")
    # (a folder of PNGs is, to the mask step, an official-layout mask set without its record)
    fails(["masks", "--images", tmp_path / "img", "--out", out, "--checkpoint", tmp_path / "c.pt"], capsys, str(out), "choose another --out folder"
          if "/" in foreign else "holds files samcam did not write")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == sorted({foreign, *(["mylabels"] if "/" in foreign else [])})


def test_a_link_in_an_output_folder_is_no_finished_output(tmp_path, capsys):
    """Audit 11, F11: an output replaced by a link to a user's file (here the CAM's own input, a
    label elsewhere) counted as done ("1 already there"); it is refused by name, before any work,
    and the link is left as it was."""
    _cams(tmp_path / "cams", [3], np.ones((1, 4, 4)))
    out = tmp_path / "out"
    assert cli.main(["cam2label", "--cams", str(tmp_path / "cams"), "--out", str(out), "--threshold", "0.2"]) == 0
    _labels(tmp_path / "theirs", ["a"], value=15, shape=(4, 4))
    (out / "a.png").unlink()
    (out / "a.png").symlink_to(tmp_path / "theirs" / "a.png")
    before = sorted(p.name for p in out.iterdir())
    capsys.readouterr()
    fails(["cam2label", "--cams", tmp_path / "cams", "--out", out, "--threshold", "0.2"], capsys, str(out), "a.png (a link)")
    assert sorted(p.name for p in out.iterdir()) == before and os.readlink(out / "a.png") == str(tmp_path / "theirs" / "a.png")


def _write_and_wait(out: str, ready) -> None:
    """A step writing ``out``: one label made, then it waits (to be killed)."""
    from samcam.outputs import claim_output

    with claim_output(out, "merge", {}, {}):
        _labels(Path(out), ["a"])
        ready.set()
        time.sleep(60)


def test_eval_refuses_a_folder_a_step_is_writing_or_left_unfinished(scored, capsys):
    """Audit 11, F6: eval scored the 237 labels a running merge had written so far, and the 221 a
    killed one left, with exit 0 ("evaluated 237 images (every prediction in ...)")."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    ready, out = ctx.Event(), scored / "merged"
    child = ctx.Process(target=_write_and_wait, args=(str(out), ready))
    child.start()
    try:
        assert ready.wait(30)
        for ids in ([], ["--ids", scored / "ids1.txt"]):
            (scored / "ids1.txt").write_text("a\n")
            fails(["eval", "--pred", out, "--gt", scored / "gt", *ids], capsys, f"{out}: samcam merge is writing this folder now", "wait for it to end")
    finally:
        child.kill()
        child.join(30)
    fails(["eval", "--pred", out, "--gt", scored / "gt"], capsys, f"{out}: unfinished: the samcam merge run writing it",
          "finish it (rerun samcam merge into this folder: it resumes) or rerun that step into a new folder")
    assert capsys.readouterr().out == ""  # nothing scored


def _unfinished(folder: Path, step: str) -> None:
    """What a killed run of ``step`` leaves in its output folder's lock file (outputs.claim_output's mark)."""
    (folder / ".samcam.lock").write_text(json.dumps({"writing": step, "pid": 1, "since": "2026-01-01T00:00:00+00:00"}) + "\n")


@pytest.mark.parametrize("command,unfinished", [
    (["train-seg", "--images", "{img}", "--labels", "{unf}", "--ids", "{ids}", "--out", "{out}", "--epochs", "1", "--crop", "32"], "labels"),
    (["train-seg", "--images", "{img}", "--labels", "{lab}", "--ids", "{ids}", "--out", "{out}", "--eval-gt", "{unf}", "--eval-ids", "{ids}"], "labels"),
    (["train-affinity", "--images", "{img}", "--seed-labels", "{unf}", "--ids", "{ids}", "--out", "{out}.pt", "--epochs", "1"], "merge"),
    (["train-affinity", "--images", "{img}", "--cams", "{unf}", "--ids", "{ids}", "--out", "{out}.pt", "--epochs", "1", "--no-crf"], "cam"),
    (["eval-seg", "--checkpoint", "{ck}", "--images", "{img}", "--gt", "{unf}", "--ids", "{ids}"], "labels"),
    (["eval-seg", "--checkpoint", "{ck}", "--images", "{img}", "--gt", "{unf}", "--ids", "{ids}", "--json", "{out}.json"], "labels"),
])  # fmt: skip
def test_every_command_refuses_an_input_folder_left_unfinished(tmp_path, capsys, command, unfinished):
    """train-seg --labels and --eval-gt, train-affinity --seed-labels and --cams, eval-seg --gt read a
    folder a killed run had left unfinished, exit 0 (audit 12, F10): every input folder a command
    names is checked where it names them (outputs.check_inputs), before any output is made."""
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / "a.jpg")
    _labels(tmp_path / "lab", ["a"], 7, (8, 8))
    unf = tmp_path / "unf"
    if unfinished == "cam":
        _cams(unf, [7], np.ones((1, 8, 8)))
    else:
        _labels(unf, ["a"], 7, (8, 8))
    _unfinished(unf, unfinished)
    (tmp_path / "ids.txt").write_text("a\n")
    (tmp_path / "ck.pt").write_bytes(b"never read")
    where = {"img": tmp_path / "img", "lab": tmp_path / "lab", "unf": unf, "ids": tmp_path / "ids.txt", "out": tmp_path / "out", "ck": tmp_path / "ck.pt"}
    before = _digest(tmp_path)
    fails([a.format(**where) for a in command], capsys, f"{unf}: unfinished: the samcam {unfinished} run writing it (started 2026-01-01T00:00:00+00:00)",
          f"rerun samcam {unfinished} into this folder")  # fmt: skip
    assert not list(tmp_path.glob("out*")) and _digest(tmp_path) == before


def test_a_folder_an_input_is_being_written_is_refused_by_train_seg(tmp_path, capsys):
    """The same check sees a folder a running step holds (its lock), not only a killed run's mark."""
    import multiprocessing

    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / "a.jpg")
    (tmp_path / "ids.txt").write_text("a\n")
    ctx = multiprocessing.get_context("fork")
    ready, out = ctx.Event(), tmp_path / "merged"
    child = ctx.Process(target=_write_and_wait, args=(str(out), ready))
    child.start()
    try:
        assert ready.wait(30)
        fails(["train-seg", "--images", tmp_path / "img", "--labels", out, "--ids", tmp_path / "ids.txt", "--out", tmp_path / "run", "--epochs", "1"],
              capsys, f"{out}: samcam merge is writing this folder now")  # fmt: skip
    finally:
        child.kill()
        child.join(30)
    assert not (tmp_path / "run").exists()


_KILLED_MASKS = """
import sys, time
import numpy as np
import samcam.sam.model
from samcam.pipeline.masks import run_masks
from samcam.sam.masks import MaskSet

class Slow:  # one mask set made, then it hangs on the next image (to be killed)
    device = "cpu"
    made = 0
    def generate(self, image):
        self.made += 1
        if self.made > 1:
            time.sleep(600)
        return MaskSet(np.ones((1, *image.shape[:2]), bool))

samcam.sam.model.build_generator = lambda *a, **k: Slow()
run_masks(sys.argv[1], sys.argv[2], checkpoint=sys.argv[3], progress=False, device="cpu")
"""


def test_a_killed_masks_run_leaves_its_folder_unfinished(tmp_path, capsys, mobile_sam_checkpoint):
    """masks locked its folder but never marked it as being written, so a run killed after one of three
    sets passed as finished and merge labelled '1 merged, 2 kept' (audit 12, F10). It is marked as
    every claim_output step's folder is (outputs.writing_mark): merge refuses the folder while the run
    writes it and once it was killed, and a rerun that ends finishes it."""
    import signal
    import subprocess

    (tmp_path / "img").mkdir()
    for i in "abc":
        Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(tmp_path / "img" / f"{i}.png")
    _labels(tmp_path / "p", list("abc"), 7, (16, 24))
    out = tmp_path / "m"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_MASKS, str(tmp_path / "img"), str(out), str(mobile_sam_checkpoint)],
                             env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE)  # fmt: skip
    try:
        for _ in range(600):
            if (out / "a.json.gz").exists() or child.poll() is not None:
                break
            time.sleep(0.1)
        assert (out / "a.json.gz").exists(), child.stderr.read().decode() if child.poll() is not None else "no mask set after 60 s"
        merge = ["merge", "--pseudo", tmp_path / "p", "--masks", out, "--missing-masks", "keep-cam", "--workers", "1"]
        fails([*merge, "--out", tmp_path / "o1"], capsys, f"{out}: samcam masks is writing this folder now")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    fails([*merge, "--out", tmp_path / "o2"], capsys, f"{out}: unfinished: the samcam masks run writing it", "rerun samcam masks into this folder")
    assert not list(tmp_path.glob("o*/*.png"))
    import samcam.sam.model
    from samcam.pipeline.masks import run_masks
    from samcam.sam.masks import MaskSet

    class Instant:
        device = "cpu"

        def generate(self, image):
            return MaskSet(np.ones((1, *image.shape[:2]), bool))

    real = samcam.sam.model.build_generator
    samcam.sam.model.build_generator = lambda *a, **k: Instant()
    try:
        assert run_masks(tmp_path / "img", out, checkpoint=mobile_sam_checkpoint, progress=False, device="cpu").done == 2  # resumed: b and c
    finally:
        samcam.sam.model.build_generator = real
    assert cli.main([str(a) for a in [*merge, "--out", tmp_path / "o3"]]) == 0
    assert "3 merged, 0 kept" in capsys.readouterr().out
    from samcam.outputs import check_finished

    check_finished(out)  # finished: the mark is gone


def test_the_input_parent_and_a_folder_of_foreign_masks_are_not_adopted(tmp_path, capsys):
    _cams(tmp_path / "parent" / "cams", [3], np.ones((1, 4, 4)))
    fails(["cam2label", "--cams", tmp_path / "parent" / "cams", "--out", tmp_path / "parent", "--threshold", "0.2"], capsys, "cams/")
    masks = tmp_path / "masks"
    masks.mkdir()
    (masks / "a.json.gz").write_bytes(b"someone else's")
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    (tmp_path / "c.pt").write_bytes(b"a checkpoint the folder check comes before")
    fails(["masks", "--images", tmp_path / "img", "--out", masks, "--checkpoint", tmp_path / "c.pt"], capsys,
          "holds mask sets without samcam's record")
    assert sorted(p.name for p in masks.iterdir()) == ["a.json.gz"]


def test_two_outputs_of_one_command_are_never_one_file(scored, capsys):
    fails(["eval", "--pred", scored / "pred", "--gt", scored / "gt", "--csv", scored / "e.csv", "--per-image-csv", scored / "." / "e.csv"],
          capsys, "two outputs of one command are the same path")
    _cams(scored / "cams", [6], np.ones((1, 6, 8)))
    fails(["cam2label", "--cams", scored / "cams", "--out", scored / "c", "--threshold", "0.2", "--sweep-gt", scored / "gt",
           "--sweep-csv", scored / "c" / "samcam_run.json"], capsys, "lies inside the output folder")
    assert not (scored / "c").exists() and not (scored / "e.csv").exists()


@pytest.mark.parametrize("where", ["cams", "gt"])
def test_cam2label_never_writes_into_its_inputs(tmp_path, capsys, where):
    _cams(tmp_path / "cams", [3], np.ones((1, 4, 4)))
    _labels(tmp_path / "gt", ["a"], 4, (4, 4))
    fails(["cam2label", "--cams", tmp_path / "cams", "--out", tmp_path / where, "--threshold", "0.2", "--sweep-gt", tmp_path / "gt"],
          capsys, where, "is the input")
    assert not (tmp_path / where / RUN_RECORD).exists()

def test_cam_out_may_not_be_the_image_folder(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / "a.jpg")
    fails(["cam", "--images", tmp_path / "img", "--out", tmp_path / "img", "--checkpoint", tmp_path / "x.pt", "--voc", tmp_path],
          capsys, "is the input")
    fails(["cam", "--images", tmp_path / "img", "--out", tmp_path / "img" / "cams", "--checkpoint", tmp_path / "x.pt",
           "--voc", tmp_path], capsys, "lies inside the input folder")

def test_cam2label_rerun_with_another_threshold_is_refused_not_mixed(tmp_path, capsys):
    _cams(tmp_path / "cams", [3], np.linspace(0, 1, 16).reshape(1, 4, 4))
    assert cli.main(["cam2label", "--cams", str(tmp_path / "cams"), "--out", str(tmp_path / "out"), "--threshold", "0.2"]) == 0
    first = (tmp_path / "out" / "a.png").read_bytes()
    fails(["cam2label", "--cams", tmp_path / "cams", "--out", tmp_path / "out", "--threshold", "0.7"], capsys, RUN_RECORD, "threshold")
    assert (tmp_path / "out" / "a.png").read_bytes() == first
    assert cli.main(["cam2label", "--cams", str(tmp_path / "cams"), "--out", str(tmp_path / "out"), "--threshold", "0.2"]) == 0

def test_merge_into_a_folder_made_with_another_rule_is_refused(tmp_path, capsys):
    args = _mask_folder(tmp_path)
    assert cli.main([str(a) for a in args]) == 0
    first = (tmp_path / "o" / "a.png").read_bytes()
    fails(args + ["--coverage", "0.5"], capsys, RUN_RECORD, "coverage")
    fails(args + ["--rule", "max_iou"], capsys, RUN_RECORD, "max_iou")
    assert (tmp_path / "o" / "a.png").read_bytes() == first
    assert cli.main([str(a) for a in args]) == 0  # the same settings resume

def test_a_failed_first_run_does_not_lock_its_folder(tmp_path, capsys):
    from samcam.outputs import claim_output

    _cams(tmp_path / "cams", [23], np.ones((1, 4, 4)))  # a bad key: the first run fails before writing a label
    fails(["cam2label", "--cams", tmp_path / "cams", "--out", tmp_path / "out", "--threshold", "0.2"], capsys, "a.npy")
    _cams(tmp_path / "cams", [3], np.ones((1, 4, 4)))
    assert cli.main(["cam2label", "--cams", str(tmp_path / "cams"), "--out", str(tmp_path / "out"), "--threshold", "0.3"]) == 0
    # a note is kept, not compared as a parameter is (one that contradicts the record: test_a_note_given_on_a_resume_is_kept)
    with claim_output(tmp_path / "o", "s", {}, {"a": 1}, notes={"note": "first"}):
        pass
    (tmp_path / "o" / "x.png").write_bytes(b"x")
    with claim_output(tmp_path / "o", "s", {}, {"a": 1}, notes={"note": "first"}):
        pass
    with pytest.raises(ValueError, match=r"parameters\.a: 1 -> 2"):
        claim_output(tmp_path / "o", "s", {}, {"a": 2}).__enter__()
    with pytest.raises(ValueError, match=r"step: 's' -> 't'"):
        claim_output(tmp_path / "o", "t", {}, {"a": 1}).__enter__()
    with pytest.raises(ValueError, match="holds outputs without a provenance record"):
        (tmp_path / "p").mkdir()
        (tmp_path / "p" / "y.npy").write_bytes(b"y")
        claim_output(tmp_path / "p", "s", {}, {}).__enter__()

def test_a_failed_masks_run_does_not_lock_its_folder(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    (tmp_path / "bad1.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "bad2.pt").write_bytes(b"not a checkpoint either")
    fails(["masks", "--images", tmp_path / "img", "--out", tmp_path / "m", "--checkpoint", tmp_path / "bad1.pt"], capsys)
    err = fails(["masks", "--images", tmp_path / "img", "--out", tmp_path / "m", "--checkpoint", tmp_path / "bad2.pt"], capsys)
    assert "other checkpoint_sha256" not in err

def test_mask_run_records_refuse_other_settings_and_corrupt_records(tmp_path):
    from samcam.outputs import RUN_RECORD
    from samcam.pipeline.masks import check_run_meta

    meta = {"model_type": "vit_t", "checkpoint_sha256": "ab", "settings": {"points_per_side": 32}, "generator": "fast", "format": "compact"}
    check_run_meta(tmp_path, meta)
    check_run_meta(tmp_path, {**meta, "generator": "official"})  # a folder without masks takes the new record
    check_run_meta(tmp_path, meta)
    (tmp_path / "a.json.gz").write_bytes(b"x")  # now it holds a mask set: the record is binding
    check_run_meta(tmp_path, dict(meta))
    for key, value in (("generator", "official"), ("format", "official"), ("settings", {"points_per_side": 16})):
        with pytest.raises(ValueError, match=f"other {key}"):
            check_run_meta(tmp_path, {**meta, key: value})
    (tmp_path / RUN_RECORD).write_text('{"step": "merge", "parameters": {}}')
    with pytest.raises(ValueError, match=f"{RUN_RECORD}: the record of another step \\('merge'\\)"):
        check_run_meta(tmp_path, meta)
    (tmp_path / RUN_RECORD).write_text("{not json")
    with pytest.raises(ValueError, match=f"{RUN_RECORD}: unreadable run record"):
        check_run_meta(tmp_path, meta)

def test_demo_never_deletes_a_folder_it_did_not_write(tmp_path):
    from samcam.pipeline.demo import _remove_own

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "astronaut.png").write_bytes(b"x")
    (tmp_path / "mine" / RUN_RECORD).write_text("{}")
    _remove_own(tmp_path / "mine", {"astronaut"})
    assert not (tmp_path / "mine").exists()
    (tmp_path / "yours").mkdir()
    (tmp_path / "yours" / "thesis.tex").write_text("x")
    with pytest.raises(ValueError, match="thesis.tex"):
        _remove_own(tmp_path / "yours", {"astronaut"})
    assert (tmp_path / "yours" / "thesis.tex").exists()


def test_demo_and_train_seg_never_write_beside_a_users_files(tmp_path, capsys):
    from samcam.io import REPO
    from samcam.pipeline.demo import check_demo_folder

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep")
    fails(["demo", "--out", mine, "--points-per-side", "1"], capsys, "mine", "holds files the demo did not write (thesis.tex)")
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]  # refused before the notebook ran
    for folder in (REPO, REPO / "samcam", REPO / "tests"):  # --out . and the like (samcam's own folders are named as such)
        with pytest.raises(ValueError, match="holds files the demo did not write|part of samcam itself"):
            check_demo_folder(folder)
    check_demo_folder(tmp_path / "new")  # absent: fine
    _labels(tmp_path / "lab", ["a", "b"], 7, (40, 40))
    _labels(tmp_path / "img", ["a", "b"], 90, (40, 40))
    (tmp_path / "ids.txt").write_text("a\nb\n")
    fails(["train-seg", "--images", tmp_path / "img", "--labels", tmp_path / "lab", "--ids", tmp_path / "ids.txt", "--out", mine,
           "--max-steps", "1"], capsys, "mine", "holds files samcam did not write (thesis.tex)")
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]


# ============================================================================ 6. every option and checkpoint field is range-checked; training stops on a non-finite loss


@pytest.mark.parametrize("args,needle", [(["--majority", "-1"], "--majority"), (["--coverage", "5"], "--coverage"),
                                         (["--workers", "0"], "--workers"), (["--majority", "nan"], "--majority")])
def test_merge_parameters_out_of_range(tmp_path, capsys, args, needle):
    fails(["merge", "--pseudo", tmp_path, "--masks", tmp_path, "--out", tmp_path / "o", *args], capsys, needle)

@pytest.mark.parametrize("arg", ["--points-per-side=0", "--pred-iou-thresh=5", "--box-nms-thresh=nan", "--crop-n-layers=-1"])
def test_mask_generator_settings_out_of_range(tmp_path, capsys, arg):
    fails(["masks", "--images", tmp_path, "--out", tmp_path / "m", arg], capsys, arg.split("=")[0])

def test_mistyped_cam_folder_and_bad_threshold_steps(tmp_path, capsys):
    fails(["cam2label", "--cams", tmp_path / "camz", "--out", tmp_path / "out", "--threshold", "0.2"], capsys, "camz")
    (tmp_path / "empty").mkdir()
    fails(["cam2label", "--cams", tmp_path / "empty", "--out", tmp_path / "out", "--threshold", "0.2"], capsys, "empty", "no <id>.npy")
    _cams(tmp_path / "cams", [3], np.ones((1, 4, 4)))
    _labels(tmp_path / "gt", ["a"], 4, (4, 4))
    for bad in ("0.1:0.5:0", "0.1:0.5", "0.5:0.1:0.1", "a:b:c"):
        fails(["cam2label", "--cams", tmp_path / "cams", "--sweep-gt", tmp_path / "gt", "--thresholds", bad], capsys, "--thresholds")

@pytest.mark.parametrize("arg", ["--lr=inf", "--lr=nan", "--poly-power=nan", "--head-lr-mult=nan", "--head-channels=0", "--threads=-1",
                                 "--weight-decay=-1", "--scale-min=inf", "--crop=0", "--epochs=0", "--max-steps=0"])
def test_train_seg_options_out_of_range(tmp_path, capsys, arg):
    fails(["train-seg", "--images", tmp_path, "--labels", tmp_path, "--ids", tmp_path / "ids.txt", "--out", tmp_path / "run", arg],
          capsys, arg.split("=")[0])

@pytest.mark.parametrize("scales", ["inf", "nan", "100", "1,0", "-1"])
def test_eval_seg_scales_out_of_range(tmp_path, capsys, scales):
    fails(["eval-seg", "--checkpoint", tmp_path / "c.pt", "--images", tmp_path, "--gt", tmp_path, "--ids", tmp_path / "ids.txt",
           "--scales", scales], capsys, "--scales")

#: the fields every checkpoint train-seg writes holds besides its recipe and weights
_SEG_FIELDS = {"labels_dir": "/elsewhere/labels", "labels_fingerprint": "ab" * 32, "n_train": 4, "step": 4, "total_steps": 4, "complete": True,
               "history": {}}


@pytest.mark.parametrize("edit,needle", [
    (lambda ck: ck.pop("labels_dir"), "without its labels_dir field"),
    (lambda ck: ck.pop("labels_fingerprint"), "without its labels_fingerprint field"),
    (lambda ck: ck.pop("step"), "without its step field"),
    (lambda ck: ck.update(complete="yes"), "complete is a str, expected a bool"),
    (lambda ck: ck.update(labels_dir=3), "labels_dir is a int, expected a str"),
    (lambda ck: ck["recipe"].update(head_channels=0), "head_channels"),
    (lambda ck: ck["recipe"].update(lr=float("nan")), "lr"),
    (lambda ck: ck.pop("recipe"), "without its recipe field"),
    (lambda ck: ck.update(n_classes="x"), "n_classes"),
    (lambda ck: ck.update(recipe=[1]), "recipe is a list"),
    (lambda ck: ck.update(dataset="../../etc"), "dataset '../../etc' with 21 classes"),
    (lambda ck: ck.update(dataset="coco"), "dataset 'coco' with 21 classes"),
    (lambda ck: ck.update(n_train=-1), "n_train is -1"),
    (lambda ck: ck.update(step=-5, total_steps=10), "step is -5"),
    (lambda ck: ck.update(step=11, total_steps=10), "step 11 is beyond total_steps 10"),
    (lambda ck: ck.update(history="x"), "history is a str"),
    (lambda ck: ck.update(history={"losses": [float("nan"), float("inf")]}), "history.losses [nan, inf] is not a list of finite numbers"),
    (lambda ck: ck.update(history={"epoch_seconds": [-1]}), "history.epoch_seconds [-1] is not a list of finite numbers ≥ 0"),
    (lambda ck: ck.update(labels_fingerprint="zz"), "labels_fingerprint 'zz' is not the SHA-256 train-seg writes"),
    (lambda ck: ck["recipe"].update(epochs=10**9), "epochs"),
])
def test_a_segmentation_checkpoint_with_a_bad_field_is_named(tmp_path, capsys, edit, needle):
    import torch

    from samcam.seg.recipe import Recipe
    from samcam.seg.train import FORMAT

    ck = {"format": FORMAT, "recipe": Recipe().to_dict(), "n_classes": 21, "model": {}, **_SEG_FIELDS}
    edit(ck)
    torch.save(ck, tmp_path / "c.pt")
    _labels(tmp_path / "gt", ["a"], 7, (4, 4))
    _labels(tmp_path / "img", ["a"], 90, (4, 4))  # an image folder of its own: a label folder is no image folder (audit 11, F3)
    (tmp_path / "ids.txt").write_text("a\n")
    fails(["eval-seg", "--checkpoint", tmp_path / "c.pt", "--images", tmp_path / "img", "--gt", tmp_path / "gt", "--ids", tmp_path / "ids.txt"],
          capsys, "c.pt", needle)

@pytest.mark.parametrize("lr,loss", [(0.1, float("nan")), (float("inf"), 1.0)])
def test_descend_stops_on_a_non_finite_loss_or_weights(lr, loss):
    import torch

    from samcam.training import descend

    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=lr)
    with pytest.raises(ValueError, match="training stopped"):
        descend(opt, (w * loss).sum())
    assert torch.isfinite(w).all() or lr == float("inf")


@pytest.mark.parametrize("args,needle", [
    (["--threads", "100000"], "--threads"),                      # a typo: as many threads as --workers allows at most
    (["--points-per-side", "5000"], "--points-per-side"),        # 25 million prompts per image
    (["--points-per-batch", "100000"], "--points-per-batch"),
    (["--crop-n-layers", "9"], "--crop-n-layers"),
])
def test_masks_options_have_upper_bounds(tmp_path, capsys, args, needle):
    fails(["masks", "--images", tmp_path, "--out", tmp_path / "m", *args], capsys, needle)
    assert not (tmp_path / "m").exists()

def test_demo_walk_and_sweep_options_have_upper_bounds(tmp_path, capsys):
    fails(["demo", "--out", tmp_path / "d", "--points-per-side", "5000"], capsys, "--points-per-side")
    fails(["affinity", "--cams", tmp_path, "--out", tmp_path / "a", "--gt-affinity", tmp_path, "--steps", "100000000"], capsys, "--steps")
    _cams(tmp_path / "cams", [3], np.ones((1, 4, 4)))
    _labels(tmp_path / "gt", ["a"], 4, (4, 4))
    fails(["cam2label", "--cams", tmp_path / "cams", "--sweep-gt", tmp_path / "gt", "--thresholds", "0:1:0.00001"], capsys,
          "--thresholds 0:1:0.00001: more than 1001 thresholds")

def test_devices_are_bounded_like_workers():
    from samcam.pipeline.workers import MAX_WORKERS_PER_CORE, available_cores, parse_devices

    bound = MAX_WORKERS_PER_CORE * available_cores()
    assert parse_devices(",".join(["cpu"] * bound)) == ["cpu"] * bound
    with pytest.raises(ValueError, match=rf"--devices: {bound + 1} processes asked for, at most {bound}"):
        parse_devices(",".join(["cpu"] * (bound + 1)))

def test_weights_that_are_not_finite_or_do_not_fit_are_named():
    import torch

    from samcam.io import load_weights

    net = torch.nn.Linear(3, 2)
    good = {k: v.clone() for k, v in net.state_dict().items()}
    load_weights(net, good, "w.pt")
    bad = {**good, "bias": torch.tensor([0.0, float("nan")])}
    with pytest.raises(ValueError, match=r"w\.pt: its weights hold values that are not finite numbers \(bias\); the training run diverged"):
        load_weights(net, bad, "w.pt")
    assert torch.isfinite(net.bias).all()  # nothing was loaded
    with pytest.raises(ValueError, match=r"w\.pt: its head weights do not fit the network"):
        load_weights(net, {"weight": good["weight"]}, "w.pt", "head weights")
    for state in ([1], {"weight": [1.0]}, None):
        with pytest.raises(ValueError, match=r"w\.pt: its weights are not a state dict of tensors"):
            load_weights(net, state, "w.pt")

def test_a_negative_batch_norm_statistic_is_refused_as_weights_load():
    """A running_var below 0 is finite, so it passed; the network then computed NaN, and eval-seg
    scored the argmax of NaN as a prediction (audit 10, F3)."""
    import torch

    from samcam.io import load_weights

    net = torch.nn.BatchNorm2d(2)
    good = {k: v.clone() for k, v in net.state_dict().items()}
    load_weights(net, {**good, "running_var": torch.tensor([0.0, 2.0])}, "w.pt")  # 0 is a variance
    for key, value in (("running_var", torch.tensor([1.0, -5.0])), ("num_batches_tracked", torch.tensor(-1))):
        with pytest.raises(ValueError, match=re.escape(f"w.pt: its weights hold a negative batch-norm statistic ({key}); no training run writes one")):
            load_weights(net, {**good, key: value}, "w.pt")


def test_a_network_whose_output_is_not_finite_is_not_scored(tmp_path):
    """Weights that pass every check may still compute NaN (or overflow): eval-seg stops, naming the
    checkpoint and the image, instead of scoring the argmax of NaN."""
    import torch

    from samcam.seg import evaluate as seg_eval

    class Broken(torch.nn.Module):
        n_classes = 2

        def __init__(self, value):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.value = value

        def forward(self, x):
            out = torch.zeros((x.shape[0], 2, *x.shape[-2:]))
            out[:, 1, 0, 0] = self.value
            return out

    image = np.zeros((4, 4, 3), np.uint8)
    assert seg_eval.predict(Broken(1.0), image)[0, 0] == 1  # a finite output is predicted
    for value in (float("nan"), float("inf")):
        with pytest.raises(seg_eval.NonFiniteOutput, match="the network's output is not finite"):
            seg_eval.predict_probs(Broken(value), image)
    _labels(tmp_path / "gt", ["a"], 1, (4, 4))
    (tmp_path / "img").mkdir()
    Image.fromarray(image).save(tmp_path / "img" / "a.jpg")
    with pytest.raises(seg_eval.NonFiniteOutput, match=re.escape(f"not finite (NaN or infinite): its weights are not usable (on {tmp_path / 'img' / 'a.jpg'})")):
        seg_eval.evaluate(Broken(float("nan")), tmp_path / "img", tmp_path / "gt", ["a"])


def test_eval_seg_names_the_checkpoint_whose_output_is_not_finite(tmp_path, capsys, monkeypatch):
    import torch

    from samcam.seg import evaluate as seg_eval
    from samcam.seg.model import SegNet
    from samcam.seg.recipe import Recipe
    from samcam.seg.train import FORMAT

    r = Recipe()
    torch.save({"format": FORMAT, "recipe": r.to_dict(), "n_classes": 21, "model": SegNet.from_recipe(r, 21, pretrained=False).state_dict(),
                **_SEG_FIELDS}, tmp_path / "c.pt")  # fmt: skip
    _labels(tmp_path / "gt", ["a"], 7, (4, 4))
    _labels(tmp_path / "img", ["a"], 90, (4, 4))  # an image folder of its own: a label folder is no image folder (audit 11, F3)
    (tmp_path / "ids.txt").write_text("a\n")

    def nan(*a, **k):
        raise seg_eval.NonFiniteOutput("the network's output is not finite (NaN or infinite): its weights are not usable")

    monkeypatch.setattr(seg_eval, "predict_probs", nan)
    fails(["eval-seg", "--checkpoint", tmp_path / "c.pt", "--images", tmp_path / "img", "--gt", tmp_path / "gt", "--ids", tmp_path / "ids.txt",
           "--json", tmp_path / "e.json"], capsys, f"{tmp_path / 'c.pt'}: the network's output is not finite", "(on ")  # fmt: skip
    assert not (tmp_path / "e.json").exists()


def test_a_segmentation_checkpoint_with_nan_weights_is_refused(tmp_path, capsys):
    """A run that diverged (NaN weights) saved its checkpoint; eval-seg must not score it."""
    import torch

    from samcam.seg.model import SegNet
    from samcam.seg.recipe import Recipe
    from samcam.seg.train import FORMAT

    r = Recipe()
    model = SegNet.from_recipe(r, 21, pretrained=False)
    state = model.state_dict()
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = torch.full_like(state[name], float("nan"))
    torch.save({"format": FORMAT, "recipe": r.to_dict(), "n_classes": 21, "model": state, **_SEG_FIELDS}, tmp_path / "c.pt")
    _labels(tmp_path / "gt", ["a"], 7, (4, 4))
    _labels(tmp_path / "img", ["a"], 90, (4, 4))  # an image folder of its own: a label folder is no image folder (audit 11, F3)
    (tmp_path / "ids.txt").write_text("a\n")
    fails(["eval-seg", "--checkpoint", tmp_path / "c.pt", "--images", tmp_path / "img", "--gt", tmp_path / "gt", "--ids", tmp_path / "ids.txt"],
          capsys, "c.pt", "segmentation weights hold values that are not finite", name)

@pytest.mark.parametrize("edit,needle", [
    (lambda ck: ck.update(epoch="3"), "epoch '3' of 3"),
    (lambda ck: ck.update(epoch=4), "epoch 4 of 3"),
    (lambda ck: ck["record"]["config"].update(epochs=None), "epoch 3 of None"),
    (lambda ck: ck.pop("record"), "epoch 3 of None"),
    (lambda ck: ck.update(in_channels=[16, "x", 40]), "in_channels [16, 'x', 40]"),
    (lambda ck: ck.update(in_channels=[16, 0, 40]), "in_channels [16, 0, 40]"),
    (lambda ck: ck.update(in_channels=[16, 24]), "2 backbone levels for 3 head widths"),
    (lambda ck: ck.update(state_dict={"w": 1}), "affinity head weights are not a state dict"),
    (lambda ck: ck.update(backbone=3), "backbone 3 is not a name"),
    (lambda ck: ck["record"]["config"].pop("radius"), "training radius recorded in this affinity checkpoint is None"),
    (lambda ck: ck["record"]["config"].update(radius="5"), "recorded config: affinity training field radius is '5', expected an int"),
    (lambda ck: ck["record"]["config"].update(radius=-3), "recorded config: affinity training field radius is -3, expected a finite number in"),
    (lambda ck: ck["record"]["config"].update(lr=float("nan")), "field lr is nan, expected a finite number"),  # every field, as its option
    (lambda ck: ck["record"]["config"].update(crop=10**9), "field crop is 1000000000, expected a finite number in"),
    (lambda ck: ck["record"]["config"].update(low_alpha=-5.0), "recorded config: low_alpha must be a number in (0, 256], not -5.0"),
    (lambda ck: ck["record"]["config"].update(shape="x"), "its recorded config holds 'shape', not a field samcam writes"),
    (lambda ck: ck.update(losses=[float("nan")]), "its losses [nan] are not a list of finite numbers"),
    (lambda ck: ck.update(seconds=-3), "its seconds -3 are not a number ≥ 0"),
])
def test_an_affinity_checkpoint_with_a_bad_field_is_named(tmp_path, edit, needle):
    import torch

    from samcam.pipeline.affinity import load_affinity
    from samcam.refine.affinity import AffinityHead

    head = AffinityHead([16, 24, 40])
    ck = {"kind": "samcam-affinity", "head": AffinityHead.version, "epoch": 3, "record": {"config": {"epochs": 3, "radius": 5}},
          "in_channels": [16, 24, 40], "state_dict": head.state_dict(), "backbone": "lite0"}
    edit(ck)
    torch.save(ck, tmp_path / "aff.pt")
    with pytest.raises(ValueError) as e:
        load_affinity(tmp_path / "aff.pt")
    assert str(e.value).startswith(f"{tmp_path / 'aff.pt'}: ") and needle in str(e.value), str(e.value)


@pytest.mark.parametrize("args", [
    ["masks", "--images", "{t}", "--out", "{t}/m", "--device", "tpu"],
    ["refine", "--pseudo", "{t}", "--out", "{t}/r", "--ids", "{t}/ids.txt", "--device", "gpu0"],
    ["train-seg", "--images", "{t}", "--labels", "{t}", "--ids", "{t}/ids.txt", "--out", "{t}/s", "--device", "gpu"],
    ["eval-seg", "--checkpoint", "{t}/c.pt", "--images", "{t}", "--gt", "{t}", "--ids", "{t}/ids.txt", "--device", "cuda:7"],
    ["cam", "--images", "{t}", "--out", "{t}/c", "--checkpoint", "{t}/c.pt", "--device", "cpu,cpu"],
])
def test_a_bad_device_is_named_before_any_output_is_made(tmp_path, capsys, args):
    fails([a.format(t=tmp_path) for a in args], capsys, "--device")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [
    ["train-seg", "--images", "{t}/img", "--labels", "{t}/lab", "--ids", "{t}/ids.txt", "--out", "{t}/s", "--device", "mps", "--max-steps", "1"],
    ["masks", "--images", "{t}/img", "--out", "{t}/m", "--device", "mps"],
    ["masks", "--images", "{t}/img", "--out", "{t}/m", "--devices", "cpu,mps"],
    ["cam", "--images", "{t}/img", "--out", "{t}/c", "--checkpoint", "{t}/c.pt", "--device", "mps"],
])
def test_a_device_this_machine_lacks_is_named_before_any_output_is_made(tmp_path, capsys, args):
    """Audit 11, F12: ``--device mps`` passed the parser where PyTorch has no MPS, and failed in
    PyTorch's words after the output folder, its lock (and the mask record) were made."""
    import torch

    if torch.backends.mps.is_available():
        pytest.skip("this machine has an MPS device")
    _labels(tmp_path / "img", ["a"])
    _labels(tmp_path / "lab", ["a"])
    (tmp_path / "ids.txt").write_text("a\n")
    (tmp_path / "c.pt").write_bytes(b"a checkpoint the device check comes before")
    before = sorted(p.name for p in tmp_path.iterdir())
    fails([a.format(t=tmp_path) for a in args], capsys, "--device", "mps asked for, but no MPS device is available here")
    assert sorted(p.name for p in tmp_path.iterdir()) == before

@pytest.mark.parametrize("args,needle", [
    (["refine", "--pseudo", "{t}", "--out", "{t}/r", "--ids", "{t}/ids.txt", "--model", "vit_x"], "--model"),
    (["train-seg", "--images", "{t}", "--labels", "{t}", "--ids", "{t}/ids.txt", "--out", "{t}/s", "--batch-size", "1"], "--batch-size"),
    (["train-seg", "--images", "{t}", "--labels", "{t}", "--ids", "{t}/ids.txt", "--out", "{t}/s", "--seed", "99999999999999999999999"], "--seed"),
    (["train-classifier", "--ids", "{t}/ids.txt", "--out", "{t}/c.pt", "--seed", "-1"], "--seed"),
    (["train-affinity", "--images", "{t}", "--cams", "{t}", "--ids", "{t}/ids.txt", "--out", "{t}/a.pt", "--seed", str(2**32)], "--seed"),
    (["affinity", "--cams", "{t}", "--out", "{t}/a", "--gt-affinity", "{t}", "--alpha", "1e300"], "--alpha"),
    (["affinity", "--cams", "{t}", "--out", "{t}/a", "--gt-affinity", "{t}", "--beta", "1e300"], "--beta"),
    (["affinity", "--cams", "{t}", "--out", "{t}/a", "--gt-affinity", "{t}", "--threshold", "0.001"], "--threshold"),
    (["affinity", "--cams", "{t}", "--out", "{t}/a", "--gt-affinity", "{t}", "--threshold", "nan"], "nan is outside [1e-06, 0.999999]"),  # N6: the range it has
    (["train-classifier", "--ids", "{t}/ids.txt", "--out", "{t}/c.pt", "--epochs", "1000000000"], "--epochs"),  # third audit: no upper bound
    (["train-affinity", "--images", "{t}", "--cams", "{t}", "--ids", "{t}/ids.txt", "--out", "{t}/a.pt", "--epochs", "1000000000"], "--epochs"),
    (["train-seg", "--images", "{t}", "--labels", "{t}", "--ids", "{t}/ids.txt", "--out", "{t}/s", "--epochs", "1000000000"], "--epochs"),
    (["train-affinity", "--images", "{t}", "--cams", "{t}", "--ids", "{t}/ids.txt", "--out", "{t}/a.pt", "--batch-size", "100000"], "--batch-size"),
])
def test_options_out_of_range_found_by_the_second_audit(tmp_path, capsys, args, needle):
    fails([a.format(t=tmp_path) for a in args], capsys, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ============================================================================ 7. every failure is one line naming the file or option, exit 2


def test_traceback_only_with_debug(tmp_path, capsys):
    fails(["eval", "--pred", tmp_path / "nope", "--gt", tmp_path], capsys, "nope")
    with pytest.raises(FileNotFoundError):
        cli.main(["--debug", "eval", "--pred", str(tmp_path / "nope"), "--gt", str(tmp_path)])

@pytest.mark.parametrize("exc", [MemoryError(), RuntimeError("CUDA out of memory.\nTried to allocate 17 GiB"), Image.DecompressionBombError("bomb")])
def test_any_exception_class_ends_in_one_line_and_exit_2(tmp_path, capsys, monkeypatch, exc):
    import samcam.pipeline.evaluate as ev

    _labels(tmp_path / "pred", ["a"])
    monkeypatch.setattr(ev, "evaluate_folders", lambda *a, **k: (_ for _ in ()).throw(exc), raising=False)
    monkeypatch.setattr(cli, "_input_error", cli._input_error)
    err = fails(["eval", "--pred", tmp_path / "pred", "--gt", tmp_path / "pred"], capsys)
    assert "internal error" not in err

def test_a_programming_error_says_internal_error_and_how_to_see_it(tmp_path, capsys, monkeypatch):
    import samcam.pipeline.evaluate as ev

    _labels(tmp_path / "pred", ["a"])
    _labels(tmp_path / "gt", ["a"])
    monkeypatch.setattr(ev, "evaluate_folders", lambda *a, **k: None.nothing)
    fails(["eval", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt"], capsys, "internal error: AttributeError", "--debug")

def test_a_compact_mask_file_without_height_is_named(tmp_path, capsys):
    fails(_mask_folder(tmp_path, lambda d: d.pop("height")), capsys, "a.json.gz", "height")

def test_a_run_record_that_is_not_an_object_is_named(tmp_path, capsys):
    args = _mask_folder(tmp_path)
    assert cli.main([str(a) for a in args]) == 0
    (tmp_path / "o" / RUN_RECORD).write_text("[]")
    fails(args, capsys, RUN_RECORD, "not an object")

def test_a_full_disk_names_the_output(tmp_path, capsys, monkeypatch):
    import errno

    import samcam.io

    args = _mask_folder(tmp_path)
    real = samcam.io.os.replace

    def full(src, dst):
        if str(dst).endswith(".png"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(samcam.io.os, "replace", full)
    fails(args, capsys, "a.png", "No space left on device")

@pytest.mark.parametrize("text,needle", [("steps: [\n", "not a readable YAML"), ("- a\n- b\n", "a 'steps' list"),
                                         ("steps:\n  - 3\n", "step 0 is not a mapping"), ("steps:\n  - name: x\n", "needs exactly one of notebook, command and script"),
                                         # a number past Python's 4,300-digit limit (audit 10, F5: the message named no file)
                                         ("steps:\n  - name: a\n    long: " + "9" * 5000 + "\n", "not a readable YAML file (Exceeds the limit (4300 digits)")])
def test_malformed_reproduce_config(tmp_path, capsys, text, needle):
    (tmp_path / "r.yml").write_text(text)
    fails(["reproduce", "--config", tmp_path / "r.yml"], capsys, "r.yml", needle)

@pytest.mark.parametrize("step,needle", [("    parameters: [1, 2]\n", "parameters is a list")])
def test_a_reproduce_step_with_parameters_of_the_wrong_kind_is_named(tmp_path, capsys, step, needle):
    (tmp_path / "r.yml").write_text("steps:\n  - name: x\n    notebook: demo.ipynb\n" + step)
    fails(["reproduce", "--config", tmp_path / "r.yml"], capsys, "r.yml", needle)

@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_cache_folder_is_named_and_nothing_downloaded(tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    monkeypatch.setenv("SAMCAM_HOME", str(ro))
    fails(["weights", "fetch", "vit_t"], capsys, str(ro), "not writable")

def test_cache_path_that_is_a_file_is_named_and_nothing_downloaded(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("SAMCAM_HOME", str(tmp_path / "file"))
    import samcam.sam.weights as w

    monkeypatch.setattr(w, "_download", lambda *a: pytest.fail("no download may be tried"))
    fails(["weights", "fetch", "vit_t"], capsys, "SAMCAM_HOME=", "file", "names a file, not a folder")


# ============================================================================ 8. parallelism (workers die with their parent)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out

@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="worker death on parent death uses Linux's PR_SET_PDEATHSIG")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_die_with_their_parent(tmp_path, data_root, train_with_images, sig):
    from conftest import CACHED_MASKS

    (tmp_path / "ids.txt").write_text("\n".join(train_with_images) + "\n")
    cmd = [sys.executable, "-m", "samcam.cli", "merge", "--pseudo", str(data_root / "pseudo_labels" / "transcam"), "--masks",
           str(CACHED_MASKS), "--out", str(tmp_path / "out"), "--ids", str(tmp_path / "ids.txt"), "--workers", "2"]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list((tmp_path / "out").glob("*.png"))) < 3 and time.time() < deadline:
        time.sleep(0.2)
    workers = _children(proc.pid)
    assert workers, "the merge started no worker processes"
    proc.send_signal(sig)
    proc.wait(30)
    deadline = time.time() + 15
    while any(Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1].split()[0]
              for w in workers if Path(f"/proc/{w}/stat").exists()) and time.time() < deadline:
        time.sleep(0.2)
    alive = [w for w in workers if Path(f"/proc/{w}/stat").exists() and Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    assert not alive, f"workers {alive} outlived their parent"


def test_a_failed_notebook_is_one_line_and_kept(tmp_path, capsys, monkeypatch):
    import papermill as pm

    from samcam import outputs, reproduce

    def boom(nb, out, **kw):
        Path(out).write_text("{}")
        raise pm.PapermillExecutionError(0, 3, "x = 1/0", "ZeroDivisionError", "division by zero", ["Traceback", "line 1", "line 2"])

    monkeypatch.setattr(pm, "execute_notebook", boom)
    monkeypatch.setattr(reproduce, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(outputs, "git_commit", lambda path: "abc123")  # whatever state this checkout is in
    (tmp_path / "r.yml").write_text("steps:\n  - name: x\n    notebook: demo.ipynb\n    outputs: [nothing/here]\n    parameters: {out_dir: nothing/here}\n")
    with pytest.raises(pm.PapermillExecutionError):
        reproduce.execute("demo.ipynb", tmp_path / "o.ipynb")
    err = fails(["reproduce", "--config", tmp_path / "r.yml"], capsys, "demo.ipynb", "cell 3", "ZeroDivisionError", "x.failed.ipynb")
    assert "Traceback" not in err
    # a cell's error is judged by its own class: bad input (a ValueError a step raised) or samcam's fault
    for ename, internal in (("ValueError", False), ("FileNotFoundError", False), ("HashMismatchError", False), ("UnidentifiedImageError", False),
                            ("TypeError", True), ("ZeroDivisionError", True), ("NameError", True)):
        monkeypatch.setattr(pm, "execute_notebook", lambda nb, out, e=ename, **kw: (_ for _ in ()).throw(
            pm.PapermillExecutionError(0, 3, "step()", e, "what happened", ["Traceback"])))
        err = fails(["reproduce", "--config", tmp_path / "r.yml"], capsys, ename, "what happened")
        assert ("internal error" in err) == internal, err


def test_demo_never_writes_into_the_notebooks_or_the_package(capsys):
    """`samcam demo --out notebooks` would replace the source notebooks/demo.ipynb: refused before anything runs."""
    import hashlib

    from samcam.reproduce import NOTEBOOKS

    before = hashlib.sha256((NOTEBOOKS / "demo.ipynb").read_bytes()).hexdigest()
    for out in ("notebooks", "notebooks/sub", "samcam"):
        assert cli.main(["demo", "--out", out]) == 2
        err = capsys.readouterr().err
        assert "part of samcam itself" in err and len(err.strip().splitlines()) == 1
    assert hashlib.sha256((NOTEBOOKS / "demo.ipynb").read_bytes()).hexdigest() == before


@pytest.mark.parametrize("target", ["notebooks/demo.ipynb", "notebooks/reproduce.yml", "samcam/x.csv", "pyproject.toml", "notebooks/sub/x.csv", "tests/x.csv"])
def test_no_command_writes_into_samcams_own_sources(scored, capsys, target):
    """A single-file output (eval's tables) or a folder may not be or lie in the checkout's notebooks,
    package, tests or configuration (second audit: `eval --csv notebooks/demo.ipynb` replaced it)."""
    import hashlib

    from samcam.io import REPO

    path = REPO / target
    before = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    for args in (["eval", "--pred", scored / "pred", "--gt", scored / "gt", "--csv", path],
                 ["eval", "--pred", scored / "pred", "--gt", scored / "gt", "--per-image-csv", path],
                 *([["cam2label", "--cams", scored / "pred", "--out", path.parent / "labels", "--threshold", "0.2"]] if path.parent != REPO else [])):  # fmt: skip
        err = fails(args, capsys)
        assert "part of samcam itself" in err, err
    assert (hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None) == before
    assert not (REPO / "notebooks" / "sub").exists() and not (path.parent / "labels").exists()


def test_demo_rewrites_its_own_folders_and_refuses_foreign_files(tmp_path):
    """A second `make demo` rewrites enhanced/ although the merge left its record and lock there; a
    file the demo did not write stops it."""
    from samcam.outputs import COST_RECORD, LOCK_FILE, RUN_RECORD
    from samcam.pipeline.demo import _remove_own

    own = tmp_path / "enhanced"
    own.mkdir()
    for name in ("astronaut.png", RUN_RECORD, COST_RECORD, LOCK_FILE):
        (own / name).write_text("x")
    _remove_own(own, {"astronaut"})
    assert not own.exists()
    own.mkdir()
    (own / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="holds files the demo did not write"):
        _remove_own(own, {"astronaut"})
    assert (own / "mine.txt").read_text() == "keep"


def test_a_pipe_inside_an_input_folder_or_as_config_is_refused_not_read(tmp_path, capsys):
    """Principle 2 in the content fingerprint and the reproduce config: a FIFO is named, never read."""
    _cams(tmp_path / "cams", [3], np.ones((1, 4, 4)))
    os.mkfifo(tmp_path / "cams" / "b.npy")
    fails(["cam2label", "--cams", tmp_path / "cams", "--out", tmp_path / "out", "--threshold", "0.2", "--ids", _ids(tmp_path, "a")], capsys,
          "b.npy", "a pipe")
    os.mkfifo(tmp_path / "cfg.yml")
    fails(["reproduce", "--config", tmp_path / "cfg.yml", "--list"], capsys, "cfg.yml", "a pipe")


def test_c1_control_characters_are_not_in_an_id(tmp_path, capsys):
    (tmp_path / "ids.txt").write_text("a\u009bb\n")
    _labels(tmp_path / "pred", ["a"])
    fails(["eval", "--pred", tmp_path / "pred", "--gt", tmp_path / "pred", "--ids", tmp_path / "ids.txt"], capsys, "ids.txt")


@pytest.mark.parametrize("command", [
    ["eval", "--pred", "{t}/lab", "--gt", "{t}/lab", "--csv", "{t}/new/"],
    ["eval", "--pred", "{t}/lab", "--gt", "{t}/lab", "--per-image-csv", "{t}/new/"],
    ["cam2label", "--cams", "{t}/cams", "--out", "{t}/o", "--threshold", "0.2", "--sweep-gt", "{t}/lab", "--sweep-csv", "{t}/new/"],
    ["cam-eval", "--checkpoint", "{t}/none.pt", "--voc", "{t}", "--ids", "{t}/ids.txt", "--csv", "{t}/new/"],
    ["affinity-sweep", "--checkpoint", "{t}/none.pt", "--cams", "{t}/cams", "--images", "{t}/lab", "--gt", "{t}/lab", "--ids", "{t}/ids.txt", "--alphas", "4",
     "--csv", "{t}/new/"],
])  # fmt: skip
def test_a_table_output_naming_a_folder_is_refused_before_the_work(tmp_path, capsys, command):
    """A table is a file: ``--csv new/`` is refused at once (it was written as a file ``new``)."""
    _cams(tmp_path / "cams", [3], np.ones((1, 4, 4)))
    _labels(tmp_path / "lab", ["a"], 3, (4, 4))
    (tmp_path / "ids.txt").write_text("a\n")
    fails([c.replace("{t}", str(tmp_path)) for c in command], capsys, f"output {tmp_path / 'new'}/: ends with a separator")
    assert not (tmp_path / "new").exists() and not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", [
    ["eval", "--pred", "{t}/lab", "--gt", "{t}/gt", "--csv", "{t}/{long}.csv"],
    ["eval", "--pred", "{t}/lab", "--gt", "{t}/gt", "--per-image-csv", "{t}/new/{long}.csv"],
    ["cam2label", "--cams", "{t}/cams", "--out", "{t}/o", "--threshold", "0.2", "--sweep-gt", "{t}/lab", "--sweep-csv", "{t}/{long}.csv"],
    ["train-classifier", "--voc", "{t}/voc", "--ids", "{t}/ids.txt", "--out", "{t}/{long}.pt"],
])  # fmt: skip
def test_an_output_whose_temporary_name_is_too_long_is_refused_before_the_work(tmp_path, capsys, command):
    """Audit 11, F14: a 244-byte table name is a valid file name, but samcam writes through a hidden
    temporary 25 bytes longer: the table was printed, then ``[Errno 36] File name too long`` named the
    temporary. Now the output is named, with the longest name that fits, before any work."""
    _cams(tmp_path / "cams", [3], np.ones((1, 4, 4)))
    _labels(tmp_path / "lab", ["a"], 3, (4, 4))
    _labels(tmp_path / "gt", ["a"], 3, (4, 4))
    (tmp_path / "ids.txt").write_text("a\n")
    long = "z" * 240
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / f"{long}.csv").touch()  # the name itself fits the file system ...
    with pytest.raises(OSError, match="too long"):  # ... its temporary's does not
        (probe / f".{long}.csv.samcam-abcdefgh.csv.tmp").touch()
    probe.joinpath(f"{long}.csv").unlink()
    probe.rmdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [c.replace("{t}", str(tmp_path)).replace("{long}", long) for c in command]
    fails(args, capsys, f"output {args[-1]}: its name is {len(args[-1].rsplit('/', 1)[1])} bytes, too long to write there", "give a name of at most")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_an_output_in_a_folder_that_cannot_be_written_is_refused_before_the_work(tmp_path, capsys):
    """Audit 11, F14: a table into a folder this user cannot write (the audit's was a read-only mount)
    was found only after the scores were printed, in words naming a hidden temporary."""
    _labels(tmp_path / "lab", ["a"], 3, (4, 4))
    _labels(tmp_path / "gt", ["a"], 3, (4, 4))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("this user writes into a folder of mode 555 (root)")
        for out in (ro / "t.csv", ro / "sub" / "t.csv"):
            fails(["eval", "--pred", tmp_path / "lab", "--gt", tmp_path / "gt", "--csv", out], capsys, f"output {out}: cannot be written: {ro} is not writable")
            assert capsys.readouterr().out == ""  # no table printed: refused before the work
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_a_temporary_that_cannot_be_made_names_the_output(tmp_path, monkeypatch):
    """An output folder that turns read-only after the checks: the error names the output, not
    ``.t.csv.samcam-<random>.csv.tmp`` (audit 11, F14)."""
    import errno

    import samcam.io

    def read_only(dir, prefix, suffix):
        raise OSError(errno.EROFS, "Read-only file system", os.path.join(dir, f"{prefix}abcdefgh{suffix}"))

    monkeypatch.setattr(samcam.io.tempfile, "mkstemp", read_only)
    with pytest.raises(OSError) as e:
        samcam.io.write_text(tmp_path / "t.csv", "x\n")
    assert str(e.value) == f"[Errno {errno.EROFS}] {tmp_path / 't.csv'}: cannot be written (Read-only file system)"


def test_ground_truth_for_the_walk_is_checked_as_every_ground_truth(tmp_path, capsys):
    _cams(tmp_path / "cams", [3], np.ones((1, 4, 4)))
    _labels(tmp_path / "gt", ["a"], 100, (4, 4))
    fails(["affinity", "--cams", tmp_path / "cams", "--gt-affinity", tmp_path / "gt", "--out", tmp_path / "o"], capsys,
          f"{tmp_path / 'gt' / 'a.png'}: label values [100] outside 0..20")


def test_a_negative_cam_key_is_refused_not_read_as_background(tmp_path, capsys):
    _cams(tmp_path / "cams", [-1], np.ones((1, 4, 4)))
    _labels(tmp_path / "gt", ["a"], 0, (4, 4))
    fails(["affinity", "--cams", tmp_path / "cams", "--gt-affinity", tmp_path / "gt", "--out", tmp_path / "o"], capsys, "a.npy",
          "negative class index")


def _ids(folder, *ids):
    (folder / "ids_given.txt").write_text("".join(f"{i}\n" for i in ids))
    return folder / "ids_given.txt"


# ============================================================================ the review of the second round


def test_a_run_folder_with_its_checkpoint_also_holds_what_eval_seg_wrote(tmp_path, capsys):
    """train-seg refuses a user's folder for a new run, not its own run folder, where eval-seg wrote
    eval.json, per_class.csv and pred/ beside last.pt (results/seg's layout)."""
    run = tmp_path / "run"
    (run / "pred").mkdir(parents=True)
    for name in ("last.pt", "eval.json", "per_class.csv"):
        (run / name).write_text("x")
    _labels(tmp_path / "lab", ["a", "b"], 7, (40, 40))
    _labels(tmp_path / "img", ["a", "b"], 90, (40, 40))
    (tmp_path / "ids.txt").write_text("a\nb\n")
    err = fails(["train-seg", "--images", tmp_path / "img", "--labels", tmp_path / "lab", "--ids", tmp_path / "ids.txt", "--out", run,
                 "--max-steps", "1", "--batch-size", "2"], capsys, "last.pt")  # the resume reads the checkpoint (here not one): the folder itself is accepted
    assert "did not write" not in err

def test_the_demo_folder_accepts_its_own_leftovers(tmp_path):
    from samcam.pipeline.demo import check_demo_folder

    (tmp_path / "masks").mkdir()
    for name in (".demo_gallery.png.samcam-ab12cd34.png.tmp", "demo.failed.ipynb", ".demo.ipynb.samcam-x1y2z3w4.ipynb", "demo_gallery.png"):
        (tmp_path / name).write_text("x")
    check_demo_folder(tmp_path)
    for mine in (".draft.tmp", ".demo.ipynb.x1y2.ipynb"):  # a user's hidden files, named like no temporary of samcam's
        (tmp_path / mine).write_text("mine")
        with pytest.raises(ValueError, match=rf"holds files the demo did not write \({re.escape(mine)}\)"):
            check_demo_folder(tmp_path)
        (tmp_path / mine).unlink()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds files the demo did not write \(notes\.txt\)"):
        check_demo_folder(tmp_path)

def test_a_notebook_name_is_looked_up_in_notebooks_only(tmp_path, monkeypatch):
    from samcam import reproduce

    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.ipynb").write_text("{}")  # in the working folder, not in notebooks/
    with pytest.raises(FileNotFoundError, match=r"notebook not found: .*notebooks/evil\.ipynb"):
        reproduce.execute("evil.ipynb", tmp_path / "out.ipynb")
    assert not (tmp_path / "out.ipynb").exists()

def test_scores_out_of_float32_range_and_keys_that_are_not_indices(tmp_path):
    from samcam.cam.files import class_keys, score_maps

    with pytest.raises(ValueError, match=r"f\.npy: CAM holds 1e\+300, out of the float32 range"):
        score_maps(np.array([[1e300, 0.0]]), "f.npy")
    assert score_maps(np.array([[0.5, 1.0]]), "f.npy").dtype == np.float32
    for bad in (np.array([True, False]), np.array(["3", "5"]), [True]):
        with pytest.raises(ValueError, match=r"f\.npy: CAM keys .* not class indices"):
            class_keys(bad, "f.npy")
    assert class_keys(np.array([3, 5], object), "f.npy").tolist() == [3, 5]

def test_an_image_whose_name_is_not_an_id_is_left_out_with_a_note(tmp_path, capsys):
    from samcam.io import image_index
    from samcam.progress import reset_notes

    reset_notes()
    for name in ("a", "Screenshot 10.41\u202fAM", "b"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / f"{name}.png")
    assert sorted(image_index(tmp_path)) == ["a", "b"]
    assert "images whose names are not ids are left out" in capsys.readouterr().err

def test_pools_choose_their_start_method():
    """fork where the platform has it (its workers are this process's children), never the
    interpreter's default, which becomes forkserver in Python 3.14."""
    import multiprocessing

    from samcam.pipeline.workers import pool_context, process_pool

    want = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    assert pool_context().get_start_method() == want
    with process_pool(1) as pool:
        assert pool._mp_context.get_start_method() == want and pool.submit(abs, -3).result() == 3

def test_an_unknown_note_is_a_fault_of_the_code():
    from samcam.progress import say_once

    with pytest.raises(TypeError, match="unknown note 'nope'"):
        say_once("nope", "x")

@pytest.mark.parametrize("args,ok", [
    (["affinity", "--cams", "{t}/none", "--out", "{t}/a", "--gt-affinity", "{t}", "--threshold", "0.02"], True),   # α 194: the walk's power
    (["train-affinity", "--images", "{t}", "--cams", "{t}", "--ids", "{t}/ids.txt", "--out", "{t}/a.pt", "--threshold", "0.02"], False),  # 2α 387
    (["train-affinity", "--images", "{t}", "--cams", "{t}", "--ids", "{t}/ids.txt", "--out", "{t}/a.pt", "--high-alpha", "300"], False),
])
def test_threshold_powers_are_bounded_where_they_are_used(tmp_path, capsys, args, ok):
    err = fails([a.format(t=tmp_path) for a in args], capsys)  # the accepted one fails later, on its missing CAM folder
    assert ("256" in err) != ok, err


# ============================================================================ the third audit


def test_png_labels_cut_short_or_with_trailing_bytes_are_refused(scored, capsys):
    whole = (scored / "gt" / "a.png").read_bytes()
    for data, needle in ((whole + b"XX", "2 bytes after the IEND chunk"), (whole[:-12], "no IEND chunk")):
        (scored / "gt" / "a.png").write_bytes(data)
        fails(["eval", "--pred", scored / "pred", "--gt", scored / "gt"], capsys, "a.png", needle)

def test_an_id_list_breaks_lines_at_newlines_only(scored, capsys):
    """U+2028 (or U+0085, \\x1c) inside a line once split it into two ids; now the line is one id,
    refused for the character it holds."""
    for sep in ("\u2028", "\x85", "\x1c"):
        (scored / "ids.txt").write_text(f"a{sep}b\n", encoding="utf-8")
        fails(["eval", "--pred", scored / "pred", "--gt", scored / "gt", "--ids", scored / "ids.txt"], capsys, "ids.txt", "is not a name")
    (scored / "ids.txt").write_bytes(b"a\r\nb\r\n")  # Windows line ends are fine
    assert read_ids(scored / "ids.txt") == ["a", "b"]

def test_an_l2g_class_number_is_ascii_digits(tmp_path):
    from samcam.cam.methods import load_pseudo_label

    Image.fromarray(np.full((1, 4), 200, np.uint8)).save(tmp_path / "b_\u0663.png")  # Arabic-Indic 3
    with pytest.raises(FileNotFoundError, match="no class maps"):
        load_pseudo_label(tmp_path, "b", "l2g_png", 0.25)

def test_a_mask_set_whose_meta_is_not_an_object_is_refused(tmp_path, capsys):
    for meta in (["zzz"], "zzz"):
        fails(_mask_folder(tmp_path, lambda d, m=meta: d.update(meta=m)), capsys, "a.json.gz", "its meta is a")
        for p in (tmp_path / "m", tmp_path / "p"):
            __import__("shutil").rmtree(p)

def test_irn_class_labels_and_voc_xml_are_checked(tmp_path):
    from samcam.data.voc import labels_from_xml, load_cls_labels

    def save(obj):
        arr = np.empty((), object)
        arr[()] = obj
        np.save(tmp_path / "cls.npy", arr, allow_pickle=True)

    vec = np.zeros(20, np.float32)
    vec[[0, 14]] = 1
    save({2007000032: vec})
    assert load_cls_labels(tmp_path / "cls.npy")["2007_000032"].tolist() == [1, 15]
    for obj, needle in (({2007000032: np.full(20, 0.7)}, "other than 0 and 1"), ({2007000032: np.full(20, np.nan)}, "other than 0 and 1"),
                        ({2007000032: np.array(["1"] * 20)}, "expected a 0/1 array"), ({2007000032: [1] * 20}, "expected a 0/1 array"),
                        ({2007000032: vec, "2007_000032": np.zeros(20)}, "two label vectors for 2007_000032")):  # fmt: skip
        save(obj)
        with pytest.raises(ValueError, match=r"cls\.npy: .*" + needle):
            load_cls_labels(tmp_path / "cls.npy")
    (tmp_path / "a.xml").write_text('<!DOCTYPE a [<!ENTITY e "person">]><annotation><object><name>&e;</name></object></annotation>')
    with pytest.raises(ValueError, match=r"a\.xml: an annotation XML with a DTD or entities"):
        labels_from_xml(tmp_path / "a.xml")
    os.mkfifo(tmp_path / "b.xml")
    with pytest.raises(ValueError, match=r"b\.xml"):
        labels_from_xml(tmp_path / "b.xml")  # refused, not waited on
    (tmp_path / "c.xml").write_text("<annotation><object><name>person</name></object><object><name>dog</name></object></annotation>")
    assert labels_from_xml(tmp_path / "c.xml").tolist() == [12, 15]

def test_an_existing_output_that_is_a_fifo_or_a_link_is_not_replaced(scored, capsys):
    os.mkfifo(scored / "out.csv")
    fails(["eval", "--pred", scored / "pred", "--gt", scored / "gt", "--csv", scored / "out.csv"], capsys, "out.csv", "not a regular file")
    (scored / "mine.csv").write_text("keep")
    (scored / "link.csv").symlink_to(scored / "mine.csv")
    fails(["eval", "--pred", scored / "pred", "--gt", scored / "gt", "--csv", scored / "link.csv"], capsys, "link.csv", "is a link")
    assert (scored / "link.csv").is_symlink() and (scored / "mine.csv").read_text() == "keep"

def test_a_reproduce_output_belongs_to_one_step(tmp_path, capsys):
    (tmp_path / "r.yml").write_text("steps:\n  - name: x\n    notebook: demo.ipynb\n    outputs: [o.txt]\n    parameters: {out_dir: o.txt}\n"
                                    "  - name: y\n    notebook: demo.ipynb\n    outputs: [./o.txt]\n    parameters: {out_dir: ./o.txt}\n")
    fails(["reproduce", "--config", tmp_path / "r.yml", "--list"], capsys, "r.yml", "output './o.txt' of step y is also an output of step x")

@pytest.mark.parametrize("args", [["train-classifier", "--ids", "{t}/ids.txt", "--out", "{t}/c.pt", "--lr-head", "1e308"],
                                  ["train-classifier", "--ids", "{t}/ids.txt", "--out", "{t}/c.pt", "--crop", "99999"],
                                  ["train-affinity", "--images", "{t}", "--cams", "{t}", "--ids", "{t}/ids.txt", "--out", "{t}/a.pt", "--lr", "1e30"]])
def test_learning_rates_and_crops_have_upper_bounds(tmp_path, capsys, args):
    fails([a.format(t=tmp_path) for a in args], capsys, args[-2])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_classifier_checkpoint_configs_and_resume_fields_are_checked(tmp_path):
    import torch

    from samcam.cam.nets import checkpoint_config
    from samcam.training import resume_state

    assert checkpoint_config({"state_dict": {}}, "c.pt") == {} and checkpoint_config({"config": {"epochs": 3}}, "c.pt") == {"epochs": 3}
    for config, needle in (("oops", "its recorded config is a str"), ({"output_stride": 8}, "recorded config: unknown classifier training field output_stride 8; known: 16, 32"),
                           ({"epochs": 0}, "recorded config: .*field epochs is 0"), ({"crop": 10**9}, "field crop is 1000000000"),
                           ({"n_classes": 10**6}, "field n_classes is 1000000"), ({"lr_head": float("nan")}, "field lr_head is nan"),
                           ({"batch_size": -5}, "field batch_size is -5"), ({"recam": "x"}, "field recam is 'x'"),
                           ({"freeze_blocks": 999}, "field freeze_blocks is 999"), ({"epochs": 10**9}, "field epochs is 1000000000"),
                           ({"shape": 3}, "its recorded config holds 'shape', not a field samcam writes")):  # fmt: skip
        with pytest.raises(ValueError, match=r"^c\.pt: (recorded config: classifier training )?" + needle):
            checkpoint_config({"config": config}, "c.pt")
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    assert resume_state({"losses": [0.5, 0.25], "seconds": 12}, "r.pt", opt) == ([0.5, 0.25], 12.0)
    for ck, needle in (({"losses": [float("nan")]}, "its losses .* are not a list of finite numbers"), ({"seconds": "x"}, "its seconds .x. are not"),
                       ({"seconds": -1.0}, "its seconds -1.0 are not"),
                       ({"optimizer": {"state": {}, "param_groups": "zz"}}, "its optimizer state does not fit")):  # fmt: skip
        with pytest.raises(ValueError, match=r"r\.pt: " + needle):
            resume_state(ck, "r.pt", opt)


def test_a_config_names_options_in_full_and_apart_from_their_values(tmp_path, capsys):
    """--out=PATH in a command step would slip past the check of what a step writes, and an
    abbreviation (--ou) past any check: the first is refused in the config, the second everywhere."""
    (tmp_path / "r.yml").write_text(f"steps:\n  - name: x\n    command: [cam2label, --cams, {tmp_path}, '--out={tmp_path / 'evil'}', --threshold, '0.2']\n"
                                    "    outputs: [results/harmless]\n")  # fmt: skip
    fails(["reproduce", "--config", tmp_path / "r.yml", "--list"], capsys, "r.yml", "'--out=", "as two items")
    assert cli.main(["cam2label", "--cams", str(tmp_path), "--ou", str(tmp_path / "abbr"), "--threshold", "0.2"]) == 2
    assert "error: unrecognized arguments: --ou" in capsys.readouterr().err
    assert not (tmp_path / "evil").exists() and not (tmp_path / "abbr").exists()


def test_a_refused_output_folder_gets_no_lock_file(scored, capsys):
    """A user's label folder given as --out is refused before anything, the lock included, is made in it."""
    for i in ("a", "b"):
        save_cam(scored / "cams" / f"{i}.npy", np.array([6]), np.ones((1, 6, 8), np.float32))
    before = sorted(p.name for p in (scored / "pred").iterdir())
    fails(["cam2label", "--cams", scored / "cams", "--out", scored / "pred", "--threshold", "0.2"], capsys, "pred", "without a provenance record")
    assert sorted(p.name for p in (scored / "pred").iterdir()) == before


@pytest.mark.parametrize("args, option", [(["train-seg", "--lr", "0"], "--lr"), (["train-seg", "--head-lr-mult", "0"], "--head-lr-mult"),
                                          (["train-classifier", "--lr-head", "0"], "--lr-head"), (["train-classifier", "--lr-backbone", "0"], "--lr-backbone"),
                                          (["train-affinity", "--lr", "0"], "--lr")])  # fmt: skip
def test_a_learning_rate_of_zero_is_refused(tmp_path, capsys, args, option):
    (tmp_path / "ids.txt").write_text("a\n")
    rest = {"train-seg": ["--images", tmp_path, "--labels", tmp_path, "--out", tmp_path / "run"],
            "train-classifier": ["--out", tmp_path / "c.pt"],
            "train-affinity": ["--images", tmp_path, "--cams", tmp_path, "--out", tmp_path / "a.pt"]}[args[0]]
    fails([*args, "--ids", tmp_path / "ids.txt", *rest], capsys, option, "0 is outside (0.0, ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.txt"]


def test_corrupt_or_overlong_files_are_named(scored, tmp_path, capsys):
    """A PNG whose chunk CRC does not match, a .npy with bytes after its content, CAM maps of no
    pixels, and JSON or YAML nested past Python's recursion limit: each named, exit 2."""
    import gzip

    data = bytearray((scored / "pred" / "a.png").read_bytes())
    data[29] ^= 1  # the IHDR chunk's CRC
    (scored / "pred" / "a.png").write_bytes(bytes(data))
    fails(["eval", "--pred", scored / "pred", "--gt", scored / "gt"], capsys, "a.png", "CRC of its 'IHDR' chunk")
    _cams(tmp_path / "c", [6], np.ones((1, 6, 8)))
    with open(tmp_path / "c" / "a.npy", "ab") as f:
        f.write(b"GARBAGE")
    fails(["cam2label", "--cams", tmp_path / "c", "--out", tmp_path / "o1", "--threshold", "0.2"], capsys, "a.npy", "7 bytes after")
    np.save(tmp_path / "c" / "a.npy", {"keys": np.array([6]), "high_res": np.zeros((1, 0, 0), np.float32)})
    fails(["cam2label", "--cams", tmp_path / "c", "--out", tmp_path / "o2", "--threshold", "0.2"], capsys, "a.npy", "CAM maps of size 0×0")
    args = _mask_folder(tmp_path)
    (tmp_path / "m" / "a.json.gz").write_bytes(gzip.compress(b"[" * 100000 + b"]" * 100000))
    fails(args, capsys, "a.json.gz", "nested too deeply")
    _cams(tmp_path / "c", [6], np.ones((1, 6, 8)))
    (tmp_path / "o3").mkdir()
    (tmp_path / "o3" / RUN_RECORD).write_text("[" * 100000 + "]" * 100000)
    (tmp_path / "o3" / "a.png").write_bytes((scored / "gt" / "a.png").read_bytes())
    fails(["cam2label", "--cams", tmp_path / "c", "--out", tmp_path / "o3", "--threshold", "0.2"], capsys, RUN_RECORD, "recursion")
    (tmp_path / "deep.yml").write_text("steps: " + "[" * 50000 + "]" * 50000)
    fails(["reproduce", "--config", tmp_path / "deep.yml", "--list"], capsys, "deep.yml", "recursion")


def test_l2g_class_maps_of_another_suffix_case_or_size_are_named(tmp_path, capsys):
    """``a_1.PNG`` is no class map samcam reads: refused by name, never passed over (its class would be
    missing from the label); class maps of one image in two sizes are named with both sizes."""
    (tmp_path / "l2g").mkdir()
    (tmp_path / "ids.txt").write_text("a\n")
    Image.fromarray(np.full((4, 6), 200, np.uint8)).save(tmp_path / "l2g" / "a_1.PNG", format="PNG")
    Image.fromarray(np.full((4, 6), 200, np.uint8)).save(tmp_path / "l2g" / "a_2.png")
    cmd = ["labels", "--method", "L2G", "--input", tmp_path / "l2g", "--ids", tmp_path / "ids.txt", "--threshold", "0.3"]
    fails([*cmd, "--out", tmp_path / "o1"], capsys, f"{tmp_path / 'l2g' / 'a_1.PNG'}: a class map named with '.PNG'")
    (tmp_path / "l2g" / "a_1.PNG").unlink()
    Image.fromarray(np.full((6, 8), 200, np.uint8)).save(tmp_path / "l2g" / "a_1.png")
    fails([*cmd, "--out", tmp_path / "o2"], capsys, f"{tmp_path / 'l2g' / 'a_2.png'}: a class map of 4 × 6 pixels beside a_1.png of 6 × 8")


def test_an_l2g_class_number_outside_the_classes_is_named(tmp_path, capsys):
    (tmp_path / "l2g").mkdir()
    for k in ("1", "99999999999999999999999"):
        Image.fromarray(np.full((4, 6), 200, np.uint8)).save(tmp_path / "l2g" / f"a_{k}.png")
    (tmp_path / "ids.txt").write_text("a\n")
    fails(["labels", "--method", "L2G", "--input", tmp_path / "l2g", "--out", tmp_path / "o", "--ids", tmp_path / "ids.txt", "--threshold", "0.3"],
          capsys, "a_99999999999999999999999.png", "class 99999999999999999999 outside the foreground classes 0..19")  # fmt: skip


def test_one_file_per_id_whatever_the_letter_case_of_its_suffix(scored, tmp_path, capsys):
    """a.PNG beside a.png (two labels for one id) or a.JSON.GZ instead of a.json.gz (a mask set passed
    over, its CAM label kept) is refused naming the file."""
    (scored / "pred" / "a.PNG").write_bytes((scored / "gt" / "a.png").read_bytes())
    fails(["eval", "--pred", scored / "pred", "--gt", scored / "gt"], capsys, "a.PNG", "samcam reads <id>.png")
    args = _mask_folder(tmp_path)
    (tmp_path / "m" / "a.json.gz").rename(tmp_path / "m" / "a.JSON.GZ")
    fails([*args, "--missing-masks", "keep-cam"], capsys, "a.JSON.GZ", "samcam reads <id>.json.gz")


def test_messages_say_what_is_wrong(tmp_path, scored, capsys, monkeypatch):
    """A corrupt cached checkpoint is not "not cached"; a --csv under a file is refused before the
    evaluation; labels that are all void are not blamed on the learning rate."""
    monkeypatch.setenv("SAMCAM_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    fails(["weights", "path", "vit_t"], capsys, "vit_t is not cached")
    (tmp_path / "home" / "mobile_sam.pt").write_bytes(b"garbage")
    fails(["weights", "path", "vit_t"], capsys, "mobile_sam.pt: not the verified vit_t checkpoint")
    (tmp_path / "afile").write_text("x")
    fails(["eval", "--pred", scored / "pred", "--gt", scored / "gt", "--csv", tmp_path / "afile" / "out.csv"], capsys, "afile is a file, not a folder")
    (tmp_path / "img").mkdir()
    (tmp_path / "void").mkdir()
    for i in ("a", "b"):
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "img" / f"{i}.jpg")
        Image.fromarray(np.full((40, 40), 255, np.uint8)).save(tmp_path / "void" / f"{i}.png")
    fails(["train-seg", "--images", tmp_path / "img", "--labels", tmp_path / "void", "--ids", scored / "ids.txt", "--out", tmp_path / "run",
           "--batch-size", "2", "--epochs", "1", "--crop", "32", "--device", "cpu"], capsys, "void", "every label pixel of the 2 training images is void")
    assert not (tmp_path / "run").exists()


def test_a_stray_upper_case_file_beside_other_ids_is_left_alone(scored, capsys):
    """Only the files of the ids asked for count: an overview.PNG in a label folder does not stop
    eval --ids, while it does stop a listing of the whole folder."""
    (scored / "pred" / "overview.PNG").write_bytes((scored / "gt" / "a.png").read_bytes())
    assert cli.main(["eval", "--pred", str(scored / "pred"), "--gt", str(scored / "gt"), "--ids", str(scored / "ids.txt")]) == 0
    capsys.readouterr()
    fails(["eval", "--pred", scored / "pred", "--gt", scored / "gt"], capsys, "overview.PNG")


def test_a_corrupt_output_is_not_counted_as_done(tmp_path):
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / "a.png")
    assert is_complete(tmp_path / "a.png")
    data = bytearray((tmp_path / "a.png").read_bytes())
    data[-20] ^= 1  # inside the IDAT chunk: Pillow reads it, samcam's reader refuses it
    (tmp_path / "b.png").write_bytes(bytes(data))
    assert not is_complete(tmp_path / "b.png")
    np.save(tmp_path / "c.npy", np.zeros(3))
    assert is_complete(tmp_path / "c.npy")
    (tmp_path / "c.npy").write_bytes((tmp_path / "c.npy").read_bytes() + b"x")
    assert not is_complete(tmp_path / "c.npy")


@pytest.mark.parametrize("option", ["--low-alpha", "--high-alpha"])
def test_a_seed_power_of_zero_is_refused_not_replaced_by_the_default(tmp_path, capsys, option):
    (tmp_path / "ids.txt").write_text("a\n")
    fails(["train-affinity", "--images", tmp_path, "--cams", tmp_path, "--ids", tmp_path / "ids.txt", "--out", tmp_path / "a.pt", option, "0"],
          capsys, option, "0 is outside (0.0, 256.0]")


# ============================================================================ the fourth audit (issue 21, third round)

@pytest.mark.parametrize("args,needle", [
    (["refine", "--mode", "everything", "--pseudo", "{t}/pred", "--masks", "{t}/m", "--out", "{t}/o", "--ids", "{t}/ids.txt", "--cams", "{t}/pred"], "--cams does not apply to --mode everything"),
    (["refine", "--mode", "everything", "--pseudo", "{t}/pred", "--masks", "{t}/m", "--out", "{t}/o", "--ids", "{t}/ids.txt", "--prompts", "point"], "--prompts does not apply"),
    (["refine", "--mode", "everything", "--pseudo", "{t}/pred", "--masks", "{t}/m", "--out", "{t}/o", "--ids", "{t}/ids.txt", "--checkpoint", "{t}/no.pt"], "--checkpoint does not apply"),
    (["refine", "--pseudo", "{t}/pred", "--images", "{t}/pred", "--masks", "{t}/m", "--out", "{t}/o", "--ids", "{t}/ids.txt"], "--masks does not apply to --mode prompted"),
    # audit 12, F16: an option given at its default value does not apply either; nor --coverage to a rule without its test
    (["refine", "--mode", "everything", "--pseudo", "{t}/pred", "--masks", "{t}/m", "--out", "{t}/o", "--ids", "{t}/ids.txt", "--prompts", "box"], "--prompts does not apply"),
    (["cam2label", "--cams", "{t}/pred", "--out", "{t}/o", "--threshold", "0.2", "--thresholds", "0.05:0.60:0.05"], "--thresholds does not apply without --sweep-gt"),
    (["merge", "--pseudo", "{t}/pred", "--masks", "{t}/m", "--out", "{t}/o", "--rule", "max_iou", "--coverage", "0.5"], "--coverage does not apply with --rule max_iou (only max_iou_imp2 tests coverage)"),
    (["merge", "--pseudo", "{t}/pred", "--masks", "{t}/m", "--out", "{t}/o", "--rule", "max_iou_imp", "--coverage", "0.85"], "--coverage does not apply with --rule max_iou_imp"),
    (["cam2label", "--cams", "{t}/pred", "--out", "{t}/o", "--threshold", "0.2", "--sweep-csv", "{t}/s.csv"], "--sweep-csv does not apply without --sweep-gt"),
    (["cam2label", "--cams", "{t}/pred", "--out", "{t}/o", "--threshold", "0.2", "--thresholds", "0.1:0.2:0.05"], "--thresholds does not apply without --sweep-gt"),
    (["train-classifier", "--ids", "{t}/ids.txt", "--out", "{t}/c.pt", "--head-only", "--lr-backbone", "0.5"], "--lr-backbone does not apply with --head-only"),
    (["train-classifier", "--voc", "{t}/gt", "--ids", "{t}/ids.txt", "--out", "{t}/c.pt", "--cls-labels", "{t}/ids.txt"], "--cls-labels {t}/ids.txt is read with --labels cls_labels only"),
    (["labels", "--method", "TransCAM", "--input", "{t}/pred", "--out", "{t}/o", "--ids", "{t}/ids.txt", "--threshold", "0.3"], "takes no background threshold"),
    (["labels", "--method", "EPS", "--input", "{t}/pred", "--out", "{t}/o", "--ids", "{t}/ids.txt"], "needs a background threshold (--threshold)"),
    (["eval-seg", "--checkpoint", "{t}/c.pt", "--images", "{t}/pred", "--gt", "{t}/gt", "--ids", "{t}/ids.txt", "--multi-scale", "--scales", "2.0"], "--scales does not apply with --multi-scale"),
    (["eval-seg", "--checkpoint", "{t}/c.pt", "--images", "{t}/pred", "--gt", "{t}/gt", "--scales", "1,1"], "scales must differ"),
    (["cam-select", "--evals", "A\x1b[2J={t}/ids.txt", "B={t}/ids.txt", "--out", "{t}/s.csv"], "the candidate name holds control or format characters"),
    (["masks", "--images", "{t}/pred", "--out", "{t}/m2", "--devices", "cpu,cpu", "--threads", "{many}"], "CPU threads, at most"),
    (["masks", "--images", "{t}/pred", "--out", "{t}/m2", "--checkpoint", "/dev/zero"], "/dev/zero: is a device or socket, not a regular file"),
    (["masks", "--images", "{t}/pred", "--out", "{t}/m2", "--ids", "{t}/zz.txt"], "pred: no image for 1 of the ids given, e.g. zz"),
])
def test_an_option_that_does_not_apply_or_exceeds_the_machine_is_named(scored, capsys, args, needle):
    """Fourth audit: options silently ignored (an option that does nothing makes a user think it acted),
    threads × processes beyond the machine, a device as a checkpoint, an id without an image; each one
    line naming the option or file, before any output is made."""
    import os

    from samcam.pipeline.workers import MAX_WORKERS_PER_CORE, available_cores

    (scored / "zz.txt").write_text("zz\n")
    many = str(MAX_WORKERS_PER_CORE * available_cores())  # the most --threads takes: beyond the machine with 2 processes
    fails([a.format(t=scored, many=many) for a in args], capsys, needle.format(t=scored))
    assert not any((scored / name).exists() for name in ("o", "m2", "s.csv", "c.pt"))
    assert sorted(os.listdir(scored / "pred")) == ["a.png", "b.png"]


class _ClosedPipe:
    """A stdout whose reader has gone: every write and flush is a broken pipe."""

    def __init__(self, path):
        self.file = open(path, "w")

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self):
        return self.file.fileno()


def test_a_closed_output_pipe_ends_quietly_and_another_broken_pipe_is_an_error(tmp_path, capsys, monkeypatch, scored):
    """`samcam reproduce --list | head -1`: the reader of stdout left; no error line, the shell's
    SIGPIPE status. A broken pipe elsewhere (a worker's) while stdout is fine is an error like any other."""
    import sys

    from samcam.pipeline import evaluate

    with monkeypatch.context() as m:
        m.setattr(sys, "stdout", _ClosedPipe(tmp_path / "out"))
        assert cli.main(["reproduce", "--list"]) == 141
    assert capsys.readouterr().err == ""

    def broken(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe to a worker")

    monkeypatch.setattr(evaluate, "evaluate_folders", broken)
    fails(["eval", "--pred", scored / "pred", "--gt", scored / "gt"], capsys, "Broken pipe to a worker")


def _said(stderr: bytes) -> list[str]:
    """What a command said on stderr: an error line or a traceback (another tool's warning, e.g. a
    mutation tester's in the same interpreter, is not the command's)."""
    return [ln for ln in stderr.decode(errors="replace").splitlines() if "error" in ln.lower() or "Traceback" in ln or "Exception" in ln]


@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_a_reader_that_left_ends_the_command_quietly_buffered_or_not(unbuffered):
    """`samcam weights list | head -0` for real: the pipe's reader is gone before the command writes.
    Under PYTHONUNBUFFERED=1 (common in containers and CI) nothing is left to flush, and the command had
    printed `error: [Errno 32] Broken pipe` with status 2."""
    import subprocess
    import sys

    r, w = os.pipe()
    os.close(r)
    try:
        env = {**os.environ, "PYTHONUNBUFFERED": unbuffered} if unbuffered else {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        p = subprocess.run([sys.executable, "-m", "samcam.cli", "weights", "list"], stdout=w, stderr=subprocess.PIPE, env=env, timeout=120)
    finally:
        os.close(w)
    assert p.returncode == 141 and not _said(p.stderr), p.stderr


def test_a_command_with_stdout_closed_runs_and_says_nothing():
    """`samcam weights list >&-` (a daemon, cron): Python's stdout is None, print writes nowhere, and the
    command ends as it would have, not in an internal error of the final flush."""
    import subprocess
    import sys

    p = subprocess.run(f"{sys.executable} -m samcam.cli weights list >&-", shell=True, stderr=subprocess.PIPE, timeout=120)
    assert p.returncode == 0 and not _said(p.stderr), p.stderr


def test_a_text_input_is_held_to_its_own_size_limit(scored, capsys):
    from samcam.io import MAX_TEXT_BYTES

    with open(scored / "big.txt", "wb") as f:
        f.truncate(MAX_TEXT_BYTES + 1)  # sparse: no disk used
    fails(["eval", "--pred", scored / "pred", "--gt", scored / "gt", "--ids", scored / "big.txt"], capsys, "big.txt", "over the 256 MiB limit for an id list")


def test_eval_seg_json_is_strict_json_with_null_for_an_absent_class(tmp_path):
    """What eval-seg writes parses as strict JSON (no bare NaN): a class absent from ground truth and
    predictions is null; a NaN that slipped into a summary is refused, not written."""
    import json

    from samcam.seg.evaluate import _finite_or_none, write_results

    assert _finite_or_none(float("nan")) is None and _finite_or_none(0.5) == 0.5 and _finite_or_none(np.float32(1.0)) == 1.0
    who = {"checkpoint": "c.pt", "checkpoint_sha256": "0" * 64}
    summary = {**who, "miou": _finite_or_none(0.25), "iou": {"cat": _finite_or_none(float("nan")), "dog": _finite_or_none(0.5)}}
    write_results(None, summary, tmp_path / "e.json")
    text = (tmp_path / "e.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in eval-seg's JSON")) == {**who, "miou": 0.25, "iou": {"cat": None, "dog": 0.5}}
    with pytest.raises(ValueError):
        write_results(None, {**who, "miou": float("nan")}, tmp_path / "f.json")
    assert not (tmp_path / "f.json").exists()


@pytest.mark.parametrize("out,refused", [("results/x", False), ("work/claims/y", False), ("results", False), ("notebooks/x", True),
                                         ("samcam", True), ("Makefile", True), (".git/x", True)])  # fmt: skip
def test_outputs_may_go_anywhere_but_samcams_own_sources(out, refused):
    from samcam.io import REPO
    from samcam.outputs import check_output

    if refused:
        with pytest.raises(ValueError, match="part of samcam itself"):
            check_output(REPO / out)
    else:
        check_output(REPO / out)


def test_an_installed_samcam_protects_only_its_package(tmp_path, monkeypatch):
    """Installed (no pyproject.toml beside the package), only the package is samcam's own: a user's
    folder called notebooks/ beside site-packages is theirs."""
    from samcam import outputs

    monkeypatch.setattr(outputs, "REPO", tmp_path)
    assert outputs.project_paths() == [Path(outputs.__file__).resolve().parent]
    outputs.check_output(tmp_path / "notebooks" / "x.csv")
    (tmp_path / "pyproject.toml").write_text("")
    with pytest.raises(ValueError, match="notebooks/, part of samcam itself"):
        outputs.check_output(tmp_path / "notebooks" / "x.csv")


def test_a_registry_threshold_is_used_only_by_a_format_of_score_maps(tmp_path, capsys):
    """L2G's registry threshold (0.25) is not passed to --format png (labels already): the command runs."""
    _labels(tmp_path / "l2g", ["a"])
    (tmp_path / "ids.txt").write_text("a\n")
    assert cli.main(["labels", "--method", "L2G", "--format", "png", "--input", str(tmp_path / "l2g"), "--out", str(tmp_path / "o"),
                     "--ids", str(tmp_path / "ids.txt")]) == 0  # fmt: skip
    assert (tmp_path / "o" / "a.png").exists()


def test_cam2label_refused_labels_leave_the_sweep_table_alone(tmp_path, capsys):
    """A label folder made from other CAMs refuses the command before the sweep writes its table
    (a failed reproduce step once overwrote a committed table)."""
    _cams(tmp_path / "cams", [6], np.ones((1, 6, 8)))
    _labels(tmp_path / "gt", ["a"])
    assert cli.main(["cam2label", "--cams", str(tmp_path / "cams"), "--out", str(tmp_path / "o"), "--threshold", "0.2"]) == 0
    _cams(tmp_path / "cams", [7], np.ones((1, 6, 8)))  # other CAMs
    (tmp_path / "s.csv").write_text("threshold,miou\n0.1,0.5\n")  # an earlier sweep's table, which this one would replace
    fails(["cam2label", "--cams", tmp_path / "cams", "--out", tmp_path / "o", "--threshold", "0.2", "--sweep-gt", tmp_path / "gt",
           "--sweep-csv", tmp_path / "s.csv"], capsys, "differs in content")  # fmt: skip
    assert (tmp_path / "s.csv").read_text() == "threshold,miou\n0.1,0.5\n"


def test_a_cam_map_larger_than_an_image_may_be_is_refused_before_it_is_read():
    """Score maps of 13400 × 13400 (a 180 MB file of bytes, 1.3 GiB once converted) are named by their
    size before any conversion: the same pixel limit as every image (a view: no memory is used here)."""
    from samcam.cam.files import score_maps
    from samcam.io import MAX_PIXELS

    huge = np.broadcast_to(np.zeros(1, np.float32), (1, 13400, 13400))
    with pytest.raises(ValueError, match=re.escape(f"c/a.npy: high_res: declares 13400×13400 pixels, over the limit of {MAX_PIXELS}")):
        score_maps(huge, "c/a.npy", "high_res")
    side = int(MAX_PIXELS**0.5)
    assert score_maps(np.broadcast_to(np.zeros(1, np.float32), (1, 1, side)), "c/a.npy").shape == (1, 1, side)
    many = np.broadcast_to(np.zeros(1, np.float32), (100, 6000, 6000))  # each map an allowed size, 14 GB of float32 together
    with pytest.raises(ValueError, match=re.escape("c/a.npy: high_res holds 3600000000 scores, over the 4 GiB an input may take as float32")):
        score_maps(many, "c/a.npy", "high_res")


@pytest.mark.parametrize("command", [
    ["cam2label", "--cams", "{t}/cams", "--out", "{t}/notes.txt", "--threshold", "0.2"],
    ["train-seg", "--images", "{t}/lab", "--labels", "{t}/lab", "--ids", "{t}/ids.txt", "--out", "{t}/notes.txt", "--max-steps", "1"],
    ["masks", "--images", "{t}/lab", "--out", "{t}/notes.txt"],
    ["affinity", "--cams", "{t}/cams", "--gt-affinity", "{t}/lab", "--out", "{t}/notes.txt"],
])  # fmt: skip
def test_an_output_folder_where_a_file_stands_is_refused_at_once(tmp_path, capsys, command):
    """A user's file at an output folder's path is named as such before any work (train-seg said
    `[Errno 17] File exists` once its data were loaded and its model built)."""
    _cams(tmp_path / "cams", [3], np.ones((1, 4, 4)))
    _labels(tmp_path / "lab", ["a"], 3, (4, 4))
    (tmp_path / "ids.txt").write_text("a\n")
    (tmp_path / "notes.txt").write_text("mine")
    fails([c.replace("{t}", str(tmp_path)) for c in command], capsys, f"output {tmp_path / 'notes.txt'}: exists and is not a folder")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    (tmp_path / "notes.txt").unlink()
    (tmp_path / "notes.txt").symlink_to(tmp_path / "gone")  # a broken link: named, not `[Errno 17] File exists`
    fails([c.replace("{t}", str(tmp_path)) for c in command], capsys,
          f"output {tmp_path / 'notes.txt'}: is a link to {tmp_path / 'gone'}, which does not exist; give a folder's path")
    assert not (tmp_path / "gone").exists()


# ----------------------------------------------------------------------------- audit 8


def test_score_maps_are_floats_in_0_1(tmp_path, capsys):
    """A CAM of 0..255 bytes or of scores outside [0, 1] is refused, not compared with a threshold as it stands."""
    from samcam.cam.files import score_maps

    with pytest.raises(ValueError, match=re.escape("c/a.npy: high_res holds uint8 values, expected scores in [0, 1] as floating-point")):
        score_maps(np.full((1, 4, 4), 30, np.uint8), "c/a.npy", "high_res")
    for lo, hi in ((-0.5, 1.0), (0.0, 30.0)):
        with pytest.raises(ValueError, match=re.escape(f"c/a.npy: high_res holds scores from {lo:.4g} to {hi:.4g}, expected [0, 1]")):
            score_maps(np.array([[[lo, hi]]], np.float32), "c/a.npy", "high_res")
    assert score_maps(np.array([[[0.0, 1.0005]]]), "c/a.npy").max() == np.float32(1.0005)  # float rounding of a normalised map
    _cams(tmp_path / "cams", [6], np.full((1, 6, 8), 30.0))
    fails(["cam2label", "--cams", tmp_path / "cams", "--out", tmp_path / "o", "--threshold", "0.2"], capsys, "a.npy", "expected [0, 1]")
    assert not (tmp_path / "o" / "a.png").exists()


def test_l2g_class_maps_are_read_by_their_bit_depth(tmp_path, capsys):
    """A 16-bit class map of 10000 scores 10000/65535 = 0.153 (Pillow's convert("L") clipped it to 1.0);
    a colour map is refused, naming the file."""
    (tmp_path / "ids.txt").write_text("a\n")
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((6, 8), 10000, np.uint16)).save(tmp_path / "in" / "a_3.png")
    assert cli.main(["labels", "--method", "L2G", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "lo"),
                     "--ids", str(tmp_path / "ids.txt"), "--threshold", "0.3"]) == 0  # fmt: skip
    assert np.unique(np.array(Image.open(tmp_path / "lo" / "a.png"))).tolist() == [0]  # 0.153 < 0.3: background
    assert cli.main(["labels", "--method", "L2G", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "hi"),
                     "--ids", str(tmp_path / "ids.txt"), "--threshold", "0.1"]) == 0  # fmt: skip
    assert np.unique(np.array(Image.open(tmp_path / "hi" / "a.png"))).tolist() == [4]  # 0.153 > 0.1: class 3 (0-based), label 4
    capsys.readouterr()
    (tmp_path / "in" / "a_3.png").unlink()
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "in" / "a_3.png")
    err = fails(["labels", "--method", "L2G", "--input", tmp_path / "in", "--out", tmp_path / "rgb", "--ids", tmp_path / "ids.txt",
                 "--threshold", "0.3"], capsys)  # fmt: skip
    assert err == (f"samcam labels: error: {tmp_path / 'in' / 'a_3.png'}: unreadable class map (a class map in mode RGB; expected an 8- or "
                   "16-bit grayscale PNG)")  # the file named once (audit 12, F20: '…/a_<class>.png: …/a_3.png: …')


def test_a_key_given_twice_is_refused(tmp_path, capsys):
    """JSON keeps the last of two equal keys without a word: a mask file saying it is of two images,
    or a record with two scores, is refused instead."""
    import gzip

    from samcam.io import json_loads

    assert json_loads('{"a": 1, "b": {"c": 2}}') == {"a": 1, "b": {"c": 2}}
    with pytest.raises(ValueError, match=re.escape("the key 'image_id' is given twice in one object")):
        json_loads('{"x": [{"image_id": "a", "h": 1, "image_id": "b"}]}')
    command = _mask_folder(tmp_path)
    path = tmp_path / "m" / "a.json.gz"
    text = gzip.decompress(path.read_bytes()).decode()
    assert text.startswith("{")
    path.write_bytes(gzip.compress(('{"image_id": "b", "image_id": "a", ' + text[1:]).encode()))
    fails(command, capsys, "a.json.gz", "the key 'image_id' is given twice")
    assert not (tmp_path / "o" / "a.png").exists()


@pytest.mark.parametrize("args, message", [
    (["cam2label", "--cams", "{t}/cams"], "give --out (labels at --threshold), --sweep-gt (a threshold sweep), or both"),
    (["cam2label", "--cams", "{t}/cams", "--out", "", "--threshold", "0.2"], "argument --out: empty; give a value"),
    (["train-seg", "--images", "{t}", "--labels", "{t}", "--ids", "{t}/ids.txt", "--out", " "], "argument --out: empty"),
    (["seg-search", "--runs", "{t}", "--out", "{t}/o", "--configs", "a", ""], "argument --configs: empty"),
    (["cam2label", "--cams", "{t}/cams", "--sweep-gt", "{t}/gt", "--thresholds", "0:0.000001:0.0000001"], "a finite STEP >= 0.000001"),
    (["cam2label", "--cams", "{t}/cams", "--sweep-gt", "{t}/gt", "--thresholds", "0:1:inf"],  # audit 12, F20: 0 · inf said "threshold nan"
     "--thresholds 0:1:inf: need 0 <= START <= STOP <= 1 and a finite STEP >= 0.000001"),
    (["weights", "list", "vit_t"], "weights list takes no checkpoint name (given 'vit_t')"),
])  # fmt: skip
def test_an_empty_or_idle_command_is_refused(tmp_path, capsys, monkeypatch, args, message):
    """An empty value (an unset $OUT) is no folder, not "nothing" or the current folder; a command told
    to do nothing says so; thresholds finer than the 6 decimals they are kept to would repeat."""
    monkeypatch.chdir(tmp_path)
    _cams(tmp_path / "cams", [6], np.full((1, 6, 8), 0.5))
    _labels(tmp_path / "gt", ["a"], 7)
    (tmp_path / "ids.txt").write_text("a\n")
    fails([a.replace("{t}", str(tmp_path)) for a in args], capsys, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cams", "gt", "ids.txt"]


def test_seg_search_names_a_configuration_without_a_run(tmp_path, capsys):
    (tmp_path / "runs" / "a_s0").mkdir(parents=True)
    fails(["seg-search", "--runs", tmp_path / "runs", "--out", tmp_path / "o", "--configs", "zz"], capsys,
          "no finished run of configuration 'zz'")  # fmt: skip
    assert not (tmp_path / "o").exists()


def test_a_reproduce_config_is_a_mapping_of_steps_and_notebook_parameters_are_the_notebooks(tmp_path, capsys):
    """A misspelt `step:` (or a notebook given as a config) is no empty config; an unknown top-level key
    is refused; a parameter the notebook does not have would be passed on unused by papermill while the
    notebook wrote where its own default says, so it is refused before anything runs."""
    from samcam import reproduce

    (tmp_path / "typo.yml").write_text("step:\n  - name: a\n    command: [eval, --pred, x, --gt, y]\n")
    (tmp_path / "extra.yml").write_text("steps: []\nnote: x\n")
    (tmp_path / "param.yml").write_text("steps:\n  - {name: t, notebook: 03_paper_table.ipynb, parameters: {result_dir: results/x}, outputs: [results/x/t.md]}\n")
    for name, message in (("typo", "expected a mapping with a 'steps' list"), ("extra", "unknown top-level keys note"),
                          ("param", "parameter 'result_dir' is not one of 03_paper_table.ipynb's parameters (dataset, results_dir)")):  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(message)):
            reproduce.load_config(tmp_path / f"{name}.yml")
    (tmp_path / "empty.yml").write_text("steps: []\n")
    with pytest.raises(ValueError, match="its steps list is empty"):  # nothing to run is said (audit 11, F17)
        reproduce.load_config(tmp_path / "empty.yml")
    fails(["reproduce", "--config", reproduce.NOTEBOOKS / "demo.ipynb", "--list"], capsys, "demo.ipynb", "'steps' list")


def test_export_head_names_a_head_never_a_path(tmp_path, capsys):
    """The head's name is a name inside samcam/cam/heads/ (an absolute path or ../ wrote elsewhere);
    the held-out mAP is a finite percentage (NaN was recorded, which is not JSON)."""
    import importlib.util

    from samcam.cam.nets import SHIPPED_HEADS
    from samcam.io import REPO

    spec = importlib.util.spec_from_file_location("export_head_script", REPO / "scripts" / "export_head.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    before = sorted(SHIPPED_HEADS.iterdir())
    common = ["--val-map", "50", "--trained-on", "x", "--command", "y"]
    for name in (str(tmp_path / "abs"), "../../../notebooks/evil", "a\nb", ".hidden"):
        assert script.main([str(tmp_path / "clf.pt"), name, *common]) == 2
        assert "export_head: error: the head's name: id" in capsys.readouterr().err
    for value in ("nan", "inf", "101"):
        with pytest.raises(SystemExit) as e:
            script.main([str(tmp_path / "clf.pt"), "h", "--val-map", value, "--trained-on", "x", "--command", "y"])
        assert e.value.code == 2
    # audit 9's F15: text that becomes the head's provenance is one line, not blank; an option is given once
    capsys.readouterr()
    for extra, said in ((["--threshold", "0.2", "--threshold-from", ""], "export_head: error: argument --threshold-from: '' is not one line"),
                        (["--trained-on", "a\nb"], "argument --trained-on: 'a\\nb' is not one line of printable text"),
                        (["--command", " "], "argument --command: ' ' is not one line"),
                        (["--val-map", "60"], "argument --val-map: given twice")):  # fmt: skip
        args = [*common, *extra] if extra[0] != "--trained-on" else ["--val-map", "50", *extra, "--command", "y"]
        with pytest.raises(SystemExit) as e:
            script.main([str(tmp_path / "clf.pt"), "h", *args])
        assert e.value.code == 2 and said in capsys.readouterr().err, extra
    assert sorted(SHIPPED_HEADS.iterdir()) == before and not list(tmp_path.iterdir())


def test_cli_reference_says_when_its_file_is_not_a_file(tmp_path):
    import shutil

    from samcam.io import REPO

    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "cli_reference.py", tmp_path / "scripts")
    doc = tmp_path / "docs" / "cli.md"
    doc.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for make, kind in ((None, "a folder"), (lambda: os.mkfifo(doc), "not a regular file (a pipe or a device)"),  # SC_cli1: a FIFO was "a link or a folder"
                       (lambda: doc.symlink_to(tmp_path / "elsewhere.md"), "a link")):  # fmt: skip
        if make is not None:
            shutil.rmtree(doc) if doc.is_dir() and not doc.is_symlink() else doc.unlink()
            make()
        for extra in ([], ["--check"]):
            r = subprocess.run([sys.executable, str(tmp_path / "scripts" / "cli_reference.py"), *extra], capture_output=True, text=True, env=env,
                               timeout=60)  # fmt: skip
            assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
            assert r.stderr.strip() == f"cli_reference: error: {doc}: {kind}, not the reference's file; move it away"
    assert not (tmp_path / "elsewhere.md").exists()


def test_a_cached_checkpoint_of_the_wrong_size_is_never_read(tmp_path, monkeypatch):
    """fetch compares the size before the hash: a 1 GiB file at the checkpoint's name is refetched unread."""
    from samcam.sam import weights

    monkeypatch.setenv("SAMCAM_HOME", str(tmp_path))
    ck = weights.get_checkpoint("vit_t")
    with open(tmp_path / ck.filename, "wb") as f:
        f.truncate(ck.size + 1)
    read = []
    monkeypatch.setattr(weights, "sha256_file", lambda path: read.append(path) or "0" * 64)
    monkeypatch.setattr(weights, "_download", lambda ck, folder, progress: folder / "fetched")
    assert weights.fetch("vit_t", use_fallback=False) == weights.home() / "fetched" and read == []
    with open(tmp_path / ck.filename, "wb") as f:  # the right size: hashed (once), found wrong, fetched again
        f.truncate(ck.size)
    assert weights.fetch("vit_t", use_fallback=False) == weights.home() / "fetched" and read == [tmp_path / ck.filename]


def test_train_seg_checks_its_evaluation_files_before_training(tmp_path, capsys):
    """An evaluation id without its ground truth fails at once, not after the whole training."""
    (tmp_path / "img").mkdir()
    for i in ("a", "b"):
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "img" / f"{i}.png")
    _labels(tmp_path / "lab", ["a", "b"], 3, (32, 32))
    (tmp_path / "ids.txt").write_text("a\nb\n")
    (tmp_path / "eval.txt").write_text("nope\n")
    args = ["train-seg", "--images", tmp_path / "img", "--labels", tmp_path / "lab", "--ids", tmp_path / "ids.txt", "--out", tmp_path / "run",
            "--eval-gt", tmp_path / "lab", "--eval-ids", tmp_path / "eval.txt", "--crop", "32", "--batch-size", "2", "--epochs", "1", "--device", "cpu"]
    fails(args, capsys, f"1 ground-truth label files missing: {tmp_path / 'lab' / 'nope.png'}")
    assert not (tmp_path / "run" / "last.pt").exists()
    # a training image among the evaluation ids: its score would rank in seg-search as a val score (audit 10, F10)
    (tmp_path / "eval.txt").write_text("nope\nb\n")
    fails(args, capsys, f"{tmp_path / 'eval.txt'}: 1 of its 2 ids are training images of --ids {tmp_path / 'ids.txt'} (e.g. b); train-seg scores held-out images")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_eval_refuses_a_folder_scored_against_itself(scored, capsys):
    fails(["eval", "--pred", scored / "gt", "--gt", scored / "gt"], capsys, "are one folder")
    (scored / "link").symlink_to(scored / "gt")
    fails(["eval", "--pred", scored / "link", "--gt", scored / "gt"], capsys, "are one folder")


@pytest.mark.parametrize("kind", ["symbolic", "hard"])
def test_eval_refuses_a_prediction_that_is_its_ground_truth_file(scored, capsys, kind):
    # audit 12, F7: predictions linked to the ground-truth files scored mIoU 100.00, exit 0
    pred = scored / "pred"
    (pred / "b.png").unlink()
    if kind == "symbolic":
        (pred / "b.png").symlink_to(scored / "gt" / "b.png")
    else:
        os.link(scored / "gt" / "b.png", pred / "b.png")
    fails(["eval", "--pred", pred, "--gt", scored / "gt"], capsys,
          f"{pred / 'b.png'}: is the file {scored / 'gt' / 'b.png'} itself (a link to it); one file cannot be both the prediction and the ground truth")
    (pred / "b.png").unlink()
    (pred / "b.png").write_bytes((scored / "gt" / "b.png").read_bytes())  # a copy is a prediction that happens to be right
    assert cli.main(["eval", "--pred", str(pred), "--gt", str(scored / "gt")]) == 0


def test_an_image_that_is_its_label_file_is_refused(tmp_path):
    from samcam.data.spaces import VOC
    from samcam.io import read_labelled_image

    _labels(tmp_path / "gt", ["a"], 3)
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").symlink_to(tmp_path / "gt" / "a.png")  # PNG images are images too
    with pytest.raises(ValueError) as e:
        read_labelled_image(tmp_path / "img" / "a.png", tmp_path / "gt" / "a.png", VOC, "ground-truth")
    assert str(e.value) == (f"{tmp_path / 'img' / 'a.png'}: is the file {tmp_path / 'gt' / 'a.png'} itself (a link to it); "
                            "one file cannot be both the image and its ground-truth")  # fmt: skip


def test_a_label_with_transparency_or_frames_is_refused(scored, capsys):
    """A colour label's transparent pixels ("not annotated") are no class; an animated PNG is no one label.
    Both were read without a word (transparent as the RGB beneath, an animation as its first frame)."""
    from samcam.data.spaces import VOC

    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., :3] = VOC.palette[7]
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(scored / "pred" / "a.png")
    assert cli.main(["eval", "--pred", str(scored / "pred"), "--gt", str(scored / "gt")]) == 0  # opaque: read as its colours
    capsys.readouterr()
    rgba[:, :4, 3] = 0
    Image.fromarray(rgba, "RGBA").save(scored / "pred" / "a.png")
    fails(["eval", "--pred", scored / "pred", "--gt", scored / "gt"], capsys, "a.png: a colour label with transparent pixels")
    frames = [Image.fromarray(np.full((6, 8), v, np.uint8), "P") for v in (0, 7)]
    for f in frames:
        f.putpalette(VOC.palette.reshape(-1).tolist())
    frames[0].save(scored / "pred" / "a.png", save_all=True, append_images=frames[1:])
    fails(["eval", "--pred", scored / "pred", "--gt", scored / "gt"], capsys, "a.png", "an animated PNG (acTL chunk)")
    frames = [Image.fromarray(rgba), Image.fromarray(np.zeros_like(rgba))]
    frames[0].save(scored / "pred" / "a.png", save_all=True, append_images=frames[1:])
    fails(["eval", "--pred", scored / "pred", "--gt", scored / "gt"], capsys, "a.png", "an animated image of 2 frames")


def test_an_l2g_class_map_with_a_grey_palette_is_read_as_its_grey_levels(tmp_path, capsys):
    """A PNG optimiser may store a grey map as a palette of greys: read as the greys; a colour palette is refused."""
    (tmp_path / "ids.txt").write_text("a\n")
    (tmp_path / "in").mkdir()
    grey = np.zeros((6, 8), np.uint8)
    grey[:, 4:] = 204  # 0.8
    Image.fromarray(grey, "L").convert("P").save(tmp_path / "in" / "a_3.png")
    assert Image.open(tmp_path / "in" / "a_3.png").mode == "P"
    assert cli.main(["labels", "--method", "L2G", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "o"),
                     "--ids", str(tmp_path / "ids.txt"), "--threshold", "0.5"]) == 0  # fmt: skip
    label = np.array(Image.open(tmp_path / "o" / "a.png"))
    assert (label[:, :4] == 0).all() and (label[:, 4:] == 4).all()
    capsys.readouterr()
    im = Image.fromarray(grey, "P")
    im.putpalette([255, 0, 0] * 256)
    im.save(tmp_path / "in" / "a_3.png")
    fails(["labels", "--method", "L2G", "--input", tmp_path / "in", "--out", tmp_path / "c", "--ids", tmp_path / "ids.txt",
           "--threshold", "0.5"], capsys, "a_3.png", "a class map with a colour palette")  # fmt: skip


def test_a_mask_record_naming_its_segmentation_twice_is_refused_by_the_fast_reader(tmp_path, capsys):
    """A record naming its segmentation twice, in a file otherwise laid out as samcam writes it, is
    refused by the merge's reader as by the full one."""
    import gzip

    from samcam.sam.mask_files import read_compact_runs

    command = _mask_folder(tmp_path)
    path = tmp_path / "m" / "a.json.gz"
    assert len(read_compact_runs(path).offsets) == 3  # two masks
    text = gzip.decompress(path.read_bytes()).decode()
    seg = re.search(r'"segmentation":\{[^}]*\}', text)
    path.write_bytes(gzip.compress((text[: seg.end()] + "," + seg.group(0) + text[seg.end() :]).encode()))
    with pytest.raises(ValueError, match="the key 'segmentation' is given twice"):
        read_compact_runs(path)
    fails(command, capsys, "a.json.gz", "the key 'segmentation' is given twice")


def test_folder_variables_are_read_as_folders(tmp_path, monkeypatch):
    """SAMCAM_DATA, SAMCAM_HOME and SAMCAM_VOC_ROOT (audit 9, F13): empty is unset, a leading ~ is the
    home folder (an env file's value reaches samcam unexpanded), blank or a file is refused by name."""
    from samcam.data.voc import VocTree
    from samcam.io import data_root, env_folder
    from samcam.sam import weights

    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("HOME", str(tmp_path))
    for name, read in (("SAMCAM_DATA", data_root), ("SAMCAM_HOME", weights.home), ("SAMCAM_VOC_ROOT", VocTree.given_root)):
        monkeypatch.setenv(name, "~/cache")
        assert read() == tmp_path / "cache" == env_folder(name)
        monkeypatch.setenv(name, "   ")
        with pytest.raises(ValueError, match=rf"^{name}='   ' is blank; unset it or name a folder$"):
            read()
        monkeypatch.setenv(name, str(tmp_path / "f"))
        with pytest.raises(ValueError, match=rf"^{name}={re.escape(str(tmp_path / 'f'))}: names a file, not a folder$"):
            read()
        monkeypatch.setenv(name, "")
        assert env_folder(name) is None and read() != Path("")


def test_a_plain_pickle_checkpoint_is_refused_in_one_line_without_torchs_advice(tmp_path, capsys):
    """torch warned (two lines) about a plain pickle's protocol before refusing it, and its refusal
    advised weights_only=False, which would run the file's code (audit 9, F11)."""
    import pickle

    from samcam.cli import main

    with open(tmp_path / "plain.pt", "wb") as f:
        pickle.dump({"a": {1, 2}}, f, protocol=4)  # a set: no tensor, no plain value torch takes
    (tmp_path / "ids.txt").write_text("a\n")
    assert main(["eval-seg", "--checkpoint", str(tmp_path / "plain.pt"), "--images", str(tmp_path / "img"), "--gt", str(tmp_path), "--ids", str(tmp_path / "ids.txt")]) == 2
    err = capsys.readouterr().err
    assert err == (f"samcam eval-seg: error: {tmp_path / 'plain.pt'}: not a readable PyTorch checkpoint (it holds objects other than tensors "
                   "and plain values; samcam never runs code from a checkpoint)\n")


@pytest.mark.parametrize("command,images,labels", [
    ("eval-seg --checkpoint {t}/c.pt --images {images} --gt {labels} --ids {t}/ids.txt", "--images", "--gt"),
    ("train-seg --images {images} --labels {labels} --ids {t}/ids.txt --out {t}/run", "--images", "--labels"),
    ("train-seg --images {images} --labels {t}/other --ids {t}/ids.txt --out {t}/run --eval-gt {labels} --eval-ids {t}/ev.txt", "--images", "--eval-gt"),
    ("affinity-sweep --images {images} --cams {t}/other --gt {labels} --checkpoint {t}/c.pt --ids {t}/ev.txt --alphas 16", "--images", "--gt"),
    ("train-affinity --images {images} --seed-labels {labels} --ids {t}/ids.txt --out {t}/a.pt", "--images", "--seed-labels"),
    ("refine --pseudo {labels} --images {images} --out {t}/run --ids {t}/ids.txt", "--images", "--pseudo"),
    ("cam --images {images} --out {t}/run --checkpoint {t}/c.pt --voc {t}/voc", "--images", "the ground truth of --voc"),
    ("eval --pred {images} --gt {labels}", "--pred", "--gt"),
])
@pytest.mark.parametrize("how", ["same path", "a link"])
def test_one_folder_given_as_images_and_as_their_labels_is_refused(tmp_path, capsys, command, images, labels, how):
    """A label folder given as the images too was read as images (a palette label as a colour
    picture), trained on or scored, exit 0 (audit 11, F3: eval-seg, train-seg, affinity-sweep); the
    same folder by another path (a link) is the same folder. One check, before any output."""
    gt = tmp_path / "voc" / "SegmentationClass"
    _labels(gt, ["a", "b"])
    (tmp_path / "other").mkdir()
    (tmp_path / "ids.txt").write_text("a\nb\n")
    (tmp_path / "ev.txt").write_text("b\n")
    (tmp_path / "c.pt").write_bytes(b"")
    (tmp_path / "link").symlink_to(gt)
    given = gt if how == "same path" else tmp_path / "link"
    args = command.format(t=tmp_path, images=given, labels=gt).split()
    before = sorted(tmp_path.rglob("*"))
    err = fails(args, capsys)
    assert err == f"samcam {args[0]}: error: {images} {given} and {labels} {gt} are one folder: " + (
        "the labels would be scored against themselves (100)" if args[0] == "eval" else
        "its label maps would be read as the images; give the image folder (<id>.jpg) to --images")  # fmt: skip
    assert sorted(tmp_path.rglob("*")) == before  # no output, no lock


@pytest.mark.parametrize("kind", ["truncated", "text", "empty"])
def test_a_checkpoint_cut_short_or_of_text_is_named_in_whole_words(tmp_path, capsys, kind):
    """torch's reason for a truncated checkpoint was cut at 200 characters, mid-sentence ('... your
    checkpoint file is)'); a text file was said to hold 'objects other than tensors' (train-classifier)
    or '(101)' (eval-seg), an empty one '(EOFError)' (audit 11, F13, F15)."""
    import torch

    ck = tmp_path / "c.pt"
    if kind == "truncated":
        torch.save({"w": torch.zeros(1000)}, ck)
        ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
        with pytest.raises(Exception) as e:
            torch.load(ck, weights_only=True)
        why = str(e.value).splitlines()[0].split(". ")[0]  # torch's first sentence, whole
        assert len(why) > 20
    else:
        ck.write_text("my notes on the run\n" if kind == "text" else "")
        why = "it holds text" if kind == "text" else "an empty file"
    for d in ("img", "gt"):
        (tmp_path / d).mkdir()
    (tmp_path / "ids.txt").write_text("a\n")
    err = fails(["eval-seg", "--checkpoint", ck, "--images", tmp_path / "img", "--gt", tmp_path / "gt", "--ids", tmp_path / "ids.txt"], capsys)
    assert err.startswith(f"samcam eval-seg: error: {ck}: not a readable PyTorch checkpoint ({why}")
    if kind == "truncated":
        assert err.endswith(f"({why})")


def test_an_argument_no_option_takes_is_refused_by_its_command(tmp_path, capsys):
    """``samcam refine ... --format irn_npy`` was refused as ``samcam: error: unrecognized arguments``,
    by the top-level parser, not by the command that was given them (audit 11, F15)."""
    err = fails(["refine", "--mode", "everything", "--pseudo", tmp_path, "--masks", tmp_path, "--out", tmp_path / "o",
                 "--ids", tmp_path / "ids.txt", "--format", "irn_npy"], capsys)  # fmt: skip
    assert err == "samcam refine: error: unrecognized arguments: --format irn_npy (see --help)"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["absent", "folder"])
def test_eval_seg_names_a_checkpoint_that_is_no_file(tmp_path, capsys, kind):
    """eval-seg hashes its checkpoint before it evaluates (the summary's target is checked first):
    an absent checkpoint or a folder is named in one line, as the loader names them."""
    from samcam.cli import main

    ck = tmp_path / "c.pt"
    if kind == "folder":
        ck.mkdir()
    (tmp_path / "ids.txt").write_text("a\n")
    assert main(["eval-seg", "--checkpoint", str(ck), "--images", str(tmp_path / "img"), "--gt", str(tmp_path), "--ids", str(tmp_path / "ids.txt")]) == 2
    expected = f"checkpoint not found: {ck}" if kind == "absent" else f"{ck}: is a folder, not a regular file; a checkpoint must be a file"
    assert capsys.readouterr().err == f"samcam eval-seg: error: {expected}\n"


def test_a_table_output_replaces_only_a_table_of_its_kind(scored, capsys):
    """Audit 9's F7: `eval --csv notes.txt` replaced a user's text and `--csv ids2.txt` an id list, exit 0.
    A table's path ends with .csv, and a file there is replaced only when it is a table of the same
    kind (its header's first column); the command's own table is replaced on a rerun."""
    args = ["eval", "--pred", scored / "pred", "--gt", scored / "gt", "--ids", scored / "ids.txt"]
    (scored / "notes.txt").write_text("my notes\n")
    fails([*args, "--csv", scored / "notes.txt"], capsys, "notes.txt", "a table is written as CSV; give a path ending with .csv")
    (scored / "notes.csv").write_text("my notes, kept\n1,2\n")
    fails([*args, "--csv", scored / "notes.csv"], capsys, "notes.csv", "exists and is not a table of this kind (a CSV whose header starts "
          "class,iou)", "remove it to replace it")
    assert (scored / "notes.txt").read_text() == "my notes\n" and (scored / "notes.csv").read_text() == "my notes, kept\n1,2\n"
    assert cli.main([str(a) for a in [*args, "--csv", scored / "t.csv", "--per-image-csv", scored / "p.csv"]]) == 0
    first = (scored / "t.csv").read_text()
    assert first.startswith("class,") and (scored / "p.csv").read_text().startswith("id,miou,")
    (scored / "t.csv").write_text(first.replace("0.", "0.9", 1))  # the same kind of table, edited: a rerun replaces it
    assert cli.main([str(a) for a in [*args, "--csv", scored / "t.csv"]]) == 0 and (scored / "t.csv").read_text() == first
    fails([*args, "--csv", scored / "p.csv"], capsys, "p.csv", "header starts class,iou)")  # a per-image table is another kind
    fails([*args, "--per-image-csv", scored / "t.csv"], capsys, "t.csv", "header starts id,miou)")
    # review 10: a notebook's table of the same first column (02's per-class and per-image tables) is another kind too
    for name, header in (("nb_class.csv", "class,iou_before,iou_after\n"), ("nb_image.csv", "id,miou_before,miou_after\n")):
        (scored / name).write_text(header)
        flag = "--csv" if name == "nb_class.csv" else "--per-image-csv"
        fails([*args, flag, scored / name], capsys, name, "is not a table of this kind")
        assert (scored / name).read_text() == header
    (scored / "empty.csv").write_bytes(b"")  # an empty file (mktemp's) holds nothing to lose
    assert cli.main([str(a) for a in [*args, "--csv", scored / "empty.csv"]]) == 0 and (scored / "empty.csv").read_text() == first
    # audit 10, F9: a user's sheet extending samcam's header (its first columns the same) was replaced
    header = first.splitlines()[0]
    user = f"{header},my_comment\nbackground,0.5,do not lose this\n"
    (scored / "user.csv").write_text(user)
    fails([*args, "--csv", scored / "user.csv"], capsys, "user.csv", f"holds a table with other columns than this {header.count(',') + 1}-column table",
          "it is left as it was")  # fmt: skip
    assert (scored / "user.csv").read_text() == user


def test_is_table_reads_the_first_fields_of_the_header(tmp_path):
    from samcam.outputs import is_table

    for text, expected in ((b"class,iou\n", True), (b"\xef\xbb\xbfclass,iou\r\n", True), (b'"class","iou"\n', True), (b"class,iou,x\n", True),
                           (b"class\n", False), (b"class,iou_before\n", False), (b"classes,iou\n", False), (b" class,iou\n", False),
                           (b"iou,class\n", False), (b"", False), (b"\xff\xfeclass,iou\n", False), (b"class,iou" + b"x" * 70000, False)):  # fmt: skip
        (tmp_path / "t.csv").write_bytes(text)
        assert is_table(tmp_path / "t.csv", ("class", "iou")) is expected, text[:20]
    assert is_table(tmp_path / "missing.csv", ("class", "iou")) is False and is_table(tmp_path / "t.csv", ()) is False


def test_a_note_given_on_a_resume_is_kept(tmp_path):
    """A note is stored, not compared as a parameter: a resume given a note (cam2label --note on a second
    run, to say how the threshold was chosen) records it beside the earlier ones instead of dropping it;
    one that contradicts a recorded note is refused."""
    import json

    from samcam.outputs import RUN_RECORD, claim_output

    with claim_output(tmp_path / "o", "s", {}, {"a": 1}, notes={"note": "first", "other": "kept"}):
        (tmp_path / "o" / "x.png").write_bytes(b"x")
    record = tmp_path / "o" / RUN_RECORD
    before = record.read_text()
    with claim_output(tmp_path / "o", "s", {}, {"a": 1}):
        pass
    assert record.read_text() == before  # no note given: the record is left as it was
    with claim_output(tmp_path / "o", "s", {}, {"a": 1}, notes={"note": "first", "added": "later"}):
        pass
    rec = json.loads(record.read_text())
    assert rec["notes"] == {"note": "first", "other": "kept", "added": "later"} and rec["parameters"] == {"a": 1}
    assert {k: v for k, v in rec.items() if k != "notes"} == {k: v for k, v in json.loads(before).items() if k != "notes"}
    # review 10: a note saying otherwise would rewrite how the outputs already there were made
    with pytest.raises(ValueError, match=re.escape(f"{record}: this folder's outputs are recorded with note 'first', not 'second'; resume with "
                                                   "the same note (or none)")):
        claim_output(tmp_path / "o", "s", {}, {"a": 1}, notes={"note": "second"}).__enter__()
    assert json.loads(record.read_text()) == rec
    _cams(tmp_path / "cams", [3], np.ones((1, 4, 4)))
    args = ["cam2label", "--cams", str(tmp_path / "cams"), "--out", str(tmp_path / "lab"), "--threshold", "0.3"]
    assert cli.main(args) == 0 and cli.main([*args, "--note", "threshold chosen on val"]) == 0
    assert json.loads((tmp_path / "lab" / RUN_RECORD).read_text())["notes"] == {"note": "threshold chosen on val"}


def test_no_command_writes_into_the_reproduce_stamps_folder(capsys):
    """Audit 9's F18: `demo --out results/runs/x` wrote into the folder of reproduce's stamps, which
    reproduce refused for its steps only. check_output, which every command's outputs go through,
    refuses it (in a checkout), and reproduce names it for a step's output as before."""
    from samcam.outputs import STAMPS, check_output
    from samcam.reproduce import RUNS

    assert RUNS == STAMPS == REPO / "results" / "runs"
    for out in (STAMPS, STAMPS / "x", STAMPS / "x" / "y.csv"):
        with pytest.raises(ValueError, match=re.escape(f"output {out} is or lies in results/runs/, the reproduce stamps' folder")):
            check_output(out)
    check_output(REPO / "results" / "runsx")  # a sibling whose name starts the same is no part of it
    fails(["demo", "--out", "results/runs/x"], capsys, "results/runs/x", "the reproduce stamps' folder")
    assert not (STAMPS / "x").exists()


# ============================================================================ audit 12: reproduce


@pytest.fixture()
def checkout(tmp_path, monkeypatch) -> Path:
    """``tmp_path/repo`` as the checkout that reproduce runs steps in (its stamps in ``results/runs``)."""
    from samcam import io, outputs, reproduce

    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    for module in (io, outputs, reproduce):
        monkeypatch.setattr(module, "REPO", repo)
    monkeypatch.setattr(reproduce, "NOTEBOOKS", repo / "notebooks")
    monkeypatch.setattr(reproduce, "RUNS", repo / "results" / "runs")
    monkeypatch.setattr(outputs, "git_commit", lambda path: "abc123")
    return repo


def test_a_reproduce_command_step_that_did_not_write_its_output_is_refused_and_not_stamped(checkout, tmp_path, capsys):
    """Audit 12, F2: `eval` without --csv, its step declaring a CSV an earlier run made, exited 0 and the
    step was stamped current, its stamp claiming the old table (55.34) as the output of this eval (55.65);
    a declared output never written was stamped too. Now the step fails naming what it did not write, the
    old file is left as it was, and no stamp is written; with --csv the table is this run's and stamped."""
    import csv
    import hashlib
    import json

    _labels(checkout / "pred", ["a", "b"], 7)  # car everywhere, as the ground truth: IoU 1
    _labels(checkout / "gt", ["a", "b"], 7)
    _labels(tmp_path / "other", ["a", "b"], 0)  # background everywhere: car's IoU 0
    (checkout / "out").mkdir()
    old = checkout / "out" / "ev.csv"
    assert cli.main(["eval", "--pred", str(tmp_path / "other"), "--gt", str(checkout / "gt"), "--csv", str(old)]) == 0  # an earlier run's table
    before = old.read_bytes()

    def car_iou() -> float:
        return float(next(r for r in csv.DictReader(old.read_text().splitlines()) if r["class"] == "car")["iou"])

    assert car_iou() == 0.0
    stamp = checkout / "results" / "runs" / "ev.params.json"
    cfg = tmp_path / "c4.yml"
    for outputs, missing in (("[out/ev.csv]", "out/ev.csv"), ("[out/never.csv]", "out/never.csv")):
        cfg.write_text(f"steps:\n  - {{name: ev, command: [eval, --pred, pred, --gt, gt], inputs: [pred, gt], outputs: {outputs}}}\n")
        fails(["reproduce", "--config", cfg], capsys, f"step ev: samcam eval did not write {missing}; nothing is stamped")
        assert old.read_bytes() == before and not stamp.exists() and not (checkout / "out" / "never.csv").exists()
        assert cli.main(["reproduce", "--config", str(cfg), "--list"]) == 0
        assert capsys.readouterr().out.startswith("ev: would run [stale (never run here)]")
    # a folder an earlier run left, declared by a step whose command writes no folder (audit 13, F2: stamped as "resumed")
    _labels(checkout / "out" / "lab", ["a"], 7)
    cfg.write_text("steps:\n  - {name: ev, command: [eval, --pred, pred, --gt, gt], inputs: [pred, gt], outputs: [out/lab]}\n")
    fails(["reproduce", "--config", cfg], capsys, "step ev: samcam eval did not write out/lab; nothing is stamped")
    assert not stamp.exists()
    cfg.write_text("steps:\n  - {name: ev, command: [eval, --pred, pred, --gt, gt, --csv, out/ev.csv], inputs: [pred, gt], outputs: [out/ev.csv]}\n")
    assert cli.main(["reproduce", "--config", str(cfg)]) == 0
    made = old.read_bytes()
    assert car_iou() == 1.0  # this run's table, and the stamp names its bytes
    assert json.loads(stamp.read_text())["fingerprints"]["outputs"] == {"out/ev.csv": "sha256:" + hashlib.sha256(made).hexdigest()}


def test_a_reproduce_command_step_declares_what_it_reads_of_a_voc_tree(checkout, tmp_path, capsys, monkeypatch):
    """Audit 12, F3: a command step's implicit inputs were not fingerprinted, so the step stayed current
    after they changed: cam-eval without --voc read $SAMCAM_VOC_ROOT; with --labels xml it read the root's
    Annotations/ while the step declared only JPEGImages/ and SegmentationClass/ (a root above declared
    parts was taken as declared). A step names its VOC tree with --voc and declares each folder of it the
    command reads (reproduce.voc_reads), checked as the config loads; declared, an edited annotation makes
    the step stale."""
    from samcam import reproduce

    voc = checkout / "svoc"
    for folder in ("JPEGImages", "SegmentationClass", "Annotations"):
        (voc / folder).mkdir(parents=True)
    (voc / "Annotations" / "a.xml").write_text("<annotation><object><name>car</name></object></annotation>")
    (checkout / "ids.txt").write_text("a\n")
    (checkout / "clf.pt").write_bytes(b"weights")
    monkeypatch.setenv("SAMCAM_VOC_ROOT", str(voc))
    cfg = tmp_path / "c.yml"
    base = "[cam-eval, --checkpoint, clf.pt, --ids, ids.txt, --csv, out/ce.csv"
    parts = "svoc/JPEGImages, svoc/SegmentationClass"
    for command, inputs, needle in (
            (f"{base}]", f"[clf.pt, ids.txt, {parts}]", "command cam-eval reads a VOC tree and names none with --voc: it would read $SAMCAM_VOC_ROOT"),
            (f"{base}, --voc, svoc, --labels, xml]", f"[clf.pt, ids.txt, {parts}]",
             "command cam-eval reads svoc/Annotations (the image-level labels of --voc svoc with --labels xml), which is not among the step's inputs"),
            (f"{base}, --voc, svoc]", "[clf.pt, ids.txt, svoc/JPEGImages]", "command cam-eval reads svoc/SegmentationClass (--voc svoc)"),
            (f"{base}, --voc, svoc]", "[clf.pt, ids.txt, svoc/JPEGImages, svoc/Annotations]", "reads svoc/SegmentationClass")):  # fmt: skip
        cfg.write_text(f"steps:\n  - {{name: ce, command: {command}, inputs: {inputs}, outputs: [out/ce.csv]}}\n")
        for extra in (["--list"], []):
            fails(["reproduce", "--config", cfg, *extra], capsys, f"{cfg}: step 0 (ce) ", needle)
    for inputs in (f"[clf.pt, ids.txt, {parts}, svoc/Annotations]", "[clf.pt, ids.txt, svoc]"):  # its parts, or the whole tree
        cfg.write_text(f"steps:\n  - {{name: ce, command: {base}, --voc, svoc, --labels, xml], inputs: {inputs}, outputs: [out/ce.csv]}}\n")
        assert [s.name for s in reproduce.load_config(cfg)] == ["ce"]
    ran = []

    def run_command(step):  # cam-eval's table (a classifier is not trained here)
        ran.append(step.name)
        (checkout / "out").mkdir(exist_ok=True)
        (checkout / "out" / "ce.csv").write_text(f"map,threshold\n{len(ran)},0.1\n")

    monkeypatch.setattr(reproduce, "run_command", run_command)
    cfg.write_text(f"steps:\n  - {{name: ce, command: {base}, --voc, svoc, --labels, xml], inputs: [clf.pt, ids.txt, {parts}, svoc/Annotations], "
                   "outputs: [out/ce.csv]}\n")
    assert cli.main(["reproduce", "--config", str(cfg)]) == 0 and ran == ["ce"]
    capsys.readouterr()
    assert cli.main(["reproduce", "--config", str(cfg), "--list"]) == 0
    assert capsys.readouterr().out.startswith("ce: skip [current]")
    (voc / "Annotations" / "a.xml").write_text("<annotation><object><name>car</name></object><object><name>cat</name></object></annotation>")
    assert cli.main(["reproduce", "--config", str(cfg), "--list"]) == 0
    assert capsys.readouterr().out.startswith("ce: would run [stale (input svoc/Annotations changed since the last run)]")


def test_reproduce_only_with_no_step_name_is_refused(checkout, tmp_path, capsys, monkeypatch):
    """Audit 12, F21: `reproduce --only` given no name planned and ran every step (an empty selection
    read as none). It is refused naming the option, in the plan (reproduce.plan) that both --list and a
    run go through, before anything runs; named steps still run alone."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from samcam import reproduce

    nbformat.write(new_notebook(cells=[new_code_cell("x = 1")]), str(checkout / "notebooks" / "t.ipynb"))
    ran = []

    def execute(notebook, output, parameters):
        ran.append(Path(output).stem)
        (checkout / "out").mkdir(exist_ok=True)
        (checkout / "out" / f"{Path(output).stem}.txt").write_text("made")

    monkeypatch.setattr(reproduce, "execute", execute)
    cfg = tmp_path / "c7.yml"
    cfg.write_text("steps:\n" + "".join(f"  - {{name: {n}, notebook: t.ipynb, outputs: [out/{n}.txt]}}\n" for n in ("a", "b")))
    for extra in (["--list"], [], ["--force"], ["--long"]):
        fails(["reproduce", "--config", cfg, "--only", *extra], capsys, "--only names no step; give the names of the steps to run")
    with pytest.raises(ValueError, match="^--only names no step"):
        reproduce.reproduce(cfg, only=[])
    assert ran == [] and not (checkout / "results" / "runs").exists()
    assert cli.main(["reproduce", "--config", str(cfg), "--only", "b"]) == 0 and ran == ["b"]
