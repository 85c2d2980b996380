"""Tests of hebm_jax.evaluation.prior_kl: KL(p_alpha || N(0, I)) jointly and per layer, on tilts
of N(0, I) whose KL is known in closed form, and the `prior_kl` metric on a tiny model."""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebm_jax import train
from hebm_jax.config_validation import ConfigError
from hebm_jax.evaluation import prior_kl as pk
from hebm_jax.evaluation.evaluators import METRICS
from tests.conftest import tiny_digits_config

Z_DIMS = (2, 1, 3)


def _gaussian_kl(cov):
  """KL(N(mu=0, cov) || N(0, I)) = (tr cov - d - log det cov) / 2."""
  cov = np.atleast_2d(cov)
  return 0.5 * (np.trace(cov) - len(cov) - np.linalg.slogdet(cov)[1])


def _close(out, key, truth, se_key=None, slack=0.0):
  value = np.asarray(out[key], np.float64)
  se = np.asarray(out[se_key or f"{key}_std_error"], np.float64)
  assert np.all(se > 0) and np.all(se < 0.05), se
  np.testing.assert_array_less(np.abs(value - truth), 4 * se + slack)


def test_flat_energy_gives_exactly_zero_jointly_and_per_layer():
  zero = lambda z: jnp.zeros(z.shape[:-1])
  for method in ("is", "auto"):
    out = pk.prior_kl(zero, Z_DIMS, jax.random.PRNGKey(0), 512, 8, method)
    for k in ("kl", "kl_std_error", "log_z", "mean_f"):
      assert float(out[k]) == 0.0, (method, k)
    np.testing.assert_array_equal(out["layer_kl"], np.zeros(3))
    assert float(out["grad_norm"]) == 0.0
    assert float(out["ess"]) == 512.0 and not bool(out["used_ais"])


@pytest.mark.parametrize("method", ["is", "ais"])
def test_quadratic_energy_gives_the_gaussian_kl(method):
  """f = -a |z|^2 / 2: p = N(0, s2 I), s2 = 1 / (1 + a); KL = d/2 (s2 - 1 - log s2), per layer
  with d_l. The layer marginals' tilt is the layer's own quadratic (the rest is a constant)."""
  a = 1.0
  s2 = 1.0 / (1.0 + a)
  per_dim = 0.5 * (s2 - 1 - math.log(s2))
  f = lambda z: -0.5 * a * jnp.sum(z ** 2, axis=-1)
  out = pk.prior_kl(f, Z_DIMS, jax.random.PRNGKey(1), 8192, 4, method,
                    ais_temperatures=100, ais_step_size=0.5)
  assert bool(out["used_ais"]) == (method == "ais")
  _close(out, "kl", per_dim * sum(Z_DIMS))
  np.testing.assert_allclose(out["log_z"], -0.5 * sum(Z_DIMS) * math.log(1 + a), atol=0.05)
  _close(out, "layer_kl", per_dim * np.asarray(Z_DIMS))
  # |grad f| = a |z|, z ~ N(0, I_6): a E[chi_6] = a sqrt(2) Gamma(7/2) / Gamma(3).
  chi_mean = math.sqrt(2) * math.gamma(3.5) / math.gamma(3.0)
  np.testing.assert_allclose(out["grad_norm"], a * chi_mean, rtol=0.02)


def test_linear_energy_gives_half_the_squared_norm():
  """f = b.z: p = N(b, I), KL = |b|^2 / 2; layer l's marginal N(b_l, I), KL = |b_l|^2 / 2."""
  b = np.asarray([0.6, -0.3, 0.5, 0.2, -0.4, 0.1], np.float32)
  f = lambda z: z @ jnp.asarray(b)
  out = pk.prior_kl(f, Z_DIMS, jax.random.PRNGKey(2), 8192, 4)
  _close(out, "kl", 0.5 * float(b @ b))
  np.testing.assert_allclose(out["grad_norm"], np.linalg.norm(b), rtol=1e-5)
  parts = np.split(b, np.cumsum(Z_DIMS)[:-1])
  _close(out, "layer_kl", [0.5 * float(p @ p) for p in parts])


def test_coupled_energy_has_marginal_kls_below_the_joint_kl():
  """f = c z1 z2 (two 1-d layers): p = N(0, inv([[1, -c], [-c, 1]])); each marginal N(0, 1/(1-c^2)).
  The inner log-mean-exp over M draws is biased: allowed 0.003 beside 4 standard errors."""
  c = 0.5
  cov = np.linalg.inv(np.asarray([[1.0, -c], [-c, 1.0]]))
  f = lambda z: c * z[:, 0] * z[:, 1]
  out = pk.prior_kl(f, (1, 1), jax.random.PRNGKey(3), 20_000, 4000)
  joint, marginal = _gaussian_kl(cov), _gaussian_kl(cov[:1, :1])
  assert marginal < joint / 5
  _close(out, "kl", joint)
  _close(out, "layer_kl", [marginal, marginal], slack=0.003)
  assert np.all(np.asarray(out["layer_kl"]) < float(out["kl"]) - 0.1)


def test_a_layer_the_energy_ignores_has_marginal_kl_exactly_zero():
  f = lambda z: -0.5 * jnp.sum(z[:, :2] ** 2, axis=-1) + z[:, 2]  # layers 1, 2 only
  out = pk.prior_kl(f, Z_DIMS, jax.random.PRNGKey(4), 1024, 16)
  assert float(out["layer_kl"][2]) == 0.0
  assert float(out["layer_kl"][0]) > 0 and float(out["layer_kl"][1]) > 0


def test_auto_turns_to_ais_when_importance_sampling_degenerates():
  """A sharp tilt in 8 dimensions: IS weights concentrate on a few draws (ESS ~ 2 %); 'auto' takes
  AIS and lands near the truth where IS alone is 10 % off."""
  a, d = 5.0, 8
  s2 = 1.0 / (1.0 + a)
  truth = d * 0.5 * (s2 - 1 - math.log(s2))
  f = lambda z: -0.5 * a * jnp.sum(z ** 2, axis=-1)
  by_is = pk.prior_kl(f, (d,), jax.random.PRNGKey(5), 1000, 1, "is")
  auto = pk.prior_kl(f, (d,), jax.random.PRNGKey(5), 1000, 1, "auto", ais_temperatures=200,
                     ais_step_size=0.3)
  assert float(by_is["ess"]) < 0.1 * 1000 and bool(auto["used_ais"])
  assert abs(float(auto["kl"]) - truth) < 0.05 * truth < abs(float(by_is["kl"]) - truth)


def test_bad_arguments_are_refused():
  f = lambda z: jnp.zeros(z.shape[:-1])
  with pytest.raises(ValueError, match="num_samples"):
    pk.prior_kl(f, Z_DIMS, jax.random.PRNGKey(0), 1)
  with pytest.raises(ValueError, match="unknown method 'mcmc'"):
    pk.prior_kl(f, Z_DIMS, jax.random.PRNGKey(0), 8, 2, "mcmc")


# --------------------------------------------------------------------------------------------------
# The model-level helper and the metric.


def _tiny(prior_type):
  """A tiny model and a state holding what the metric reads: the prior's variables."""
  config = tiny_digits_config()
  config.prior.type = prior_type
  config.eval.prior_kl.update(num_samples=256, inner_samples=4, method="is")
  model = train.create_model(config, steps_per_epoch=1)
  params, sn_state = {}, {}
  if model.prior is not None:
    variables = model.prior.init(jax.random.PRNGKey(0), jnp.zeros((1, model.latent_dim)))
    params, sn_state = variables["params"], variables.get("batch_stats", {})
  return config, model, types.SimpleNamespace(params={"prior": params}, sn_state=sn_state)


@pytest.mark.parametrize("prior_type", ["gaussian", "ebm"])
def test_scalars_of_a_tiny_model(prior_type):
  config, model, state = _tiny(prior_type)
  scalars = pk.prior_kl_scalars(model, state, jax.random.PRNGKey(1), config)
  assert {"prior_kl", "prior_kl/z1", "prior_kl/z2", "prior_kl/z3"} <= set(scalars)
  assert all(isinstance(v, float) for v in scalars.values())
  if prior_type == "gaussian":
    assert scalars["prior_kl"] == 0.0 and scalars["prior_kl/z3"] == 0.0
    assert scalars["prior_kl/grad_norm"] == 0.0
  else:  # an untrained EBM is a tilt: a small positive KL, its marginals no larger
    assert 0 < scalars["prior_kl"] < 1 and scalars["prior_kl/grad_norm"] > 0
    assert all(-1e-3 < scalars[f"prior_kl/z{l}"] < scalars["prior_kl"] + 1e-3 for l in (1, 2, 3))
  # The evaluator returns the same numbers.
  evaluator = METRICS["prior_kl"](config, model, data=None)
  out = evaluator.run(state, 0, jax.random.PRNGKey(1))
  assert out.scalars == scalars


@pytest.mark.parametrize("field, value, match", [
    ("num_samples", 1, "eval.prior_kl.num_samples: needs at least 2"),
    ("inner_samples", 0, "eval.prior_kl.inner_samples: must be a positive integer"),
    ("method", "mcmc", "eval.prior_kl.method: unknown method 'mcmc'"),
    ("ais_step_size", 0.0, "eval.prior_kl.ais_step_size: must be positive"),
])
def test_bad_settings_name_the_field(field, value, match):
  config = tiny_digits_config()
  config.eval.prior_kl[field] = value
  with pytest.raises(ConfigError, match=match):
    METRICS["prior_kl"].check(config)
