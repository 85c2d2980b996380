"""Tests of hebm_jax.sampler: Langevin dynamics (paper Eq. 13-14), prior sampling, hierarchy."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebm_jax import models, sampler


def _filled_params(module, *args):
  """`module`'s params with the init's shapes, filled with cheap numpy draws (no init compile)."""
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *args)["params"]
  rng = np.random.default_rng(0)
  return jax.tree_util.tree_map(
      lambda l: jnp.asarray(rng.normal(size=l.shape) / np.sqrt(max(np.prod(l.shape[:-1]), 1)),
                            l.dtype), shapes)


def _std_normal_log_prob(z):
  return -0.5 * jnp.sum(z ** 2, axis=-1)


# --------------------------------------------------------------------------------------------------
# langevin


def test_langevin_gaussian_stationary_moments():
  """Many long chains on N(mu, diag(sigma^2)) match the discretised chain's exact moments.

  For z <- z + (s^2/2) * grad log p(z) + s * eps on a Gaussian of variance v, each coordinate is an
  AR(1) process mu + a (z - mu) + s eps with a = 1 - s^2 / (2v), whose stationary variance is
  s^2 / (1 - a^2) = v / (1 - s^2 / (4v)).
  """
  mu = np.array([1.5, -2.0])
  sigma = np.array([1.0, 0.5])
  var = sigma ** 2
  step_size, n_steps, n_chains = 0.3, 500, 10_000

  def log_prob(z):
    return -0.5 * jnp.sum((z - mu) ** 2 / var, axis=-1)

  z = sampler.langevin(log_prob, jnp.zeros((n_chains, 2)), jax.random.PRNGKey(0), n_steps,
                       step_size)
  z = np.asarray(z, np.float64)
  assert z.shape == (n_chains, 2)
  # The chains have forgotten their start: a**n_steps is negligible for both coordinates.
  assert np.all((1 - step_size ** 2 / (2 * var)) ** n_steps < 1e-9)

  stationary_var = var / (1 - step_size ** 2 / (4 * var))
  # Mean within 4 standard errors.
  np.testing.assert_array_less(np.abs(z.mean(0) - mu), 4 * np.sqrt(stationary_var / n_chains))
  # Variance within 4 standard errors (relative SE of a Gaussian variance is sqrt(2/N) = 1.4%).
  rel_tol = 4 * np.sqrt(2.0 / n_chains)
  np.testing.assert_allclose(z.var(0), stationary_var, rtol=rel_tol)
  # The discretisation bias is visible: the second coordinate's variance is ~10% above v.
  assert abs(z.var(0)[1] / var[1] - 1) > rel_tol


def test_langevin_trajectory():
  z0 = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
  key = jax.random.PRNGKey(2)
  z, traj = sampler.langevin(_std_normal_log_prob, z0, key, 7, 0.2, return_trajectory=True)
  assert traj.shape == (7, 4, 3)
  np.testing.assert_array_equal(traj[-1], z)
  # Same key, no trajectory: the same end point.
  np.testing.assert_array_equal(sampler.langevin(_std_normal_log_prob, z0, key, 7, 0.2), z)
  # Consecutive entries differ (noise at every step).
  assert not np.allclose(traj[0], z0)
  assert not np.allclose(traj[-2], traj[-1])


def test_langevin_jit_matches_eager():
  z0 = jax.random.normal(jax.random.PRNGKey(1), (5, 2))
  key = jax.random.PRNGKey(3)
  eager = sampler.langevin(_std_normal_log_prob, z0, key, 10, 0.3)
  jitted = jax.jit(functools.partial(sampler.langevin, _std_normal_log_prob, n_steps=10,
                                     step_size=0.3))(z0, key)
  np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)
  # step_size may also be traced.
  traced = jax.jit(lambda z, k, s: sampler.langevin(_std_normal_log_prob, z, k, 10, s))(
      z0, key, 0.3)
  np.testing.assert_allclose(traced, eager, rtol=1e-5, atol=1e-6)


def test_langevin_vmap_over_keys():
  z0 = jnp.zeros((3, 2))
  keys = jax.random.split(jax.random.PRNGKey(4), 4)
  run = lambda k: sampler.langevin(_std_normal_log_prob, z0, k, 5, 0.4)
  out = jax.vmap(run)(keys)
  assert out.shape == (4, 3, 2)
  for i in range(4):
    np.testing.assert_allclose(out[i], run(keys[i]), rtol=1e-5, atol=1e-6)
    for j in range(i):
      assert not np.allclose(out[i], out[j])


def test_langevin_noise_closed_form():
  """For log p = -||z||^2/2 the update is z (1 - s^2/2) + s eps; three steps in closed form."""
  s = 0.5
  a = 1 - s ** 2 / 2
  z0 = jnp.array([[1.0, -2.0], [0.5, 3.0]])
  noise = jax.random.normal(jax.random.PRNGKey(5), (3, 2, 2))
  z = sampler.langevin(_std_normal_log_prob, z0, None, 3, s, noise=noise)
  e = np.asarray(noise, np.float64)
  expected = a ** 3 * np.asarray(z0) + s * (a ** 2 * e[0] + a * e[1] + e[2])
  np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-6)
  # The key is ignored when noise is given.
  z_key = sampler.langevin(_std_normal_log_prob, z0, jax.random.PRNGKey(9), 3, s, noise=noise)
  np.testing.assert_array_equal(z, z_key)


def test_langevin_noise_hand_loop_non_gaussian():
  """A non-quadratic target: the chain equals a hand-written loop of Eq. 13 with the same noise."""
  def log_prob(z):
    return -jnp.sum(jnp.cosh(z), -1) + jnp.sin(z[:, 0] * z[:, 1])

  s, n = 0.3, 4
  z0 = jax.random.normal(jax.random.PRNGKey(6), (3, 2))
  noise = jax.random.normal(jax.random.PRNGKey(7), (n, 3, 2))
  out = sampler.langevin(log_prob, z0, None, n, s, noise=noise)
  z = np.asarray(z0, np.float64)
  for t in range(n):
    x, y = z[:, 0], z[:, 1]
    grad = np.stack([-np.sinh(x) + y * np.cos(x * y), -np.sinh(y) + x * np.cos(x * y)], -1)
    z = z + 0.5 * s ** 2 * grad + s * np.asarray(noise[t], np.float64)
  np.testing.assert_allclose(out, z, rtol=1e-4, atol=1e-5)


def test_langevin_argument_errors():
  z0 = jnp.zeros((4, 2))
  with pytest.raises(ValueError, match=re.escape("(3, 4, 2)")):
    sampler.langevin(_std_normal_log_prob, z0, None, 3, 0.1, noise=jnp.zeros((3, 4, 3)))
  with pytest.raises(ValueError, match=re.escape("(3, 4, 2)")):
    sampler.langevin(_std_normal_log_prob, z0, None, 3, 0.1, noise=jnp.zeros((2, 4, 2)))
  with pytest.raises(ValueError, match="PRNG key"):
    sampler.langevin(_std_normal_log_prob, z0, None, 3, 0.1)
  for unroll in (0, -2, 2.5, "2"):
    with pytest.raises(ValueError, match=f"unroll must be a positive int or a bool; got {unroll!r}"):
      sampler.langevin(_std_normal_log_prob, z0, jax.random.PRNGKey(0), 3, 0.1, unroll=unroll)


# --------------------------------------------------------------------------------------------------
# langevin_with_state


def test_langevin_with_state_threads_state_in_order():
  """The state visits every call in order; call t sees the chain before step t."""
  n = 6
  z0 = jax.random.normal(jax.random.PRNGKey(8), (3, 2))

  def log_prob(z, state):
    count, seen = state
    seen = seen.at[count].set(jax.lax.stop_gradient(jnp.sum(z)))
    return _std_normal_log_prob(z), (count + 1, seen)

  state0 = (jnp.asarray(0), jnp.zeros(n))
  z, (count, seen), traj = sampler.langevin_with_state(
      log_prob, z0, state0, jax.random.PRNGKey(9), n, 0.2, return_trajectory=True)
  assert int(count) == n
  before = np.concatenate([np.asarray(z0)[None], np.asarray(traj)[:-1]])
  np.testing.assert_allclose(seen, before.sum(axis=(1, 2)), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(traj[-1], z)

  # Without trajectory: two outputs, same end point and state.
  out = sampler.langevin_with_state(log_prob, z0, state0, jax.random.PRNGKey(9), n, 0.2)
  assert len(out) == 2
  np.testing.assert_array_equal(out[0], z)
  assert int(out[1][0]) == n


# --------------------------------------------------------------------------------------------------
# Prior sampling with an EnergyPrior.


@pytest.fixture(scope="module")
def small_prior():
  prior = models.EnergyPrior(num_layers=2, width=8)
  variables = prior.init(jax.random.PRNGKey(10), jnp.zeros((1, 5)))
  return prior, variables["params"], variables["batch_stats"]


def _u(state):
  return {name: np.asarray(s["sn"]["dense/kernel/u"]) for name, s in state.items()}


def test_sample_prior_gaussian_returns_z0():
  z0 = jax.random.normal(jax.random.PRNGKey(11), (4, 5))
  z, state = sampler.sample_prior(None, {}, {}, z0, jax.random.PRNGKey(12), 10, 0.4)
  np.testing.assert_array_equal(z, z0)
  assert state == {}
  z, state, traj = sampler.sample_prior(None, {}, {}, z0, None, 10, 0.4, return_trajectory=True)
  np.testing.assert_array_equal(z, z0)
  assert traj.shape == (10, 4, 5)


def test_sample_prior_updates_spectral_norm_state(small_prior):
  prior, params, sn_state = small_prior
  n = 5
  z0 = jax.random.normal(jax.random.PRNGKey(13), (4, 5))
  noise = jax.random.normal(jax.random.PRNGKey(14), (n, 4, 5))
  s = 0.4
  z, new_state = sampler.sample_prior(prior, params, sn_state, z0, None, n, s, noise=noise)
  assert z.shape == (4, 5)

  # Reference: call the prior n times by hand, carrying its state, with the Langevin update of
  # Eq. 14: z += s^2/2 (grad f(z) - z) + s eps.
  def f_sum(z, state):
    f, updates = prior.apply({"params": params, "batch_stats": state}, z, update_stats=True,
                             mutable=["batch_stats"])
    return jnp.sum(f), updates["batch_stats"]

  state, z_ref = sn_state, z0
  for t in range(n):
    g, state = jax.grad(f_sum, has_aux=True)(z_ref, state)
    z_ref = z_ref + 0.5 * s ** 2 * (g - z_ref) + s * noise[t]
  u_new, u_ref, u_old = _u(new_state), _u(state), _u(sn_state)
  for name in u_ref:
    np.testing.assert_allclose(u_new[name], u_ref[name], rtol=1e-5, atol=1e-6)
  assert not np.allclose(u_new["fc1"], u_old["fc1"])
  np.testing.assert_allclose(z, z_ref, rtol=1e-4, atol=1e-5)

  # One step fewer gives a different u (the state advances once per Langevin step).
  state = sn_state
  for _ in range(n - 1):
    _, state = f_sum(z0, state)
  assert not np.allclose(_u(state)["fc1"], u_new["fc1"], atol=1e-6)


@pytest.mark.parametrize("unroll", [2, 5, True])
def test_sample_prior_unrolled_is_the_same_chain(small_prior, unroll):
  """`unroll` changes the compiled loop, not the chain: end point, trajectory and the
  spectral-norm state match the rolled loop (2 steps per iteration do not divide K = 5, so the
  remainder path is covered too)."""
  prior, params, sn_state = small_prior
  z0 = jax.random.normal(jax.random.PRNGKey(15), (4, 5))
  run = jax.jit(lambda u: sampler.sample_prior(prior, params, sn_state, z0, jax.random.PRNGKey(16),
                                                5, 0.4, return_trajectory=True, unroll=u),
                static_argnums=0)
  rolled, unrolled = run(1), run(unroll)
  for a, b in zip(jax.tree.leaves(rolled), jax.tree.leaves(unrolled)):
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
  assert not np.allclose(rolled[2][0], rolled[2][-1])   # the chain moved


def test_prior_log_prob_fn(small_prior):
  prior, params, sn_state = small_prior
  z = jax.random.normal(jax.random.PRNGKey(15), (6, 5))
  log_p, state = sampler.prior_log_prob_fn(prior, params)(z, sn_state)
  f, updates = prior.apply({"params": params, "batch_stats": sn_state}, z, update_stats=True,
                           mutable=["batch_stats"])
  np.testing.assert_allclose(log_p, f - 0.5 * jnp.sum(z ** 2, -1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(_u(state)["fc1"], _u(updates["batch_stats"])["fc1"], rtol=1e-6)

  # update_stats=False leaves the state unchanged.
  _, state = sampler.prior_log_prob_fn(prior, params, update_stats=False)(z, sn_state)
  for name in _u(sn_state):
    np.testing.assert_array_equal(_u(state)[name], _u(sn_state)[name])

  # Gaussian prior: f = 0.
  log_p, state = sampler.prior_log_prob_fn(None, {})(z, {})
  np.testing.assert_allclose(log_p, -0.5 * np.sum(np.asarray(z) ** 2, -1), rtol=1e-6)
  assert state == {}


def test_prior_log_prob_fn_without_spectral_norm():
  prior = models.EnergyPrior(num_layers=1, width=4, spectral_norm=False)
  z = jax.random.normal(jax.random.PRNGKey(16), (3, 2))
  params = prior.init(jax.random.PRNGKey(17), z)["params"]
  log_p, state = sampler.prior_log_prob_fn(prior, params)(z, {})
  np.testing.assert_allclose(log_p, prior.apply({"params": params}, z) - 0.5 * jnp.sum(z ** 2, -1),
                             rtol=1e-5, atol=1e-6)
  assert state == {}


# --------------------------------------------------------------------------------------------------
# Hierarchical sampling.


def test_hierarchical_latents():
  z_dims = (2, 3, 4)
  keys = jax.random.split(jax.random.PRNGKey(18), 3)
  zs = [jax.random.normal(k, (5, d)) for k, d in zip(keys, z_dims)]
  for anchor in (0, 3):
    for layer in range(3):
      out = sampler.hierarchical_latents(zs, layer, anchor=anchor)
      assert [o.shape for o in out] == [(5, d) for d in z_dims]
      for l, (o, z) in enumerate(zip(out, zs)):
        if l == layer:
          np.testing.assert_array_equal(o, z)
        else:
          np.testing.assert_array_equal(o, np.broadcast_to(np.asarray(z)[anchor], z.shape))


def test_hierarchical_sampling_shape_and_content():
  z_dims, channels = (2, 2, 3), (4, 8, 8)
  generator = models.HierarchicalGenerator(z_dims=z_dims, channels=channels, image_size=8,
                                           image_channels=1)
  keys = jax.random.split(jax.random.PRNGKey(19), 3)
  zs = [jax.random.normal(k, (4, d)) for k, d in zip(keys, z_dims)]
  gen_params = _filled_params(generator, zs)
  images = jax.jit(functools.partial(sampler.hierarchical_sampling, generator))(gen_params, zs)
  assert images.shape == (3, 4, 8, 8, 1)
  # Example 0 (the anchor) decodes the original codes in every row.
  apply = jax.jit(generator.apply)
  full = apply({"params": gen_params}, zs)
  for l in range(3):
    np.testing.assert_allclose(images[l, 0], full[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        images[l], apply({"params": gen_params}, sampler.hierarchical_latents(zs, l)),
        rtol=1e-5, atol=1e-6)
  # The other examples vary with the layer that is left free.
  assert not np.allclose(images[0, 1], images[1, 1])


def test_generate_shapes(small_prior):
  prior, params, sn_state = small_prior
  z_dims, channels = (2, 3), (4, 8)
  generator = models.HierarchicalGenerator(z_dims=z_dims, channels=channels, image_size=8,
                                           image_channels=1)
  zs = [jnp.zeros((1, d)) for d in z_dims]
  gen_params = _filled_params(generator, zs)
  images, latents, state = sampler.generate(generator, gen_params, prior, params, sn_state,
                                            jax.random.PRNGKey(22), 3, z_dims, 4, 0.4)
  assert images.shape == (3, 8, 8, 1)
  assert [z.shape for z in latents] == [(3, 2), (3, 3)]
  assert not np.allclose(_u(state)["fc1"], _u(sn_state)["fc1"])


def test_sample_joint_prior_returns_per_layer_latents_of_the_chain(small_prior):
  prior, params, state = small_prior
  z_dims = (2, 3)
  key = jax.random.PRNGKey(7)
  zs, sn_state = sampler.sample_joint_prior(prior, params, state, key, 5, z_dims, 4, 0.3)
  assert [z.shape for z in zs] == [(5, d) for d in z_dims]
  # The same chain, spelled out: the key splits into the initial noise and the chain's key.
  k_init, k_chain = jax.random.split(key)
  z0 = jax.random.normal(k_init, (5, sum(z_dims)))
  z, expected_state = sampler.sample_prior(prior, params, state, z0, k_chain, 4, 0.3)
  np.testing.assert_allclose(models.concat_latents(zs), z, rtol=1e-6, atol=1e-6)
  assert not np.allclose(z, z0)
  jax.tree.map(np.testing.assert_array_equal, sn_state, expected_state)
  # The Gaussian prior returns the initial noise itself.
  zs_gauss, _ = sampler.sample_joint_prior(None, {}, {}, key, 5, z_dims, 4, 0.3)
  np.testing.assert_array_equal(models.concat_latents(zs_gauss), z0)


# --------------------------------------------------------------------------------------------------
# langevin_trace: long chains recorded every R steps.


def test_langevin_trace_matches_langevin_and_records_every_r_steps():
  z0 = jax.random.normal(jax.random.PRNGKey(30), (4, 3))
  key = jax.random.PRNGKey(31)
  n, r, s = 12, 4, 0.3
  record = lambda z: {"log_prob": _std_normal_log_prob(z), "z": z}
  z, records = sampler.langevin_trace(_std_normal_log_prob, z0, key, n, s, r, record)
  # Same key, same noise: langevin_trace draws normal(key, (n,) + z0.shape) as langevin does and
  # feeds it block by block to the same update.
  z_ref, traj = sampler.langevin(_std_normal_log_prob, z0, key, n, s, return_trajectory=True)
  np.testing.assert_array_equal(z, z_ref)
  assert records["log_prob"].shape == (n // r, 4)
  assert records["z"].shape == (n // r, 4, 3)
  np.testing.assert_array_equal(records["z"], traj[r - 1::r])
  np.testing.assert_allclose(records["log_prob"], _std_normal_log_prob(traj[r - 1::r]), rtol=1e-6)
  np.testing.assert_array_equal(records["z"][-1], z)


@pytest.mark.parametrize("n_steps, record_every", [(10, 3), (10, 0), (0, 1)])
def test_langevin_trace_argument_errors(n_steps, record_every):
  with pytest.raises(ValueError, match="record_every"):
    sampler.langevin_trace(_std_normal_log_prob, jnp.zeros((2, 2)), jax.random.PRNGKey(0),
                           n_steps, 0.1, record_every, lambda z: z)


# --------------------------------------------------------------------------------------------------
# MALA.


_MEAN = np.array([1.0, -0.5])
_COV = np.array([[1.0, 0.5], [0.5, 1.0]])


def _gaussian_log_prob(z, state):
  d = z - _MEAN
  return -0.5 * jnp.sum(d @ jnp.asarray(np.linalg.inv(_COV), jnp.float32) * d, axis=-1), state


@functools.partial(jax.jit, static_argnums=3)
def _mala_gaussian(z0, key, step_size, n_steps):
  return sampler.mala_with_state(_gaussian_log_prob, z0, (), key, n_steps, step_size)


def test_mala_leaves_a_gaussian_invariant_where_unadjusted_langevin_does_not():
  n_chains, n_steps, s = 20_000, 30, 0.9
  rng = np.random.default_rng(0)
  z0 = jnp.asarray(rng.multivariate_normal(_MEAN, _COV, n_chains), jnp.float32)
  z, _, info = _mala_gaussian(z0, jax.random.PRNGKey(32), s, n_steps)
  z = np.asarray(z, np.float64)
  assert info["acceptance_rate"].shape == (n_chains,)
  assert info["log_prob"].shape == (n_steps, n_chains)
  np.testing.assert_allclose(info["log_prob"][-1], _gaussian_log_prob(jnp.asarray(z), ())[0],
                             rtol=1e-4, atol=1e-4)
  # Chains are independent and each marginal is exactly N(m, S): moments within 4 standard errors
  # (SE of a covariance entry: sqrt((S_ii S_jj + S_ij^2) / N)).
  se_mean = np.sqrt(np.diag(_COV) / n_chains)
  np.testing.assert_array_less(np.abs(z.mean(0) - _MEAN), 4 * se_mean)
  se_cov = np.sqrt((np.outer(np.diag(_COV), np.diag(_COV)) + _COV ** 2) / n_chains)
  np.testing.assert_array_less(np.abs(np.cov(z.T) - _COV), 4 * se_cov)
  # The unadjusted chain with the same step drifts to its own, wider stationary law: on the
  # eigenvector of variance 0.5 it tends to 0.5 / (1 - s^2 / 2) = 0.85.
  log_p = lambda z: _gaussian_log_prob(z, ())[0]
  z_ula = np.asarray(sampler.langevin(log_p, z0, jax.random.PRNGKey(32), n_steps, s), np.float64)
  v = np.array([1.0, -1.0]) / np.sqrt(2)
  assert np.var(z_ula @ v) > 0.5 + 10 * np.sqrt(2 / n_chains) * 0.5
  assert abs(np.var(z @ v) - 0.5) < 4 * np.sqrt(2 / n_chains) * 0.5


def test_mala_acceptance_falls_as_the_step_grows():
  z0 = jnp.asarray(np.random.default_rng(1).multivariate_normal(_MEAN, _COV, 2000), jnp.float32)
  rates = [float(jnp.mean(_mala_gaussian(z0, jax.random.PRNGKey(33), s, 20)[2]["acceptance_rate"]))
           for s in (0.3, 0.9, 1.8, 3.0)]
  assert 0.9 < rates[0] <= 1.0
  assert 0.3 < rates[1] < 1.0
  assert all(a > b for a, b in zip(rates, rates[1:])), rates
  assert rates[-1] < 0.2


def test_mala_tiny_step_accepts_and_matches_the_unadjusted_update():
  def log_prob(z):
    return -jnp.sum(jnp.cosh(z), -1) + jnp.sin(z[:, 0] * z[:, 1])

  def counting(z, count):
    return log_prob(z), count + 1

  z0 = jax.random.normal(jax.random.PRNGKey(34), (64, 2))
  key, s, n = jax.random.PRNGKey(35), 1e-3, 3
  z, count, info, traj = sampler.mala_with_state(counting, z0, jnp.asarray(0), key, n, s,
                                                 return_trajectory=True)
  assert int(count) == n + 1  # once at z0, once per proposal
  assert float(jnp.mean(info["acceptance_rate"])) > 0.98
  assert traj.shape == (n, 64, 2)
  np.testing.assert_array_equal(traj[-1], z)
  # The documented noise: key -> (k_noise, k_accept); the proposals are langevin(k_noise)'s steps.
  k_noise, _ = jax.random.split(key)
  ula = sampler.langevin(log_prob, z0, k_noise, n, s, return_trajectory=True)[1]
  first = np.asarray(traj[0] != z0).all(axis=1)  # the chains that accepted step 1
  assert first.mean() > 0.98
  np.testing.assert_array_equal(np.asarray(traj[0])[first], np.asarray(ula[0])[first])
  always = np.asarray(info["acceptance_rate"]) == 1
  np.testing.assert_allclose(np.asarray(z)[always], np.asarray(ula[-1])[always], rtol=1e-6,
                             atol=1e-6)
  with pytest.raises(ValueError, match="n_steps"):
    sampler.mala_with_state(counting, z0, jnp.asarray(0), key, 0, s)


def test_mala_given_the_initial_log_prob_and_grad_is_the_same_chain():
  z0 = jax.random.normal(jax.random.PRNGKey(39), (5, 2))
  key = jax.random.PRNGKey(40)
  log_p0, _ = _gaussian_log_prob(z0, ())
  grad0 = jax.grad(lambda z: jnp.sum(_gaussian_log_prob(z, ())[0]))(z0)
  z, _, info = sampler.mala_with_state(_gaussian_log_prob, z0, (), key, 4, 0.8)
  z_given, _, info_given = sampler.mala_with_state(_gaussian_log_prob, z0, (), key, 4, 0.8,
                                                   log_prob_and_grad0=(log_p0, grad0))
  np.testing.assert_allclose(z_given, z, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(info_given["acceptance_rate"], info["acceptance_rate"])


def test_sample_prior_mala_on_a_tiny_energy_prior(small_prior):
  prior, params, sn_state = small_prior
  z0 = jax.random.normal(jax.random.PRNGKey(36), (6, 5))
  z, state, info, traj = sampler.sample_prior_mala(prior, params, sn_state, z0,
                                                   jax.random.PRNGKey(37), 10, 0.5,
                                                   return_trajectory=True)
  assert z.shape == (6, 5) and traj.shape == (10, 6, 5)
  assert info["acceptance_rate"].shape == (6,) and info["log_prob"].shape == (10, 6)
  assert np.isfinite(np.asarray(z)).all() and np.isfinite(np.asarray(info["log_prob"])).all()
  rate = np.asarray(info["acceptance_rate"])
  assert np.all((rate >= 0) & (rate <= 1)) and 0 < rate.mean() <= 1
  # A fixed target: the spectral-norm state is used, not advanced.
  for name in _u(sn_state):
    np.testing.assert_array_equal(_u(state)[name], _u(sn_state)[name])
  log_p, _ = sampler.prior_log_prob_fn(prior, params, update_stats=False)(z, sn_state)
  np.testing.assert_allclose(info["log_prob"][-1], log_p, rtol=1e-5, atol=1e-5)
  # Gaussian prior: the chain runs on N(0, I).
  z, state, info = sampler.sample_prior_mala(None, {}, {}, z0, jax.random.PRNGKey(38), 3, 0.5)
  assert z.shape == (6, 5) and state == {}
  np.testing.assert_allclose(info["log_prob"][-1], -0.5 * np.sum(np.asarray(z) ** 2, -1),
                             rtol=1e-5)
