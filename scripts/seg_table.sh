#!/usr/bin/env bash
# The segmentation table of issue 23, on any device (prepared for a lent GPU; not yet run there).
#
#   scripts/seg_table.sh labels VOC DATA WORK   # the label sets of every row, into WORK/labels
#   scripts/seg_table.sh search VOC DATA WORK   # recipe search on the ground-truth row (seed 0): the reproduce steps
#                                                 # seg_search_* into work/seg/search, table in results/seg/search
#   scripts/seg_table.sh table  VOC DATA WORK   # every row x SEEDS with RECIPE: WORK/runs, then the table and the gaps
#
# VOC: a VOC 2012 tree (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/{train,val}_with_images.txt);
# DATA: the shared data root (pseudo_labels/transcam/); WORK: where labels, checkpoints and tables go.
# The search phase is the reproduce steps themselves: it reads DATA/voc2012 (not VOC), writes the checkout's
# work/seg/search and results/seg/search, ignores DEVICE, EXTRA and IDS_LIMIT, and needs a clean checkout.
# Every network trains on the train ids and is scored on the val ids (`train-seg --eval-gt`, one confusion
# matrix). Each run is a folder <row>_s<seed> holding last.pt and eval.json, so a rerun resumes and
# `samcam.seg.report.collect` reads it. The table ends with each row's paired gap to TransCAM over the
# seeds (`samcam.seg.report.paired_gaps`).
#
# Environment: SAMCAM_PYTHON (python3), SAMCAM (its `-m samcam.cli`), DEVICE (cuda if present), JOBS (runs at
# once, 4), SEEDS ("0 1 2"), RECIPE (train-seg flags of the chosen recipe), CHECKPOINT (MobileSAM file for
# the prompted row), EXTRA (flags appended to every training, e.g. a smoke test's "--epochs 1 --crop 64"),
# IDS_LIMIT (only the first N train and val ids: a smoke test).
set -euo pipefail
phase=${1:?usage: seg_table.sh labels|search|table VOC DATA WORK}
VOC=${2:?VOC root}
DATA=${3:?data root}
WORK=${4:?work folder}
SAMCAM_PYTHON=${SAMCAM_PYTHON:-python3}
SAMCAM=${SAMCAM:-$SAMCAM_PYTHON -m samcam.cli}
DEVICE=${DEVICE:-$($SAMCAM_PYTHON -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}
JOBS=${JOBS:-4}
SEEDS=${SEEDS:-0 1 2}
RECIPE=${RECIPE:---crop 320 --epochs 20 --output-stride 16}  # the search's choice (results/seg/search; the reproduce steps seg_row_*)
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$WORK"
TRAIN=$WORK/train_ids.txt VAL=$WORK/val_ids.txt
head -n "${IDS_LIMIT:-100000}" "$VOC/ImageSets/Segmentation/train_with_images.txt" >"$TRAIN"
head -n "${IDS_LIMIT:-100000}" "$VOC/ImageSets/Segmentation/val_with_images.txt" >"$VAL"
L=$WORK/labels
ROWS="gt transcam transcam_rule transcam_prompted cam cam_sam"

labels_of() {  # row -> its label folder
  case $1 in
    gt) echo "$VOC/SegmentationClass" ;;
    transcam) echo "$DATA/pseudo_labels/transcam" ;;
    cam) echo "$REPO/results/claims/lite2/labels/cam" ;;
    *) echo "$L/$1" ;;
  esac
}

run_one() {  # folder row flags...: train, then score on val into the run folder (resumes)
  local run=$1 row=$2; shift 2
  local t0=$SECONDS
  # shellcheck disable=SC2086
  $SAMCAM train-seg --images "$VOC/JPEGImages" --labels "$(labels_of "$row")" --ids "$TRAIN" --out "$run" --device "$DEVICE" \
    --eval-gt "$VOC/SegmentationClass" --eval-ids "$VAL" "$@" ${EXTRA:-} >"$run.log" 2>&1 || { echo "FAILED $run"; tail -3 "$run.log"; return 1; }
  echo "$(basename "$run"): $(grep -o 'val mIoU [^ ]*' "$run.log" | tail -1) ($((SECONDS - t0)) s on $DEVICE)"
}

in_parallel() {  # run the queued commands JOBS at a time; fail if any failed
  local status=0 pids=()
  while read -r line; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done
    eval "$line" & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || status=1; done
  return $status
}

case $phase in
  labels)
    mkdir -p "$L"
    masks=$REPO/results/masks/voc12_train_vit_t_p32
    $SAMCAM merge --pseudo "$(labels_of transcam)" --masks "$masks" --out "$L/transcam_rule" --ids "$TRAIN"
    $SAMCAM merge --pseudo "$(labels_of cam)" --masks "$masks" --out "$L/cam_sam" --ids "$TRAIN"
    $SAMCAM refine --mode prompted --pseudo "$(labels_of transcam)" --images "$VOC/JPEGImages" --out "$L/transcam_prompted" \
      --ids "$TRAIN" --device "$DEVICE" ${CHECKPOINT:+--checkpoint "$CHECKPOINT"}
    ;;
  search)  # the reproduce steps seg_search_* (notebooks/reproduce.yml, their one home), one after another, then the table
    cd "$REPO"
    SAMCAM_DATA=$DATA $SAMCAM reproduce --only $($SAMCAM reproduce --list | grep -o '^seg_search[a-z0-9_]*')
    ;;
  table)
    mkdir -p "$WORK/runs"
    for row in $ROWS; do
      for seed in $SEEDS; do echo "run_one $WORK/runs/${row}_s$seed $row --seed $seed $RECIPE"; done
    done | in_parallel
    $SAMCAM_PYTHON - "$WORK/runs" <<'PY'
import sys
from samcam.seg.report import collect, paired_gaps, summary
df = collect(sys.argv[1])
print(summary(df).round(2).to_string(index=False))
print(paired_gaps(df, "transcam").round(3).to_string(index=False))
PY
    ;;
  *) echo "unknown phase $phase (labels, search or table)" >&2; exit 2 ;;
esac
