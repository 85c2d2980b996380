"""`--mode=sample`: prior samples, reconstructions and hierarchical grids from a checkpoint.

Writes `<workdir>/samples/<step>_<method>_K<n_steps>_s<step_size>_seed<seed>/` (so samples of other
settings never overwrite each other): `samples.png` (the first 100), `reconstructions.png` (test
image | reconstruction from the posterior mean), `hierarchical.png` (one layer varied at a time,
paper Fig. 4), and `samples.npz` with `images` (N, H, W, C) uint8, the latents `z1`..`zL` (N, d_l)
float32, `originals` and `reconstructions` uint8, and the settings.

The samples come from `prior_samples.prior_sample_batches`, the batched sampler the FID evaluator
shares.
"""

from __future__ import annotations

import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from hebm_jax import compile_cache, fileio, sampler, summary, train_state, visualization
from hebm_jax.config_validation import ConfigError
from hebm_jax.prior_samples import SAMPLE_METHODS, prior_sample_batches
_SAMPLE_STREAM = 4  # fold_in index of the sampling key (0-2: training, 3: evaluation)


def sample_settings(config) -> dict:
  """config.sample with its defaults resolved (0 means the training sampler's K and s)."""
  s = config.sample
  return {"checkpoint_step": s.checkpoint_step, "num_samples": s.num_samples,
          "num_reconstructions": s.num_reconstructions, "method": s.method, "seed": s.seed,
          "n_steps": s.n_steps or config.sampler.n_steps,
          "step_size": s.step_size or config.sampler.step_size}


def check_sample_config(config) -> None:
  """Raises `ConfigError` naming the first invalid config.sample field."""
  s = config.sample
  def require(cond, field, message):
    if not cond:
      raise ConfigError(f"config.sample.{field}: {message}")
  is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)
  require(is_int(s.num_samples) and s.num_samples > 0, "num_samples",
          f"must be a positive integer, got {s.num_samples!r}.")
  for field in ("num_reconstructions", "n_steps", "checkpoint_step", "seed"):
    require(is_int(s[field]) and s[field] >= 0, field,
            f"must be a non-negative integer, got {s[field]!r}.")
  require(isinstance(s.step_size, (int, float)) and s.step_size >= 0, "step_size",
          f"must be a non-negative number (0: config.sampler.step_size), got {s.step_size!r}.")
  require(s.method in SAMPLE_METHODS, "method",
          f"unknown method {s.method!r}; expected one of {SAMPLE_METHODS}.")


def _uint8(images) -> np.ndarray:
  return np.clip((np.asarray(images) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def write_samples(config, workdir: str) -> str:
  """`--mode=sample`: writes the files listed in the module docstring; returns their directory."""
  from hebm_jax import checkpointing, input_pipeline  # pylint: disable=g-import-not-at-top
  from hebm_jax.evaluation import checkpoints  # pylint: disable=g-import-not-at-top

  check_sample_config(config)
  settings = sample_settings(config)
  steps = checkpoints.select_steps(workdir, settings["checkpoint_step"], 1,
                                   field="config.sample.checkpoint_step")
  manager = checkpoints.restore_config_checked(workdir, steps, config)
  source = None
  if settings["num_reconstructions"]:
    source = input_pipeline.load_split(config.data, config.data.eval_split)
    input_pipeline.check_source(source, config.data)
  model = train_state.create_model(config, steps_per_epoch=1)
  state, step = checkpointing.restore(manager, summary.abstract_state(config), config, steps[-1])
  manager.close()
  state = jax.device_put(state)
  compile_cache.use(config.train.get("compilation_cache", ""), workdir)  # after every check

  key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), _SAMPLE_STREAM),
                           settings["seed"])
  images, latents, acceptance = [], [], []
  for batch_images, zs, acc in prior_sample_batches(
      model, state, key, settings["num_samples"], config.eval.batch_size, settings["n_steps"],
      settings["step_size"], settings["method"]):
    images.append(np.asarray(batch_images))
    latents.append([np.asarray(z) for z in zs])
    acceptance.append(np.asarray(acc))
  images = np.concatenate(images)
  zs = [np.concatenate([b[l] for b in latents]) for l in range(len(model.z_dims))]
  acceptance = float(np.mean(np.concatenate(acceptance)))

  tag = (f"{step}_{settings['method']}_K{settings['n_steps']}_s{settings['step_size']:g}"
         f"_seed{settings['seed']}")
  out_dir = os.path.join(workdir, "samples", tag)
  scale = max(1, 48 // images.shape[1])
  visualization.save_png(visualization.make_grid(images[:100]),
                         os.path.join(out_dir, "samples.png"), scale)
  gen_vars = train_state.network_variables(state, "generator")
  shown = [jnp.asarray(z[:100]) for z in zs]
  hierarchical = np.asarray(sampler.hierarchical_sampling(model.generator, gen_vars, shown))
  visualization.save_png(
      visualization.with_titles([visualization.make_grid(g) for g in hierarchical],
                                visualization.layer_names(len(zs))),
      os.path.join(out_dir, "hierarchical.png"), scale)
  arrays = {"images": _uint8(images), **{f"z{l + 1}": z for l, z in enumerate(zs)}}
  if source is not None:
    n = min(settings["num_reconstructions"], len(source))
    originals = source.get(np.arange(n))["image"]
    means, _ = model.encoder.apply(train_state.network_variables(state, "encoder"), jnp.asarray(originals))
    recon = np.asarray(model.generator.apply(gen_vars, means))
    visualization.save_png(visualization.make_grid(np.concatenate([originals, recon], axis=2)),
                           os.path.join(out_dir, "reconstructions.png"), scale)
    arrays.update(originals=_uint8(originals), reconstructions=_uint8(recon))
  settings.update(checkpoint_step=step, mala_acceptance_rate=acceptance)
  buffer = io.BytesIO()
  np.savez_compressed(buffer, settings=json.dumps(settings), **arrays)
  fileio.write_bytes(os.path.join(out_dir, "samples.npz"), buffer.getvalue())
  logging.info("Wrote %d samples of step %d (%s, K=%d, s=%g%s) to %s", len(images), step,
               settings["method"], settings["n_steps"], settings["step_size"],
               f", MALA acceptance {acceptance:.3f}" if settings["method"] == "mala" else "", out_dir)
  return out_dir
