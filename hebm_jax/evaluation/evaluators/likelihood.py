"""Test log-likelihood: log Z of the EBM prior by AIS, then an importance-weighted log p(x)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from hebm_jax.evaluation import encode, likelihood
from hebm_jax.evaluation.evaluators import base


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5, 6, 7))
def _ais(model, state, key, num_chains, num_temps, step_size, n_mala_steps, schedule):
  log_f, _, _ = likelihood.model_functions(model, state)
  return likelihood.log_normalizer_ais(log_f, key, model.latent_dim, num_chains, num_temps,
                                       step_size=step_size, n_mala_steps=n_mala_steps,
                                       schedule=schedule)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _iw(model, state, images, num_samples, key, log_z):
  _, log_joint_fn, encode_fn = likelihood.model_functions(model, state)
  return likelihood.importance_weighted_log_likelihood(log_joint_fn, encode_fn, images, key,
                                                       num_samples, log_z)


class LogLikelihood(base.Evaluator):
  """log Z by AIS from N(0, I) (plain importance sampling beside it as a check), then on the test
  split log p(x) ~ log mean_k p(x, z_k) / q(z_k|x) - log Z (K = eval.log_likelihood.iw_samples),
  in nats per image and bits per dimension. The Gaussian prior has log Z = 0 exactly."""
  name = "log_likelihood"
  description = "test log-likelihood with the EBM prior's log Z by AIS"

  @classmethod
  def check(cls, config) -> None:
    ll = config.eval.log_likelihood
    for field in ("ais_chains", "ais_temperatures", "ais_mala_steps", "is_samples", "iw_samples"):
      base.positive_int(config, f"eval.log_likelihood.{field}")
    base.require(ll.ais_temperatures >= 2, "eval.log_likelihood.ais_temperatures",
                 f"needs at least 2 (beta = 0 and 1), got {ll.ais_temperatures}.")
    base.require(ll.ais_step_size > 0, "eval.log_likelihood.ais_step_size",
                 f"must be positive, got {ll.ais_step_size!r}.")
    base.require(ll.ais_schedule in ("sigmoid", "linear"), "eval.log_likelihood.ais_schedule",
                 f"must be 'sigmoid' or 'linear', got {ll.ais_schedule!r}.")
    base.require(isinstance(ll.num_images, int) and ll.num_images >= 0,
                 "eval.log_likelihood.num_images",
                 f"must be a non-negative integer (0: the whole split), got {ll.num_images!r}.")

  def __init__(self, config, model, data):
    super().__init__(config, model, data)
    data.source(config.data.eval_split)

  def settings(self) -> dict:
    return {"split": self.config.data.eval_split, **self.config.eval.log_likelihood.to_dict(),
            "likelihood": f"{self.config.objective.likelihood}, sigma^2 = 1 / (2 gfactor)"
            if self.config.objective.likelihood == "gaussian" else "bernoulli",
            "bits_per_dim": "continuous density on the [-1, 1] scale; '_discrete' adds the "
                            "8-bit bin width term D log(2/256) (an approximation, not a bound)"}

  def run(self, state, step, key, with_figures=True) -> base.EvalResult:
    ll, model = self.config.eval.log_likelihood, self.model
    k_ais, k_is, k_iw = jax.random.split(key, 3)
    out = base.EvalResult()
    if model.prior is None:
      log_z, details = 0.0, {"log_z": "0 (Gaussian prior)"}
    else:
      ais = jax.device_get(_ais(model, state, k_ais, ll.ais_chains, ll.ais_temperatures,
                                float(ll.ais_step_size), ll.ais_mala_steps, ll.ais_schedule))
      log_f, _, _ = likelihood.model_functions(model, state)
      log_z_is, is_err = likelihood.log_normalizer_is(log_f, k_is, model.latent_dim, ll.is_samples)
      log_z = float(ais["log_z"])
      out.scalars.update({f"{self.name}/log_z_ais": log_z,
                          f"{self.name}/log_z_is": float(log_z_is),
                          f"{self.name}/ais_acceptance": float(np.mean(ais["acceptance_rate"]))})
      details = {"log_z_ais_std_error": float(ais["log_z_std_error"]),
                 "log_z_is_std_error": float(is_err)}
    split = self.config.data.eval_split
    counter = iter(range(1 << 30))
    values = encode.map_split(
        lambda b: {"log_px": _iw(model, state, jnp.asarray(b["image"]), ll.iw_samples,
                                 jax.random.fold_in(k_iw, next(counter)), log_z)},
        self.data.source(split), self.config.eval.batch_size,
        f"step {step}: importance-weighted log p(x) of {split}", ll.num_images)["log_px"]
    num_dims = math.prod((self.config.data.image_size, self.config.data.image_size,
                          self.config.data.channels))
    nats = float(np.mean(values))
    out.scalars.update({
        f"{self.name}/nats": nats,
        f"{self.name}/bits_per_dim": float(likelihood.bits_per_dim(nats, num_dims)),
        f"{self.name}/bits_per_dim_discrete": float(likelihood.bits_per_dim(nats, num_dims, 2.0))})
    out.details = {**details, "num_images": int(values.size),
                   "nats_std_over_images": float(np.std(values))}
    return out
