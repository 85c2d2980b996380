"""The model's unnormalised log joint log p(x, z) = log p(x|z) + f_alpha(z) + log N(z; 0, I).

This is the anomaly and OOD decision function of the paper (Sec. 5.3-5.4, REFERENCE 5.3): log Z of
the EBM prior is dropped because it is the same for every x. Higher means more typical; the
anomaly score is its negative.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp

from hebm_jax import models, objectives, sampler
from hebm_jax.train_state import network_variables

Array = jax.Array


def log_likelihood(images: Array, generator_out: Array, likelihood: str, gfactor: float) -> Array:
  """log p(x|z) with every constant: (B, H, W, C) x2 -> (B,).

  Args:
    images: x in [-1, 1].
    generator_out: 'gaussian': the generated image g(z) (mean of the Gaussian, sigma^2 =
      1 / (2 gfactor), the sigma the training loss implies); 'l1': g(z), the location of the
      Laplace density that VLAE's L1 loss implies (scale 1 / gfactor on [0, 1], 2 / gfactor on
      [-1, 1], the scale the density is taken on, as for the Gaussian); 'bernoulli': the generator's logits
      for the targets (x + 1) / 2.
    likelihood: one of `objectives.LIKELIHOODS`.
    gfactor: 1 / (2 sigma^2) (config.objective.gfactor); unused for 'bernoulli'.
  """
  axes = tuple(range(1, images.ndim))
  if likelihood == "gaussian":
    num_pixels = math.prod(images.shape[1:])
    sq = jnp.sum((images - generator_out) ** 2, axis=axes)
    # -||x - g||^2 / (2 sigma^2) - D/2 log(2 pi sigma^2), with 2 sigma^2 = 1 / gfactor.
    return -gfactor * sq - 0.5 * num_pixels * math.log(math.pi / gfactor)
  if likelihood == "l1":
    # Laplace with scale 1 / gfactor on the [0, 1] scale, i.e. b = 2 / gfactor on the [-1, 1]
    # scale, where densities are taken as for the Gaussian: -|x - g| / b - D log(2 b).
    num_pixels = math.prod(images.shape[1:])
    l1 = 0.5 * jnp.sum(jnp.abs(images - generator_out), axis=axes)
    return -gfactor * l1 - num_pixels * math.log(4.0 / gfactor)
  if likelihood == "bernoulli":
    return -jax.vmap(lambda l, x: objectives.bernoulli_reconstruction_loss(l[None], x[None]))(
        generator_out, images)
  raise ValueError(f"Unknown likelihood {likelihood!r}; expected one of {objectives.LIKELIHOODS}.")


def standard_normal_log_prob(z: Array) -> Array:
  """log N(z; 0, I): (B, D) -> (B,)."""
  return -0.5 * jnp.sum(z ** 2, axis=-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


def log_joint(images: Array, zs: Sequence[Array], generator_out: Array, energies: Array,
              likelihood: str, gfactor: float) -> Array:
  """Unnormalised log p(x, z) = log p(x|z) + f_alpha(z) + log N(z; 0, I): (B,).

  Args:
    images: (B, H, W, C) in [-1, 1].
    zs: L arrays (B, d_l), the latent codes (all layers: the prior is joint).
    generator_out: g(z) as `log_likelihood` takes it.
    energies: f_alpha(concat zs) (B,); zeros for the Gaussian prior.
    likelihood, gfactor: as in `log_likelihood`.
  """
  z = models.concat_latents(list(zs))
  return (log_likelihood(images, generator_out, likelihood, gfactor) + energies
          + standard_normal_log_prob(z))


def posterior_log_joint(model, state, images: Array, key: Array, num_samples: int = 1) -> Array:
  """log p(x, z) at z ~ q(z|x), `num_samples` draws per image: (num_samples, B).

  Args:
    model: `hebm_jax.train_state.HEBM` (modules and likelihood settings).
    state: a `TrainState` (or anything with `.params`, `.sn_state`, `.batch_stats`).
    images: (B, H, W, C) in [-1, 1].
    key: PRNG key for the posterior draws.
    num_samples: z draws per image (static).
  """

  enc_vars = network_variables(state, "encoder")
  gen_vars = network_variables(state, "generator")
  means, logvars = model.encoder.apply(enc_vars, images)

  def one(k):
    eps = [jax.random.normal(kl, m.shape, m.dtype)
           for kl, m in zip(jax.random.split(k, len(means)), means)]
    zs = [objectives.reparameterize(m, lv, e) for m, lv, e in zip(means, logvars, eps)]
    out = model.generator.apply(gen_vars, zs, return_logits=model.likelihood == "bernoulli")
    f, _ = sampler.energy(model.prior, state.params["prior"], state.sn_state,
                          models.concat_latents(zs), update_stats=False)
    return log_joint(images, zs, out, f, model.likelihood, model.gfactor)

  return jax.lax.map(one, jax.random.split(key, num_samples))


@functools.partial(jax.jit, static_argnums=(0, 4))
def anomaly_scores(model, state, images: Array, key: Array, num_samples: int = 1) -> Array:
  """The anomaly score -log p(x, z), averaged over `num_samples` draws z ~ q(z|x): (B,).

  Higher is more anomalous (label 1 in the MEG protocol, OOD in the OOD test). Jitted with `model`
  and `num_samples` static.
  """
  return -jnp.mean(posterior_log_joint(model, state, images, key, num_samples), axis=0)
