"""Short-run Langevin dynamics and joint-EBM prior sampling (paper Eq. 13-14, REFERENCE Sec. 3.2).

Everything here is a pure function of its arguments: no device-axis names, no global state, no
hidden randomness. Each function is jittable (step counts static) and vmappable.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from hebm_jax import models

Array = jax.Array
State = Any


def langevin_with_state(log_prob_fn: Callable[[Array, State], tuple[Array, State]], z0: Array,
                        state: State, key: Array | None, n_steps: int, step_size: float, *,
                        noise: Array | None = None, return_trajectory: bool = False):
  """Langevin dynamics whose target also threads a state through every call.

  The update (paper Eq. 13) is
      z <- z + 0.5 * s**2 * grad_z sum_b log_prob(z)_b + s * eps,   eps ~ N(0, I),
  applied `n_steps` times; noise is added at every step, the last included. Because the gradient is
  of the batch sum, chains are independent. `state` is passed to every call of `log_prob_fn` in
  order and its last value returned (the spectral-norm power-iteration vectors of an EBM prior are
  such a state: the reference updates them at each Langevin step).

  Args:
    log_prob_fn: (z (B, D), state) -> (log p(z) up to a constant (B,), new state).
    z0: (B, D) initial points.
    state: initial state (any pytree; `()` for none).
    key: PRNG key for the noise; ignored when `noise` is given.
    n_steps: number of steps K (static).
    step_size: s.
    noise: optional (n_steps, B, D) standard-normal draws to use instead of `key`.
    return_trajectory: also return the chain after every step.

  Returns:
    (z_K (B, D), state) or, with `return_trajectory`, (z_K, state, trajectory (n_steps, B, D)).
  """
  if noise is None:
    if key is None:
      raise ValueError("langevin needs a PRNG key when no noise is given.")
    noise = jax.random.normal(key, (n_steps,) + z0.shape, z0.dtype)
  elif noise.shape != (n_steps,) + z0.shape:
    raise ValueError(f"noise has shape {noise.shape}; expected {(n_steps,) + z0.shape}.")

  def summed(z, st):
    log_prob, st = log_prob_fn(z, st)
    return jnp.sum(log_prob), st

  grad_fn = jax.grad(summed, has_aux=True)

  def step(carry, eps):
    z, st = carry
    g, st = grad_fn(z, st)
    z = z + 0.5 * step_size ** 2 * g + step_size * eps
    return (z, st), (z if return_trajectory else None)

  (z, state), trajectory = jax.lax.scan(step, (z0, state), noise)
  if return_trajectory:
    return z, state, trajectory
  return z, state


def langevin(log_prob_fn: Callable[[Array], Array], z0: Array, key: Array | None, n_steps: int,
             step_size: float, *, noise: Array | None = None, return_trajectory: bool = False):
  """Langevin dynamics on an unnormalised log density (paper Eq. 13).

      z <- z + 0.5 * s**2 * grad_z sum_b log_prob_fn(z)_b + s * eps

  Args:
    log_prob_fn: maps (B, D) to (B,) log densities (up to a constant).
    z0: (B, D) starting points.
    key: PRNG key for the noise (ignored when `noise` is given).
    n_steps: K, static.
    step_size: s.
    noise: optional (n_steps, B, D) standard-normal draws.
    return_trajectory: also return every intermediate z.

  Returns:
    z_K (B, D), or (z_K, trajectory (n_steps, B, D)).

  Example:
    >>> z = langevin(lambda z: -0.5 * jnp.sum(z ** 2, -1), jnp.zeros((8, 2)),
    ...              jax.random.PRNGKey(0), n_steps=100, step_size=0.1)
  """
  out = langevin_with_state(lambda z, st: (log_prob_fn(z), st), z0, (), key, n_steps, step_size,
                            noise=noise, return_trajectory=return_trajectory)
  if return_trajectory:
    return out[0], out[2]
  return out[0]


def prior_log_prob_fn(prior, params: Any, update_stats: bool = True):
  """The joint-EBM prior's log density log p_alpha(z) = f_alpha(z) - ||z||^2 / 2 + const (Eq. 3, 14).

  Args:
    prior: an `EnergyPrior` module, or None for the Gaussian prior N(0, I) (f = 0).
    params: its parameters.
    update_stats: run (and keep) the spectral-norm power iteration at each call, as the reference.

  Returns:
    fn(z (B, D), sn_state) -> (log p(z) (B,), new sn_state).
  """
  def fn(z, sn_state):
    base = -0.5 * jnp.sum(z ** 2, axis=-1)
    if prior is None:
      return base, sn_state
    f, sn_state = energy(prior, params, sn_state, z, update_stats)
    return f + base, sn_state
  return fn


def energy(prior, params: Any, sn_state: Any, z: Array, update_stats: bool = True):
  """f_alpha(z): (B, D) -> ((B,), new spectral-norm state). Zero for the Gaussian prior (None)."""
  if prior is None:
    return jnp.zeros(z.shape[:-1], z.dtype), sn_state
  variables = {"params": params}
  if sn_state:
    variables["batch_stats"] = sn_state
    f, updates = prior.apply(variables, z, update_stats=update_stats, mutable=["batch_stats"])
    return f, updates["batch_stats"]
  return prior.apply(variables, z, update_stats=False), sn_state


def sample_prior(prior, params: Any, sn_state: Any, z0: Array, key: Array | None, n_steps: int,
                 step_size: float, *, noise: Array | None = None, return_trajectory: bool = False):
  """Short-run samples from the joint EBM prior, started at z0 ~ N(0, I) (Eq. 14).

  For the Gaussian prior (`prior=None`) the prior is N(0, I) itself and z0 is returned unchanged
  (exact samples; no chain is run).

  Args:
    prior: `EnergyPrior` or None.
    params, sn_state: the prior's parameters and spectral-norm state.
    z0: (B, D) initial noise, concatenated over layers.
    key, n_steps, step_size, noise, return_trajectory: as in `langevin_with_state`.

  Returns:
    (z (B, D), sn_state) or (z, sn_state, trajectory) with `return_trajectory`.
  """
  if prior is None:
    if return_trajectory:
      return z0, sn_state, jnp.broadcast_to(z0, (n_steps,) + z0.shape)
    return z0, sn_state
  return langevin_with_state(prior_log_prob_fn(prior, params), z0, sn_state, key, n_steps,
                             step_size, noise=noise, return_trajectory=return_trajectory)


def generator_variables(gen_params: Any) -> dict:
  """Flax variables of a generator from its parameters, or its full variables dict as is.

  Families with batch norm need {'params': ..., 'batch_stats': ...}; the others take either.
  """
  if isinstance(gen_params, dict) and "params" in gen_params:
    return gen_params
  return {"params": gen_params}


def hierarchical_latents(zs: Sequence[Array], layer: int, anchor: int = 0) -> list[Array]:
  """Latents that vary one layer and hold the others (REFERENCE Sec. 3.2, paper Fig. 4).

  Every layer but `layer` is set to example `anchor` of the batch; `layer` keeps its B values, so
  decoding shows what that layer controls.

  Args:
    zs: list of L arrays (B, d_l), e.g. one joint prior batch.
    layer: the layer to vary (0 = bottom).
    anchor: the example whose codes are held fixed.

  Returns:
    list of L arrays (B, d_l).
  """
  batch = zs[0].shape[0]
  return [z if l == layer else jnp.broadcast_to(z[anchor], (batch,) + z.shape[1:])
          for l, z in enumerate(zs)]


def hierarchical_sampling(generator, gen_params: Any, zs: Sequence[Array]) -> Array:
  """Decodes `hierarchical_latents` for every layer.

  Args:
    generator: a generator module (any family in `hebm_jax.models.FAMILIES`).
    gen_params: its parameters, or its variables dict (see `generator_variables`).
    zs: list of L arrays (B, d_l).

  Returns:
    (L, B, H, W, C) images in [-1, 1]; entry l varies layer l only.
  """
  variables = generator_variables(gen_params)
  return jnp.stack([generator.apply(variables, hierarchical_latents(zs, l))
                    for l in range(len(zs))])


def sample_joint_prior(prior, params: Any, sn_state: Any, key: Array, batch_size: int,
                       z_dims: Sequence[int], n_steps: int, step_size: float):
  """Per-layer samples of the joint EBM prior: N(0, I) noise, then K Langevin steps (Eq. 14).

  Args:
    prior: `EnergyPrior`, or None for the Gaussian prior (exact N(0, I) samples).
    params, sn_state: the prior's parameters and spectral-norm state.
    key: PRNG key (split into the initial noise and the chain's noise).
    batch_size: B.
    z_dims: latent size per layer, bottom first.
    n_steps, step_size: K and s (config.sampler).

  Returns:
    (list of L arrays (B, d_l), new sn_state).
  """
  k_init, k_chain = jax.random.split(key)
  z0 = jax.random.normal(k_init, (batch_size, sum(z_dims)))
  z, sn_state = sample_prior(prior, params, sn_state, z0, k_chain, n_steps, step_size)
  return models.split_latents(z, z_dims), sn_state


def generate(generator, gen_params: Any, prior, prior_params: Any, sn_state: Any, key: Array,
             batch_size: int, z_dims: Sequence[int], n_steps: int, step_size: float):
  """Samples x = g(z), z from the short-run joint prior chain (`sample_joint_prior`).

  Returns:
    (images (B, H, W, C) in [-1, 1], list of L latents (B, d_l), new sn_state).
  """
  zs, sn_state = sample_joint_prior(prior, prior_params, sn_state, key, batch_size, z_dims,
                                    n_steps, step_size)
  return generator.apply(generator_variables(gen_params), zs), zs, sn_state
