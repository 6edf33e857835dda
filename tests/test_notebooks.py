"""Every notebook executed for real by papermill, on small real inputs."""

import json
import re

import nbformat
import pytest

from samcam.io import REPO, data_root
from samcam.reproduce import NOTEBOOKS, load_config, notebook_writes, step_state
from samcam.reproduce import execute as _run

pytestmark = pytest.mark.slow


def execute(name, out, params=None):
    """Run a notebook as reproduce does, and check that every file it wrote or changed under the test's
    folder lies in a path reproduce.notebook_writes names for it (what a reproduce step must declare,
    checked before the step runs): the paths are what the notebook really writes."""
    from pathlib import Path

    root = Path(out).parent
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    _run(name, out, params)
    paths = [Path(p) for p, _ in notebook_writes(Path(name).name, params or {}, name)]
    for p in root.rglob("*"):
        if p.is_file() and p != Path(out) and before.get(p) != p.stat().st_mtime_ns:
            assert any(p == w or w in p.parents for w in paths), f"{name} wrote {p}, outside {[str(w) for w in paths]}"


def _params(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{name} needs exactly one cell tagged 'parameters'"
    return cells[0].source


def test_every_notebook_has_a_parameters_cell():
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["00_tutorial.ipynb", "01_sam_masks.ipynb", "02_enhance_method.ipynb", "03_paper_table.ipynb",
                     "04_per_class_explorer.ipynb", "05_prompted_ablation.ipynb", "06_coco_check.ipynb", "07_segmentation.ipynb", "08_claims_affinity.ipynb", "demo.ipynb"]  # fmt: skip
    for n in names:
        _params(n)


def test_sam_masks_notebook(tmp_path, data_root, mobile_sam_checkpoint):
    out = tmp_path / "masks"
    execute("01_sam_masks.ipynb", tmp_path / "01.ipynb", {"limit": 2, "out_dir": str(out), "points_per_side": 2, "device": "cpu"})
    assert len(list(out.glob("*.json.gz"))) == 2


def test_enhance_table_explorer_and_tutorial(tmp_path, data_root):
    res = tmp_path / "results"
    execute("02_enhance_method.ipynb", tmp_path / "02.ipynb", {"limit": 4, "results_dir": str(res), "gallery_n": 1, "work_dir": str(tmp_path / "work")})
    summary = json.loads((res / "voc" / "TransCAM" / "summary.json").read_text())
    assert summary["n_images"] == 4 and summary["masks"]["model_type"] == "vit_t"
    for f in ("per_class.csv", "per_image.csv", "per_class_iou.png", "miou_change.png", "gallery_improved.png", "gallery_degraded.png"):
        assert (res / "voc" / "TransCAM" / f).exists(), f
    execute("03_paper_table.ipynb", tmp_path / "03.ipynb", {"results_dir": str(res)})
    table = (res / "table_pseudo_label_miou.md").read_text()
    assert re.search(r"\|\s*TransCAM\s*\|\s*run\s*\|", table) and re.search(r"\|\s*SIPE\s*\|\s*not run\s*\|", table)
    execute("04_per_class_explorer.ipynb", tmp_path / "04.ipynb", {"results_dir": str(res), "class_name": "aeroplane", "n_worst": 1})
    execute("00_tutorial.ipynb", tmp_path / "00.ipynb", {})


def test_prompted_ablation_notebook(tmp_path, data_root, mobile_sam_checkpoint):
    params = {"limit": 2, "refined_dir": str(tmp_path / "refined"), "results_dir": str(tmp_path / "res"), "device": "cpu",
              "configs": {"box": ["box", "overlap", 100], "box+point+neg": ["box+point+neg", "both", 0]}}
    execute("05_prompted_ablation.ipynb", tmp_path / "05.ipynb", params)
    table = (tmp_path / "res" / "TransCAM" / "ablation.csv").read_text()
    assert table.startswith("configuration,miou") and "everything+paper-rule" in table and "box+point+neg" in table


def test_coco_check_notebook(tmp_path, data_root, mobile_sam_checkpoint):
    if not (data_root / "coco128" / "semantic_segmentation").is_dir():
        pytest.skip(f"coco128 not found in {data_root}")
    params = {"limit": 1, "splits": ["train2017", "val2017"], "classifier": None, "work_dir": str(tmp_path / "w"), "results_dir": str(tmp_path / "r"), "device": "cpu"}
    execute("06_coco_check.ipynb", tmp_path / "06.ipynb", params)
    table = (tmp_path / "r" / "cam_vs_prompted.csv").read_text()
    assert table.startswith("labels,images,miou") and "CAM labels,2," in table  # one image of each split


def test_segmentation_notebook_makes_the_table_from_records(tmp_path):
    """07 on run records as `train-seg --record` writes them: the table's means, each row's paired gap
    to the reference and the per-class figure, for any rows given."""
    import pandas as pd

    from samcam.data.spaces import VOC
    from samcam.seg.recipe import Recipe
    from samcam.seg.report import RECORD_FORMAT

    runs = tmp_path / "rows"
    runs.mkdir()
    mious = {"gt": [0.56, 0.55, 0.57], "transcam": [0.51, 0.49, 0.52]}
    for row, values in mious.items():
        for seed, m in enumerate(values):
            rec = {"format": RECORD_FORMAT, "recipe": Recipe(crop=320, epochs=20, output_stride=16, seed=seed).to_dict(), "n_train": 558,
                   "labels_fingerprint": row * 8, "step": 1380, "total_steps": 1380, "commit": "abc", "machine": {"cpu": "Some CPU", "cores": 2},
                   "history": {"epoch_seconds": [80.0, 90.0] * 10, "losses": [1.0, 0.5] * 10, "device": "cpu", "threads": 2, "peak_rss_mib": 3000.0, "load_average": [2.0, 2.0]},
                   "eval": {"step": 1380, "n_images": 561, "miou": m, "seconds": 60.0, "iou": {c: m for c in VOC.class_names}}}  # fmt: skip
            (runs / f"{row}_s{seed}.json").write_text(json.dumps(rec))
    out, bench = tmp_path / "seg", tmp_path / "bench"
    execute("07_segmentation.ipynb", tmp_path / "07.ipynb", {"runs_dir": str(runs), "results_dir": str(out), "bench_dir": str(bench),
                                                             "rows": ["gt", "transcam"], "reference": "transcam"})  # fmt: skip
    table = (out / "table.md").read_text()
    assert "| ground truth (ceiling) | 56.00 | 55.00 | 57.00 | 56.00 ± 1.00 |" in table and "| TransCAM | 51.00 | 49.00 | 52.00 | 50.67 ± 1.50 |" in table
    gaps = pd.read_csv(out / "gaps.csv")
    assert gaps["row"].tolist() == ["gt"] and gaps["seeds"].tolist() == [3] and gaps["mean_gap"].tolist() == pytest.approx([16 / 3], abs=1e-4)
    assert (out / "per_class.png").stat().st_size > 0 and json.loads((bench / "seg_train_cpu.json").read_text())["s_per_epoch_median"] == 85.0


#: the segmentation table's runs: each row × seeds 0, 1, 2 (one `each` entry per row in reproduce.yml)
SEG_ROWS = [f"seg_row_{row}_s{seed}" for row in ("gt", "transcam", "transcam_rule", "transcam_prompted", "cam", "cam_sam", "cam_affinitynet")
            for seed in (0, 1, 2)]  # fmt: skip


def test_reproduce_config_is_valid():
    steps = load_config()
    assert [s.name for s in steps] == ["masks_voc12_train", "classifier_lite2", "cams_lite2", "affinity_lite2", "cams_lite2_val", "affinity_alpha_val",
                                       "classifier_lite0", "cams_lite0", "labels_lite0",
                                       "seg_search_base", "seg_search_c320_e20_os16", "seg_search", "seg_labels_transcam_rule", "seg_labels_transcam_prompted",
                                       *SEG_ROWS, "seg_table", "voc_transcam",
                                       "claims", "voc_samcam_cam", "voc_samcam_cam_lite2", "prompted_transcam", "prompted_transcam_ablation_24", "paper_table", "coco128", "demo",
                                       "bench_eval", "bench_merge", "bench_merge_e2e", "bench_generator_cpu", "bench_modes_cpu"]
    for s in steps:
        assert s.code is None or s.code.is_file()
        assert step_state(s) == "current" or step_state(s).startswith(("stale (", "missing input"))
    from samcam.cli import build_parser

    made: set[str] = set()
    for s in steps:  # each step's inputs are data, committed files, or outputs of an earlier step (or the folder that holds them)
        for i in s.inputs:
            baseline = s.script is not None and i.startswith("../baselines/")  # the paper's code, checked out beside samcam
            holds = any(o.startswith(i + "/") for o in made)  # seg_search: the folder of the search's runs
            assert i.startswith(str(data_root())) or i in made or holds or baseline or (i.startswith(("results/", "samcam/")) and (REPO / i).exists()), (s.name, i)
        made.update(s.outputs + s.scratch)
        if s.command:  # accepted by its parser; every path it names is a declared input, output or scratch, or a folder above one
            build_parser(s.command).parse_args(s.command)
            for arg in s.command[1:]:
                if "/" in arg:
                    assert arg in s.inputs + s.outputs + s.scratch or any(i.startswith(arg + "/") for i in s.inputs), (s.name, arg)
    # what is not kept is never under results/, but for a cache inside a step's own output that git ignores (demo's masks)
    import subprocess

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", path + "/"], capture_output=True).returncode == 0

    assert all(x.startswith("work/") or (any(x.startswith(o + "/") for o in s.outputs) and ignored(x)) for s in steps for x in s.scratch)
    assert [x for s in steps for x in s.scratch if not x.startswith("work/")] == ["results/demo/masks"]
    assert [s.name for s in steps if s.long] == ["masks_voc12_train", "classifier_lite2", "cams_lite2", "affinity_lite2", "cams_lite2_val",
                                                    "affinity_alpha_val", "classifier_lite0", "cams_lite0",
                                                    "seg_search_base", "seg_search_c320_e20_os16", "seg_labels_transcam_prompted", *SEG_ROWS, "claims", "bench_eval", "bench_merge", "bench_merge_e2e",
                                                    "bench_generator_cpu", "bench_modes_cpu"]  # fmt: skip
    assert all(s.script is None or s.long for s in steps)  # a benchmark runs only when named, on an idle machine


#: results/ files no reproduce step writes yet, and why (each entry must still be needed)
NO_STEP_YET = {
    "results/mutation": "mutmut runs in parts across sessions; results/mutation/README.md gives each part's command and commit",
    "results/claims/lite2/search/cam_search.csv": "the CAM search of scripts/cam_search.sh, run on a lent GPU (results/claims/lite2/README.md)",
    "results/claims/lite2/search/val": "the CAM search's val tables (scripts/cam_search.sh on a lent GPU)",
    "results/claims/lite2/search/logs": "the CAM search's logs (scripts/cam_search.sh on a lent GPU)",
    "results/claims/lite2/search/train_sweep_gt_tuned.csv": "the chosen CAM's GT-tuned train sweep (scripts/cam_search.sh on a lent GPU)",
    "results/benchmarks/generator_vit_t_p32_cuda": "made on a lent GPU by benchmarks/gpu_bench.sh (reproduce has no GPU steps)",
    "results/benchmarks/masks_e2e_vit_t_p32_cuda": "made on a lent GPU by benchmarks/gpu_bench.sh (reproduce has no GPU steps)",
}


def test_every_committed_result_is_written_by_a_reproduce_step():
    """Every file under results/ is a step's output, inside a step's output folder, another format of
    an output (same folder and name), or in (or below) the folder of the one step whose outputs lie
    there (its figures and label folders beside its table); the executed notebooks and stamps of
    results/runs and the READMEs are the steps' records and prose. The rest are listed in NO_STEP_YET
    with the reason; a listed file is not counted as any step's."""
    from collections import Counter
    from pathlib import Path

    steps = load_config()
    outputs = [Path(o) for s in steps for o in s.outputs]
    owners = Counter(d for s in steps for d in {Path(o).parent for o in s.outputs})
    written_in = {d for d, n in owners.items() if n == 1 and d != Path("results")}  # a folder shared by steps (benchmarks/) names each file

    def declared(f: Path) -> bool:
        return f in outputs or any(o in f.parents for o in outputs) or any(f.parent == o.parent and f.stem == o.stem for o in outputs)

    def by_a_step(f: Path) -> bool:
        return declared(f) or any(d in written_in for d in (f.parent, *f.parent.parents))

    def excused(f: Path) -> str | None:
        return next((k for k in NO_STEP_YET if f == Path(k) or Path(k) in f.parents or (f.parent / f.stem) == Path(k)), None)

    files = [p.relative_to(REPO) for p in (REPO / "results").rglob("*") if p.is_file()]
    files = [f for f in files if f.parts[1] != "runs" and f.name != "README.md"]
    assert len(files) > 1000  # the claims labels, the masks and the method rows are committed
    orphans = [str(f) for f in files if excused(f) is None and not by_a_step(f)]
    assert orphans == []
    needed = {excused(f) for f in files if not declared(f)} - {None}
    assert needed == set(NO_STEP_YET), set(NO_STEP_YET) - needed  # an entry whose files a step now declares (or that are gone) goes


def test_the_affinity_step_trains_what_the_claims_notebook_resumes():
    """The affinity_lite2 step's checkpoint is the one notebook 08 resumes: same path, CAMs, backbone,
    epochs, crop, CRF and threshold (else the claims step would refuse it as another run)."""
    import json

    from samcam.cli import build_parser
    from samcam.pipeline.affinity import AffinityTrainConfig

    steps = {s.name: s for s in load_config()}
    cell = next(c for c in json.loads((NOTEBOOKS / "08_claims_affinity.ipynb").read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
    nb: dict = {}
    exec("".join(cell["source"]), {}, nb)
    nb.update(steps["claims"].parameters)
    cmd = steps["affinity_lite2"].command
    a = build_parser(cmd).parse_args(cmd)
    assert (a.out, a.cams, a.backbone, a.threshold) == (nb["affinity_checkpoint"], nb["cams_dir"], nb["affinity_backbone"], nb["threshold"])
    d = AffinityTrainConfig()
    assert (a.epochs, a.crop, a.crf) == (nb["affinity_epochs"], nb["affinity_crop"], nb["affinity_crf"])
    assert (a.batch_size, a.lr, a.radius, a.head_lr_mult, a.momentum, a.seed, a.weight_decay) == (d.batch_size, d.lr, d.radius, d.head_lr_mult, d.momentum, d.seed, d.weight_decay)


def test_claims_notebook_runs_every_row(tmp_path, data_root, gt_cams, mobile_sam_checkpoint):
    """08 end to end on 3 real images: CAM labels, SAM rule, prompted SAM, AffinityNet training (CRF
    seeds) and walk, AffinityNet + SAM, AffinityNet on CAM + SAM seeds, the ground-truth walk, the
    error and cost tables."""
    import pandas as pd

    import json

    cams, ids = gt_cams
    (tmp_path / "alphas.csv").write_text("alpha,miou,best\n2.0,0.31,False\n7.5,0.42,True\n16.0,0.40,False\n")  # the walk's power, chosen elsewhere
    params = {"cams_dir": str(cams), "limit": len(ids), "labels_dir": str(tmp_path / "labels"), "affinity_checkpoint": str(tmp_path / "aff.pt"),
              "affinity_sam_checkpoint": str(tmp_path / "aff_sam.pt"), "affinity_backbone": "efficientnet-lite0",
              "affinity_epochs": 1, "affinity_crop": 16, "walk_steps": 16, "device": "cpu", "results_dir": str(tmp_path / "res"),
              "walk_alpha_table": str(tmp_path / "alphas.csv")}  # fmt: skip
    execute("08_claims_affinity.ipynb", tmp_path / "08.ipynb", params)
    for row in ("cam+affinitynet", "cam+affinitynet_samseeds", "cam+gt_walk"):  # every walk at the chosen power
        assert json.loads((tmp_path / "labels" / row / "samcam_run.json").read_text())["parameters"]["config"]["alpha"] == 7.5, row
    table = pd.read_csv(tmp_path / "res" / "table.csv")
    assert list(table["labels"]) == ["CAM", "CAM + SAM", "CAM + SAM prompted", "CAM + AffinityNet", "CAM + AffinityNet + SAM",
                                     "CAM + AffinityNet (CAM + SAM seeds)", "CAM + walk on GT affinity (uses GT)"]  # fmt: skip
    assert table["miou"].between(1, 100).all() and (table["images"] == 3).all()
    # the CAM files of this test were not made by `samcam cam`: their cost is unknown, the rest is recorded
    assert table["cam_s_per_image"].isna().all() and table["extra_cpu_s_per_image"].iloc[1:].gt(0).all()
    assert table["extra_training_s"].iloc[[3, 4, 5]].gt(0).all() and table["extra_training_s"].iloc[[0, 1, 2, 6]].eq(0).all()
    for row in ("cam", "cam+sam", "cam+sam_prompted", "cam+affinitynet", "cam+affinitynet+sam", "cam+affinitynet_samseeds", "cam+gt_walk"):
        assert len(list((tmp_path / "labels" / row).glob("*.png"))) == 3, row
    assert (tmp_path / "res" / "claims.png").exists() and (tmp_path / "res" / "per_class_errors.csv").exists()


def test_a_notebook_run_prints_no_kernel_noise(tmp_path, capfd):
    """The kernel's start-up warnings (e.g. ipykernel's about TCP transport) would bury a reproduce
    run's own lines; a cell's output and errors still reach the executed notebook."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print(6 * 7)")]
    nbformat.write(nb, str(tmp_path / "t.ipynb"))
    execute(tmp_path / "t.ipynb", tmp_path / "out.ipynb")
    captured = capfd.readouterr()
    assert "WARNING" not in captured.err and "IPKernelApp" not in captured.err
    done = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4)
    assert done.cells[0].outputs[0]["text"] == "42\n"
