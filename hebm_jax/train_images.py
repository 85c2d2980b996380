"""The image grids a training run writes: prior samples, reconstructions, hierarchical sampling."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from hebm_jax import objectives, sampler, visualization
from hebm_jax.train_state import HEBM, TrainState, network_variables

Array = jax.Array


def image_summaries(model: HEBM, state: TrainState, key: Array, images: Array, num: int) -> dict:
  """Prior samples, reconstructions and a hierarchical-sampling batch (all in [-1, 1]).

  Returns:
    {'samples': (num, H, W, C), 'reconstructions': (n, H, 2W, C) original | reconstruction,
     'hierarchical': (L, num, H, W, C), layer l varied, others held at sample 0}.
  """
  k_prior, k_rec = jax.random.split(key)
  params = state.params
  gen_vars = network_variables(state, "generator")
  samples, zs, _ = sampler.generate(model.generator, gen_vars, model.prior,
                                    params["prior"], state.sn_state, k_prior, num, model.z_dims,
                                    model.n_steps, model.step_size)
  means, logvars = model.encoder.apply(network_variables(state, "encoder"), images)
  eps = [jax.random.normal(k, m.shape) for k, m in
         zip(jax.random.split(k_rec, len(means)), means)]
  zs_q = [objectives.reparameterize(m, lv, e) for m, lv, e in zip(means, logvars, eps)]
  recon = model.generator.apply(gen_vars, zs_q)
  return {"samples": samples,
          "reconstructions": jnp.concatenate([images, recon], axis=2),
          "hierarchical": sampler.hierarchical_sampling(model.generator, gen_vars, zs)}


def write_images(writer, workdir: str, step: int, images: dict) -> None:
  """Writes `image_summaries` output as grids: PNGs under `<workdir>/images/` (process 0) and to
  `writer` (clu metric writer)."""
  images = jax.device_get(images)
  grids = {"samples": visualization.make_grid(images["samples"]),
           "reconstructions": visualization.make_grid(images["reconstructions"]),
           "hierarchical": visualization.with_titles(
               [visualization.make_grid(g) for g in images["hierarchical"]],
               visualization.layer_names(len(images["hierarchical"])))}
  if jax.process_index() == 0:
    scale = max(1, 48 // images["samples"].shape[1])
    for name, grid in grids.items():
      visualization.save_png(grid, os.path.join(workdir, "images", f"{name}_{step:08d}.png"), scale)
  writer.write_images(step, {k: v[None] for k, v in grids.items()})
