#!/usr/bin/env bash
# Train the next default models on a GPU in one command: every training volume, scanner-like acquisitions
# (configs/scanner_x2.yaml, configs/scanner_thick_x4.yaml), then evaluate each candidate on the held-out set
# (../shared/data/eval, the IXI002 pair, MNI152) against B-spline, next to the shipped model.
#
# Usage (repository root; PYTHON has torch with CUDA and the project's dependencies; nothing is downloaded):
#   PYTHON=python3 scripts/train_defaults_gpu.sh [STEPS]        # STEPS overrides run.steps of both configs
# Re-running resumes each run from its checkpoint (runs/scanner-*/state.pt). Candidates land in runs/; ship one
# with scripts/ship_model.py when its table beats the shipped model's.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
STEPS=${1:-}
export PYTHONPATH="$PWD/MRISuperRes${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PYTHON" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.cuda.is_available(), '|',
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU only')"
mkdir -p runs
EVAL=(../shared/data/eval/*.nii.gz ../shared/data/pairs/IXI002_T1.nii.gz ../shared/data/pairs/IXI002_T2.nii.gz)
for entry in "scanner_x2:scanner-x2:2:edsr3d-x2-brain" "scanner_thick_x4:scanner-thick-x4:1,1,4:edsr3d-thick-x4-brain"; do
  IFS=: read -r config run scale name <<<"$entry"
  options=(--config "configs/$config.yaml")
  [[ -n "$STEPS" ]] && options+=(--steps "$STEPS")
  [[ -f "runs/$run/state.pt" ]] && options+=(--resume)
  "$PYTHON" -m MRISuperResLib.cli train "${options[@]}"
  for model in "runs/$run/$name.safetensors" "$name"; do
    echo "== $model, scale $scale"
    "$PYTHON" -m MRISuperResLib.cli evaluate "${EVAL[@]}" --model "$model" --scale "$scale" --device auto
  done
done
