#!/usr/bin/env bash
# One lent-GPU call: continue the shipped emoji64 model for MINUTES, then evaluate and export, all under $OUT.
#
#   device tool: run  command="bash tools/gpu_stretch.sh 8"  carry=["data/emoji64"]
#   (data/emoji64 from `python -m gan dataset emoji --out data/emoji64`: the GPU machine has no emoji font)
#
# Training starts from the exported weights (`train --init`: G from G_ema, D, images seen, augment p; fresh Adam
# states), so nothing but the repo and the dataset has to travel, and only lean files come back:
#   $OUT/emoji64.safetensors + .json  fp16 G_ema + D with its card (metrics from $OUT/eval.json)
#   $OUT/run/log.jsonl, $OUT/run/samples/  the stretch's log and sample grids
# Continue the next call from the returned checkpoint (CKPT=...). DEVICE=cpu runs the same thing without a GPU.
set -euo pipefail
MINUTES=${1:-8}
OUT=${OUT:-out}
CKPT=${CKPT:-checkpoints/emoji64.safetensors}
DEVICE=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

mkdir -p "$OUT"
# SIGTERM at the time limit stops training at the next step and saves the run state.
timeout -s TERM "${MINUTES}m" "$PY" -m gan train --config configs/emoji64.json --data data/emoji64 --init "$CKPT" \
  --out "$OUT/run" --device "$DEVICE" --kimg 1000000 2>&1 | tr '\r' '\n' | grep -v "^train:" || true
test -f "$OUT/run/state.safetensors" || { echo "no run state was written" >&2; exit 1; }
"$PY" -m gan evaluate --checkpoint "$OUT/run/state.safetensors" --data data/emoji64 --n 3655 --noise-mode const --out "$OUT/eval.json"
"$PY" -m tools.export_checkpoint "$OUT/run/state.safetensors" "$OUT/emoji64.safetensors" --noise-mode const --eval "$OUT/eval.json"
rm "$OUT/run/state.safetensors"  # 50 MB with both Adam states; the export is enough to continue (--init)
