#!/bin/bash
# Paper Table 1 (MNIST row) and Table 3 (MNIST anomaly AUPRC), trained and evaluated as
# RESULTS.md states them, for both priors, then one summary table. Every training resumes what its
# workdir holds, so the script can be stopped (SIGTERM saves) and run again to continue; a finished
# run is only evaluated. A training stopped by a signal (exit 143/130) stops the script with that
# status, so a partly trained run is never evaluated as if it were done.
#
#   DATA_DIR=/data/tfds bash scripts/mnist_tables.sh OUT
#
# Knobs (environment):
#   DATA_DIR        tfds data_dir with a prepared mnist (required)
#   TABLE1_STEPS    training steps of each Table 1 run (default 60000, 100 epochs)
#   ANOMALY_STEPS   training steps of each Table 3 run (default 45000, ~100 epochs)
#   SEEDS           config seeds (default "1234")
#   PRIORS          'ebm' and/or 'gaussian' (our VLAE) (default "ebm gaussian")
#   DIGITS          held-out digits of Table 3 (default "1 4 5 7 9")
#   TABLES          which tables (default "1 3")
#   EXTRA_FLAGS     appended to every main.py call (e.g. --config.prior.spectral_norm=False)
# The summary (hebm_jax/evaluation/seeds.py) gives every run, each arm's mean ± std over seeds, and
# the EBM-minus-VLAE difference paired by seed, with 95 % t intervals.
# Table 1: the classifier trains on train[:50000], its epoch is chosen on train[50000:], and the
# test accuracy of that epoch is reported (configs/mnist.py). Table 3: mean +- std of the last 10
# checkpoints (500 steps apart), z = q's mean, the model's own -log p(x, z) (configs/mnist_anomaly.py).
set -eu
out=${1:?usage: DATA_DIR=... bash scripts/mnist_tables.sh OUT}
: "${DATA_DIR:?set DATA_DIR to a tfds data_dir holding a prepared mnist}"
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
read -r -a extra <<< "${EXTRA_FLAGS:-}"
data=(--config.data.data_dir="$DATA_DIR")

run() {  # run LOG ARGS...: main.py, its console appended to OUT/LOG (a rerun keeps the earlier part)
  local log=$1
  shift
  echo "$(date -u +%H:%M:%S) $log"
  echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) python main.py $*" >> "$out/$log"
  local status=0
  python main.py "$@" "${data[@]}" "${extra[@]}" >> "$out/$log" 2>&1 || status=$?
  if (( status == 130 || status == 143 )); then  # stopped by a signal after saving: not finished
    echo "stopped (saved): run the same command again to continue"; exit "$status"
  elif (( status )); then
    echo "failed: see $out/$log"; tail -n 3 "$out/$log"; return 1
  fi
}

for seed in ${SEEDS:-1234}; do
  for prior in ${PRIORS:-ebm gaussian}; do
    flags=(--config.seed="$seed" --config.prior.type="$prior")
    if [[ " ${TABLES:-1 3} " == *" 1 "* ]]; then
      t1=(--config=configs/mnist.py --workdir="$out/table1_${prior}_s$seed" "${flags[@]}"
          --config.train.num_steps="${TABLE1_STEPS:-60000}")
      run "table1_${prior}_s$seed.log" "${t1[@]}"
      run "table1_${prior}_s$seed.eval.log" "${t1[@]}" --mode=eval \
        --config.eval.metrics=latent_classifier,prior_kl,mse
    fi
    if [[ " ${TABLES:-1 3} " == *" 3 "* ]]; then
      for d in ${DIGITS:-1 4 5 7 9}; do
        t3=(--config=configs/mnist_anomaly.py --workdir="$out/anomaly${d}_${prior}_s$seed"
            "${flags[@]}" --config.data.held_out_digit="$d"
            --config.train.num_steps="${ANOMALY_STEPS:-45000}")
        run "anomaly${d}_${prior}_s$seed.log" "${t3[@]}"
        run "anomaly${d}_${prior}_s$seed.eval.log" "${t3[@]}" --mode=eval
      done
    fi
  done
done

python -m hebm_jax.evaluation.seeds "$out"  # each run, each arm over seeds, EBM minus VLAE by seed
