"""Decoded prior samples in batches: short-run Langevin (or MALA) chains from N(0, I), decoded.

`prior_sample_batches` serves `--mode=sample` (`generate`) and the FID evaluator alike.
"""

from __future__ import annotations

import functools
from typing import Iterator

import jax
import jax.numpy as jnp

from hebm_jax import models, sampler
from hebm_jax.train_state import network_variables

Array = jax.Array
SAMPLE_METHODS = ("langevin", "mala")


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5, 6))
def _sample_batch(model, state, key, batch_size: int, n_steps: int, step_size: float, method: str):
  k_init, k_chain = jax.random.split(key)
  z0 = jax.random.normal(k_init, (batch_size, model.latent_dim))
  params, sn = state.params["prior"], state.sn_state
  acceptance = jnp.ones((batch_size,))
  if method == "mala" and model.prior is not None:
    z, _, info = sampler.sample_prior_mala(model.prior, params, sn, z0, k_chain, n_steps, step_size)
    acceptance = info["acceptance_rate"]
  else:
    z, _ = sampler.sample_prior(model.prior, params, sn, z0, k_chain, n_steps, step_size)
  zs = models.split_latents(z, model.z_dims)
  images = model.generator.apply(network_variables(state, "generator"), zs)
  return images, zs, acceptance


def prior_sample_batches(model, state, key: Array, num: int, batch_size: int, n_steps: int,
                         step_size: float, method: str = "langevin") -> Iterator[tuple]:
  """Yields (images (b, H, W, C) in [-1, 1], list of L latents (b, d_l), MALA acceptance (b,))
  until `num` samples are out; batch i uses fold_in(key, i), so samples do not depend on memory.

  `method` 'langevin' is the training sampler (short-run, unadjusted); 'mala' adds the
  Metropolis accept step (acceptance 1 for the unadjusted sampler and the Gaussian prior).
  """
  if method not in SAMPLE_METHODS:
    raise ValueError(f"unknown sampling method {method!r}; expected one of {SAMPLE_METHODS}.")
  done, i = 0, 0
  while done < num:
    images, zs, acc = _sample_batch(model, state, jax.random.fold_in(key, i), batch_size,
                                    int(n_steps), float(step_size), method)
    take = min(batch_size, num - done)
    yield images[:take], [z[:take] for z in zs], acc[:take]
    done, i = done + take, i + 1
