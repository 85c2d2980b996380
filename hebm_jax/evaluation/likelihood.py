"""log Z of the joint EBM prior and an importance-weighted estimate of the test log-likelihood.

The prior is p_alpha(z) = exp(f_alpha(z)) N(z; 0, I) / Z with Z = E_{N(0, I)}[exp f_alpha(z)], so
log p(x) = log E_{p_alpha}[p(x|z)] needs log Z, which training never computes. Two estimators:
  log_normalizer_is    plain importance sampling from N(0, I) (fine for small D or a flat f);
  log_normalizer_ais   annealed importance sampling through exp(beta f) N(0, I), MALA transitions.
Then `importance_weighted_log_likelihood` is the IWAE-style estimate
    log p(x) ~ log (1/K) sum_k exp(log p~(x, z_k) - log q(z_k|x)) - log Z,   z_k ~ q(z|x),
with p~(x, z) = p(x|z) exp(f(z)) N(z; 0, I) the unnormalised joint of `log_joint.log_joint`, and
`bits_per_dim` converts nats per image to bits per dimension.

Bias, honestly: with the true log Z this is a stochastic lower bound of log p(x) (Jensen: the mean
of K weights is unbiased for p(x) Z; tight as K grows or as q -> the true posterior). Both log Z estimators are stochastic LOWER bounds of
log Z in expectation (E[log Z^] <= log Z, again Jensen, Z^ being unbiased for Z); subtracting an
underestimate biases the log p(x) estimate UPWARD. With Z estimated the result is therefore
neither a guaranteed lower nor upper bound: report log Z and its standard error beside it, and
check that log Z has converged in the number of chains and temperatures.

Every function is pure: the randomness comes from explicit keys, nothing touches devices.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hebm_jax import models, sampler
from hebm_jax.train_state import network_variables

Array = jax.Array

SCHEDULES = ("sigmoid", "linear")
# Steepness of the sigmoid schedule (Wu et al. 2017, "On the quantitative analysis of
# decoder-based generative models"): temperatures crowd near beta = 0 and beta = 1.
SIGMOID_DELTA = 4.0


def _log_mean_exp_and_std_error(log_w: Array) -> tuple[Array, Array]:
  """log mean exp(log_w) and its delta-method standard error, from (N,) log weights.

  SE(log Z^) ~ SE(Z^) / Z^ = sqrt(var(w) / N) / mean(w); written with shifted weights so that
  nothing overflows. NaN for N = 1.
  """
  n = log_w.shape[0]
  m = jnp.max(log_w)
  w = jnp.exp(log_w - m)
  s1, s2 = jnp.sum(w), jnp.sum(w ** 2)
  # s1 / n rather than log s1 - log n: for equal weights this is log 1 = 0 exactly.
  log_z = m + jnp.log(s1 / n)
  return log_z, _std_error(s1, s2, n)


def _std_error(s1: Array, s2: Array, n: int) -> Array:
  """Delta-method SE of log mean(w) from s1 = sum w, s2 = sum w^2 (any common scale of w).

  var(w) / mean(w)^2 with Bessel's correction is (n s2 / s1^2 - 1) n / (n - 1); dividing by n for
  the variance of the mean leaves (n s2 / s1^2 - 1) / (n - 1).
  """
  if n < 2:
    return jnp.asarray(jnp.nan, s1.dtype)
  rel_var = jnp.maximum(n * s2 / s1 ** 2 - 1.0, 0.0)
  return jnp.sqrt(rel_var / (n - 1))


def log_normalizer_is(log_f_fn: Callable[[Array], Array], key: Array, latent_dim: int,
                      num_samples: int, batch_size: int = 10_000) -> tuple[Array, Array]:
  """log Z = log E_{N(0, I)}[exp f(z)] by plain importance sampling from the base N(0, I).

  The N samples are drawn and evaluated `batch_size` at a time in a `lax.scan` (memory
  batch_size x D), accumulating a streaming logsumexp of f and of 2f; the last batch is masked when
  batch_size does not divide N. Batch b draws from `jax.random.split(key, num_batches)[b]`, so the
  draws depend on batch_size. Unbiased for Z; log of it is a stochastic lower bound of log Z. The
  variance of exp f under N(0, I) grows exponentially with D when f is far from flat: prefer
  `log_normalizer_ais` beyond a few dimensions, and read a small standard error with suspicion
  (it is estimated from the same heavy-tailed weights).

  Args:
    log_f_fn: f(z (N, D)) -> (N,), e.g.
      `lambda z: sampler.energy(prior, params, sn_state, z, update_stats=False)[0]`.
    key: PRNG key.
    latent_dim: D (static).
    num_samples: N >= 1 (static).
    batch_size: samples per evaluation of f (static).

  Returns:
    (log Z estimate, its delta-method standard error), scalars; the error is NaN for N = 1.

  Raises:
    ValueError: for N < 1, batch_size < 1 or latent_dim < 1.
  """
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1; got {num_samples}.")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
  if latent_dim < 1:
    raise ValueError(f"latent_dim must be >= 1; got {latent_dim}.")
  batch = min(batch_size, num_samples)
  num_batches = -(-num_samples // batch)

  dtype = jnp.result_type(float)  # float32, or float64 under jax_enable_x64

  def body(carry, xs):
    m, s1, s2 = carry
    k, start = xs
    f = log_f_fn(jax.random.normal(k, (batch, latent_dim), dtype)).astype(dtype)
    # The padding past N contributes exp(-inf) = 0 to both sums.
    f = jnp.where(start + jnp.arange(batch) < num_samples, f, -jnp.inf)
    m_new = jnp.maximum(m, jnp.max(f))
    s1 = s1 * jnp.exp(m - m_new) + jnp.sum(jnp.exp(f - m_new))
    s2 = s2 * jnp.exp(2 * (m - m_new)) + jnp.sum(jnp.exp(2 * (f - m_new)))
    return (m_new, s1, s2), None

  def run(key):
    init = (jnp.asarray(-jnp.inf, dtype), jnp.asarray(0.0, dtype), jnp.asarray(0.0, dtype))
    starts = jnp.arange(num_batches) * batch
    (m, s1, s2), _ = jax.lax.scan(body, init, (jax.random.split(key, num_batches), starts))
    # s1 / N rather than log s1 - log N: for f = 0 this is log 1 = 0 exactly.
    return m + jnp.log(s1 / num_samples), _std_error(s1, s2, num_samples)

  return jax.jit(run)(key)


def annealing_schedule(num_temps: int, schedule: str = "sigmoid") -> np.ndarray:
  """Inverse temperatures 0 = beta_0 < ... < beta_{T-1} = 1: (T,) float32, both ends exact.

  'linear': evenly spaced. 'sigmoid': beta_t proportional to sigmoid(delta (2 t / (T-1) - 1))
  rescaled to [0, 1] (delta = `SIGMOID_DELTA`), denser at both ends where the intermediate
  distributions change fastest.
  """
  if num_temps < 2:
    raise ValueError(f"num_temps must be >= 2 (beta = 0 and beta = 1); got {num_temps}.")
  if schedule == "linear":
    betas = np.linspace(0.0, 1.0, num_temps)
  elif schedule == "sigmoid":
    s = 1.0 / (1.0 + np.exp(-np.linspace(-SIGMOID_DELTA, SIGMOID_DELTA, num_temps)))
    betas = (s - s[0]) / (s[-1] - s[0])
  else:
    raise ValueError(f"Unknown schedule {schedule!r}; expected one of {SCHEDULES}.")
  betas = betas.astype(np.float32)
  betas[0], betas[-1] = 0.0, 1.0
  return betas


def log_normalizer_ais(log_f_fn: Callable[[Array], Array], key: Array, latent_dim: int,
                       num_chains: int, num_temps: int, *, step_size: float,
                       n_mala_steps: int = 1, schedule: str = "sigmoid") -> dict:
  """log Z by annealed importance sampling from N(0, I) to exp(f(z)) N(z; 0, I) / Z.

  Intermediate targets p_t(z) = exp(beta_t f(z)) N(z; 0, I) / Z_t, beta from
  `annealing_schedule`. Each chain starts at an exact draw of p_0 = N(0, I) with log weight 0; at
  each t = 1..T-1 it adds (beta_t - beta_{t-1}) f(z), then takes `n_mala_steps` MALA steps
  (`sampler` MALA, leaving p_t exactly invariant). exp(log weight) is unbiased for Z, so
  log Z^ = logmeanexp(log weights), a stochastic lower bound of log Z in expectation; its standard
  error is the delta method's over chains (it assumes the weights' variance is finite and well
  estimated: too few temperatures make it optimistic). The temperatures are one `lax.scan` (inside
  a `jax.jit`), the chains one batch: MALA's gradient is of the batch sum, so they stay independent.
  Temperature t's MALA draws come from `jax.random.split(k_chain, T - 1)[t - 1]` as
  `sampler.mala_with_state` derives them from its key.

  Args:
    log_f_fn: f(z (C, D)) -> (C,).
    key: PRNG key.
    latent_dim: D (static).
    num_chains: C >= 1 (static); the standard error needs C >= 2.
    num_temps: T >= 2 (static), beta_0 = 0 and beta_{T-1} = 1 included.
    step_size: MALA step size s (a python float or a traced scalar); tune it so the acceptance rate
      is roughly 0.5-0.9.
    n_mala_steps: MALA steps per temperature (static, >= 1).
    schedule: 'sigmoid' or 'linear' (see `annealing_schedule`).

  Returns:
    dict with 'log_z' (scalar), 'log_z_std_error' (scalar; NaN for C = 1), 'log_weights' (C,),
    'acceptance_rate' (scalar, over every chain, step and temperature), 'acceptance_rate_per_temp'
    (T - 1,), 'samples' (C, D) (the chains after the last transition: draws to weight by
    exp(log_weights), approximately from the prior), 'betas' (T,).

  Raises:
    ValueError: for num_chains < 1, num_temps < 2, n_mala_steps < 1, latent_dim < 1, a python
      step_size <= 0 or an unknown schedule.
  """
  if num_chains < 1:
    raise ValueError(f"num_chains must be >= 1; got {num_chains}.")
  if n_mala_steps < 1:
    raise ValueError(f"n_mala_steps must be >= 1; got {n_mala_steps}.")
  if latent_dim < 1:
    raise ValueError(f"latent_dim must be >= 1; got {latent_dim}.")
  if isinstance(step_size, (int, float)) and not step_size > 0:
    raise ValueError(f"step_size must be > 0; got {step_size}.")
  betas = annealing_schedule(num_temps, schedule)

  def run(key, step_size):
    k_init, k_chain = jax.random.split(key)
    z0 = jax.random.normal(k_init, (num_chains, latent_dim))
    def summed_f(z):
      f = log_f_fn(z)
      return jnp.sum(f), f

    # Per-chain f and the gradient of the batch sum (= each chain's own gradient) in one pass.
    f_and_grad = jax.value_and_grad(summed_f, has_aux=True)

    def temperature(carry, xs):
      z, log_w = carry
      beta_prev, beta, k = xs
      (_, f), grad_f = f_and_grad(z)
      # z is a draw of p_{t-1} (exact for t = 1, else as good as the chain); p_t / p_{t-1} at z.
      log_w = log_w + (beta - beta_prev) * f

      def log_p(z, st):
        return beta * log_f_fn(z) - 0.5 * jnp.sum(z ** 2, axis=-1), st

      # log p_t and its gradient at z from the f just computed: no second evaluation.
      init = (beta * f - 0.5 * jnp.sum(z ** 2, axis=-1), beta * grad_f - z)
      z, _, info = sampler.mala_with_state(log_p, z, (), k, n_mala_steps, step_size,
                                           log_prob_and_grad0=init)
      return (z, log_w), jnp.mean(info["acceptance_rate"])

    xs = (jnp.asarray(betas[:-1]), jnp.asarray(betas[1:]), jax.random.split(k_chain, num_temps - 1))
    (z, log_w), acceptance = jax.lax.scan(temperature, (z0, jnp.zeros(num_chains)), xs)
    log_z, std_error = _log_mean_exp_and_std_error(log_w)
    return {"log_z": log_z, "log_z_std_error": std_error, "log_weights": log_w,
            "acceptance_rate": jnp.mean(acceptance), "acceptance_rate_per_temp": acceptance,
            "samples": z, "betas": jnp.asarray(betas)}

  return jax.jit(run)(key, step_size)


def _diagonal_gaussian_log_prob(eps: Sequence[Array], logvars: Sequence[Array]) -> Array:
  """log q(z|x) of z = mean + exp(logvar / 2) eps, all layers: (B,), every constant kept."""
  total = 0.0
  for e, lv in zip(eps, logvars):
    axes = tuple(range(1, e.ndim))
    total = total + jnp.sum(-0.5 * e ** 2 - 0.5 * lv - 0.5 * math.log(2 * math.pi), axis=axes)
  return total


def importance_weighted_log_likelihood(
    log_joint_fn: Callable[[Array, list[Array]], Array],
    encode_fn: Callable[[Array], tuple[Sequence[Array], Sequence[Array]]], images: Array,
    key: Array, num_samples: int, log_z: Array | float) -> Array:
  """log p(x) ~ log (1/K) sum_k p~(x, z_k) / q(z_k|x) - log Z, z_k ~ q(z|x): (B,) nats.

  q is the encoder's diagonal Gaussian over all layers (log q with its constants), p~ the
  unnormalised joint p(x|z) exp(f(z)) N(z; 0, I). For the true Z this is the importance-weighted
  (IWAE) bound: a lower bound of log p(x) in expectation, non-decreasing in K, and exact for any K
  when q is the exact posterior (every weight is then p(x)). With Z estimated (`log_normalizer_ais`
  / `_is`) it is a stochastic estimate, not a bound: those estimates of log Z are low in
  expectation, which pushes this estimate UP (see the module docstring).

  Draw k uses `jax.random.split(key, K)[k]`, split again into one key per layer, as
  `log_joint.posterior_log_joint` does: the same key gives the same z_k there.

  Args:
    log_joint_fn: (images, zs (L arrays (B, d_l))) -> (B,) log p~(x, z), e.g. built by
      `model_functions`, or any function with `log_joint.log_joint`'s meaning.
    encode_fn: images -> (means, logvars), two lists of L arrays (B, d_l).
    images: (B, ...) the data (only passed on to the two functions).
    key: PRNG key.
    num_samples: K >= 1 (static); the draws are made one at a time (`lax.map`).
    log_z: log Z of the prior (0 for the Gaussian prior, f = 0).

  Returns:
    (B,) estimates of log p(x) in nats.

  Raises:
    ValueError: for num_samples < 1.
  """
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1; got {num_samples}.")
  means, logvars = encode_fn(images)
  means, logvars = list(means), list(logvars)

  def one(k):
    eps = [jax.random.normal(kl, m.shape, m.dtype)
           for kl, m in zip(jax.random.split(k, len(means)), means)]
    zs = [m + jnp.exp(0.5 * lv) * e for m, lv, e in zip(means, logvars, eps)]
    return log_joint_fn(images, zs) - _diagonal_gaussian_log_prob(eps, logvars)

  log_w = jax.lax.map(one, jax.random.split(key, num_samples))  # (K, B)
  return jax.nn.logsumexp(log_w, axis=0) - math.log(num_samples) - log_z


def bits_per_dim(log_px: Array, num_dims: int, data_range: float | None = None,
                 num_levels: int = 256) -> Array:
  """Nats per example -> bits per dimension: -log p(x) / (D ln 2), optionally discretised.

  With `data_range=None` (default) no correction: the bits of whatever log p(x) is (a density of
  continuous data, or a probability of discrete data such as the Bernoulli likelihood's).

  With `data_range` given, log p(x) is taken as a continuous density of data whose `num_levels`
  values per dimension were rescaled to an interval of that length (2 for images in [-1, 1]). A
  bin then has width data_range / num_levels and P(bin) ~ p(x) (data_range / num_levels)^D, so
      bits/dim = -(log p(x) + D log(data_range / num_levels)) / (D ln 2),
  +7 bits/dim for 256 levels on [-1, 1]: the numbers papers report for 8-bit images. It is an
  approximation (density constant over each bin; good when the decoder's sigma >> bin width) and
  not a bound, since the model was not trained on dequantised data; say so when reporting it.

  Args:
    log_px: log p(x) in nats, any shape.
    num_dims: D, dimensions per example (e.g. H * W * C).
    data_range: length of the data interval for the discretisation correction, or None for none.
    num_levels: values per dimension of the discrete data (256 for 8-bit images).

  Returns:
    bits per dimension, the shape of log_px.

  Raises:
    ValueError: for num_dims < 1, data_range <= 0 or num_levels < 2.
  """
  if num_dims < 1:
    raise ValueError(f"num_dims must be >= 1; got {num_dims}.")
  if num_levels < 2:
    raise ValueError(f"num_levels must be >= 2; got {num_levels}.")
  log_px = jnp.asarray(log_px)
  if data_range is not None:
    if not data_range > 0:
      raise ValueError(f"data_range must be > 0; got {data_range}.")
    log_px = log_px + num_dims * math.log(data_range / num_levels)
  return -log_px / (num_dims * math.log(2.0))


def model_functions(model, state) -> tuple[Callable, Callable, Callable]:
  """(log_f_fn, log_joint_fn, encode_fn) of a trained model for the estimators above.

  log_f_fn(z (N, D)) -> (N,) is f_alpha with the spectral-norm state fixed (`update_stats=False`);
  zeros for the Gaussian prior, whose log Z is 0. log_joint_fn(images, zs) -> (B,) is
  `log_joint.log_joint` (log p(x|z) with its constants + f + log N(z; 0, I)); encode_fn(images) ->
  (means, logvars) is the encoder in eval mode.

  Args:
    model: `hebm_jax.train_state.HEBM`.
    state: a `TrainState` (or anything with `.params`, `.sn_state`, `.batch_stats`).
  """
  from hebm_jax.evaluation import log_joint  # pylint: disable=g-import-not-at-top

  enc_vars = network_variables(state, "encoder")
  gen_vars = network_variables(state, "generator")
  prior_params = state.params["prior"]

  def log_f_fn(z: Array) -> Array:
    return sampler.energy(model.prior, prior_params, state.sn_state, z, update_stats=False)[0]

  def log_joint_fn(images: Array, zs: Sequence[Array]) -> Array:
    out = model.generator.apply(gen_vars, list(zs), return_logits=model.likelihood == "bernoulli")
    return log_joint.log_joint(images, zs, out, log_f_fn(models.concat_latents(list(zs))),
                               model.likelihood, model.gfactor)

  def encode_fn(images: Array):
    return model.encoder.apply(enc_vars, images)

  return log_f_fn, log_joint_fn, encode_fn
