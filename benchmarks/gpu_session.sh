#!/bin/bash
# The GPU rows BENCHMARKS.md still lacks, most wanted first, each under its own time limit so that
# one short device session (about 10 minutes of run time) brings back whatever finished:
#
#   bash benchmarks/gpu_session.sh OUTDIR
#
# Every command writes its JSON after each row and its log to OUTDIR. Needs no TensorFlow, clu or
# grain (put ml_collections on PYTHONPATH if the machine lacks it). JAX preallocates half the GPU,
# as in the recorded GPU runs (there PyTorch shared it).
set -u
out=${1:?usage: bash benchmarks/gpu_session.sh OUTDIR}
mkdir -p "$out"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}

step() {  # step NAME SECONDS COMMAND...: run, keep the log, report the exit status and the tail
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit} s) $(date -u +%H:%M:%S)"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "== $name rc=$?"
  tail -n 12 "$out/$name.log"
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv \
  > "$out/gpu.txt" 2>&1
python -c "import sys, jax, flax, optax; print(sys.version); print('jax', jax.__version__, 'flax',
flax.__version__, 'optax', optax.__version__); print(jax.devices())" >> "$out/gpu.txt" 2>&1
cat "$out/gpu.txt"

# bf16 compute and four steps per dispatch for the svhn_fid step (batch 100).
step options 240 python -m benchmarks.run --configs= --options svhn_fid --scaling= --no_torch \
  --json "$out/options.json"
# The launch-bound prior chain with its loop unrolled, alone and inside the svhn_fid step.
step langevin_unroll 130 python -m benchmarks.langevin_unroll --configs svhn_fid,svhn \
  --unrolls 1,5,10 --step_unrolls 1,5 --json "$out/langevin_unroll.json"
# The quick start's model.
step digits 80 python -m benchmarks.run --configs digits --options= --scaling= --no_torch \
  --json "$out/digits.json"
# Evaluation throughput: FID features, samples for FID, anomaly scores, AIS.
step evaluation 110 python -m benchmarks.evaluation --json "$out/evaluation.json"
