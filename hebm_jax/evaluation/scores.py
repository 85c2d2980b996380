"""Anomaly / OOD score variants: -log p_w(x, z) at z from q's mean, q's samples, or refined samples.

The paper's score (`log_joint.anomaly_scores`) is -log p(x, z) = -[log p(x|z) + f(z) + log N(z)]
at z ~ q(z|x). With Gfactor 3 the reconstruction term is ~165 nats per MNIST image against a few
from the latent terms, so the prior barely moves the ranking (issue 25). A variant changes two
things:

  energy           False drops f(z) from the score (everything else kept): the difference to the
                   default is what the EBM prior itself contributes to the ranking.
  recon_weight w   the score is -[-w R(x, g(z)) + f(z) + log N(z; 0, I)], R the likelihood's
                   per-image training reconstruction loss (`reconstruction_errors`: the sum of
                   squared errors for 'gaussian', the sigmoid cross-entropy for 'bernoulli', and
                   whatever `objectives.likelihood_loss` computes for any other, e.g. an 'l1' loss
                   on [0, 1]); the training loss weights it by Gfactor. w = 0 leaves the latent
                   terms alone. The sentinel `GFACTOR` (-1, the default) is the model's own
                   log p(x|z), `log_joint.log_likelihood` with its constants (= -Gfactor R + a
                   per-image constant for 'gaussian'; -R for 'bernoulli', whose configs train with
                   Gfactor 1), or -Gfactor R for a likelihood `log_joint` does not know: the
                   default keeps the paper's score to the last digit.
  z                'sample': z ~ q(z|x), `num_samples` draws, the score averaged (the paper's);
                   'mean': q's mean; 'refined': each draw then climbs log p_w(x, z) by
                   `refine_steps` noise-free Langevin steps z <- z + s^2 / 2 grad_z log p_w(x, z)
                   (the posterior refinement of LEBM and DAMC, without the noise).

Each piece is a pure function; `variant_scores` / `many_variant_scores` are the jitted model-level
calls (model and variants static), sharing the encoder pass and the posterior draws (the draws of
`log_joint.posterior_log_joint` for the same key).
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from hebm_jax import models, objectives, sampler
from hebm_jax.errors import ConfigError
from hebm_jax.evaluation import log_joint

Array = jax.Array

GFACTOR = -1.0  # recon_weight sentinel: the model's own log p(x|z) (weight Gfactor)
Z_MODES = ("sample", "mean", "refined")
# Likelihoods whose full log p(x|z) `log_joint.log_likelihood` computes.
_EXACT_LIKELIHOODS = ("gaussian", "bernoulli", "l1")
# The variants table of the 'anomaly' metric: every w in the first by every z in the second.
TABLE_WEIGHTS = (GFACTOR, 1.0, 0.0)
TABLE_Z_MODES = ("mean", "sample", "refined")


@dataclasses.dataclass(frozen=True)
class ScoreVariant:
  """One anomaly score (hashable: a static argument of the jitted calls).

  Attributes:
    recon_weight: w >= 0, or `GFACTOR` (see the module docstring).
    z: one of `Z_MODES`.
    num_samples: draws z ~ q(z|x) per image for 'sample' / 'refined' (scores averaged).
    refine_steps: noise-free Langevin steps of 'refined' (>= 0).
    refine_step_size: their s (> 0).
    energy: whether f(z) is in the score (False: left out; the prior's own share of the ranking).
  """
  recon_weight: float = GFACTOR
  z: str = "sample"
  num_samples: int = 1
  refine_steps: int = 20
  refine_step_size: float = 0.1
  energy: bool = True

  @property
  def label(self) -> str:
    """'w=gfactor,z=sample', 'w=1,z=refined', 'w=0,z=mean,no f', ...: the name of its results."""
    w = "gfactor" if self.recon_weight == GFACTOR else f"{self.recon_weight:g}"
    return f"w={w},z={self.z}" + ("" if self.energy else ",no f")


def check_score_config(config) -> None:
  """Raises `ConfigError` naming the first bad field of config.eval.score / eval.score_samples."""
  def require(cond, field, message):
    if not cond:
      raise ConfigError(f"config.eval.{field}: {message}")

  def is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)

  ev = config.eval
  require(is_int(ev.score_samples) and ev.score_samples > 0, "score_samples",
          f"must be a positive integer, got {ev.score_samples!r}.")
  s = ev.score
  w = s.recon_weight
  require(isinstance(w, numbers.Real) and not isinstance(w, bool) and (w >= 0 or w == GFACTOR),
          "score.recon_weight",
          f"must be >= 0, or {GFACTOR:g} for the training Gfactor (the model's own log p(x|z)); "
          f"got {w!r}.")
  require(s.z in Z_MODES, "score.z", f"unknown z mode {s.z!r}; expected one of {Z_MODES}.")
  require(is_int(s.refine_steps) and s.refine_steps >= 0, "score.refine_steps",
          f"must be a non-negative integer, got {s.refine_steps!r}.")
  require(isinstance(s.refine_step_size, numbers.Real) and s.refine_step_size > 0,
          "score.refine_step_size", f"must be positive, got {s.refine_step_size!r}.")
  for field in ("variants_table", "energy"):
    require(isinstance(s[field], bool), f"score.{field}",
            f"must be True or False, got {s[field]!r}.")


def variant_from_config(config, recon_weight: float | None = None,
                        z: str | None = None) -> ScoreVariant:
  """The variant config.eval.score describes (recon_weight / z replaced when given)."""
  s = config.eval.score
  return ScoreVariant(float(s.recon_weight if recon_weight is None else recon_weight),
                      str(s.z if z is None else z), int(config.eval.score_samples),
                      int(s.refine_steps), float(s.refine_step_size), bool(s.energy))


def table_variants(config) -> tuple[ScoreVariant, ...]:
  """The variants of the table: `TABLE_WEIGHTS` x `TABLE_Z_MODES`, other settings from config."""
  return tuple(variant_from_config(config, w, z) for w in TABLE_WEIGHTS for z in TABLE_Z_MODES)


# --------------------------------------------------------------------------------------------------
# Pure functions.


def reconstruction_errors(images: Array, generator_out: Array, likelihood: str) -> Array:
  """Per-image training reconstruction loss R (`objectives.likelihood_loss` of one image): (B,).

  'gaussian': sum of squared errors; 'bernoulli': summed sigmoid cross-entropy of the logits.
  """
  return jax.vmap(lambda g, x: objectives.likelihood_loss(g[None], x[None], likelihood))(
      generator_out, images)


def weighted_log_likelihood(images: Array, generator_out: Array, likelihood: str, gfactor: float,
                            recon_weight: float) -> Array:
  """The reconstruction term of a score variant: (B, H, W, C) x2 -> (B,).

  -recon_weight * `reconstruction_errors`, or for `GFACTOR` the model's own log p(x|z) (see the
  module docstring). recon_weight is a python number (static).
  """
  if recon_weight == GFACTOR:
    if likelihood in _EXACT_LIKELIHOODS:
      return log_joint.log_likelihood(images, generator_out, likelihood, gfactor)
    recon_weight = gfactor
  if recon_weight == 0:  # not 0 * R: a non-finite R must not leak into the latent-only score
    return jnp.zeros(images.shape[:1], images.dtype)
  return -recon_weight * reconstruction_errors(images, generator_out, likelihood)


def weighted_log_joint(images: Array, zs: Sequence[Array], generator_out: Array, energies: Array,
                       likelihood: str, gfactor: float, recon_weight: float) -> Array:
  """log p_w(x, z) = `weighted_log_likelihood` + f(z) + log N(z; 0, I): (B,).

  Equals `log_joint.log_joint` for recon_weight = `GFACTOR` ('gaussian', 'bernoulli').
  """
  z = models.concat_latents(list(zs))
  return (weighted_log_likelihood(images, generator_out, likelihood, gfactor, recon_weight)
          + energies + log_joint.standard_normal_log_prob(z))


def refine_latents(log_joint_fn: Callable[[list[Array]], Array], zs: Sequence[Array],
                   num_steps: int, step_size: float) -> list[Array]:
  """`num_steps` noise-free Langevin steps z <- z + s^2 / 2 grad_z log p(x, z), every layer at once.

  Args:
    log_joint_fn: zs (L arrays (B, d_l)) -> (B,); each example's value depends on its own z only
      (so the gradient of the sum is each example's own).
    zs: the starting codes.
    num_steps: static, >= 0.
    step_size: s.
  """
  grad = jax.grad(lambda zs: jnp.sum(log_joint_fn(zs)))

  def step(zs, _):
    return [z + 0.5 * step_size ** 2 * g for z, g in zip(zs, grad(zs))], None

  zs, _ = jax.lax.scan(step, list(zs), None, length=num_steps)
  return zs


def posterior_draws(means: Sequence[Array], logvars: Sequence[Array], key: Array,
                    num_samples: int) -> list[list[Array]]:
  """num_samples draws z ~ q(z|x), each L arrays (B, d_l): draw k from split(key, S)[k] split
  again into one key per layer, as `log_joint.posterior_log_joint` draws them."""
  draws = []
  for k in jax.random.split(key, num_samples):
    eps = [jax.random.normal(kl, m.shape, m.dtype)
           for kl, m in zip(jax.random.split(k, len(means)), means)]
    draws.append([objectives.reparameterize(m, lv, e) for m, lv, e in zip(means, logvars, eps)])
  return draws


def score(log_joint_fn: Callable[[list[Array]], Array], means: Sequence[Array],
          logvars: Sequence[Array], key: Array, variant: ScoreVariant) -> Array:
  """The anomaly score -log p_w(x, z) of a variant (higher: more anomalous): (B,).

  Args:
    log_joint_fn: zs -> (B,) log p_w(x, z) of the batch's images (w is the function's business).
    means, logvars: q(z|x), L arrays (B, d_l).
    key: PRNG key of the draws ('sample' / 'refined').
    variant: the z mode and its settings (the weight is already in log_joint_fn).
  """
  if variant.z == "mean":
    return -log_joint_fn(list(means))
  if variant.z not in Z_MODES:
    raise ValueError(f"unknown z mode {variant.z!r}; expected one of {Z_MODES}.")
  values = []
  for zs in posterior_draws(means, logvars, key, variant.num_samples):
    if variant.z == "refined":
      zs = refine_latents(log_joint_fn, zs, variant.refine_steps, variant.refine_step_size)
    values.append(log_joint_fn(zs))
  return -jnp.mean(jnp.stack(values), axis=0)


# --------------------------------------------------------------------------------------------------
# On a model.


def model_log_joint_fn(model, state, images: Array, recon_weight: float,
                       energy: bool = True) -> Callable[[list[Array]], Array]:
  """zs -> (B,) log p_w(x, z) of `images` under a trained model (eval mode, spectral-norm state
  fixed): `weighted_log_joint` with the generator's output and f (0 in place of f when not
  `energy`)."""
  from hebm_jax.train_state import network_variables  # pylint: disable=g-import-not-at-top

  gen_vars = network_variables(state, "generator")

  def fn(zs):
    out = model.generator.apply(gen_vars, list(zs), return_logits=model.likelihood == "bernoulli")
    f, _ = sampler.energy(model.prior, state.params["prior"], state.sn_state,
                          models.concat_latents(list(zs)), update_stats=False)
    if not energy:
      f = jnp.zeros_like(f)
    return weighted_log_joint(images, zs, out, f, model.likelihood, model.gfactor, recon_weight)

  return fn


@functools.partial(jax.jit, static_argnums=(0, 4))
def many_variant_scores(model, state, images: Array, key: Array,
                        variants: tuple[ScoreVariant, ...]) -> Array:
  """Scores of several variants on one batch, one encoder pass and the same draws: (V, B)."""
  from hebm_jax.train_state import network_variables  # pylint: disable=g-import-not-at-top

  means, logvars = model.encoder.apply(network_variables(state, "encoder"), images)
  fns = {}
  out = []
  for v in variants:
    if (v.recon_weight, v.energy) not in fns:
      fns[v.recon_weight, v.energy] = model_log_joint_fn(model, state, images, v.recon_weight,
                                                         v.energy)
    out.append(score(fns[v.recon_weight, v.energy], means, logvars, key, v))
  return jnp.stack(out)


def variant_scores(model, state, images: Array, key: Array, variant: ScoreVariant) -> Array:
  """The anomaly score of one variant on a batch (B, H, W, C) -> (B,). The default variant
  (`ScoreVariant()`, num_samples S) equals `log_joint.anomaly_scores(..., S)` for the same key."""
  return many_variant_scores(model, state, images, key, (variant,))[0]
