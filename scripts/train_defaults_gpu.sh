#!/usr/bin/env bash
# Train the next default models on a GPU in one command: every training volume (configs/scanner_x2_wide.yaml and
# configs/scanner_thick_x{2,3,4,5}_wide.yaml: the 48-channel models with their own forward models, the 2x, 3x and 5x
# ones grown from the shipped 32-channel models on their first run), all runs at once on one GPU, the whole command
# fitted into MINUTES (each run gets run.max_minutes: steps lowered to what the measured pace fits, cosine schedule
# refitted, best model written). Then the GPU inference time per 256^3 output is measured for each candidate.
# Evaluate the candidates afterwards with `mrisuperres evaluate` on the held-out set (never read here) and ship one
# with scripts/ship_model.py.
#
# Usage (repository root; PYTHON has torch with CUDA; nothing is downloaded):
#   PYTHON=python3 scripts/train_defaults_gpu.sh [MINUTES [OUT]]     # defaults: 8 minutes, runs/gpu
#   RUNS="scanner_x2_wide scanner_thick_x4_wide" ...                        # a subset of the configs (default: all five)
# Without ../shared (a leased machine gets only the repository), .devpack/ must hold what
# scripts/device_pack.py packs: train/ (the packed volumes), and the packages the machine lacks (SimpleITK, MONAI,
# nibabel) as wheels or as *.tar.xz of an installed site folder (unpacked onto PYTHONPATH).
# Re-running resumes each run from its checkpoint. OUT receives one tar per run folder (runs-*.tar: model, state,
# CSV log, card, curves, the run's train.log; the optimiser state only while the archive stays under ARCHIVE_KIB:
# without it a returned run cannot --resume, but its model can start the next run through model.init_from)
# and the inference table: at most one file per run plus one.
set -euo pipefail
cd "$(dirname "$0")/.."
STARTED=$SECONDS
PYTHON=${PYTHON:-.venv/bin/python}
MINUTES=${1:-8}
OUT=${2:-runs/gpu}
RUNS=${RUNS:-scanner_x2_wide scanner_thick_x4_wide scanner_thick_x2_wide scanner_thick_x3_wide scanner_thick_x5_wide}
DEVPACK=${DEVPACK:-.devpack}
# A refresh of every subject takes seconds of CPU (4.7-5.0 s in the 2026-11-30 runs, three at once), a GPU step
# 40-60 ms; run.prefetch (on for a GPU) simulates the next refresh while the GPU trains, so 200 steps (8-12 s of
# GPU time) leave it time to finish and give twice the simulated acquisitions of the earlier 400.
RESIMULATE_EVERY=${RESIMULATE_EVERY:-200}
read -r -a CONFIGS <<<"$RUNS"
die() { echo "train_defaults_gpu.sh: $*" >&2; exit 2; }
[[ $MINUTES =~ ^[0-9]+([.][0-9]+)?$ ]] || die "MINUTES must be a number of minutes such as 8 or 8.5, got '$MINUTES'"
(( ${#CONFIGS[@]} > 0 )) || die "RUNS names no config; give names of configs/*.yaml such as 'scanner_x2'"
for config in "${CONFIGS[@]}"; do
  [[ -f configs/$config.yaml ]] || die "RUNS names '$config', but configs/$config.yaml does not exist; give names of configs/*.yaml such as 'scanner_x2'"
done
BENCH_SECONDS=${BENCH_SECONDS:-45}          # per candidate, GPU inference timing (0: none)
FINISH_SECONDS=${FINISH_SECONDS:-$((60 + BENCH_SECONDS * ${#CONFIGS[@]}))}  # kept after training (final
# validation and model file, archives, timings)
ARCHIVE_KIB=${ARCHIVE_KIB:-15360}  # largest archive kept whole (a leased machine returns files up to 16 MiB)
THREADS=$(( $(nproc) / ${#CONFIGS[@]} )); (( THREADS < 1 )) && THREADS=1
mkdir -p "$OUT" runs/gpu-configs
export PYTHONUNBUFFERED=1
DATA=$PWD/../shared/data/train
if [[ -d $DEVPACK/train ]]; then
  SITE=/tmp/mrisuperres-site
  mkdir -p "$SITE"
  for archive in "$DEVPACK"/*.tar.xz; do
    "$PYTHON" -c "import tarfile, sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='data')" "$archive" "$SITE"
  done
  if compgen -G "$DEVPACK/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$DEVPACK"/*.whl
  fi
  export PYTHONPATH="$SITE"
  DATA=/tmp/mrisuperres-train
  "$PYTHON" scripts/device_pack.py unpack "$DEVPACK/train" "$DATA" | tr '\n' ' '; echo
fi
export PYTHONPATH="$PWD/MRISuperRes${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c "import torch, SimpleITK, monai; print('torch', torch.__version__, '| CUDA', torch.cuda.is_available(), '|',
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU only', '| SimpleITK', SimpleITK.Version_VersionString(),
'| MONAI', monai.__version__)"

# name of the run folder and of the model a config writes, and its scale (base: chains merged)
run_of() { "$PYTHON" -c "import sys; from pathlib import Path; from MRISuperResLib.training.config import read_values
c = read_values(Path(f'configs/{sys.argv[1]}.yaml'))
s = c['model']['config']['scale']; print(c['output_dir'].split('/')[-1], c['name'], ','.join(map(str, s)) if len(set(s)) > 1 else s[0])" "$1"; }

write_config() {  # CONFIG AMP: the config with volumes read from DATA and init_from from this checkout
  "$PYTHON" - "$1" "$DATA" "$RESIMULATE_EVERY" "$2" <<'PY'
import sys, yaml
from pathlib import Path
from MRISuperResLib.training.config import read_values
name, data, every, amp = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "true"
config = read_values(Path(f"configs/{name}.yaml"))  # with its base: merged in
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
  mkdir -p "runs/$run"
  for amp in true false; do
    write_config "$config" "$amp"
    local minutes
    minutes=$("$PYTHON" -c "print(max(0.5, ($MINUTES * 60 - ($SECONDS - $STARTED) - $FINISH_SECONDS) / 60))")
    local options=(--config "runs/gpu-configs/$config.yaml" --max-minutes "$minutes" --quiet --no-register)
    [[ -f "runs/$run/state.pt" ]] && options+=(--resume)
    echo "== $run: amp $amp, $minutes minutes, $THREADS threads" >> "runs/$run/train.log"
    OMP_NUM_THREADS=$THREADS "$PYTHON" -m MRISuperResLib.cli train "${options[@]}" >> "runs/$run/train.log" 2>&1 \
      && return 0
    echo "== $run failed (amp $amp)" >> "runs/$run/train.log"
  done
  return 1
}

pids=()
declare -A INFO  # config -> "run model scale", read once
for config in "${CONFIGS[@]}"; do
  INFO[$config]=$(run_of "$config")
  read -r run _name _scale <<<"${INFO[$config]}"
  train "$config" "$run" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for config in "${CONFIGS[@]}"; do
  read -r run name scale <<<"${INFO[$config]}"
  echo "== $run"
  # Archive whatever each run left, even when another run failed: on a leased machine only OUT comes back.
  [[ -d "runs/$run" ]] || { echo "no run folder"; status=1; continue; }
  tail -n 3 "runs/$run/train.log" || true
  # A leased machine returns files of at most 16 MiB: best.safetensors repeats the final model's weights, and the
  # optimiser state of a large model (2 x its weights) stays behind when the archive would outgrow that.
  excludes=() counted=()
  if [[ -f "runs/$run/$name.safetensors" ]]; then
    excludes+=(--exclude="$run/best.safetensors"); counted+=(--exclude=best.safetensors)
  fi
  if (( $(du -k "${counted[@]}" -s "runs/$run" | cut -f1) > ARCHIVE_KIB )); then
    excludes+=(--exclude="$run/state.pt"); echo "state.pt left out of runs-$run.tar (over $ARCHIVE_KIB KiB)"
  fi
  tar cf "$OUT/runs-$run.tar" "${excludes[@]}" -C runs "$run" || status=1
  [[ -f "runs/$run/$name.safetensors" ]] || { echo "no model from $run"; status=1; continue; }
  (( BENCH_SECONDS > 0 )) || continue
  timeout "$BENCH_SECONDS" "$PYTHON" benchmarks/bench_enhance.py --sizes 256 --scale "$scale" \
    --devices ${BENCH_DEVICES:-cuda} --model "runs/$run/$name.safetensors" 2>&1 | tee -a "$OUT/inference.txt" || status=1
done
echo "finished in $((SECONDS - STARTED)) s"
exit $status
