"""Tests of hebm_jax.evaluation.attack: the one-layer latent attack (paper Fig. 9, REFERENCE 5.6).

The encoder is a fixed random linear map from an 8x8x1 image to three layers: layer 0 reads the
top half of the image, layer 1 the bottom half, layer 2 all of it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebm_jax import objectives
from hebm_jax.evaluation import attack

Z_DIMS = (3, 2, 2)
_RNG = np.random.default_rng(0)
_PIXELS = {0: slice(0, 32), 1: slice(32, 64), 2: slice(0, 64)}
_W_MEAN = {l: _RNG.normal(size=(_PIXELS[l].stop - _PIXELS[l].start, d)) / 3.0
           for l, d in enumerate(Z_DIMS)}
_W_LOGVAR = {l: _RNG.normal(size=(_PIXELS[l].stop - _PIXELS[l].start, d)) / 10.0
             for l, d in enumerate(Z_DIMS)}
_W_DEC = _RNG.normal(size=(sum(Z_DIMS), 64)) / 3.0


def linear_encode(x):
  flat = x.reshape(x.shape[0], -1)
  means = [flat[:, _PIXELS[l]] @ _W_MEAN[l] for l in range(len(Z_DIMS))]
  logvars = [flat[:, _PIXELS[l]] @ _W_LOGVAR[l] - 1.0 for l in range(len(Z_DIMS))]
  return means, logvars


def linear_decode(zs):
  z = jnp.concatenate(zs, axis=-1)
  return jnp.tanh(z @ _W_DEC).reshape(z.shape[0], 8, 8, 1)


@pytest.fixture(scope="module")
def images():
  key_o, key_t = jax.random.split(jax.random.PRNGKey(0))
  x_orig = jax.random.uniform(key_o, (4, 8, 8, 1), minval=-0.9, maxval=0.9)
  x_target = jax.random.uniform(key_t, (4, 8, 8, 1), minval=-0.9, maxval=0.9)
  return x_orig, x_target


# --------------------------------------------------------------------------------------------------
# gaussian_kl


def test_gaussian_kl_zero_for_equal_gaussians():
  mean = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
  logvar = jax.random.normal(jax.random.PRNGKey(2), (5, 4))
  np.testing.assert_allclose(attack.gaussian_kl(mean, logvar, mean, logvar), np.zeros(5), atol=1e-6)


def test_gaussian_kl_hand_computation_and_monte_carlo():
  # KL(N(1, 4) || N(-1, 0.25)) = 0.5 * (log(0.25/4) + 4/0.25 + (1 - (-1))^2 / 0.25 - 1).
  expected = 0.5 * (np.log(0.25 / 4.0) + 16.0 + 16.0 - 1.0)
  kl = attack.gaussian_kl(jnp.array([[1.0]]), jnp.log(jnp.array([[4.0]])), jnp.array([[-1.0]]),
                          jnp.log(jnp.array([[0.25]])))
  np.testing.assert_allclose(kl, [expected], rtol=1e-6)

  # Two units: the KL sums over units; check against a Monte-Carlo estimate E_p[log p - log q].
  mp, lp = np.array([0.3, -0.5]), np.log(np.array([0.8, 1.5]))
  mq, lq = np.array([-0.2, 0.4]), np.log(np.array([1.2, 0.7]))
  z = mp + np.exp(0.5 * lp) * np.random.default_rng(3).normal(size=(400_000, 2))
  log_p = -0.5 * np.sum(lp + (z - mp) ** 2 / np.exp(lp), -1)
  log_q = -0.5 * np.sum(lq + (z - mq) ** 2 / np.exp(lq), -1)
  closed = attack.gaussian_kl(*(jnp.asarray(a, jnp.float32)[None] for a in (mp, lp, mq, lq)))
  np.testing.assert_allclose(closed, [np.mean(log_p - log_q)], rtol=0.02)


def test_gaussian_kl_against_standard_normal_is_kl_analytic():
  mean = jax.random.normal(jax.random.PRNGKey(4), (6, 3))
  logvar = jax.random.normal(jax.random.PRNGKey(5), (6, 3))
  zeros = jnp.zeros_like(mean)
  np.testing.assert_allclose(attack.gaussian_kl(mean, logvar, zeros, zeros),
                             objectives.kl_analytic(mean, logvar), rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# latent_attack


def test_attack_lowers_objective_and_kl(images):
  x_orig, x_target = images
  result = attack.latent_attack(linear_encode, x_orig, x_target, 0, lam=0.01, num_steps=300,
                                learning_rate=0.02)
  assert result.adversarial.shape == x_orig.shape
  assert result.objective.shape == (300,)
  for name in ("kl", "kl_initial", "distortion"):
    assert getattr(result, name).shape == (4,)
  assert result.objective[-1] < 0.2 * result.objective[0]
  assert np.all(result.kl < 0.1 * result.kl_initial)
  np.testing.assert_allclose(result.distortion,
                             np.linalg.norm(np.asarray(result.adversarial - x_orig).reshape(4, -1),
                                            axis=-1), rtol=1e-5)
  # The recorded objective is the batch mean of KL + lam * ||d|| at the returned iterate.
  np.testing.assert_allclose(result.objective[-1],
                             np.mean(result.kl + 0.01 * result.distortion), rtol=1e-4)


def test_attack_stays_inside_pixel_range(images):
  x_orig, x_target = images
  # The target's posterior is only reachable from outside the box (its image is scaled by 4), so
  # the attack pushes pixels against the bounds and the projection is exercised.
  for low, high in [(-1.0, 1.0), (-0.5, 0.5)]:
    result = attack.latent_attack(linear_encode, x_orig, 4.0 * x_target, 2, lam=0.0, num_steps=50,
                                  learning_rate=0.5, pixel_range=(low, high))
    adv = np.asarray(result.adversarial)
    assert adv.min() >= low and adv.max() <= high
    assert np.any(adv == high) or np.any(adv == low)


def test_larger_lam_gives_smaller_distortion(images):
  x_orig, x_target = images
  small = attack.latent_attack(linear_encode, x_orig, x_target, 2, lam=0.01, num_steps=200,
                               learning_rate=0.02)
  large = attack.latent_attack(linear_encode, x_orig, x_target, 2, lam=3.0, num_steps=200,
                               learning_rate=0.02)
  assert np.all(large.distortion < small.distortion)
  assert np.all(large.kl > small.kl)


def test_attack_on_a_layer_moves_that_layer_most(images):
  """Layers 0 and 1 read disjoint pixels: attacking one must leave the other's posterior as is."""
  x_orig, x_target = images
  out = attack.attack_layers(linear_encode, linear_decode, x_orig, x_target, 3, lam=0.01,
                             num_steps=200, learning_rate=0.02)
  kl_all = np.asarray(out["kl_all_layers"])
  np.testing.assert_allclose(np.diagonal(kl_all).T, out["kl"], rtol=1e-5)
  before = np.stack([attack.gaussian_kl(m, v, mt, vt) for m, v, mt, vt in
                     zip(*linear_encode(x_orig), *linear_encode(x_target))])
  for attacked, other in [(0, 1), (1, 0)]:
    drop_attacked = 1.0 - kl_all[attacked, attacked] / before[attacked]
    drop_other = 1.0 - kl_all[attacked, other] / before[other]
    assert np.all(drop_attacked > 0.9)
    np.testing.assert_allclose(drop_other, 0.0, atol=1e-5)
    # The pixels the attacked layer does not read are untouched (zero gradient at d = 0).
    rows = slice(4, 8) if attacked == 0 else slice(0, 4)
    np.testing.assert_array_equal(out["adversarial"][attacked][:, rows], x_orig[:, rows])


def test_attack_is_jittable(images):
  x_orig, x_target = images
  jitted = jax.jit(attack.latent_attack, static_argnums=(0, 3), static_argnames=("num_steps",))
  kw = dict(lam=0.1, num_steps=40, learning_rate=0.02, pixel_range=(-1.0, 1.0))
  a = jitted(linear_encode, x_orig, x_target, 1, **kw)
  b = attack.latent_attack(linear_encode, x_orig, x_target, 1, **kw)
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_attack_validation(images):
  x_orig, x_target = images
  with pytest.raises(ValueError, match="same shape|must match"):
    attack.latent_attack(linear_encode, x_orig, x_target[:2], 0)
  with pytest.raises(ValueError, match=r"layer 3 .*L=3"):
    attack.latent_attack(linear_encode, x_orig, x_target, 3)
  with pytest.raises(ValueError, match=r"layer -1 .*L=3"):
    attack.latent_attack(linear_encode, x_orig, x_target, -1)
  with pytest.raises(ValueError, match="num_steps"):
    attack.latent_attack(linear_encode, x_orig, x_target, 0, num_steps=0)
  with pytest.raises(ValueError, match="num_layers"):
    attack.attack_layers(linear_encode, linear_decode, x_orig, x_target, 2, num_steps=1)


# --------------------------------------------------------------------------------------------------
# attack_layers and attack_grid


def test_attack_layers_shapes_and_grid(images):
  x_orig, x_target = images
  out = attack.attack_layers(linear_encode, linear_decode, x_orig, x_target, 3, num_steps=5)
  assert set(out) == {"adversarial", "reconstruction", "kl", "kl_initial", "distortion",
                      "kl_all_layers"}
  assert out["adversarial"].shape == (3, 4, 8, 8, 1)
  assert out["reconstruction"].shape == (3, 4, 8, 8, 1)
  for name in ("kl", "kl_initial", "distortion"):
    assert out[name].shape == (3, 4)
  assert out["kl_all_layers"].shape == (3, 3, 4)
  np.testing.assert_allclose(out["reconstruction"][1],
                             linear_decode(linear_encode(out["adversarial"][1])[0]), rtol=1e-5)

  grid = attack.attack_grid(x_orig, x_target, out["adversarial"], out["reconstruction"])
  assert grid.dtype == np.float32 and grid.ndim == 3 and grid.shape[-1] == 1
  assert grid.min() >= 0.0 and grid.max() <= 1.0
  # Each block is a 4-row x 4-column make_grid with pad 1: (4*9+1) x (4*9+1); three blocks, two
  # 4-pixel gaps, a 14-pixel title strip.
  assert grid.shape == (14 + 37, 3 * 37 + 2 * 4, 1)
  with pytest.raises(ValueError):
    attack.attack_grid(x_orig, x_target, out["adversarial"], out["reconstruction"][:, :2])
