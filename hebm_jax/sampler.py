"""Short-run Langevin dynamics and joint-EBM prior sampling (paper Eq. 13-14, REFERENCE Sec. 3.2).

Besides the unadjusted chain of the paper: `langevin_trace` (long chains recorded every R steps)
and `mala_with_state` / `sample_prior_mala` (Metropolis-adjusted Langevin, an exact sampler for
diagnostics and for annealed importance sampling in `evaluation.likelihood`).

Everything here is a pure function of its arguments: no device-axis names, no global state, no
hidden randomness. Each function is jittable (step counts static) and vmappable.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hebm_jax import models

Array = jax.Array
State = Any


def langevin_with_state(log_prob_fn: Callable[[Array, State], tuple[Array, State]], z0: Array,
                        state: State, key: Array | None, n_steps: int, step_size: float, *,
                        noise: Array | None = None, return_trajectory: bool = False,
                        unroll: int | bool = 1):
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
    unroll: steps per iteration of the compiled loop (`lax.scan`'s `unroll`; True: all K). The
      chain is the same; only the program differs. On a GPU each loop iteration costs kernel
      launches and a trip-count check, so a few steps per iteration can shorten a launch-bound
      chain; on the CPU it measured no faster (BENCHMARKS.md, `benchmarks.langevin_unroll`).

  Returns:
    (z_K (B, D), state) or, with `return_trajectory`, (z_K, state, trajectory (n_steps, B, D)).
  """
  if not isinstance(unroll, bool) and (not isinstance(unroll, (int, np.integer)) or unroll < 1):
    raise ValueError(f"unroll must be a positive int or a bool; got {unroll!r}.")
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

  (z, state), trajectory = jax.lax.scan(step, (z0, state), noise, unroll=unroll)
  if return_trajectory:
    return z, state, trajectory
  return z, state


def langevin(log_prob_fn: Callable[[Array], Array], z0: Array, key: Array | None, n_steps: int,
             step_size: float, *, noise: Array | None = None, return_trajectory: bool = False,
             unroll: int | bool = 1):
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
    unroll: steps per compiled loop iteration, as in `langevin_with_state`.

  Returns:
    z_K (B, D), or (z_K, trajectory (n_steps, B, D)).

  Example:
    >>> z = langevin(lambda z: -0.5 * jnp.sum(z ** 2, -1), jnp.zeros((8, 2)),
    ...              jax.random.PRNGKey(0), n_steps=100, step_size=0.1)
  """
  out = langevin_with_state(lambda z, st: (log_prob_fn(z), st), z0, (), key, n_steps, step_size,
                            noise=noise, return_trajectory=return_trajectory, unroll=unroll)
  if return_trajectory:
    return out[0], out[2]
  return out[0]


def langevin_trace(log_prob_fn: Callable[[Array], Array], z0: Array, key: Array, n_steps: int,
                   step_size: float, record_every: int, record_fn: Callable[[Array], Any]):
  """Unadjusted Langevin chain that records `record_fn(z)` every `record_every` steps.

  For long chains (e.g. a 2,500-step energy profile recording energies and a decoded image every
  100 steps) where `return_trajectory` would keep every step. The update is exactly `langevin`'s:
  the noise is drawn up front as `jax.random.normal(key, (n_steps,) + z0.shape)`, the same draw
  `langevin` makes, reshaped to (n_steps // record_every, record_every, ...) and fed to an outer
  `lax.scan` over records whose body runs `langevin_with_state` on one block. So with the same key
  the final z equals `langevin`'s, and record r is `record_fn` of `langevin`'s trajectory entry
  (r + 1) * record_every - 1. The noise array costs n_steps * B * D floats (one latent
  trajectory); the chain itself and whatever `record_fn` builds from it (images) are kept only at
  the recorded steps.

  Args:
    log_prob_fn: maps (B, D) to (B,) log densities (up to a constant).
    z0: (B, D) starting points.
    key: PRNG key for the noise.
    n_steps: total steps K, static; a multiple of `record_every`.
    step_size: s.
    record_every: R, static: records after steps R, 2R, ..., K (not at z0: call `record_fn(z0)`
      yourself for that).
    record_fn: z (B, D) -> any pytree of arrays, e.g. {'energy': (B,), 'image': (B, H, W, C)}.

  Returns:
    (z_K (B, D), records): records is `record_fn`'s pytree with a leading axis K // R on every leaf.

  Raises:
    ValueError: if `record_every` < 1, `n_steps` < 1 or `record_every` does not divide `n_steps`.
  """
  if record_every < 1 or n_steps < 1:
    raise ValueError(f"record_every ({record_every}) and n_steps ({n_steps}) must be >= 1.")
  if n_steps % record_every:
    raise ValueError(f"record_every ({record_every}) must divide n_steps ({n_steps}).")
  noise = jax.random.normal(key, (n_steps,) + z0.shape, z0.dtype)
  noise = noise.reshape((n_steps // record_every, record_every) + z0.shape)
  stateless = lambda z, st: (log_prob_fn(z), st)

  def block(z, block_noise):
    z, _ = langevin_with_state(stateless, z, (), None, record_every, step_size, noise=block_noise)
    return z, record_fn(z)

  return jax.lax.scan(block, z0, noise)


# --------------------------------------------------------------------------------------------------
# Metropolis-adjusted Langevin (MALA).


def _value_and_grad(log_prob_fn: Callable[[Array, State], tuple[Array, State]]):
  """(z, state) -> ((log p (B,), grad_z sum_b log p (B, ...)), new state)."""
  def summed(z, st):
    log_prob, st = log_prob_fn(z, st)
    return jnp.sum(log_prob), (log_prob, st)

  def fn(z, st):
    (_, (log_prob, st)), g = jax.value_and_grad(summed, has_aux=True)(z, st)
    return (log_prob, g), st
  return fn


def _mala_draws(key: Array, n_steps: int, shape: tuple[int, ...], dtype) -> tuple[Array, Array]:
  """Proposal noise (n_steps, *shape) and log-uniforms (n_steps, B) of one MALA run.

  `key` splits into (k_noise, k_accept); the noise is `jax.random.normal(k_noise, ...)`, exactly
  what `langevin(..., key=k_noise)` draws, so the proposals are that chain's updates.
  """
  k_noise, k_accept = jax.random.split(key)
  noise = jax.random.normal(k_noise, (n_steps,) + shape, dtype)
  # log of U[0, 1): log 0 = -inf accepts whenever the ratio is not NaN.
  log_u = jnp.log(jax.random.uniform(k_accept, (n_steps, shape[0]), dtype))
  return noise, log_u


def _mala_scan(log_prob_fn: Callable[[Array, State], tuple[Array, State]], z0: Array,
               log_prob0: Array, grad0: Array, state: State, noise: Array, log_u: Array,
               step_size: float, return_trajectory: bool = False):
  """MALA steps from z0 whose log p and gradient are given (callers that have them save a call).

  Returns:
    (z, state, info, trajectory or None); see `mala_with_state`.
  """
  value_and_grad = _value_and_grad(log_prob_fn)
  event_axes = tuple(range(1, z0.ndim))
  half_s2 = 0.5 * step_size ** 2

  def step(carry, xs):
    z, log_prob, g, st = carry
    eps, lu = xs
    # The unadjusted update (`langevin_with_state`'s expression, so accepted steps match it).
    proposal = z + half_s2 * g + step_size * eps
    (log_prob_p, g_p), st = value_and_grad(proposal, st)
    # log q(z'|z) = -|z' - z - s^2/2 g(z)|^2 / (2 s^2) = -|eps|^2 / 2 exactly; the normalising
    # constants of q cancel between the two directions.
    log_q_forward = -0.5 * jnp.sum(eps ** 2, axis=event_axes)
    back = (z - proposal - half_s2 * g_p) / step_size
    log_q_backward = -0.5 * jnp.sum(back ** 2, axis=event_axes)
    log_ratio = log_prob_p - log_prob + log_q_backward - log_q_forward
    # A NaN ratio (e.g. an overflowing proposal) compares False: rejected.
    accept = lu < log_ratio
    mask = accept.reshape(accept.shape + (1,) * len(event_axes))
    z = jnp.where(mask, proposal, z)
    g = jnp.where(mask, g_p, g)
    log_prob = jnp.where(accept, log_prob_p, log_prob)
    out = (accept, log_prob, z if return_trajectory else None)
    return (z, log_prob, g, st), out

  (z, _, _, state), (accepted, log_probs, trajectory) = jax.lax.scan(
      step, (z0, log_prob0, grad0, state), (noise, log_u))
  info = {"acceptance_rate": jnp.mean(accepted.astype(z0.dtype), axis=0), "log_prob": log_probs}
  return z, state, info, trajectory


def mala_with_state(log_prob_fn: Callable[[Array, State], tuple[Array, State]], z0: Array,
                    state: State, key: Array, n_steps: int, step_size: float, *,
                    return_trajectory: bool = False,
                    log_prob_and_grad0: tuple[Array, Array] | None = None):
  """Metropolis-adjusted Langevin (MALA): the Langevin update as a proposal, then accept/reject.

  Each step proposes the unadjusted update of `langevin_with_state`,
      z' = z + 0.5 * s**2 * grad log p(z) + s * eps,   eps ~ N(0, I),
  i.e. q(z'|z) = N(z'; z + 0.5 s^2 grad log p(z), s^2 I), and each chain independently keeps z'
  with probability min(1, p(z') q(z|z') / (p(z) q(z'|z))), else stays at z. The chain then leaves
  p exactly invariant, whatever s (no discretisation bias; a large s only lowers acceptance).

  Randomness: `key` splits into (k_noise, k_accept); the proposal noise is
  `jax.random.normal(k_noise, (n_steps,) + z0.shape)`, the draw `langevin(..., key=k_noise)` makes,
  so an accepted step is bit for bit that chain's step; the acceptance uniforms come from
  k_accept.

  `state` is threaded through every call of `log_prob_fn` (one at z0, then one per proposal, in
  order, accepted or not: a rejected proposal's state is kept) and its last value returned. A
  Metropolis ratio needs one fixed target, so `log_prob_fn` should not change with the state it is
  given: for an EBM prior with spectral norm use `update_stats=False` (as `sample_prior_mala`
  does), unlike the unadjusted sampler, which advances the power iteration at every step.

  Args:
    log_prob_fn: (z (B, ...), state) -> (log p(z) up to a constant (B,), new state).
    z0: (B, ...) initial points, one chain per row.
    state: initial state (any pytree; `()` for none).
    key: PRNG key.
    n_steps: number of steps (static, >= 1).
    step_size: s (may be traced).
    return_trajectory: also return the chain after every step.
    log_prob_and_grad0: optional (log p(z0) (B,), grad_z log p(z0) (B, ...)) when the caller has
      them (annealed importance sampling does), saving the call at z0; `state` is then passed on
      unused to the first proposal.

  Returns:
    (z (B, ...), state, info) or, with `return_trajectory`, (z, state, info, trajectory
    (n_steps, B, ...)). info = {'acceptance_rate': (B,) fraction of accepted steps per chain,
    'log_prob': (n_steps, B) log p of each chain after each step}.

  Raises:
    ValueError: if n_steps < 1.
  """
  if n_steps < 1:
    raise ValueError(f"mala needs n_steps >= 1; got {n_steps}.")
  noise, log_u = _mala_draws(key, n_steps, z0.shape, z0.dtype)
  if log_prob_and_grad0 is None:
    (log_prob0, grad0), state = _value_and_grad(log_prob_fn)(z0, state)
  else:
    log_prob0, grad0 = log_prob_and_grad0
  z, state, info, trajectory = _mala_scan(log_prob_fn, z0, log_prob0, grad0, state, noise, log_u,
                                          step_size, return_trajectory)
  if return_trajectory:
    return z, state, info, trajectory
  return z, state, info


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


def prior_log_density(prior, params: Any, sn_state: Any) -> Callable[[Array], Array]:
  """The joint-EBM prior's unnormalised log density as a pure function of z, for any MCMC library.

  log p(z) = f_alpha(z) - ||z||^2 / 2 (+ const), f_alpha evaluated with the spectral-norm state
  fixed (`update_stats=False`), so the target does not change between calls: what a Metropolis
  ratio, a blackjax kernel or an SMC sampler needs.

  Args:
    prior: an `EnergyPrior`, or None for the Gaussian prior N(0, I).
    params, sn_state: its parameters and spectral-norm state (`state.params['prior']`,
      `state.sn_state`).

  Returns:
    logdensity(z (..., D)) -> (...): one position (D,) gives a scalar, as blackjax's kernels take.

  Example:
    >>> logdensity = prior_log_density(model.prior, state.params["prior"], state.sn_state)
    >>> mala = blackjax.mala(logdensity, step_size=0.5 * s ** 2)  # our MALA's step s
  """
  def logdensity(z: Array) -> Array:
    return energy(prior, params, sn_state, z, update_stats=False)[0] - 0.5 * jnp.sum(z ** 2, -1)
  return logdensity


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
                 step_size: float, *, noise: Array | None = None, return_trajectory: bool = False,
                 unroll: int | bool = 1):
  """Short-run samples from the joint EBM prior, started at z0 ~ N(0, I) (Eq. 14).

  For the Gaussian prior (`prior=None`) the prior is N(0, I) itself and z0 is returned unchanged
  (exact samples; no chain is run).

  Args:
    prior: `EnergyPrior` or None.
    params, sn_state: the prior's parameters and spectral-norm state.
    z0: (B, D) initial noise, concatenated over layers.
    key, n_steps, step_size, noise, return_trajectory, unroll: as in `langevin_with_state`.

  Returns:
    (z (B, D), sn_state) or (z, sn_state, trajectory) with `return_trajectory`.
  """
  if prior is None:
    if return_trajectory:
      return z0, sn_state, jnp.broadcast_to(z0, (n_steps,) + z0.shape)
    return z0, sn_state
  return langevin_with_state(prior_log_prob_fn(prior, params), z0, sn_state, key, n_steps,
                             step_size, noise=noise, return_trajectory=return_trajectory,
                             unroll=unroll)


def sample_prior_mala(prior, params: Any, sn_state: Any, z0: Array, key: Array, n_steps: int,
                      step_size: float, *, return_trajectory: bool = False):
  """MALA samples from the joint EBM prior p_alpha(z) = exp(f_alpha(z)) N(z; 0, I) / Z.

  Unlike `sample_prior`, f_alpha is evaluated with `update_stats=False`: the spectral-norm power
  iteration would change the target between the two halves of a Metropolis ratio, so `sn_state`
  is used as given and returned unchanged. For the Gaussian prior (`prior=None`) the chain runs on
  N(0, I) itself (it is exact there too; `sample_prior` instead returns z0).

  Args:
    prior: `EnergyPrior` or None.
    params, sn_state: the prior's parameters and spectral-norm state.
    z0: (B, D) initial points, concatenated over layers.
    key, n_steps, step_size, return_trajectory: as in `mala_with_state`.

  Returns:
    (z (B, D), sn_state, info) or (z, sn_state, info, trajectory); info as in `mala_with_state`.
  """
  return mala_with_state(prior_log_prob_fn(prior, params, update_stats=False), z0, sn_state, key,
                         n_steps, step_size, return_trajectory=return_trajectory)


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
