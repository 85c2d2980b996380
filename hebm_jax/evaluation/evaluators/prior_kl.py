"""How far the learned prior is from N(0, I): KL(p_alpha || N(0, I)), jointly and per layer."""

from __future__ import annotations

from hebm_jax.evaluation import prior_kl
from hebm_jax.evaluation.evaluators import base


def check_settings(config) -> None:
  """Raises `ConfigError` naming the first bad field of config.eval.prior_kl."""
  s = config.eval.prior_kl
  for field in ("num_samples", "inner_samples", "ais_temperatures"):
    base.positive_int(config, f"eval.prior_kl.{field}")
  base.require(s.num_samples >= 2, "eval.prior_kl.num_samples",
               f"needs at least 2 draws (for a standard error), got {s.num_samples}.")
  base.require(s.method in prior_kl.METHODS, "eval.prior_kl.method",
               f"unknown method {s.method!r}; expected one of {prior_kl.METHODS}.")
  base.require(s.ais_temperatures >= 2, "eval.prior_kl.ais_temperatures",
               f"needs at least 2 (beta = 0 and 1), got {s.ais_temperatures}.")
  base.require(s.ais_step_size > 0, "eval.prior_kl.ais_step_size",
               f"must be positive, got {s.ais_step_size!r}.")


class PriorKL(base.Evaluator):
  """`prior_kl.prior_kl` of the checkpoint's prior: 'prior_kl' (joint), 'prior_kl/zK' (layer K's
  marginal), with its standard error, log Z, E_p[f], effective sample size and the mean |grad f|
  under N(0, I). Exactly 0 for the Gaussian prior. Reads no data."""
  name = "prior_kl"
  description = "KL(p_alpha || N(0, I)) of the prior, joint and per layer"

  @classmethod
  def check(cls, config) -> None:
    check_settings(config)

  def settings(self) -> dict:
    return {**self.config.eval.prior_kl.to_dict(),
            "estimator": "self-normalised importance sampling from N(0, I) (AIS for 'ais', or for "
                         "'auto' when the ESS is low); layer marginals from M draws of the other "
                         "layers"}

  def run(self, state, step, key, with_figures=True) -> base.EvalResult:
    out = prior_kl.model_prior_kl(self.model, state, key, self.config.eval.prior_kl)
    scalars = prior_kl.to_scalars(out, self.name)
    return base.EvalResult(
        scalars=scalars,
        details={"used_ais": bool(out["used_ais"]),
                 "layer_kl_std_error": [float(v) for v in out["layer_kl_std_error"]],
                 "layer_ess": [float(v) for v in out["layer_ess"]]})
