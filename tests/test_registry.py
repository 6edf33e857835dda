"""One registry style: every table of named choices is a dict (or a tuple of plain names) resolved by
``samcam.registry.lookup``, with one error for an unknown name."""

import re
from pathlib import Path

import pytest

import samcam
from samcam.cam import methods, nets
from samcam.data import spaces, voc
from samcam.refine import merge, prompted
from samcam.registry import UnknownName, lookup
from samcam.sam import mask_files, model, weights

TABLE = {"alpha": 1, "Beta": 2}


def test_a_mapping_gives_the_entry_and_a_tuple_gives_the_name():
    assert lookup(TABLE, "alpha", "thing") == 1
    assert lookup(TABLE, "Beta", "thing") == 2
    assert lookup(("x", "y"), "y", "thing") == "y"


def test_an_unknown_name_is_one_error_naming_what_and_every_known_name():
    with pytest.raises(UnknownName) as e:
        lookup(TABLE, "gamma", "widget")
    assert str(e.value) == "unknown widget 'gamma'; known: alpha, Beta"  # no KeyError quotes around it
    assert isinstance(e.value, KeyError) and isinstance(e.value, ValueError)
    assert str(UnknownName()) == ""  # raised bare, it reads as nothing (not as "()")
    with pytest.raises(UnknownName, match=r"^unknown widget 'z'; known: x, y$"):
        lookup(("x", "y"), "z", "widget")


def test_case_is_folded_only_when_asked_and_the_registry_spelling_is_returned():
    with pytest.raises(UnknownName):
        lookup(TABLE, "ALPHA", "thing")
    assert lookup(TABLE, "ALPHA", "thing", fold_case=True) == 1
    assert lookup(TABLE, "beta", "thing", fold_case=True) == 2
    assert lookup(("Mixed",), "mixed", "thing", fold_case=True) == "Mixed"
    with pytest.raises(UnknownName):
        lookup(TABLE, "alph", "thing", fold_case=True)


@pytest.mark.parametrize("name", [None, 3, ["alpha"], b"alpha"])
def test_a_name_that_is_not_a_string_is_unknown_not_a_type_error(name):
    with pytest.raises(UnknownName, match="unknown thing"):
        lookup(TABLE, name, "thing")


def test_the_package_raises_unknown_names_only_through_lookup():
    """No module spells its own ``unknown X ...; known: ...`` message (the registry's one home)."""
    root = Path(samcam.__file__).parent
    own = []
    for path in root.rglob("*.py"):
        if path.name == "registry.py":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"raise \w+\(f?\"(unknown [^\"]*; known:|[^\"]*must be one of)", line):
                own.append(f"{path.relative_to(root)}:{n}")
    assert own == []


def test_the_registries_are_dicts_whose_entries_do_what_their_names_say():
    for table in (methods.FORMATS, methods.METHODS, nets.BACKBONES, voc.LABEL_SOURCES, merge.RULES, mask_files.FORMATS, model.MODEL_TYPES):
        assert isinstance(table, dict) and all(isinstance(k, str) for k in table)
    # every method's default format is a registered one
    assert {m.format for m in methods.METHODS.values()} <= set(methods.FORMATS)
    # the paper repository's three rules (its merge code): coverage test only in max_iou_imp2,
    # uncovered CAM pixels kept by both improved rules
    assert merge.MergeRule.named("max_iou", 0.5, 0.85) == merge.MergeRule("max_iou", 0.5, None, False)
    assert merge.MergeRule.named("max_iou_imp", 0.5, 0.85) == merge.MergeRule("max_iou_imp", 0.5, None, True)
    assert merge.MergeRule.named("max_iou_imp2", 0.6, 0.7) == merge.MergeRule("max_iou_imp2", 0.6, 0.7, True)
    # MobileSAM builds vit_t, segment-anything the rest
    assert model.MODEL_TYPES == {"vit_h": "segment_anything", "vit_l": "segment_anything", "vit_b": "segment_anything", "vit_t": "mobile_sam"}
    assert nets.EFFICIENTNETS == ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
    # the mask formats' entries: a compact file, or an amg.py folder named by the id
    assert mask_files.FORMATS["compact"].entry == "{id}.json.gz" and not mask_files.FORMATS["compact"].is_folder
    assert mask_files.FORMATS["official"].entry == "{id}" and mask_files.FORMATS["official"].is_folder


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: merge.MergeRule.named("max_iou_imp3"), "unknown merge rule 'max_iou_imp3'"),
        (lambda: nets.build_camnet("vgg16"), "unknown backbone 'vgg16'"),
        (lambda: mask_files.MaskStore(".", "zip"), "unknown mask format 'zip'"),
        (lambda: methods.load_pseudo_label(".", "a", "jpg"), "unknown format 'jpg'"),
        (lambda: methods.get_method("PSA"), "unknown method 'PSA'"),
        (lambda: spaces.get_dataset("ade"), "unknown dataset 'ade'"),
        (lambda: weights.get_checkpoint("vit_s"), "unknown checkpoint 'vit_s'"),
        (lambda: prompted.PromptConfig(prompts="mask"), "unknown prompt config field prompts 'mask'"),
        (lambda: voc.image_labels(None, [], "png"), "unknown label source 'png'"),
    ],
)
def test_every_registry_refuses_an_unknown_name_the_same_way(call, message):
    with pytest.raises(UnknownName, match=f"^{re.escape(message)}; known: "):
        call()
