"""Tests of hebm_jax.evaluation.scores: the anomaly score variants, by hand on tiny models."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebm_jax import train
from hebm_jax.config_validation import ConfigError
from hebm_jax.evaluation import log_joint, scores
from hebm_jax.evaluation.evaluators import METRICS
from tests.conftest import tiny_digits_config


def test_weighted_log_joint_by_hand():
  """A linear 'generator' g(z) = z A on 3 'pixels', two layers (1, 1), f given."""
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (4, 3, 1, 1)).astype(np.float32)
  zs = [rng.normal(size=(4, 1)).astype(np.float32) for _ in range(2)]
  z = np.concatenate(zs, 1)
  g = (z @ rng.normal(size=(2, 3))).astype(np.float32).reshape(4, 3, 1, 1)
  f = rng.normal(size=4).astype(np.float32)
  sse = np.sum((x - g) ** 2, axis=(1, 2, 3))
  latent = f - 0.5 * np.sum(z ** 2, 1) - math.log(2 * math.pi)  # f + log N(z; 0, I_2)
  gfactor = 3.0
  for w in (0.0, 1.0, 2.5):
    got = scores.weighted_log_joint(x, zs, g, f, "gaussian", gfactor, w)
    np.testing.assert_allclose(got, -w * sse + latent, rtol=1e-5)
  # The sentinel is log_joint's log p(x, z): -gfactor SSE plus the Gaussian's constant.
  got = scores.weighted_log_joint(x, zs, g, f, "gaussian", gfactor, scores.GFACTOR)
  np.testing.assert_allclose(got, log_joint.log_joint(x, zs, g, f, "gaussian", gfactor), rtol=1e-6)
  const = -0.5 * 3 * math.log(math.pi / gfactor)
  np.testing.assert_allclose(got, -gfactor * sse + const + latent, rtol=1e-5)
  # Bernoulli: R is the summed sigmoid cross-entropy of the logits against (x + 1) / 2.
  t = (x + 1) / 2
  ce = np.sum(np.maximum(g, 0) - g * t + np.log1p(np.exp(-np.abs(g))), axis=(1, 2, 3))
  np.testing.assert_allclose(scores.weighted_log_joint(x, zs, g, f, "bernoulli", 1.0, 2.0),
                             -2 * ce + latent, rtol=1e-5)
  np.testing.assert_allclose(scores.weighted_log_joint(x, zs, g, f, "bernoulli", 1.0,
                                                       scores.GFACTOR), -ce + latent, rtol=1e-5)


def test_mean_mode_is_the_sample_mode_without_posterior_noise():
  target = jnp.asarray([[0.5, -1.0, 2.0]])
  log_joint_fn = lambda zs: -jnp.sum((jnp.concatenate(zs, 1) - target) ** 2, axis=1)
  means = [jnp.asarray([[0.1, 0.2], [1.0, -1.0]]), jnp.asarray([[0.3], [0.0]])]
  sure = [jnp.full_like(m, -400.0) for m in means]  # exp(-200) is 0 in float32
  key = jax.random.PRNGKey(0)
  by_mean = scores.score(log_joint_fn, means, sure, key, scores.ScoreVariant(z="mean"))
  np.testing.assert_allclose(by_mean, [np.sum((np.asarray([0.1, 0.2, 0.3]) - target) ** 2),
                                       np.sum((np.asarray([1.0, -1.0, 0.0]) - target) ** 2)],
                             rtol=1e-6)
  by_sample = scores.score(log_joint_fn, means, sure, key, scores.ScoreVariant(num_samples=3))
  np.testing.assert_allclose(by_sample, by_mean, rtol=1e-6)  # the mean of 3 equal values
  unsure = [jnp.zeros_like(m) for m in means]
  assert not np.allclose(scores.score(log_joint_fn, means, unsure, key, scores.ScoreVariant()),
                         by_mean)


def test_refinement_climbs_a_concave_log_joint_to_its_mode():
  """log p = -|z - t|^2: each step moves z by s^2 (t - z); the score falls at every step."""
  target = jnp.asarray([[0.5, -1.0, 2.0]])
  log_joint_fn = lambda zs: -jnp.sum((jnp.concatenate(zs, 1) - target) ** 2, axis=1)
  zs = [jnp.zeros((1, 2)), jnp.zeros((1, 1))]
  s = 0.5
  one = scores.refine_latents(log_joint_fn, zs, 1, s)
  np.testing.assert_allclose(np.concatenate(one, 1), s ** 2 * np.asarray(target), rtol=1e-6)
  values = [float(log_joint_fn(scores.refine_latents(log_joint_fn, zs, k, s))[0])
            for k in range(4)]
  assert all(b > a for a, b in zip(values, values[1:]))


@pytest.fixture(scope="module")
def tiny():
  config = tiny_digits_config()
  model = train.create_model(config, steps_per_epoch=10)
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  state = train.create_train_state(model, jax.random.PRNGKey(0), shape)
  x = jax.random.uniform(jax.random.PRNGKey(1), (5,) + shape, minval=-1, maxval=1)
  return config, model, state, x


def test_variants_on_a_tiny_model_by_hand(tiny):
  config, model, state, x = tiny
  key = jax.random.PRNGKey(7)
  variants = (scores.ScoreVariant(), scores.ScoreVariant(1.0, "mean"),
              scores.ScoreVariant(0.0, "mean"), scores.ScoreVariant(2.0, "sample", num_samples=2))
  got = np.asarray(scores.many_variant_scores(model, state, x, key, variants))
  # The default is the paper's score, log_joint.anomaly_scores, with the same draws.
  np.testing.assert_allclose(got[0], log_joint.anomaly_scores(model, state, x, key, 1), rtol=1e-6)

  means, logvars = model.encoder.apply({"params": state.params["encoder"]}, x)

  def by_hand(zs, w):
    g = np.asarray(model.generator.apply({"params": state.params["generator"]}, zs))
    z = np.concatenate([np.asarray(v) for v in zs], 1)
    f = np.asarray(model.prior.apply({"params": state.params["prior"],
                                      "batch_stats": state.sn_state}, jnp.asarray(z),
                                     update_stats=False))
    sse = np.sum((np.asarray(x) - g) ** 2, axis=(1, 2, 3))
    return w * sse - f + 0.5 * np.sum(z ** 2, 1) + 0.5 * z.shape[1] * math.log(2 * math.pi)

  np.testing.assert_allclose(got[1], by_hand(means, 1.0), rtol=1e-5)
  np.testing.assert_allclose(got[2], by_hand(means, 0.0), rtol=1e-5)  # latent terms only
  draws = []
  for k in jax.random.split(key, 2):
    eps = [jax.random.normal(kl, m.shape) for kl, m in zip(jax.random.split(k, 3), means)]
    draws.append(by_hand([m + jnp.exp(0.5 * lv) * e for m, lv, e in zip(means, logvars, eps)], 2.0))
  np.testing.assert_allclose(got[3], np.mean(draws, 0), rtol=1e-5)


def test_leaving_f_out_adds_f_back_to_the_score(tiny):
  config, model, state, x = tiny
  key = jax.random.PRNGKey(5)
  variants = [scores.ScoreVariant(w, z) for w in (scores.GFACTOR, 0.0) for z in ("mean", "sample")]
  with_f = np.asarray(scores.many_variant_scores(model, state, x, key, tuple(variants)))
  without_f = np.asarray(scores.many_variant_scores(
      model, state, x, key, tuple(dataclasses.replace(v, energy=False) for v in variants)))
  means, logvars = model.encoder.apply({"params": state.params["encoder"]}, x)
  eps = [jax.random.normal(kl, m.shape) for kl, m in
         zip(jax.random.split(jax.random.split(key, 1)[0], 3), means)]
  for i, v in enumerate(variants):
    zs = means if v.z == "mean" else [m + jnp.exp(0.5 * lv) * e
                                      for m, lv, e in zip(means, logvars, eps)]
    f = np.asarray(model.prior.apply({"params": state.params["prior"], "batch_stats": state.sn_state},
                                     jnp.concatenate(zs, 1), update_stats=False))
    assert np.std(f) > 1e-3  # an f that differs between images, so the test can tell
    np.testing.assert_allclose(without_f[i], with_f[i] + f, rtol=1e-5, atol=1e-4)
  assert dataclasses.replace(variants[0], energy=False).label == "w=gfactor,z=mean,no f"
  config.eval.score.energy = False
  assert scores.variant_from_config(config).label == "w=gfactor,z=sample,no f"


@pytest.mark.parametrize("w", [scores.GFACTOR, 1.0])
def test_refinement_raises_the_log_joint_of_every_image(tiny, w):
  _, model, state, x = tiny
  key = jax.random.PRNGKey(3)
  sample, refined = np.asarray(scores.many_variant_scores(
      model, state, x, key, (scores.ScoreVariant(w, "sample"),
                             scores.ScoreVariant(w, "refined", refine_steps=3,
                                                 refine_step_size=0.05))))
  assert np.all(refined < sample), (refined, sample)


@pytest.mark.parametrize("field, value, match", [
    ("z", "mode", "config.eval.score.z: unknown z mode 'mode'"),
    ("refine_steps", -1, "config.eval.score.refine_steps: must be a non-negative integer"),
    ("refine_step_size", 0.0, "config.eval.score.refine_step_size: must be positive"),
    ("recon_weight", -0.5, "config.eval.score.recon_weight: must be >= 0, or -1"),
])
def test_bad_score_settings_name_the_field(field, value, match):
  from configs import mnist_anomaly  # pylint: disable=g-import-not-at-top
  config = mnist_anomaly.get_config()
  config.eval.score[field] = value
  with pytest.raises(ConfigError, match=match):
    METRICS["anomaly"].check(config)
  config = tiny_digits_config()
  config.eval.ood.dataset = "mnist"
  config.data.image_size = 28
  config.eval.score[field] = value
  with pytest.raises(ConfigError, match=match):
    METRICS["ood"].check(config)


def test_table_variants_and_labels():
  config = tiny_digits_config()
  labels = [v.label for v in scores.table_variants(config)]
  assert labels[0] == "w=gfactor,z=mean" and labels[-1] == "w=0,z=refined" and len(labels) == 9
  assert scores.variant_from_config(config).label == "w=gfactor,z=sample"
