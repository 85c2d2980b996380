#!/bin/bash
# main.py end to end on a machine without TensorFlow (a GPU machine installed from
# requirements-gpu.txt, README "Install without TensorFlow"): the digits quick start, then MNIST for
# MNIST_STEPS steps in two runs (the second resumes from the first's checkpoint), with checkpoints,
# TensorBoard events and images; writes OUTDIR/summary.json and prints it.
#
#   bash scripts/gpu_main_e2e.sh OUTDIR
#
# MNIST is read from MNIST_DATA_DIR (a tfds data_dir holding a prepared array_record copy) when
# given; otherwise random 28x28 images in tfds' MNIST format are written first
# (hebm_jax.data.synthetic, no TensorFlow; MNIST_RANDOM_TRAIN / MNIST_RANDOM_TEST examples), which
# exercises the same input pipeline and training step, not the paper's numbers.
# Knobs: DIGITS_STEPS (default: the config's 4000), MNIST_STEPS (2000), EXTRA_FLAGS (appended to
# every main.py call, e.g. tiny model overrides for a CPU check), STEP_LIMIT_S (per run, 900).
set -u
out=${1:?usage: bash scripts/gpu_main_e2e.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
mnist_steps=${MNIST_STEPS:-2000}
half=$((mnist_steps / 2))
limit=${STEP_LIMIT_S:-900}
read -r -a extra <<< "${EXTRA_FLAGS:-}"

run() {  # run NAME ARGS...: main.py under a time limit; log in OUTDIR/NAME.log, rc and wall time
  local name=$1
  shift
  local start=$SECONDS
  echo "== $name $(date -u +%H:%M:%S)"
  timeout "$limit" python main.py "$@" "${extra[@]}" > "$out/$name.log" 2>&1
  local rc=$?
  echo "$name $rc $((SECONDS - start))" >> "$out/runs.txt"
  echo "== $name rc=$rc $((SECONDS - start)) s"
  tail -n 4 "$out/$name.log"
}

: > "$out/runs.txt"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  python -c "import sys, jax; print(sys.version); print('jax', jax.__version__, jax.devices())"
  python -c "import tensorflow" 2>/dev/null && echo "tensorflow: importable" \
    || echo "tensorflow: not importable"
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

digits_flags=(--config=configs/digits.py "--workdir=$out/digits")
[[ -n "${DIGITS_STEPS:-}" ]] && digits_flags+=("--config.train.num_steps=$DIGITS_STEPS")
run digits "${digits_flags[@]}"

data_dir=${MNIST_DATA_DIR:-$out/tfds}
if [[ -z "${MNIST_DATA_DIR:-}" ]]; then
  python - "$data_dir" "${MNIST_RANDOM_TRAIN:-10000}" "${MNIST_RANDOM_TEST:-2000}" <<'EOF'
import sys
import numpy as np
from hebm_jax.data import synthetic
data_dir, n_train, n_test = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
split = lambda n: {"image": rng.integers(0, 256, (n, 28, 28, 1), np.uint8),
                   "label": rng.integers(0, 10, (n,), np.int64)}
print("random MNIST written to", synthetic.write_tfds_dataset(
    "mnist", data_dir, {"train": split(n_train), "test": split(n_test)}))
EOF
fi
mnist=(--config=configs/mnist.py "--workdir=$out/mnist" "--config.data.data_dir=$data_dir"
       --config.checkpoint.every_steps=$((half > 500 ? 500 : (half > 0 ? half : 1)))
       --config.logging.image_every_steps="$half" --config.eval.every_steps="$half")
run mnist_first_half "${mnist[@]}" --config.train.num_steps="$half"
run mnist_resumed "${mnist[@]}" --config.train.num_steps="$mnist_steps"

python - "$out" <<'EOF'
import json, os, re, sys
out = sys.argv[1]
sys.modules.setdefault("tensorboard.compat.notf", type(sys)("tensorboard.compat.notf"))
from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.util import tensor_util

def events(workdir):
  acc = pea.EventAccumulator(workdir, size_guidance={pea.TENSORS: 0})
  acc.Reload()
  tags = acc.Tags()["tensors"]
  last = lambda tag: (float(tensor_util.make_ndarray(acc.Tensors(tag)[-1].tensor_proto))
                      if tag in tags else None)
  return {"tags": len(tags), "images": sorted(t for t in tags if acc.SummaryMetadata(t)
                                              .plugin_data.plugin_name == "images"),
          "last_step": max((e.step for t in tags for e in acc.Tensors(t)), default=None),
          "train/loss": last("train/loss"), "train/steps_per_sec": last("train/steps_per_sec"),
          "eval/mse": last("eval/mse")}

summary = {"machine": open(os.path.join(out, "machine.txt")).read().splitlines(), "runs": {}}
for line in open(os.path.join(out, "runs.txt")):
  name, rc, secs = line.split()
  log = open(os.path.join(out, f"{name}.log")).read()
  summary["runs"][name] = {"rc": int(rc), "wall_s": int(secs),
                           "resumed": re.findall(r"Resumed from .* at step \d+", log)}
for name in ("digits", "mnist"):
  workdir = os.path.join(out, name)
  if os.path.isdir(workdir):
    summary[name] = {"checkpoints": sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int)
                     if os.path.isdir(os.path.join(workdir, "checkpoints")) else [],
                     "events": events(workdir)}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(json.dumps(summary, indent=1))
EOF
