#!/usr/bin/env bash
# Train the CamVid zoo recipes on a GPU inside a time budget, AMP by the trainer's precision=auto (bf16 on
# GPUs that have it, fp16 with gradient scaling otherwise). Called by run.sh's training hook or on its own:
#
#   benchmarks/gpu/train_zoo.sh OUT BUDGET_S            # on the GPU machine
#   benchmarks/gpu/train_zoo.sh --dry-run OUT           # anywhere: CPU, one recipe, two iterations (CI runs this)
#
# Data: CamVid packed by tools/pack_camvid.py into the git-ignored .gpu-data/camvid (JPEG q95 + PNG labels, about
# 40 MiB; name .gpu-data in the device call's carry), or RTSEG_CAMVID=DIR.
# Recipes: RTSEG_ZOO_RECIPES (default: every camvid-* zoo recipe), epochs RTSEG_ZOO_EPOCHS (default: the recipe's),
# each recipe gets an equal share of what is left of the budget and is stopped at its share (checkpoints are
# written every epoch, so a stopped run keeps its best epoch).
# Output: OUT/zoo.tar with each run's best.safetensors (or best.pt), metrics.csv, config.yaml and summary.json
# (one file, because the device tool returns at most eight), and the log on stdout.
set -uo pipefail
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:-${OUT:-$REPO/gpu-results}}"
BUDGET="${2:-${RTSEG_TRAIN_BUDGET_S:-300}}"
PY="${PYTHON:-python3}"
DATA="${RTSEG_CAMVID:-$REPO/.gpu-data/camvid}"
RECIPES="${RTSEG_ZOO_RECIPES:-camvid-fplnet camvid-espnet camvid-erfnet camvid-essnet-b-dg2 camvid-wspdnet camvid-liteseg-mobilenetv2 camvid-farseenet}"
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
START=$(date +%s)
mkdir -p "$OUT/zoo"
if [[ ! -d "$DATA/train" ]]; then
  echo "train_zoo.sh: no CamVid at $DATA (pack it with: python tools/pack_camvid.py ../shared/data/camvid .gpu-data/camvid)" >&2
  exit 2
fi
read -r -a names <<<"$RECIPES"
status=0
for i in "${!names[@]}"; do
  recipe=${names[$i]}
  left=$(( BUDGET - ($(date +%s) - START) ))
  share=$(( left / (${#names[@]} - i) ))
  if (( share < 20 )); then echo "[train_zoo] no time left for $recipe"; break; fi
  extra=(train.num_workers="${RTSEG_ZOO_WORKERS:-8}" train.threads=null)
  [[ -n "${RTSEG_ZOO_EPOCHS:-}" ]] && extra+=(train.epochs="$RTSEG_ZOO_EPOCHS")
  if [[ $DRY == 1 ]]; then
    extra=(train.device=cpu train.epochs=1 train.max_iters_per_epoch=2 train.num_workers=0 train.batch_size=2 data.image_size=[48,64] data.crop_size=[48,64])
  fi
  echo "[train_zoo $(( $(date +%s) - START ))s] $recipe (limit ${share}s)"
  timeout "$share" "$PY" -m rtseg.cli train --quiet "$recipe" data.root="$DATA" output.dir="$OUT/zoo/$recipe" train.tensorboard=false "${extra[@]}"
  rc=$?
  (( rc == 124 )) && echo "[train_zoo] $recipe stopped at its time share; its last finished epoch is kept"
  (( rc != 0 && rc != 124 )) && { echo "[train_zoo] $recipe failed: exit $rc"; status=1; }
  [[ $DRY == 1 ]] && break
done
# one archive: the weights and records of every run (not the full checkpoints, which hold optimizer state)
(cd "$OUT/zoo" && find . \( -name 'best.safetensors' -o -name 'metrics.csv' -o -name 'summary.json' -o -name 'config.yaml' \) -print0 \
  | tar --null -cf "$OUT/zoo.tar" -T -)
if [[ $DRY == 0 ]] && [[ -z "$(tar -tf "$OUT/zoo.tar" | grep safetensors)" ]]; then
  (cd "$OUT/zoo" && find . -name 'best.pt' -print0 | tar --null -rf "$OUT/zoo.tar" -T -)
fi
rm -rf "$OUT/zoo"
echo "[train_zoo $(( $(date +%s) - START ))s] done, status $status: $(tar -tf "$OUT/zoo.tar" | wc -l) files in $OUT/zoo.tar"
exit $status
