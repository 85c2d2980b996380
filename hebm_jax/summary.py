"""`--mode=summary`: parameter counts per network and the input shapes, without training.

Nothing is allocated (shapes come from `jax.eval_shape`), no data is read and no checkpoint is
touched; the only file written is `<workdir>/summary.json`.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from clu import parameter_overview

from hebm_jax import fileio, train_state
from hebm_jax.config_validation import validate_config

NETWORKS = ("encoder", "generator", "prior")


def count_parameters(tree) -> int:
  """Number of scalars in a pytree of arrays or shape structs."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def abstract_state(config) -> train_state.TrainState:
  """The train state of `config` as shape structs (no allocation, no compilation of the init)."""
  model = train_state.create_model(config, config.optim.steps_per_epoch or 1)
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  return jax.eval_shape(lambda k: train_state.create_train_state(model, k, shape),
                        jax.random.PRNGKey(0))


def model_summary(config, num_devices: int | None = None) -> dict:
  """Parameter counts and shapes of the configured model.

  Returns:
    {'params': {'encoder': N, 'generator': N, 'prior': N}, 'total_params': N,
     'batch_stats': N (batch-norm running statistics, not trained), 'family', 'prior_type',
     'dataset', 'input_shape': [B, H, W, C] (global batch), 'per_device_input_shape',
     'num_devices', 'latent_dims': [d_0, ..., d_{L-1}], 'prior_input_dim': sum d_l,
     'overview': {network: clu parameter table}}.
  """
  num_devices = num_devices or jax.device_count()
  validate_config(config, num_devices)
  state = abstract_state(config)
  d, b = config.data, config.train.batch_size
  image = [d.image_size, d.image_size, d.channels]
  counts = {name: count_parameters(state.params[name]) for name in NETWORKS}
  return {
      "params": counts,
      "total_params": sum(counts.values()),
      "batch_stats": count_parameters(state.batch_stats),
      "family": config.model.family,
      "prior_type": config.prior.type,
      "likelihood": config.objective.likelihood,
      "dataset": d.name,
      "input_shape": [b] + image,
      "per_device_input_shape": [b // num_devices] + image,
      "num_devices": num_devices,
      "latent_dims": list(config.model.z_dims),
      "prior_input_dim": int(sum(config.model.z_dims)),
      "overview": {name: parameter_overview.get_parameter_overview(state.params[name],
                                                                   include_stats=False)
                   for name in NETWORKS if state.params[name]},
  }


def format_summary(summary: dict) -> str:
  """A human-readable report of `model_summary`."""
  lines = []
  for name, table in summary["overview"].items():
    lines += [f"{name}: {summary['params'][name]:,} parameters", table, ""]
  lines.append(f"{'network':<12}{'parameters':>14}")
  for name, n in summary["params"].items():
    lines.append(f"{name:<12}{n:>14,}")
  lines.append(f"{'total':<12}{summary['total_params']:>14,}")
  lines.append("")
  lines.append(f"family {summary['family']!r}, prior {summary['prior_type']!r}, likelihood "
               f"{summary['likelihood']!r}, dataset {summary['dataset']!r}")
  lines.append(f"input batch {tuple(summary['input_shape'])} global, "
               f"{tuple(summary['per_device_input_shape'])} per device on "
               f"{summary['num_devices']} device(s)")
  lines.append(f"latents {tuple(summary['latent_dims'])} (bottom first); prior input "
               f"{summary['prior_input_dim']}")
  return "\n".join(lines)


def write_summary(config, workdir: str) -> dict:
  """Computes `model_summary`, prints it and writes `<workdir>/summary.json` (overview omitted)."""
  from hebm_jax import checkpointing  # pylint: disable=g-import-not-at-top

  summary = model_summary(config)
  print(format_summary(summary), flush=True)
  if jax.process_index() == 0:
    checkpointing.ensure_workdir(workdir)
    path = os.path.join(workdir, "summary.json")
    fileio.write_text(path, json.dumps({k: v for k, v in summary.items() if k != "overview"},
                                       indent=2))
    print(f"wrote {path}", flush=True)
  return summary
