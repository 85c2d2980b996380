"""Tests of hebm_jax.evaluation.traversal: Fig. 6 traversals, Fig. 7 Langevin-transition plot."""

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

from hebm_jax import models, sampler
from hebm_jax.evaluation import traversal

_W_DEC = np.random.default_rng(0).normal(size=(6, 3 * 4 * 4)) / 2.0


def linear_decode(zs):
  """list of (N, d_l) with d = (2, 3, 1) -> (N, 4, 4, 3) in [-1, 1]."""
  z = jnp.concatenate(zs, axis=-1)
  return jnp.tanh(z @ _W_DEC).reshape(z.shape[0], 4, 4, 3)


def _base():
  return [jnp.array([10.0, 11.0]), jnp.array([20.0, 21.0, 22.0]), jnp.array([30.0])]


# --------------------------------------------------------------------------------------------------
# traversal_latents / layer_traversals / traversal_figure


def test_traversal_latents_exact_values():
  zs = traversal.traversal_latents(_base(), layer=1, units=(0, 2), values=[-1.0, 1.0])
  assert [z.shape for z in zs] == [(4, 2), (4, 3), (4, 1)]
  # Row-major grid: first unit is the grid row, second the column; unit 1 is held.
  np.testing.assert_array_equal(zs[1], [[-1, 21, -1], [-1, 21, 1], [1, 21, -1], [1, 21, 1]])
  np.testing.assert_array_equal(zs[0], np.tile([10.0, 11.0], (4, 1)))
  np.testing.assert_array_equal(zs[2], np.full((4, 1), 30.0))


def test_traversal_latents_default_values_and_unit_order():
  zs = traversal.traversal_latents(_base(), layer=0, units=(1, 0))
  values = np.linspace(-2, 2, 7)
  assert zs[0].shape == (49, 2)
  grid = np.asarray(zs[0]).reshape(7, 7, 2)
  np.testing.assert_allclose(grid[:, :, 1], np.repeat(values[:, None], 7, 1), rtol=1e-6)
  np.testing.assert_allclose(grid[:, :, 0], np.repeat(values[None, :], 7, 0), rtol=1e-6)


def test_traversal_latents_one_unit_layer():
  zs = traversal.traversal_latents(_base(), layer=2, values=[-1.0, 0.0, 1.0])
  assert [z.shape for z in zs] == [(3, 2), (3, 3), (3, 1)]
  np.testing.assert_array_equal(zs[2][:, 0], [-1.0, 0.0, 1.0])
  np.testing.assert_array_equal(zs[1], np.tile([20.0, 21.0, 22.0], (3, 1)))


def test_traversal_latents_validation():
  with pytest.raises(ValueError, match="layer 3"):
    traversal.traversal_latents(_base(), layer=3)
  with pytest.raises(ValueError, match="unit 3 .*3 units"):
    traversal.traversal_latents(_base(), layer=1, units=(0, 3))
  with pytest.raises(ValueError, match="distinct"):
    traversal.traversal_latents(_base(), layer=1, units=(1, 1))
  with pytest.raises(ValueError, match="d_l"):
    traversal.traversal_latents([jnp.zeros((1, 2))], layer=0)


def test_layer_traversals_and_figure():
  values = jnp.linspace(-2, 2, 5)
  trav = traversal.layer_traversals(linear_decode, _base(), values)
  assert [t.shape for t in trav] == [(5, 5, 4, 4, 3), (5, 5, 4, 4, 3), (1, 5, 4, 4, 3)]
  # Entry [i, j] of layer 1 decodes the latents of grid position i * n + j.
  zs = traversal.traversal_latents(_base(), 1, (0, 1), values)
  np.testing.assert_allclose(trav[1][2, 3], linear_decode([z[2 * 5 + 3:2 * 5 + 4] for z in zs])[0],
                             rtol=1e-5)

  fig = traversal.traversal_figure(trav)
  assert fig.dtype == np.float32 and fig.ndim == 3 and fig.shape[-1] == 3
  assert fig.min() >= 0.0 and fig.max() <= 1.0
  assert fig.shape[0] == 14 + 5 * 5 + 1  # title strip + 5 rows of 4x4 images with 1-pixel pads


# --------------------------------------------------------------------------------------------------
# prior_chains


def test_prior_chains_start_and_gaussian_spread():
  z0 = jnp.full((2000, 2), 4.0)
  log_prob = lambda z, st: (-0.5 * jnp.sum(z ** 2, -1), st)
  chains = traversal.prior_chains(log_prob, z0, (), jax.random.PRNGKey(0), 150, 0.3)
  assert chains.shape == (151, 2000, 2)
  np.testing.assert_array_equal(chains[0], z0)
  final = np.asarray(chains[-1])
  # Stationary law of the discretised chain: N(0, 1 / (1 - s^2 / 4)) ~ N(0, 1.023).
  np.testing.assert_allclose(final.mean(0), 0.0, atol=0.1)
  np.testing.assert_allclose(final.std(0), np.sqrt(1 / (1 - 0.3 ** 2 / 4)), rtol=0.08)


def test_prior_chains_end_is_sample_prior():
  prior = models.EnergyPrior(num_layers=2, width=8)
  variables = prior.init(jax.random.PRNGKey(1), jnp.zeros((1, 5)))
  params, sn_state = variables["params"], variables["batch_stats"]
  z0 = jax.random.normal(jax.random.PRNGKey(2), (6, 5))
  key = jax.random.PRNGKey(3)
  chains = traversal.prior_chains(sampler.prior_log_prob_fn(prior, params), z0, sn_state, key, 5,
                                  0.3)
  z, _ = sampler.sample_prior(prior, params, sn_state, z0, key, 5, 0.3)
  assert chains.shape == (6, 6, 5)
  np.testing.assert_allclose(chains[-1], z, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# langevin_transition_figure


def _check_image(img):
  assert img.ndim == 3 and img.shape[-1] == 3
  assert img.dtype == np.float32
  assert img.min() >= 0.0 and img.max() <= 1.0
  assert img.min() < 0.5  # something was drawn on the white background


def test_langevin_transition_figure():
  rng = np.random.default_rng(0)
  codes = rng.normal(size=(300, 2))
  labels = rng.integers(0, 3, size=300)
  chains = np.cumsum(rng.normal(size=(20, 8, 2)) * 0.2, axis=0)
  backend = matplotlib.get_backend()
  img = traversal.langevin_transition_figure(codes, labels, chains, "z2 (top)",
                                             step_indices=[5, 10, -1], figsize=(4, 3), dpi=50)
  _check_image(img)
  assert img.shape == (150, 200, 3)
  img = traversal.langevin_transition_figure(codes, None, chains, "z2 (top)")
  _check_image(img)
  assert matplotlib.get_backend() == backend
  # A caller on another (non-interactive) backend keeps it.
  try:
    matplotlib.use("pdf")
    traversal.langevin_transition_figure(codes, labels, chains, "z2 (top)", dpi=30)
    assert matplotlib.get_backend().lower() == "pdf"
  finally:
    matplotlib.use(backend)


def test_langevin_transition_figure_validation():
  codes, chains = np.zeros((10, 2)), np.zeros((4, 3, 2))
  with pytest.raises(ValueError, match="posterior_codes"):
    traversal.langevin_transition_figure(np.zeros((10, 3)), None, chains, "z1")
  with pytest.raises(ValueError, match="chains"):
    traversal.langevin_transition_figure(codes, None, np.zeros((4, 2)), "z1")
  with pytest.raises(ValueError, match="labels"):
    traversal.langevin_transition_figure(codes, np.zeros(9, int), chains, "z1")
  with pytest.raises(ValueError, match="step index 4"):
    traversal.langevin_transition_figure(codes, None, chains, "z1", step_indices=[4])
