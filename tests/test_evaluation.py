"""The evaluation metrics as pure functions: detection, log p(x, z), the latent classifier, results."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from hebm_jax import train
from hebm_jax.evaluation import classifier, detection, log_joint, results
from hebm_jax.evaluation.paper import Reported
from tests.conftest import tiny_digits_config


# ---------------------------------------------------------------------------------------------
# AUPRC / AUROC.


def test_auroc_and_auprc_of_a_hand_worked_example():
  labels = [0, 0, 1, 1]
  scores = [0.1, 0.4, 0.35, 0.8]
  # Of the 4 (positive, negative) pairs, 3 are ordered correctly.
  assert detection.auroc(labels, scores) == pytest.approx(0.75)
  # scikit-learn's PR points (recall, precision) stop at full recall: (1, 2/3) (.5, .5) (.5, 1)
  # (0, 1); trapezoids over recall: .5 * 1 + 0 + .5 * (.5 + 2/3) / 2.
  assert detection.auprc(labels, scores) == pytest.approx(0.5 + 0.5 * (0.5 + 2 / 3) / 2)


def test_detection_metrics_match_scikit_learn_with_positives_second():
  rng = np.random.default_rng(0)
  neg, pos = rng.normal(0, 1, 300), rng.normal(1, 1, 100)
  out = detection.detection_metrics(neg, pos)
  labels = np.r_[np.zeros(300), np.ones(100)]
  scores = np.r_[neg, pos]
  p, r, _ = skm.precision_recall_curve(labels, scores)
  assert out["auprc"] == pytest.approx(skm.auc(r, p))
  assert out["auroc"] == pytest.approx(skm.roc_auc_score(labels, scores))
  assert 0.7 < out["auroc"] < 0.85  # d' = 1: AUROC = Phi(1 / sqrt 2) = 0.76
  swapped = detection.detection_metrics(pos, neg)
  assert swapped["auroc"] == pytest.approx(1 - out["auroc"])


@pytest.mark.parametrize("labels, scores, match", [
    ([0, 1, 1], [0.1, 0.2], "differ in length"),
    ([1, 1], [0.1, 0.2], "single class"),
    ([0, 2], [0.1, 0.2], "must be 0 or 1"),
    ([0, 1], [0.1, np.nan], "not finite"),
])
def test_detection_rejects_bad_input(labels, scores, match):
  with pytest.raises(ValueError, match=match):
    detection.auprc(labels, scores)


# ---------------------------------------------------------------------------------------------
# log p(x, z).


def test_gaussian_log_likelihood_is_the_normal_density_with_the_training_sigma():
  rng = np.random.default_rng(1)
  x, mu = rng.uniform(-1, 1, (3, 4, 4, 1)), rng.uniform(-1, 1, (3, 4, 4, 1))
  gfactor = 3.0
  sigma2 = 1 / (2 * gfactor)
  expected = np.sum(-0.5 * np.log(2 * np.pi * sigma2) - (x - mu) ** 2 / (2 * sigma2), axis=(1, 2, 3))
  got = log_joint.log_likelihood(jnp.asarray(x), jnp.asarray(mu), "gaussian", gfactor)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_bernoulli_log_likelihood_is_the_cross_entropy_on_0_1_targets():
  rng = np.random.default_rng(2)
  x, logits = rng.uniform(-1, 1, (2, 3, 3, 1)), rng.normal(0, 2, (2, 3, 3, 1))
  t, p = (x + 1) / 2, 1 / (1 + np.exp(-logits))
  expected = np.sum(t * np.log(p) + (1 - t) * np.log(1 - p), axis=(1, 2, 3))
  got = log_joint.log_likelihood(jnp.asarray(x), jnp.asarray(logits), "bernoulli", 1.0)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  with pytest.raises(ValueError, match="Unknown likelihood"):
    log_joint.log_likelihood(jnp.asarray(x), jnp.asarray(logits), "laplace", 1.0)


@pytest.mark.parametrize("prior_type", ["ebm", "gaussian"])
def test_anomaly_score_matches_a_hand_computation_on_a_tiny_model(prior_type):
  config = tiny_digits_config()
  config.prior.type = prior_type
  model = train.create_model(config, steps_per_epoch=10)
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  state = train.create_train_state(model, jax.random.PRNGKey(0), shape)
  x = jax.random.uniform(jax.random.PRNGKey(1), (5,) + shape, minval=-1, maxval=1)
  key = jax.random.PRNGKey(7)

  # By hand, with the key derivation the docstring documents: split(key, S), then one key per layer.
  means, logvars = model.encoder.apply({"params": state.params["encoder"]}, x)
  (k,) = jax.random.split(key, 1)
  eps = [jax.random.normal(kl, m.shape) for kl, m in zip(jax.random.split(k, len(means)), means)]
  zs = [np.asarray(m) + np.exp(0.5 * np.asarray(lv)) * np.asarray(e)
        for m, lv, e in zip(means, logvars, eps)]
  g = np.asarray(model.generator.apply({"params": state.params["generator"]},
                                       [jnp.asarray(z) for z in zs]))
  z = np.concatenate(zs, axis=1)
  sigma2 = 1 / (2 * config.objective.gfactor)
  log_px = np.sum(-0.5 * np.log(2 * np.pi * sigma2) - (np.asarray(x) - g) ** 2 / (2 * sigma2),
                  axis=(1, 2, 3))
  log_p0 = np.sum(-0.5 * z ** 2 - 0.5 * np.log(2 * np.pi), axis=1)
  f = 0.0
  if prior_type == "ebm":
    f = np.asarray(model.prior.apply({"params": state.params["prior"],
                                      "batch_stats": state.sn_state}, jnp.asarray(z),
                                     update_stats=False))
  expected = -(log_px + f + log_p0)
  got = log_joint.anomaly_scores(model, state, x, key, 1)
  np.testing.assert_allclose(got, expected, rtol=2e-4)
  # More draws: the mean of the per-draw log joints.
  per_draw = log_joint.posterior_log_joint(model, state, x, key, 3)
  assert per_draw.shape == (3, 5)
  np.testing.assert_allclose(log_joint.anomaly_scores(model, state, x, key, 3),
                             -np.mean(per_draw, axis=0), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# The latent classifier.


def _blobs(n, d, classes, spread, seed):
  rng = np.random.default_rng(seed)
  centres = rng.normal(0, 5, (classes, d))
  labels = rng.integers(0, classes, n)
  return centres[labels] + spread * rng.normal(size=(n, d)), labels


def test_latent_classifier_separates_separable_codes():
  codes, labels = _blobs(1200, 2, 4, 0.3, 0)
  out = classifier.latent_classifier(codes[:1000], labels[:1000], codes[1000:], labels[1000:], 4,
                                     jax.random.PRNGKey(0), epochs=20, batch_size=100)
  assert out.accuracy > 0.97 and out.train_accuracy > 0.97
  assert out.losses.shape == (20,) and out.losses[-1] < out.losses[0]


def test_latent_classifier_is_at_chance_on_codes_without_information():
  rng = np.random.default_rng(1)
  codes, labels = rng.normal(size=(1500, 2)), rng.integers(0, 5, 1500)
  out = classifier.latent_classifier(codes[:1000], labels[:1000], codes[1000:], labels[1000:], 5,
                                     jax.random.PRNGKey(0), epochs=5, batch_size=100)
  assert abs(out.accuracy - 0.2) < 0.07


def test_latent_classifier_is_deterministic_given_its_key():
  codes, labels = _blobs(400, 3, 3, 2.0, 2)
  run = lambda seed: classifier.latent_classifier(codes[:300], labels[:300], codes[300:], labels[300:],
                                                  3, jax.random.PRNGKey(seed), epochs=3, batch_size=50)
  a, b = run(0), run(0)
  np.testing.assert_array_equal(a.losses, b.losses)
  assert not np.array_equal(a.losses, run(1).losses)


@pytest.mark.parametrize("kwargs, match", [
    (dict(test_codes=np.zeros((5, 3))), "same d"),
    (dict(train_labels=np.zeros(7, int)), "labels"),
    (dict(train_labels=np.full(10, 4)), r"in \[0, 3\)"),
    (dict(batch_size=64), "fewer than one batch"),
])
def test_latent_classifier_rejects_bad_input(kwargs, match):
  args = dict(train_codes=np.zeros((10, 2)), train_labels=np.zeros(10, int),
              test_codes=np.zeros((5, 2)), test_labels=np.zeros(5, int), num_classes=3,
              key=jax.random.PRNGKey(0), batch_size=5)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    classifier.latent_classifier(**args)


# ---------------------------------------------------------------------------------------------
# Results: aggregation, table, JSON.


def test_aggregate_keeps_metric_order_and_gives_mean_and_std():
  mean, std = results.aggregate({10: {"b": 1.0, "a": 2.0}, 20: {"b": 3.0, "a": 2.0}})
  assert list(mean) == ["b", "a"]
  assert mean == {"b": 2.0, "a": 2.0} and std == {"b": 1.0, "a": 0.0}


def test_aggregate_of_a_constant_infinite_result_has_zero_spread_and_no_warning():
  import math
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("error")   # numpy's 'invalid value in subtract' would fail here
    mean, std = results.aggregate({1: {"ess": math.inf, "x": math.inf},
                                   2: {"ess": math.inf, "x": 1.0}})
  assert mean["ess"] == math.inf and std["ess"] == 0.0
  assert mean["x"] == math.inf and math.isnan(std["x"])


def test_table_puts_the_papers_number_beside_ours():
  table = results.format_table({"anomaly/auprc": 0.7, "anomaly/auroc": 0.8},
                               {"anomaly/auprc": 0.01, "anomaly/auroc": 0.02},
                               {"anomaly/auprc": Reported(0.722, 0.01, "Table 3")}, 5)
  row = next(l for l in table.splitlines() if l.startswith("anomaly/auprc"))
  assert "0.7000 ± 0.0100" in row and "0.7220 ± 0.0100" in row and "Table 3" in row
  row = next(l for l in table.splitlines() if l.startswith("anomaly/auroc"))
  assert row.split()[-1] == "-"


def test_results_json_is_written_atomically_and_holds_arrays(tmp_path):
  path = str(tmp_path / "r.json")
  results.write_json(path, {"a": np.float32(0.5), "m": np.eye(2), "steps": (1, 2), "x": float("nan")})
  assert json.load(open(path)) == {"a": 0.5, "m": [[1.0, 0.0], [0.0, 1.0]], "steps": [1, 2], "x": "nan"}
  assert not (tmp_path / "r.json.tmp").exists()


# ---------------------------------------------------------------------------------------------
# Long-run Langevin profile.


def test_long_run_profile_records_the_requested_steps_of_the_training_chain():
  from hebm_jax import sampler  # pylint: disable=g-import-not-at-top
  from hebm_jax.evaluation import long_run  # pylint: disable=g-import-not-at-top
  energy = lambda z: -0.25 * jnp.sum((z - 1.0) ** 2, axis=-1)   # a known f
  decode = lambda z: jnp.tile(z[:, :1, None, None], (1, 2, 2, 1))
  z0 = jax.random.normal(jax.random.PRNGKey(0), (6, 3))
  key = jax.random.PRNGKey(1)
  out = long_run.long_run_profile(energy, decode, z0, key, 40, 0.3, 10, 2)
  np.testing.assert_array_equal(out["steps"], [0, 10, 20, 30, 40])
  assert out["neg_f"].shape == out["energy"].shape == (5, 6)
  assert out["images"].shape == (5, 2, 2, 2, 1)
  np.testing.assert_allclose(out["neg_f"][0], -energy(z0), rtol=1e-6)
  # The last record is the plain Langevin chain on f - |z|^2/2 with the same key.
  z_end = sampler.langevin(lambda z: energy(z) - 0.5 * jnp.sum(z ** 2, -1), z0, key, 40, 0.3)
  np.testing.assert_allclose(out["neg_f"][-1], -energy(z_end), rtol=1e-5)
  np.testing.assert_allclose(out["energy"][-1], -energy(z_end) + 0.5 * jnp.sum(z_end ** 2, -1),
                             rtol=1e-5)


def test_energy_profile_figure_is_an_rgb_image():
  from hebm_jax.evaluation import long_run  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  image = long_run.energy_profile_figure(np.arange(0, 50, 10), rng.normal(size=(5, 4)),
                                         rng.normal(size=(5, 4)), "t", train_steps=20)
  assert image.ndim == 3 and image.shape[-1] == 3
  assert image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1


def test_reconstruction_mse_of_a_hand_computed_case():
  from hebm_jax.evaluation.evaluators.reconstruction import reconstruction_mse  # pylint: disable=g-import-not-at-top
  x = jnp.asarray([[[[1.0], [-1.0]], [[0.5], [0.0]]]])          # (1, 2, 2, 1)
  x_hat = jnp.asarray([[[[0.0], [-1.0]], [[0.5], [1.0]]]])
  # squared errors 1, 0, 0, 1 -> mean 0.5 on [-1, 1]; 0.125 on [0, 1] (differences halve).
  np.testing.assert_allclose(reconstruction_mse(x, x_hat), [0.5])
  np.testing.assert_allclose(reconstruction_mse((x + 1) / 2, (x_hat + 1) / 2), [0.125])


def test_results_of_other_metrics_are_merged_not_lost(tmp_path):
  path = str(tmp_path / "results_00000010.json")
  first = {"checkpoint_steps": [10], "results": {"a": 1.0}, "std_over_checkpoints": {},
           "per_checkpoint": {10: {"a": 1.0}}, "paper": {}, "details": {"a": {"n": 1}},
           "seconds": {"a": 2.0}, "settings": {"seed": 0, "a": {}}, "figures": ["x.png"]}
  results.write_json(path, results.merge_with_existing(path, first))
  second = {"checkpoint_steps": [10], "results": {"b": 2.0}, "std_over_checkpoints": {},
            "per_checkpoint": {10: {"b": 2.0}}, "paper": {}, "details": {"b": {}},
            "seconds": {"b": 1.0}, "settings": {"seed": 0, "b": {}}, "figures": ["y.png"]}
  results.write_json(path, results.merge_with_existing(path, second))
  merged = json.load(open(path))
  assert merged["results"] == {"a": 1.0, "b": 2.0}
  assert merged["per_checkpoint"] == {"10": {"a": 1.0, "b": 2.0}}
  assert set(merged["settings"]) == {"seed", "a", "b"} and merged["figures"] == ["x.png", "y.png"]
  # Other checkpoints: the old file is kept under another name, not merged.
  third = dict(second, checkpoint_steps=[5, 10], per_checkpoint={5: {"b": 1.0}, 10: {"b": 2.0}})
  results.write_json(path, results.merge_with_existing(path, third))
  assert json.load(open(path))["results"] == {"b": 2.0}
  kept = [p for p in tmp_path.iterdir() if p.name != "results_00000010.json"]
  assert len(kept) == 1 and json.load(open(kept[0]))["results"] == {"a": 1.0, "b": 2.0}


def test_a_metric_evaluated_again_with_other_settings_sets_the_old_file_aside(tmp_path):
  path = str(tmp_path / "results_00000010.json")

  def record(z3, classifier_input):
    return {"checkpoint_steps": [10], "results": {"z3": z3, "kl": float("inf")},
            "std_over_checkpoints": {}, "per_checkpoint": {10: {"z3": z3, "kl": float("inf")}},
            "paper": {}, "details": {}, "seconds": {"z3": 1.0},
            "settings": {"seed": 0, "latent_classifier": {"input": classifier_input}},
            "figures": []}

  results.write_json(path, results.merge_with_existing(path, record(0.7, "mean")))
  # The same evaluation again (inf and int keys read back from JSON compare equal): nothing set aside.
  results.write_json(path, results.merge_with_existing(path, record(0.7, "mean")))
  assert [p.name for p in tmp_path.iterdir()] == ["results_00000010.json"]
  # Another classifier input: the new numbers are written, the old file is kept beside them.
  results.write_json(path, results.merge_with_existing(path, record(0.72, "sample")))
  assert json.load(open(path))["results"]["z3"] == 0.72
  kept = [p for p in tmp_path.iterdir() if p.name != "results_00000010.json"]
  assert len(kept) == 1 and kept[0].name.startswith("results_00000010.2")
  old = json.load(open(kept[0]))
  assert old["results"]["z3"] == 0.7 and old["settings"]["latent_classifier"] == {"input": "mean"}
