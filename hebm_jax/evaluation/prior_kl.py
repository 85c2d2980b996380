"""KL(p_alpha || N(0, I)) of the joint EBM prior, and of each layer's marginal, by sampling.

The prior is p_alpha(z) = exp(f(z)) N(z; 0, I) / Z, Z = E_{N(0, I)}[exp f], so
    KL(p_alpha || N(0, I)) = E_{p_alpha}[f] - log Z.
Both terms come from one set of weighted draws (`kl_from_weights`):
  'is'   z_i ~ N(0, I) with weights exp f(z_i): log Z = log mean w, E_p[f] = sum w f / sum w
         (self-normalised importance sampling). Cheap and fine for a few latent dimensions or a
         nearly flat f; it degenerates (effective sample size -> 1) as D grows or f sharpens.
  'ais'  the chains and log weights of `likelihood.log_normalizer_ais` (annealed from N(0, I)):
         the same two formulas with the AIS weights, f evaluated at the final particles.
  'auto' 'is' unless its effective sample size is below `AUTO_MIN_ESS_FRACTION` of the draws,
         then 'ais' (a `lax.cond`: only the branch taken runs).

Layer marginals. p_l(z_l) / N(z_l; 0, I) = E_{z_-l ~ N(0, I)}[exp f(z_l, z_-l)] / Z exactly, so the
marginal p_l is itself a tilted Gaussian, p_l ∝ exp(h_l(z_l)) N(z_l; 0, I_{d_l}) with
    h_l(z_l) = log E_{z_-l ~ N(0, I)}[exp f(z_l, z_-l)],
and KL(p_l || N(0, I)) = E_{p_l}[h_l] - log E_N[exp h_l]: the joint formula with f -> h_l, over d_l
dimensions only. h_l is estimated by a log-mean-exp over M draws of the other layers, the same M
draws for every z_l (common random numbers), at the z_l parts of the N Gaussian draws; the outer
expectation is self-normalised with weights exp h_l (the marginal density ratio, a
Rao-Blackwellised form of the joint weights exp f). Consequences, exact for any N and M: a layer
f does not depend on has KL 0 (h_l is then the same constant at every z_l); a layer f depends on
alone gets the joint estimator applied to that layer. Otherwise the log-mean-exp of M terms is
biased low by about Var/(2M) at each z_l; grow `inner_samples` until the numbers settle. The
layer estimates use Gaussian draws whatever the method: for large layers or sharp conditionals
read their ESS.

How steep the tilt is: 'grad_norm' = E_{N(0, I)} |grad_z f(z)|, at the same N draws. With
spectral norm (converged power iterations) and a 1-Lipschitz activation, f is
`prior.output_scale`-Lipschitz, so this is at most the scale; it shows whether a prior that stays
near N(0, I) is held there by that bound or never learned to use it.

Errors: the standard errors are delta-method ones from the same weights (optimistic when the
weights are heavy-tailed: a small ESS means the number is not to be trusted whatever its error).

Every function is pure (explicit keys) and jit-friendly with the sizes and method static;
`prior_kl_scalars` is the one call the training loop needs.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hebm_jax.evaluation import likelihood

Array = jax.Array

METHODS = ("is", "ais", "auto")
# 'auto' turns to AIS when the importance-sampling ESS falls below this fraction of the draws.
AUTO_MIN_ESS_FRACTION = 0.1
# f is evaluated on at most this many latent vectors at once (memory: chunk x width of the EBM).
_CHUNK = 1 << 16


def kl_from_weights(log_w: Array, f: Array) -> dict[str, Array]:
  """KL(p || N(0, I)) = E_p[f] - log Z of p ∝ exp(f) N(0, I), from N weighted draws.

  The draws z_i carry log weights log_w_i with E[w_i] = Z and E[w_i g(z_i)] = Z E_p[g] (plain
  importance sampling from N(0, I): log_w = f; AIS: the annealing weights). Then
  log Z = log mean w, E_p[f] = sum w f / sum w, and the standard error of KL^ = A / B - log B
  (A = mean w f, B = mean w) is the delta method's: the influence of draw i is
  psi_i = (w_i / B) (f_i - E_p[f] - 1) + 1, SE = sqrt(sum psi^2 / (N (N - 1))).

  For equal weights and f = 0 every output is exactly 0 (and ess = N).

  Args:
    log_w: (N,) log weights.
    f: (N,) f at the draws.

  Returns:
    dict of scalars: 'kl', 'kl_std_error' (NaN for N = 1), 'log_z', 'mean_f' (E_p[f]), 'ess'
    ((sum w)^2 / sum w^2, in [1, N]).
  """
  n = log_w.shape[0]
  m = jnp.max(log_w)
  w = jnp.exp(log_w - m)
  s1 = jnp.sum(w)
  mean_w = s1 / n  # exactly 1 for equal weights: the zero cases stay exactly zero
  log_z = m + jnp.log(mean_w)
  mean_f = jnp.sum(w * f) / s1
  kl = mean_f - log_z
  psi = (w / mean_w) * (f - mean_f - 1.0) + 1.0
  se = jnp.sqrt(jnp.sum(psi ** 2) / (n * (n - 1))) if n > 1 else jnp.asarray(jnp.nan, kl.dtype)
  ess = s1 ** 2 / jnp.sum(w ** 2)
  return {"kl": kl, "kl_std_error": se, "log_z": log_z, "mean_f": mean_f, "ess": ess}


def _apply_chunked(fn: Callable[[Array], Array], z: Array, chunk: int) -> Array:
  """fn over the rows of z (N, D) -> (N,), at most `chunk` rows per call (`lax.map`)."""
  n = z.shape[0]
  if n <= chunk:
    return fn(z)
  num = -(-n // chunk)
  padded = jnp.pad(z, ((0, num * chunk - n), (0, 0)))
  out = jax.lax.map(fn, padded.reshape(num, chunk, z.shape[-1]))
  return out.reshape(-1)[:n]


def layer_log_tilts(log_f_fn: Callable[[Array], Array], z: Array, z_dims: Sequence[int],
                    inner: Array) -> Array:
  """h_l(z_l) = log mean_m exp f(z_l, inner_m[-l]) for each layer l and draw: (L, N).

  Args:
    log_f_fn: f(z (B, D)) -> (B,).
    z: (N, D) draws whose layer-l parts are the points z_l.
    z_dims: the layer sizes d_l (sum D), bottom first as in `models.concat_latents`.
    inner: (M, D) draws of N(0, I) that fill the other layers (shared by every point and layer).
  """
  n, d = z.shape
  m = inner.shape[0]
  offsets = np.cumsum((0,) + tuple(z_dims))
  rows = max(1, _CHUNK // m)
  out = []
  for l in range(len(z_dims)):
    mask = np.zeros(d, bool)
    mask[offsets[l]:offsets[l + 1]] = True

    def tilt(zc, mask=mask):  # zc (C, D) -> (C,)
      full = jnp.where(mask, zc[:, None, :], inner[None, :, :])  # (C, M, D)
      f = log_f_fn(full.reshape(-1, d)).reshape(zc.shape[0], m)
      return jax.nn.logsumexp(f, axis=1) - jnp.log(float(m))

    out.append(_apply_chunked(tilt, z, rows))
  return jnp.stack(out)


def prior_kl(log_f_fn: Callable[[Array], Array], z_dims: Sequence[int], key: Array,
             num_samples: int = 4096, inner_samples: int = 32, method: str = "is", *,
             ais_temperatures: int = 100, ais_step_size: float = 0.1) -> dict[str, Array]:
  """KL(p_alpha || N(0, I)) of p_alpha ∝ exp(f) N(0, I), jointly and per layer marginal.

  Args:
    log_f_fn: f(z (B, D)) -> (B,), e.g. `likelihood.model_functions(model, state)[0]`.
    z_dims: layer sizes d_l (static), D = sum.
    key: PRNG key.
    num_samples: N >= 2 Gaussian draws (static); also the AIS chains for 'ais' / 'auto'.
    inner_samples: M >= 1 draws of the other layers per layer marginal (static); cost N M L
      evaluations of f.
    method: 'is', 'ais' or 'auto' (static; see the module docstring).
    ais_temperatures, ais_step_size: `likelihood.log_normalizer_ais`'s T and MALA step size.

  Returns:
    dict: 'kl', 'kl_std_error', 'log_z', 'mean_f', 'ess' (scalars, from the method used),
    'used_ais' (bool scalar), 'grad_norm' (scalar, E_{N(0, I)} |grad f|), 'layer_kl',
    'layer_kl_std_error', 'layer_ess' ((L,) each).

  Raises:
    ValueError: bad sizes or method (before any tracing).
  """
  z_dims = tuple(int(d) for d in z_dims)
  if not z_dims or min(z_dims) < 1:
    raise ValueError(f"z_dims must be positive layer sizes; got {z_dims}.")
  if num_samples < 2:
    raise ValueError(f"num_samples must be >= 2; got {num_samples}.")
  if inner_samples < 1:
    raise ValueError(f"inner_samples must be >= 1; got {inner_samples}.")
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}.")
  d = sum(z_dims)
  k_outer, k_inner, k_ais = jax.random.split(key, 3)
  z = jax.random.normal(k_outer, (num_samples, d))
  f = _apply_chunked(log_f_fn, z, _CHUNK)
  # Rows are independent, so the gradient of the sum is each row's own gradient.
  grad_norm = jnp.mean(_apply_chunked(
      lambda zc: jnp.linalg.norm(jax.grad(lambda x: jnp.sum(log_f_fn(x)))(zc), axis=-1), z, _CHUNK))

  def by_ais():
    ais = likelihood.log_normalizer_ais(log_f_fn, k_ais, d, num_samples, ais_temperatures,
                                        step_size=ais_step_size)
    # log Z here is the AIS estimate itself: the log mean of the same weights.
    return kl_from_weights(ais["log_weights"], _apply_chunked(log_f_fn, ais["samples"], _CHUNK))

  if method == "is":
    joint, used_ais = kl_from_weights(f, f), jnp.asarray(False)
  elif method == "ais":
    joint, used_ais = by_ais(), jnp.asarray(True)
  else:
    by_is = kl_from_weights(f, f)
    used_ais = by_is["ess"] < AUTO_MIN_ESS_FRACTION * num_samples
    joint = jax.lax.cond(used_ais, by_ais, lambda: by_is)

  if len(z_dims) == 1:  # the one marginal is the joint
    layers = {k: v[None] for k, v in kl_from_weights(f, f).items()}
  else:
    inner = jax.random.normal(k_inner, (inner_samples, d))
    h = layer_log_tilts(log_f_fn, z, z_dims, inner)
    layers = jax.vmap(kl_from_weights)(h, h)
  return {**joint, "used_ais": used_ais, "grad_norm": grad_norm, "layer_kl": layers["kl"],
          "layer_kl_std_error": layers["kl_std_error"], "layer_ess": layers["ess"]}


def gaussian_kl(z_dims: Sequence[int]) -> dict[str, Array]:
  """`prior_kl`'s output for the Gaussian prior (f = 0): every KL exactly 0."""
  num_layers = len(tuple(z_dims))
  zero = jnp.zeros(())
  return {"kl": zero, "kl_std_error": zero, "log_z": zero, "mean_f": zero,
          "ess": jnp.asarray(jnp.inf), "used_ais": jnp.asarray(False), "grad_norm": zero,
          "layer_kl": jnp.zeros(num_layers), "layer_kl_std_error": jnp.zeros(num_layers),
          "layer_ess": jnp.full(num_layers, jnp.inf)}


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6, 7, 8))
def _model_prior_kl(prior, params, sn_state, key, z_dims, num_samples, inner_samples, method,
                    ais_temperatures, ais_step_size):
  from hebm_jax import sampler  # pylint: disable=g-import-not-at-top

  def log_f_fn(z):
    return sampler.energy(prior, params, sn_state, z, update_stats=False)[0]

  return prior_kl(log_f_fn, z_dims, key, num_samples, inner_samples, method,
                  ais_temperatures=ais_temperatures, ais_step_size=ais_step_size)


def model_prior_kl(model, state, key: Array, settings) -> dict[str, Array]:
  """`prior_kl` of a trained model's prior (spectral-norm state fixed), or `gaussian_kl`.

  Args:
    model: `hebm_jax.train.HEBM`.
    state: an unreplicated `TrainState` (or anything with `.params['prior']`, `.sn_state`).
    key: PRNG key.
    settings: `config.eval.prior_kl` (num_samples, inner_samples, method, ais_temperatures,
      ais_step_size). Compiled once per model and settings.
  """
  if model.prior is None:
    return gaussian_kl(model.z_dims)
  return _model_prior_kl(model.prior, state.params["prior"], state.sn_state, key,
                         tuple(model.z_dims), int(settings.num_samples),
                         int(settings.inner_samples), str(settings.method),
                         int(settings.ais_temperatures), float(settings.ais_step_size))


def to_scalars(out: dict, name: str = "prior_kl") -> dict[str, float]:
  """{'prior_kl': KL, 'prior_kl/z1': layer 1's marginal KL, ..., 'prior_kl/std_error',
  'prior_kl/log_z', 'prior_kl/mean_f', 'prior_kl/ess' (of the method used; inf for the Gaussian
  prior), 'prior_kl/grad_norm'} as python floats."""
  out = jax.device_get(out)
  scalars = {name: float(out["kl"])}
  scalars.update({f"{name}/z{l + 1}": float(v) for l, v in enumerate(np.asarray(out["layer_kl"]))})
  scalars.update({f"{name}/std_error": float(out["kl_std_error"]),
                  f"{name}/log_z": float(out["log_z"]), f"{name}/mean_f": float(out["mean_f"]),
                  f"{name}/ess": float(out["ess"]), f"{name}/grad_norm": float(out["grad_norm"])})
  return scalars


def prior_kl_scalars(model, state, key: Array, config) -> dict[str, float]:
  """The numbers the training loop logs: `to_scalars(model_prior_kl(...))` with the settings of
  `config.eval.prior_kl` (see `model_prior_kl`); all 0 for the Gaussian prior."""
  return to_scalars(model_prior_kl(model, state, key, config.eval.prior_kl))
