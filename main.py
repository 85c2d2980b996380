"""hebm-jax entry point: `python main.py --config=configs/digits.py --workdir=runs/digits`.

Modes:
  train    (default) trains, resuming from the workdir's latest checkpoint;
  eval     the metrics of `config.eval.metrics` on the newest checkpoint(s), beside the paper's
           numbers (`hebm_jax.evaluation`);
  sample   prior samples, reconstructions and hierarchical grids of a checkpoint, as PNG and .npz
           (`hebm_jax.generate`, `config.sample`);
  summary  parameter table per network and input shapes, written to `<workdir>/summary.json`.
"""

import os

# C++ INFO lines of XLA's logging (and of TensorFlow, imported only by tfds' download_and_prepare
# where the `prepare` extra installs it) stay off the console; TensorFlow's oneDNN kernels are never
# used here.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

if __name__ == "__main__":
  # XLA:CPU's per-step buffers on transparent huge pages: re-executes once with a glibc tunable
  # (hebm_jax.host_memory; HEBM_JAX_HUGEPAGES=0 turns it off).
  from hebm_jax import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.reexec_with_hugepages()

from absl import app, flags, logging
from ml_collections import config_flags

from hebm_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and images.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "sample", "summary"],
                  "train: train and evaluate; eval: run config.eval.metrics on the workdir's "
                  "newest checkpoint(s) and write <workdir>/eval/results_<step>.json (with "
                  "--config.eval.follow=True: each new checkpoint of a live run); sample: write "
                  "prior samples, reconstructions and hierarchical grids (PNG and .npz) of a "
                  "checkpoint under <workdir>/samples/ (config.sample); summary: "
                  "print the parameter table and input shapes and write <workdir>/summary.json.")
flags.DEFINE_bool("distributed", None, "Call jax.distributed.initialize(); default: when the "
                  "environment describes a multi-process job (JAX_COORDINATOR_ADDRESS, SLURM, "
                  "Open MPI, or a TPU pod).")
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def _multi_process_env() -> bool:
  env = os.environ
  return bool(env.get("JAX_COORDINATOR_ADDRESS") or int(env.get("SLURM_NTASKS", "1")) > 1
              or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
              or "," in env.get("TPU_WORKER_HOSTNAMES", ""))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.quiet_libraries()
  from hebm_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from hebm_jax.config_validation import ConfigError  # pylint: disable=g-import-not-at-top
  from hebm_jax.evaluation.driver import EvaluationError  # pylint: disable=g-import-not-at-top
  from hebm_jax.workdir_lock import WorkdirLockError  # pylint: disable=g-import-not-at-top

  # Errors a user causes (config values, workdir contents, missing data) are one message, not a
  # traceback; they are raised before anything in the workdir is changed.
  cli.run_reporting_user_errors(_run, (ConfigError, EvaluationError,
                                       checkpointing.IncompatibleCheckpointError,
                                       FileNotFoundError, WorkdirLockError))


def _run() -> None:
  import jax  # pylint: disable=g-import-not-at-top
  from hebm_jax import train  # pylint: disable=g-import-not-at-top
  from hebm_jax.config_validation import validate_config  # pylint: disable=g-import-not-at-top

  validate_config(FLAGS.config)  # before any device work or compilation
  if FLAGS.distributed or (FLAGS.distributed is None and _multi_process_env()):
    jax.distributed.initialize()
  logging.info("JAX process %d/%d, local devices: %s", jax.process_index(), jax.process_count(),
               jax.local_devices())
  if FLAGS.mode == "summary":
    from hebm_jax import summary  # pylint: disable=g-import-not-at-top
    summary.write_summary(FLAGS.config, FLAGS.workdir)
  elif FLAGS.mode == "eval":
    from hebm_jax.evaluation import driver  # pylint: disable=g-import-not-at-top
    driver.run_evaluation(FLAGS.config, FLAGS.workdir)
  elif FLAGS.mode == "sample":
    from hebm_jax import generate  # pylint: disable=g-import-not-at-top
    generate.write_samples(FLAGS.config, FLAGS.workdir)
  elif FLAGS.mode == "train":
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
