#!/usr/bin/env bash
# The CAM search of results/claims/cam_search/ (issue 25's protocol), on any device.
#
#   scripts/cam_search.sh train  VOC WORK   # train every candidate classifier on the train ids
#   scripts/cam_search.sh select VOC WORK   # score each on the held-out val ids, choose one, make its labels
#
# VOC is a VOC 2012 tree (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/{train,val}_with_images.txt);
# WORK receives checkpoints, logs and tables. Protocol: every candidate is trained on the train ids with
# image-level labels only (which classes occur); the choice of candidate and of the background threshold
# uses the val ids only (`samcam cam-eval`, `samcam cam-select`): the highest val CAM mIoU at its best val
# threshold. The train ids' ground truth scores the chosen labels once; their own threshold sweep is
# written as a leak (`train_sweep_gt_tuned.csv`).
#
# Environment: SAMCAM_PYTHON (default python3), SAMCAM (the command, default `$SAMCAM_PYTHON -m samcam.cli`), DEVICE (default cuda if present),
# JOBS (candidates run at once, default 4 or the cores available if fewer), EXTRA (flags for every training, each replacing a candidate's own, e.g. a
# smoke test's "--epochs 1 --crop 64"), ONLY (space-separated candidate names, default all).
set -euo pipefail
phase=${1:?usage: cam_search.sh train|select VOC WORK}
VOC=${2:?VOC root}
WORK=${3:?work folder}
SAMCAM_PYTHON=${SAMCAM_PYTHON:-python3}
SAMCAM=${SAMCAM:-$SAMCAM_PYTHON -m samcam.cli}
DEVICE=${DEVICE:-$($SAMCAM_PYTHON -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}
JOBS=${JOBS:-$(( $(nproc) < 4 ? $(nproc) : 4 ))}
. "$(dirname "$0")/_jobs.sh"
check_jobs "$JOBS"
TRAIN=$VOC/ImageSets/Segmentation/train_with_images.txt
VAL=$VOC/ImageSets/Segmentation/val_with_images.txt
IRN_RESCALE="--rescale 0.64 1.28 --crop 512"   # IRN: long side 320-640 of a ~500 px VOC image, 512 crops

# name | backbone | flags (all at output stride 16, batch 16, seed 0, SGD with a poly schedule)
CANDIDATES=(
  "l0_head|efficientnet-lite0|--head-only --lr-head 0.3 --epochs 100 --crop 320"
  "l0_ft|efficientnet-lite0|--lr-backbone 0.01 --lr-head 0.1 --epochs 10 $IRN_RESCALE"
  "l0_ft_s8|efficientnet-lite0|--freeze-blocks 5 --lr-backbone 0.01 --lr-head 0.1 --epochs 10 $IRN_RESCALE"
  "l0_ft_s8_lowlr|efficientnet-lite0|--freeze-blocks 5 --lr-backbone 0.001 --lr-head 0.1 --epochs 10 $IRN_RESCALE"
  "l0_ft_s8_recam|efficientnet-lite0|--freeze-blocks 5 --lr-backbone 0.01 --lr-head 0.1 --epochs 10 --recam 1 $IRN_RESCALE"
  "l2_head|efficientnet-lite2|--head-only --lr-head 0.3 --epochs 100 --crop 320"
  "l2_ft_s8|efficientnet-lite2|--freeze-blocks 7 --lr-backbone 0.01 --lr-head 0.1 --epochs 10 $IRN_RESCALE"
  "l2_ft_s8_recam|efficientnet-lite2|--freeze-blocks 7 --lr-backbone 0.01 --lr-head 0.1 --epochs 10 --recam 1 $IRN_RESCALE"
  # round 2, after round 1 chose l2_head: the head-only recipe of Lite2 varied
  "l2_head_c448|efficientnet-lite2|--head-only --lr-head 0.3 --epochs 100 --crop 448"
  "l2_head_c224|efficientnet-lite2|--head-only --lr-head 0.3 --epochs 100 --crop 224"
  "l2_head_lr1|efficientnet-lite2|--head-only --lr-head 1.0 --epochs 100 --crop 320"
  "l2_head_e300|efficientnet-lite2|--head-only --lr-head 0.3 --epochs 300 --crop 320"
)
mkdir -p "$WORK"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

selected() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
names=" "
for c in "${CANDIDATES[@]}"; do names+="${c%%|*} "; done
for n in ${ONLY:-}; do  # a misspelt name would select nothing, and the script end as if it had trained
  if [[ $names != *" $n "* ]]; then echo "cam_search.sh: error: ONLY names $n, which is no candidate;$names" >&2; exit 2; fi
done

with_extra() {  # a candidate's flags with EXTRA's: an option EXTRA gives replaces the candidate's own (samcam takes each option once)
  local -a own=($1) extra=(${EXTRA:-}) out=()
  local i=0
  while [ $i -lt ${#own[@]} ]; do
    if [[ ${own[$i]} == --* && " ${extra[*]} " == *" ${own[$i]} "* ]]; then  # skip the option and its values
      i=$((i + 1)); while [ $i -lt ${#own[@]} ] && [[ ${own[$i]} != --* ]]; do i=$((i + 1)); done
    else
      out+=("${own[$i]}"); i=$((i + 1))
    fi
  done
  echo "${out[*]} ${extra[*]}"
}

run_train() {  # name backbone flags...
  local name=$1 backbone=$2; shift 2
  local t0=$SECONDS
  # shellcheck disable=SC2046
  $SAMCAM train-classifier --voc "$VOC" --ids "$TRAIN" --out "$WORK/$name.pt" --backbone "$backbone" \
    --output-stride 16 --batch-size 16 --device "$DEVICE" $(with_extra "$*") >"$WORK/$name.train.log" 2>&1 \
    && echo "trained $name in $((SECONDS - t0)) s on $DEVICE" || { echo "FAILED $name"; tail -3 "$WORK/$name.train.log"; return 1; }
}

run_eval() {  # name backbone
  $SAMCAM cam-eval --voc "$VOC" --ids "$VAL" --checkpoint "$WORK/$1.pt" --model "$2" --device "$DEVICE" \
    --csv "$WORK/$1.val.csv" >"$WORK/$1.val.log" 2>&1 && tail -1 "$WORK/$1.val.log" | sed "s/^/$1: /" \
    || { echo "FAILED eval $1"; tail -3 "$WORK/$1.val.log"; return 1; }
}

pids=()
for c in "${CANDIDATES[@]}"; do
  IFS='|' read -r name backbone flags <<<"$c"
  selected "$name" || continue
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done
  case $phase in
    # shellcheck disable=SC2086
    train) run_train "$name" "$backbone" $flags & ;;
    select) if [ -f "$WORK/$name.pt" ]; then run_eval "$name" "$backbone" & else continue; fi ;;
    *) echo "unknown phase $phase (train or select)" >&2; exit 2 ;;
  esac
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
[ $status -eq 0 ] || { echo "cam_search: a candidate failed in the $phase phase (see its log in $WORK)" >&2; exit $status; }
[ "$phase" = train ] && exit 0

# select: the choice, then the chosen classifier's CAMs, labels and scores on the train ids
evals=()
for c in "${CANDIDATES[@]}"; do
  IFS='|' read -r name backbone flags <<<"$c"
  if [ -f "$WORK/$name.pt" ] && [ -f "$WORK/$name.val.csv" ]; then evals+=("$name=$WORK/$name.val.csv"); fi
done
$SAMCAM cam-select --evals "${evals[@]}" --out "$WORK/cam_search.csv" | tee "$WORK/cam_select.log"
read -r chosen threshold < <(sed -n 's/^chosen: \(.*\) at threshold \(.*\)$/\1 \2/p' "$WORK/cam_select.log") \
  || { echo "cam_search: no choice in $WORK/cam_select.log" >&2; exit 1; }
for c in "${CANDIDATES[@]}"; do IFS='|' read -r n b f <<<"$c"; if [ "$n" = "$chosen" ]; then backbone=$b; fi; done
$SAMCAM cam --voc "$VOC" --images "$VOC/JPEGImages" --ids "$TRAIN" --out "$WORK/cams_$chosen" \
  --model "$backbone" --checkpoint "$WORK/$chosen.pt" --device "$DEVICE" 2>"$WORK/cams.log"
$SAMCAM cam2label --cams "$WORK/cams_$chosen" --out "$WORK/labels_$chosen" --threshold "$threshold" \
  --note "threshold $threshold chosen on the held-out val ids (cam-select)" 2>"$WORK/labels.log" &
labels=$!
$SAMCAM cam2label --cams "$WORK/cams_$chosen" --sweep-gt "$VOC/SegmentationClass" \
  --sweep-csv "$WORK/train_sweep_gt_tuned.csv" 2>/dev/null | tail -2
wait $labels || { echo "cam_search: the labels failed:"; cat "$WORK/labels.log"; exit 1; } >&2
$SAMCAM eval --pred "$WORK/labels_$chosen" --gt "$VOC/SegmentationClass" --ids "$TRAIN" 2>/dev/null | tail -3
