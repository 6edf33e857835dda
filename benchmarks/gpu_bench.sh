#!/usr/bin/env bash
# GPU timings in one short run: (1) benchmarks/bench_generator.py (official vs fast generator, whole
# `generate` calls, then the whole `samcam masks` command) and (2) `samcam masks` end to end over more
# images (start-up, model load, JPEGs in, compact files out), each step under `timeout`.
#
#   benchmarks/gpu_bench.sh DATA_ROOT [OUT_DIR]
#
# DATA_ROOT holds voc2012/ImageSets/Segmentation/train_with_images.txt and voc2012/JPEGImages/<id>.jpg.
# OUT_DIR (default $SAMCAM_BENCH_OUT, else results/benchmarks/gpu) receives the .md/.json of each step
# and its log. Runs from any folder with this checkout on PYTHONPATH, so the package need not be
# installed; the python needs torch, torchvision, numpy, pillow, tqdm, pycocotools, segment_anything,
# mobile_sam and timm (with timm's huggingface_hub, safetensors, pyyaml); missing ones are named first,
# and a folder holding them can be given as PYDEPS.
# Settings (environment): PYTHON (python3), DEVICE (cuda), N (4 images for step 1), E2E_N (50 for
# step 2), PPS (32 points per side), MODEL (vit_t), CHECKPOINT (a checkpoint file; default samcam's
# cache, which needs internet on first use), TIMEOUT (240 s per step). The CPU smoke check:
#   DEVICE=cpu N=1 E2E_N=1 PPS=4 benchmarks/gpu_bench.sh ../shared/data "$TMPDIR/bench_smoke"
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
data=$(cd "${1:?usage: benchmarks/gpu_bench.sh DATA_ROOT [OUT_DIR]}" && pwd) || exit 2
out=${2:-${SAMCAM_BENCH_OUT:-$repo/results/benchmarks/gpu}}
py=${PYTHON:-python3} device=${DEVICE:-cuda} n=${N:-4} e2e_n=${E2E_N:-50} pps=${PPS:-32} model=${MODEL:-vit_t} limit=${TIMEOUT:-240}
export PYTHONPATH=$repo${PYDEPS:+:$PYDEPS}${PYTHONPATH:+:$PYTHONPATH} SAMCAM_DATA=$data
mkdir -p "$out" && out=$(cd "$out" && pwd)
ck=() && [[ -n ${CHECKPOINT:-} ]] && ck=(--checkpoint "$(cd "$(dirname "$CHECKPOINT")" && pwd)/$(basename "$CHECKPOINT")")
cd "$repo"

"$py" - <<'PY' || exit 3
import importlib, sys, warnings
warnings.simplefilter("ignore")  # timm and mobile_sam warn about their own imports
need = ["torch", "torchvision", "numpy", "PIL", "tqdm", "pycocotools.mask", "segment_anything", "timm", "mobile_sam"]
missing = []
for m in need:  # imported, not just found: timm needs huggingface_hub, safetensors and pyyaml in turn
    try:
        importlib.import_module(m)
    except Exception as e:
        missing.append(f"{m} ({type(e).__name__}: {e})")
if missing:
    sys.exit(f"gpu_bench: {sys.executable} lacks {', '.join(missing)} (install them, or name a folder holding them in PYDEPS)")
import torch
print(f"torch {torch.__version__}, cuda {torch.cuda.is_available() and torch.cuda.get_device_name(0)}")
PY
ids=$data/voc2012/ImageSets/Segmentation/train_with_images.txt
[[ -f $ids ]] || { echo "gpu_bench: $ids not found" >&2; exit 2; }

echo "== 1/2 bench_generator.py on $device, $n images, ${pps}x$pps grid -> $out"
timeout "$limit" "$py" benchmarks/bench_generator.py --device "$device" --n "$n" --points-per-side "$pps" --model "$model" \
    --data "$data" --out "$out" "${ck[@]}" >"$out/bench_generator.log" 2>&1
rc1=$?
tail -n 4 "$out/bench_generator.log"

echo "== 2/2 samcam masks end to end on $device, $e2e_n images"
work=$(mktemp -d) && trap 'rm -rf "$work"' EXIT
head -n "$e2e_n" "$ids" >"$work/ids.txt"
start=$(date +%s.%N)
timeout "$limit" "$py" -m samcam.cli masks --images "$data/voc2012/JPEGImages" --ids "$work/ids.txt" --out "$work/masks" \
    --model "$model" --device "$device" --points-per-side "$pps" "${ck[@]}" >"$out/masks_e2e.log" 2>&1
rc2=$?
end=$(date +%s.%N)
images=$(ls "$work/masks" 2>/dev/null | grep -c '\.json\.gz$')
"$py" - "$out" "$device" "$model" "$pps" "$e2e_n" "$images" "$start" "$end" "$rc2" "${ck[@]}" <<'PY'
import json, sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from _common import write
out, device, model, pps, asked, images, start, end, rc, *ck = sys.argv[1:]
command = (f"samcam masks --images DATA_ROOT/voc2012/JPEGImages --ids <first {asked} of train_with_images.txt> --out TMP "
           f"--model {model} --device {device} --points-per-side {pps} {' '.join(ck)}").strip()
images, seconds, rc = int(images), float(end) - float(start), int(rc)
status = "finished" if rc == 0 else f"STOPPED (exit {rc}{', timeout' if rc == 124 else ''})"
md = (f"# `samcam masks` end to end ({model}, {pps}×{pps} grid, {device})\n\n"
      f"The whole command (start-up, model load, JPEGs in, compact files out) over the first {asked} ids of "
      f"train_with_images.txt: **{seconds:.1f} s** for {images} images written, {status}"
      + (f"; {seconds / images:.2f} s per image, model load included." if images else "."))
write(f"masks_e2e_{model}_p{pps}_{device.replace(':', '')}", {"seconds": seconds, "images": images, "asked": int(asked), "exit": rc,
      "command": command, "settings": {"device": device, "model": model, "points_per_side": int(pps)}}, md, out)
PY
echo "bench_generator exit $rc1, samcam masks exit $rc2; results in $out"
exit $(( rc1 || rc2 ))
