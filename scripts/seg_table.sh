#!/usr/bin/env bash
# The segmentation table of issue 23 on any device: its reproduce steps (notebooks/reproduce.yml, their one
# home), the trainings JOBS at a time.
#
#   scripts/seg_table.sh [ROWS]     # ROWS: a regular expression of the rows to train (default: every row), e.g. 'gt|transcam'
#
# 1. the label steps the selected rows need (seg_labels_transcam_rule: the paper's rule, about a minute;
#    seg_labels_transcam_prompted: prompted SAM, about 15 min on a 2-core CPU);
# 2. every seg_row_<row>_s<seed> step of those rows that is not current, JOBS at a time: each trains with the
#    recipe samcam/seg/recipes/c320_e20_os16.yaml into work/seg/rows/<row>_s<seed>, scores the val images and
#    writes its record results/seg/rows/<row>_s<seed>.json (31-90 min per run on a 2-core CPU, by its kind);
# 3. seg_table: the table from every record in results/seg/rows, each row's gap to TransCAM paired by seed.
#
# Needs a clean checkout (each result names the commit that made it) and the data where SAMCAM_DATA points
# (default ../shared/data beside the checkout). Environment: SAMCAM (the command, default samcam),
# JOBS (runs at once; default 4, or the cores if fewer, where nvidia-smi lists a GPU, else 1: on a CPU a second run only slows the first).
set -euo pipefail
ROWS=${1:-[a-z_]+}
cd "$(dirname "$0")/.."
SAMCAM=${SAMCAM:-samcam}
JOBS=${JOBS:-$(if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then echo $(( $(nproc) < 4 ? $(nproc) : 4 )); else echo 1; fi)}
. scripts/_jobs.sh
check_jobs "$JOBS"
rc=0; grep -E "$ROWS" <<<"" >/dev/null 2>&1 || rc=$?
if [ "$rc" -gt 1 ]; then echo "seg_table.sh: error: ROWS '$ROWS' is not a regular expression (grep -E)" >&2; exit 2; fi
rows_due() {  # the seg_row steps of the selected rows never run here (or missing their labels); a changed one is named
  local plan
  plan=$($SAMCAM reproduce --list)  # a broken config or data root stops the script here
  grep -E "^seg_row_(${ROWS})_s[0-9]+: .*\[stale \((input|command|notebook|script|output results).* changed" <<<"$plan" | cut -d: -f1 |
    sed 's/^/changed since its record was made (remove its record and work\/ run folder to redo it): /' >&2 || true
  grep -oE "^seg_row_(${ROWS})_s[0-9]+: (would run|skip) \[(stale \(never run here|stale \(output results/seg/rows/[a-z_0-9]+\.json missing|missing input work/seg/labels)" <<<"$plan" |
    cut -d: -f1 || true
}
plan=$($SAMCAM reproduce --list)
if ! grep -qE "^seg_row_(${ROWS})_s[0-9]+:" <<<"$plan"; then  # a misspelt row would train nothing, and say nothing was due
  echo "seg_table.sh: error: ROWS '$ROWS' matches no row of the config; rows: $(grep -oE '^seg_row_[a-z_]+_s[0-9]+' <<<"$plan" | sed -E 's/^seg_row_//; s/_s[0-9]+$//' | sort -u | tr '\n' ' ')" >&2
  exit 2
fi
due=$(rows_due)
for labels in transcam_rule transcam_prompted; do  # label folders live in work/, so a new checkout makes them again
  if grep -q "^seg_row_${labels}_s" <<<"$due"; then $SAMCAM reproduce --only "seg_labels_$labels"; fi
done
steps=$(rows_due 2>/dev/null)
if [ -z "$steps" ]; then
  echo "no seg_row step of rows '${ROWS}' is due"
else
  echo "$(wc -w <<<"$steps") runs, $JOBS at a time: $(tr '\n' ' ' <<<"$steps")"
  xargs -P "$JOBS" -n 1 $SAMCAM reproduce --only <<<"$steps"
fi
$SAMCAM reproduce --only seg_table
