"""Fig. 8: long-run prior Langevin (energy profile, image strip) and short- vs long-run MALA."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hebm_jax import models, sampler, visualization
from hebm_jax.evaluation import long_run
from hebm_jax.evaluation.evaluators import base
from hebm_jax.train_state import network_variables


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5, 6, 7))
def _profile(model, state, key, num_chains, n_steps, step_size, record_every, num_shown):
  gen_vars = network_variables(state, "generator")
  energy_fn = lambda z: sampler.energy(model.prior, state.params["prior"], state.sn_state, z,
                                       update_stats=False)[0]
  decode = lambda z: model.generator.apply(gen_vars, models.split_latents(z, model.z_dims))
  k_init, k_chain = jax.random.split(key)
  z0 = jax.random.normal(k_init, (num_chains, model.latent_dim))
  return long_run.long_run_profile(energy_fn, decode, z0, k_chain, n_steps, step_size,
                                   record_every, num_shown)


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5))
def _mala(model, state, key, num_chains, n_steps, step_size):
  k_init, k_chain = jax.random.split(key)
  z0 = jax.random.normal(k_init, (num_chains, model.latent_dim))
  z, _, info = sampler.sample_prior_mala(model.prior, state.params["prior"], state.sn_state, z0,
                                         k_chain, n_steps, step_size)
  return jnp.mean(info["acceptance_rate"])


class LongRunLangevin(base.Evaluator):
  """The training sampler run for eval.long_run.n_steps from N(0, I): energies every
  `record_every` steps (figure and the values at K and at the end), an image strip, and the
  acceptance rate MALA would have at the training step size over K and over the long run."""
  name = "long_run"
  description = "long-run Langevin energy profile and MALA acceptance (Fig. 8)"

  @classmethod
  def check(cls, config) -> None:
    base.require(config.prior.type == "ebm", "eval.metrics",
                 "'long_run' studies a learned energy; the Gaussian prior has none.")
    lr = config.eval.long_run
    for field in ("n_steps", "record_every", "num_chains", "num_shown"):
      base.positive_int(config, f"eval.long_run.{field}")
    base.require(lr.n_steps % lr.record_every == 0, "eval.long_run.record_every",
                 f"must divide eval.long_run.n_steps ({lr.n_steps}), got {lr.record_every}.")
    base.require(lr.num_shown <= lr.num_chains, "eval.long_run.num_shown",
                 f"must not exceed num_chains ({lr.num_chains}), got {lr.num_shown}.")
    base.require(lr.step_size >= 0, "eval.long_run.step_size",
                 f"must be non-negative (0: sampler.step_size), got {lr.step_size!r}.")

  def settings(self) -> dict:
    lr = self.config.eval.long_run
    return {**lr.to_dict(), "step_size": lr.step_size or self.config.sampler.step_size,
            "train_steps": self.config.sampler.n_steps, "start": "N(0, I)",
            "spectral_norm_state": "held fixed"}

  def run(self, state, step, key, with_figures=True) -> base.EvalResult:
    lr, model = self.config.eval.long_run, self.model
    s = float(lr.step_size or self.config.sampler.step_size)
    k_long, k_short, k_mala_short, k_mala_long = jax.random.split(key, 4)
    prof = jax.device_get(_profile(model, state, k_long, lr.num_chains, lr.n_steps, s,
                                   lr.record_every, lr.num_shown))
    # Energies at the training K come from their own short chains (K need not be a record step).
    short = jax.device_get(_profile(model, state, k_short, lr.num_chains, model.n_steps, s,
                                    model.n_steps, 1))
    out = base.EvalResult()
    for name in ("neg_f", "energy"):
      out.scalars[f"{self.name}/{name}_at_K"] = float(np.mean(short[name][-1]))
      out.scalars[f"{self.name}/{name}_at_end"] = float(np.mean(prof[name][-1]))
    out.scalars[f"{self.name}/mala_acceptance_K"] = float(
        _mala(model, state, k_mala_short, lr.num_chains, model.n_steps, s))
    out.scalars[f"{self.name}/mala_acceptance_long"] = float(
        _mala(model, state, k_mala_long, lr.num_chains, lr.n_steps, s))
    out.details = {"steps": prof["steps"], "neg_f_mean": prof["neg_f"].mean(1),
                   "neg_f_std": prof["neg_f"].std(1), "energy_mean": prof["energy"].mean(1),
                   "energy_std": prof["energy"].std(1)}
    if with_figures:
      out.figures["long_run_energy"] = long_run.energy_profile_figure(
          prof["steps"], prof["neg_f"], prof["energy"],
          f"{lr.n_steps}-step prior Langevin, s={s:g}, {lr.num_chains} chains",
          train_steps=model.n_steps)
      # Rows: chains; columns: steps 0, R, 2R, ... (every record).
      strip = np.swapaxes(prof["images"], 0, 1)
      out.figures["long_run_samples"] = visualization.make_grid(
          strip.reshape((-1,) + strip.shape[2:]), ncol=strip.shape[1])
    return out
