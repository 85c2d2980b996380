"""Our samplers against blackjax's, an independent implementation, on a small joint EBM prior.

Step sizes: our Langevin/MALA step is z + s^2/2 grad log p + s eps; blackjax's overdamped Langevin
step is x + h grad log p + sqrt(2h) eps, the same update for h = s^2 / 2.

Tolerances are Monte Carlo errors: every compared quantity is a mean over independent chains
(or independent runs), with its standard error estimated from them; the tests allow 4 combined
standard errors (a false failure rate of about 6e-5 per comparison) plus nothing else.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebm_jax import models, prior_log_density, sampler
from hebm_jax.evaluation import likelihood

blackjax = pytest.importorskip("blackjax")

D = 3  # (1, 1, 1) latents, concatenated
CHAINS = 2000
Z_SIGMAS = 4.0


def _within(a, b, se_a, se_b, what):
  """|a - b| <= 4 combined standard errors, elementwise."""
  a, b, se_a, se_b = map(np.asarray, (a, b, se_a, se_b))
  tol = Z_SIGMAS * np.sqrt(se_a ** 2 + se_b ** 2)
  assert np.all(np.abs(a - b) <= tol), f"{what}: {a} vs {b}, allowed +- {tol}"


@functools.cache
def _prior():
  """A tiny EBM prior with deterministic, scaled-up weights: f far enough from flat that the
  target is visibly not N(0, I) (checked below), small enough that every chain mixes in tens of
  steps."""
  prior = models.EnergyPrior(num_layers=2, width=16, spectral_norm=False)
  variables = prior.init(jax.random.PRNGKey(0), jnp.zeros((1, D)))
  params = jax.tree.map(lambda w: 2.5 * w, variables["params"])
  return prior, params, {}


def _importance_moments(logdensity, n=400_000):
  """E[z], E[z^2] under the prior by self-normalised importance sampling from N(0, I), and their
  delta-method standard errors sqrt(sum_i w_i^2 (g_i - E g)^2): the reference both samplers are
  compared with (effective sample size ~7e4 here)."""
  z = jax.random.normal(jax.random.PRNGKey(99), (n, D))
  log_w = jax.jit(lambda z: logdensity(z) + 0.5 * jnp.sum(z ** 2, -1))(z)
  w = np.asarray(jax.nn.softmax(log_w), np.float64)
  out = []
  for g in (np.asarray(z, np.float64), np.asarray(z, np.float64) ** 2):
    m = w @ g
    out += [m, np.sqrt((w ** 2) @ (g - m) ** 2)]
  return out


def _chain_stats(z):
  """Mean over chains and its standard error of z and z^2: (C, D) -> 4 x (D,)."""
  z = np.asarray(z)
  n = z.shape[0]
  return (z.mean(0), z.std(0) / np.sqrt(n), (z ** 2).mean(0), (z ** 2).std(0) / np.sqrt(n))


def _blackjax_chains(algorithm, n_steps):
  """A jitted (key, positions (C, D)) -> (final positions (C, D), per-chain fraction of accepted
  steps (C,)): `n_steps` of a blackjax `SamplingAlgorithm` on each row."""
  def one_chain(key, x):
    def step(state, k):
      state, info = algorithm.step(k, state)
      return state, info.is_accepted
    state, accepted = jax.lax.scan(step, algorithm.init(x), jax.random.split(key, n_steps))
    return state.position, jnp.mean(accepted.astype(jnp.float32))
  return jax.jit(lambda key, xs: jax.vmap(one_chain)(jax.random.split(key, xs.shape[0]), xs))


def test_mala_acceptance_and_moments_match_blackjax_mala():
  prior, params, sn_state = _prior()
  logdensity = prior_log_density(prior, params, sn_state)
  s = 1.3
  n_steps = 50  # burn-in, then as many steps measured
  z0 = jax.random.normal(jax.random.PRNGKey(1), (CHAINS, D))

  # Ours: a burn-in run, then a run whose acceptance is that of the stationary chain.
  run = jax.jit(functools.partial(sampler.sample_prior_mala, prior, params, sn_state,
                                  n_steps=n_steps, step_size=s))
  z, _, _ = run(z0, jax.random.PRNGKey(2))
  z, _, info = run(z, jax.random.PRNGKey(3))
  ours_rate = np.asarray(info["acceptance_rate"])

  theirs = _blackjax_chains(blackjax.mala(logdensity, step_size=0.5 * s ** 2), n_steps)
  x, _ = theirs(jax.random.PRNGKey(4), z0)
  x, theirs_rate = theirs(jax.random.PRNGKey(5), x)
  theirs_rate = np.asarray(theirs_rate)

  n = CHAINS
  _within(ours_rate.mean(), theirs_rate.mean(), ours_rate.std() / np.sqrt(n),
          theirs_rate.std() / np.sqrt(n), "MALA acceptance rate")
  assert 0.4 < ours_rate.mean() < 0.95  # a step size where acceptance says something

  m1, se1, m2, se2 = _chain_stats(z)
  b1, bse1, b2, bse2 = _chain_stats(x)
  ref1, ref_se1, ref2, ref_se2 = _importance_moments(logdensity)
  _within(m1, b1, se1, bse1, "E[z], ours vs blackjax")
  _within(m2, b2, se2, bse2, "E[z^2], ours vs blackjax")
  _within(m1, ref1, se1, ref_se1, "E[z], ours vs importance sampling")
  _within(m2, ref2, se2, ref_se2, "E[z^2], ours vs importance sampling")
  # The target is not N(0, I): its moments are many standard errors from the base's.
  assert np.max(np.abs(ref1) / se1) > 10 and np.max(np.abs(ref2 - 1) / se2) > 10


def test_ais_log_z_matches_blackjax_tempered_smc():
  prior, params, sn_state = _prior()
  log_f = lambda z: sampler.energy(prior, params, sn_state, z, update_stats=False)[0]
  num_temps, s = 20, 1.0
  ours = likelihood.log_normalizer_ais(log_f, jax.random.PRNGKey(6), D, num_chains=1000,
                                       num_temps=num_temps, step_size=s, n_mala_steps=2)

  betas = jnp.asarray(likelihood.annealing_schedule(num_temps))
  log_base = lambda z: -0.5 * jnp.sum(z ** 2, -1)
  smc = blackjax.tempered_smc(
      log_base, log_f, blackjax.mala.build_kernel(), blackjax.mala.init,
      {"step_size": jnp.asarray([0.5 * s ** 2])}, blackjax.smc.resampling.systematic,
      num_mcmc_steps=2)

  def smc_log_z(key):
    k_init, k_run = jax.random.split(key)
    state = smc.init(jax.random.normal(k_init, (1000, D)))

    def step(state, xs):
      k, beta = xs
      state, info = smc.step(k, state, beta)
      return state, info.log_likelihood_increment
    _, increments = jax.lax.scan(step, state, (jax.random.split(k_run, num_temps - 1), betas[1:]))
    return jnp.sum(increments)

  runs = np.asarray(jax.jit(jax.vmap(smc_log_z))(jax.random.split(jax.random.PRNGKey(7), 8)))
  smc_mean, smc_se = runs.mean(), runs.std(ddof=1) / np.sqrt(len(runs))
  _within(ours["log_z"], smc_mean, ours["log_z_std_error"], smc_se, "log Z, AIS vs tempered SMC")
  # Both against plain importance sampling with many draws (exact enough in 3 dimensions).
  truth, truth_se = likelihood.log_normalizer_is(log_f, jax.random.PRNGKey(8), D, 400_000)
  _within(ours["log_z"], truth, ours["log_z_std_error"], truth_se, "log Z, AIS vs IS")
  _within(smc_mean, truth, smc_se, truth_se, "log Z, tempered SMC vs IS")
  assert abs(float(truth)) > 0.05  # the EBM changes the normaliser


def test_langevin_on_a_gaussian_matches_blackjax_and_the_known_discretisation_bias():
  """Unadjusted Langevin on N(mu, Sigma) with step h = s^2/2 has stationary law N(mu, C) with
  C = Sigma (I - h Sigma^{-1} / 2)^{-1} (in Sigma's eigenbasis: sigma^2 / (1 - h / (2 sigma^2))),
  larger than Sigma. Ours and blackjax's overdamped-Langevin (SGLD with exact gradients) chain
  must both land there; blackjax's MALA, at the same step, on Sigma itself."""
  mu = jnp.asarray([1.0, -2.0])
  rot = jnp.asarray([[np.cos(0.5), -np.sin(0.5)], [np.sin(0.5), np.cos(0.5)]])
  sigma = rot @ jnp.diag(jnp.asarray([1.0, 0.25])) @ rot.T
  precision = jnp.linalg.inv(sigma)
  logdensity = lambda z: -0.5 * jnp.einsum("...i,ij,...j->...", z - mu, precision, z - mu)
  s = 0.4
  h = 0.5 * s ** 2
  ula_cov = np.asarray(sigma @ jnp.linalg.inv(jnp.eye(2) - 0.5 * h * precision))
  n_steps, chains = 150, 4000
  z0 = jax.random.normal(jax.random.PRNGKey(10), (chains, 2))

  ours = jax.jit(sampler.langevin, static_argnums=(0, 3))(
      logdensity, z0, jax.random.PRNGKey(11), n_steps, s)

  sgld = blackjax.sgld(lambda x, _: jax.grad(logdensity)(x))

  def sgld_chain(key, x):
    def step(x, k):
      return sgld.step(k, x, (), h), None
    return jax.lax.scan(step, x, jax.random.split(key, n_steps))[0]
  theirs = jax.jit(jax.vmap(sgld_chain))(jax.random.split(jax.random.PRNGKey(12), chains), z0)

  exact, _ = _blackjax_chains(blackjax.mala(logdensity, step_size=h), n_steps)(
      jax.random.PRNGKey(13), z0)

  def moments(z):
    """Mean (2,), covariance entries (3,) [c11, c22, c12] and their standard errors."""
    z = np.asarray(z)
    c = z - np.asarray(mu)
    entries = np.stack([c[:, 0] ** 2, c[:, 1] ** 2, c[:, 0] * c[:, 1]], 1)
    n = len(z)
    return z.mean(0), z.std(0) / np.sqrt(n), entries.mean(0), entries.std(0) / np.sqrt(n)

  def cov_entries(cov):
    return np.asarray([cov[0, 0], cov[1, 1], cov[0, 1]])

  for name, z, cov in (("ours", ours, ula_cov), ("blackjax sgld", theirs, ula_cov),
                       ("blackjax mala", exact, np.asarray(sigma))):
    m, m_se, c, c_se = moments(z)
    _within(m, mu, m_se, 0.0, f"mean, {name}")
    _within(c, cov_entries(cov), c_se, 0.0, f"covariance, {name}")
  m, m_se, c, c_se = moments(ours)
  tm, tm_se, tc, tc_se = moments(theirs)
  _within(c, tc, c_se, tc_se, "covariance, ours vs blackjax sgld")
  # The bias is large enough to be seen: blackjax's MALA is not at the unadjusted covariance.
  em, _, ec, ec_se = moments(exact)
  assert np.max(np.abs(cov_entries(ula_cov) - ec) / ec_se) > Z_SIGMAS
