#!/usr/bin/env bash
# A real 2-task SLURM job array on this machine: a single-node SLURM (slurmctld + slurmd on localhost, munge
# authentication) runs `mrisuperres enhance --manifest` on a small folder of real volumes, each task finding its
# shard in SLURM_ARRAY_TASK_ID; then it checks that every input ran exactly once and writes the review page.
#
# Needs root and Debian's packages: apt-get install slurm-wlm munge. Everything else lives in WORK (default
# /tmp/mrisuperres-slurm-demo): configuration, state, logs, data, outputs. The daemons it starts are stopped
# at the end. CI does not run it.
#
# Usage: scripts/slurm_local_demo.sh [WORK]
#   MRISUPERRES="python -m MRISuperResLib.cli" (with PYTHONPATH) to use a checkout instead of the installed command
#   PYTHON=python3 for the interpreter that makes the sample volumes (needs the package and nilearn)
set -euo pipefail

WORK=${1:-/tmp/mrisuperres-slurm-demo}
MRISUPERRES=${MRISUPERRES:-mrisuperres}
PYTHON=${PYTHON:-python3}
for command in slurmctld slurmd sbatch sinfo munged; do
  command -v "$command" >/dev/null || { echo "missing $command: apt-get install slurm-wlm munge" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "run as root: it starts munged, slurmctld and slurmd" >&2; exit 1; }

rm -rf "$WORK"
mkdir -p "$WORK"/{etc,state,spool,log,run,munge} "$WORK/data" "$WORK/out"
NODE=$(hostname -s)
CPUS=$(nproc)
export SLURM_CONF="$WORK/etc/slurm.conf"
started=()

cleanup() {
  for pidfile in "${started[@]}"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
}
trap cleanup EXIT

# --- munge: a key of our own and a daemon on a socket in WORK -------------------------------------------------
MUNGE_SOCKET="$WORK/munge/munge.socket"
dd if=/dev/urandom bs=1 count=1024 of="$WORK/munge/munge.key" status=none
chmod 0700 "$WORK/munge"; chmod 0400 "$WORK/munge/munge.key"
munged --force --key-file "$WORK/munge/munge.key" --socket "$MUNGE_SOCKET" \
  --pid-file "$WORK/munge/munged.pid" --log-file "$WORK/log/munged.log" --seed-file "$WORK/munge/munged.seed"
started+=("$WORK/munge/munged.pid")

# --- slurm.conf: one node, one partition, no accounting, no cgroups ---------------------------------------------
cat > "$SLURM_CONF" <<EOF
ClusterName=mrisuperres-demo
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/run/slurmctld.pid
SlurmdPidFile=$WORK/run/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=1000 State=UNKNOWN
PartitionName=demo Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

slurmctld -f "$SLURM_CONF"
started+=("$WORK/run/slurmctld.pid")
slurmd -f "$SLURM_CONF" -N "$NODE"
started+=("$WORK/run/slurmd.pid")
for _ in $(seq 60); do
  state=$(sinfo -h -N -o "%T" 2>/dev/null | head -n 1 || true)
  [ "$state" = "idle" ] && break
  sleep 1
done
echo "== sinfo"
sinfo

# --- a small folder of real volumes: crops of the MNI152 T1 at 2 mm, NIfTI / NRRD / MetaImage -------------------
"$PYTHON" - "$WORK/data" <<'EOF'
import sys
from pathlib import Path

import numpy as np

from MRISuperResLib.processing.degradation import box_downsample
from MRISuperResLib.imaging.geometry import resampled_grid
from MRISuperResLib.imaging.samples import mni152_t1_path
from MRISuperResLib.imaging.volume import Grid, Volume
from MRISuperResLib.imaging.volume_io import read_volume, write_volume

folder = Path(sys.argv[1])
mni = read_volume(mni152_t1_path())
for number, extension in enumerate([".nii.gz", ".nrrd", ".mha", ".nii.gz", ".nrrd"]):
    start = np.array([40 + 6 * number, 50, 40 + 4 * number])
    crop = mni.array[tuple(slice(s, s + 48) for s in start)].astype(np.float32)
    origin = mni.grid.origin + mni.grid.direction @ (start * np.array(mni.spacing))
    grid = resampled_grid(Grid((48, 48, 48), mni.spacing, tuple(origin), mni.grid.direction), (24, 24, 24))
    write_volume(Volume(box_downsample(crop, (24, 24, 24)), grid), folder / f"mni_crop{number}{extension}")
EOF
echo "== inputs"
ls "$WORK/data"

# --- the job array: each task runs its part of the cohort ------------------------------------------------------
cat > "$WORK/cohort.sbatch" <<EOF
#!/bin/bash
#SBATCH --job-name=mrisuperres-cohort
#SBATCH --array=1-2
#SBATCH --cpus-per-task=1
#SBATCH --output=$WORK/log/%x_%A_%a.out
echo "task \$SLURM_ARRAY_TASK_ID of \$SLURM_ARRAY_TASK_COUNT (min \$SLURM_ARRAY_TASK_MIN) on \$(hostname -s)"
$MRISUPERRES enhance $WORK/data $WORK/out --device cpu --threads 1 \\
    --manifest $WORK/out/manifest_\${SLURM_ARRAY_TASK_ID}.csv
EOF
echo "== sbatch --wait $WORK/cohort.sbatch"
cat "$WORK/cohort.sbatch"
sbatch --wait "$WORK/cohort.sbatch"
for log in "$WORK"/log/mrisuperres-cohort_*.out; do
  echo "== $(basename "$log")"
  grep -v -e "^WARNING: In" -e "GDCMSeriesFileNames" -e "^$" "$log" || true
done

# --- every input exactly once, then the review page -------------------------------------------------------------
echo "== manifests"
cat "$WORK"/out/manifest_*.csv | cut -d, -f2,4,6,14
"$PYTHON" - "$WORK" <<'EOF'
import sys
from pathlib import Path

from MRISuperResLib.cohort.manifest import read_manifest

work = Path(sys.argv[1])
rows = [row for path in sorted((work / "out").glob("manifest_*.csv")) for row in read_manifest(path)]
inputs = sorted(str(p) for p in (work / "data").iterdir())
ran = sorted(row["input"] for row in rows)
assert ran == inputs, f"inputs run {ran} != inputs {inputs}"
assert {row["status"] for row in rows} == {"done"}, rows
shards = {row["shard"] for row in rows}
assert shards == {"1/2", "2/2"}, shards
print(f"every one of the {len(inputs)} inputs ran exactly once, in shards {sorted(shards)}")
EOF
$MRISUPERRES report "$WORK"/out/manifest_*.csv -o "$WORK/out/review.html"
echo "== squeue (empty: every task ended)"
squeue
