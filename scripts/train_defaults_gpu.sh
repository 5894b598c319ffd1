#!/usr/bin/env bash
# Train the next default models on a GPU in one command: every training volume, scanner-like acquisitions
# (configs/scanner_x2.yaml, configs/scanner_thick_x4.yaml), both runs at once on one GPU, the whole command fitted
# into MINUTES (each run gets run.max_minutes: steps lowered to what the measured pace fits, cosine schedule
# refitted, best model written). Then the GPU inference time per 256^3 output is measured for each candidate.
# Evaluate the candidates afterwards with `mrisuperres evaluate` on the held-out set (never read here) and ship one
# with scripts/ship_model.py.
#
# Usage (repository root; PYTHON has torch with CUDA; nothing is downloaded):
#   PYTHON=python3 scripts/train_defaults_gpu.sh [MINUTES [OUT]]     # defaults: 8 minutes, runs/gpu
# Without ../shared (a leased machine gets only the repository), .devpack/ must hold what
# scripts/device_pack.py packs: train/ (the packed volumes), sitk.tar.xz (SimpleITK) and wheels (monai, nibabel).
# Re-running resumes each run from its checkpoint. OUT receives the run folders (runs-*.tar: model, state, CSV
# log, card, curves), the run logs and the inference table.
set -euo pipefail
cd "$(dirname "$0")/.."
STARTED=$SECONDS
PYTHON=${PYTHON:-.venv/bin/python}
MINUTES=${1:-8}
OUT=${2:-runs/gpu}
RESIMULATE_EVERY=${RESIMULATE_EVERY:-400}  # a GPU step takes milliseconds; a refresh of every subject seconds
FINISH_SECONDS=${FINISH_SECONDS:-100}      # kept after training for the inference timing and the archives
mkdir -p "$OUT" runs/gpu-configs
export PYTHONUNBUFFERED=1
DATA=$PWD/../shared/data/train
if [[ -d .devpack/train ]]; then
  SITE=/tmp/mrisuperres-site
  mkdir -p "$SITE"
  "$PYTHON" -c "import tarfile, sys; tarfile.open('.devpack/sitk.tar.xz').extractall(sys.argv[1], filter='data')" "$SITE"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .devpack/*.whl
  export PYTHONPATH="$SITE"
  DATA=/tmp/mrisuperres-train
  "$PYTHON" scripts/device_pack.py unpack .devpack/train "$DATA" | tr '\n' ' '; echo
fi
export PYTHONPATH="$PWD/MRISuperRes${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c "import torch, SimpleITK, monai; print('torch', torch.__version__, '| CUDA', torch.cuda.is_available(), '|',
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU only', '| SimpleITK', SimpleITK.Version_VersionString(),
'| MONAI', monai.__version__)"

write_config() {  # CONFIG AMP: the config with volumes read from DATA and init_from from this checkout
  "$PYTHON" - "$1" "$DATA" "$RESIMULATE_EVERY" "$2" <<'PY'
import sys, yaml
from pathlib import Path
name, data, every, amp = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "true"
config = yaml.safe_load(open(f"configs/{name}.yaml"))
for key in ("train", "validation"):
    config["data"][key] = [str(next(data.glob(Path(p).name.split(".nii")[0] + ".nii*"))) for p in config["data"][key]]
config["model"]["init_from"] = str((Path("configs") / config["model"]["init_from"]).resolve())
config["data"]["resimulate_every"] = every
config["run"]["amp"] = amp
Path(f"runs/gpu-configs/{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
PY
}

train() {  # CONFIG RUN: train within the time left; once more without mixed precision if the first try fails
  local config=$1 run=$2 amp
  for amp in true false; do
    write_config "$config" "$amp"
    local minutes
    minutes=$("$PYTHON" -c "print(max(0.5, ($MINUTES * 60 - ($SECONDS - $STARTED) - $FINISH_SECONDS) / 60))")
    local options=(--config "runs/gpu-configs/$config.yaml" --max-minutes "$minutes" --quiet --no-register)
    [[ -f "runs/$run/state.pt" ]] && options+=(--resume)
    echo "== $run: amp $amp, $minutes minutes" >> "$OUT/$run.log"
    OMP_NUM_THREADS=8 "$PYTHON" -m MRISuperResLib.cli train "${options[@]}" >> "$OUT/$run.log" 2>&1 && return 0
    echo "== $run failed (amp $amp)" >> "$OUT/$run.log"
  done
  return 1
}

pids=()
for entry in "scanner_x2:scanner-x2" "scanner_thick_x4:scanner-thick-x4"; do
  IFS=: read -r config run <<<"$entry"
  train "$config" "$run" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for entry in "scanner-x2:edsr3d-x2-brain:2" "scanner-thick-x4:edsr3d-thick-x4-brain:1,1,4"; do
  IFS=: read -r run name scale <<<"$entry"
  tail -n 4 "$OUT/$run.log"
  [[ -d "runs/$run" ]] && tar cf "$OUT/runs-$run.tar" -C runs "$run"
  [[ -f "runs/$run/$name.safetensors" ]] || { echo "no model from $run"; status=1; continue; }
  timeout 60 "$PYTHON" benchmarks/bench_enhance.py --sizes 256 --scale "$scale" --devices ${BENCH_DEVICES:-cuda} \
    --model "runs/$run/$name.safetensors" 2>&1 | tee -a "$OUT/inference.txt" || status=1
done
echo "finished in $((SECONDS - STARTED)) s"
exit $status
