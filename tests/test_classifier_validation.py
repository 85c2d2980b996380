"""The latent classifier's validation split: epoch selection, split overlap, and the checks."""

import jax
import numpy as np
import pytest

from hebm_jax.config_validation import ConfigError
from hebm_jax.data.datasets import splits_overlap
from hebm_jax.evaluation import classifier
from hebm_jax.evaluation.evaluators import METRICS
from tests.conftest import tiny_digits_config


def _blobs(n, seed, spread=1.0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 3, n)
  centres = np.asarray([[0.0, 3.0], [3.0, 0.0], [-3.0, -3.0]])
  return centres[labels] + spread * rng.normal(size=(n, 2)), labels


def test_selection_keeps_the_epoch_of_best_validation_accuracy():
  """Validation labels 0 <-> 1 swapped: the better the classifier, the worse on validation, so an
  early epoch wins. Each epoch k of the run equals a separate run of k epochs (the shuffles are
  folded by epoch), so the choice is checked against those runs one by one."""
  train, train_y = _blobs(600, 0)
  test, test_y = _blobs(300, 1)
  val, val_y = _blobs(300, 2)
  val_y = np.where(val_y < 2, 1 - val_y, val_y)
  key, epochs = jax.random.PRNGKey(0), 6
  run = lambda e, **kw: classifier.latent_classifier(train, train_y, test, test_y, 3, key,
                                                     epochs=e, batch_size=100,
                                                     learning_rate=3e-3, **kw)
  out = run(epochs, val_codes=val, val_labels=val_y)
  plain = [run(e) for e in range(1, epochs + 1)]
  val_acc = [float(np.mean(classifier.predict(p.params, val, 3) == val_y)) for p in plain]
  np.testing.assert_allclose(out.val_accuracies, val_acc)
  best = int(np.argmax(val_acc))  # the first of equals
  assert out.epoch == best + 1 < epochs
  assert out.val_accuracy == val_acc[best]
  assert out.accuracy == plain[best].accuracy
  jax.tree.map(np.testing.assert_array_equal, out.params, plain[best].params)
  assert out.losses.shape == (epochs,)
  # Without validation codes: the last epoch, as before.
  assert plain[-1].epoch == epochs and np.isnan(plain[-1].val_accuracy)


@pytest.mark.parametrize("a, b, overlap", [
    ("train[:50000]", "train[50000:]", False),
    ("test", "train[50000:]", False),
    ("train", "train[50000:]", True),
    ("train[:50%]", "train[40%:]", True),
    ("train[:50%]", "train[50%:]", False),
    ("train[:10]+test", "test[:5]", True),
    ("train[100:100]", "train", False),        # empty
    ("train[:50000]", "train[90%:]", True),    # mixed units: unknown without the size
    ("train[:50000]", "train[-1000:]", True),  # negative bound: likewise
])
def test_split_overlap(a, b, overlap):
  assert splits_overlap(a, b) is overlap
  assert splits_overlap(b, a) is overlap


def test_split_overlap_with_known_sizes():
  assert not splits_overlap("train[:50000]", "train[90%:]", {"train": 60_000})
  assert splits_overlap("train[:55000]", "train[90%:]", {"train": 60_000})
  assert not splits_overlap("train[:50000]", "train[-10000:]", {"train": 60_000})


def _config(**classifier):
  from configs import mnist  # pylint: disable=g-import-not-at-top
  config = mnist.get_config()
  # configs/mnist.py sets the Table 1 splits; each test states the ones it checks.
  config.eval.classifier.update({"train_split": "", "validation_split": "", **classifier})
  return config


def test_the_mnist_protocol_passes_the_checks():
  METRICS["latent_classifier"].check(
      _config(train_split="train[:50000]", validation_split="train[50000:]"))
  METRICS["latent_classifier"].check(_config())  # data.train_split 'train' vs 'test'
  config = tiny_digits_config()  # a dataset outside tfds: the same split syntax
  config.eval.classifier.update(train_split="train[:1000]", validation_split="train[1000:]")
  METRICS["latent_classifier"].check(config)


@pytest.mark.parametrize("overrides, data, match", [
    (dict(train_split="train[:40000]", validation_split="train[50000:]"),
     {"eval_split": "train[55000:]"},
     r"eval.classifier.validation_split: 'train\[50000:\]' may share examples with the test split"),
    (dict(train_split="train[:50000]"), {"eval_split": "train[40000:]"},
     "eval.classifier.train_split: 'train"),
    (dict(), {"eval_split": "train[10%:]"}, "data.train_split: 'train' may share examples"),
    (dict(train_split="train", validation_split="train[50000:]"), {},
     "eval.classifier.validation_split: .* with the classifier's training split 'train'"),
    (dict(validation_split="validation"), {}, "has no split 'validation'"),
    (dict(train_split="train[:5"), {}, "eval.classifier.train_split: cannot parse"),
])
def test_overlapping_or_bad_splits_name_the_field(overrides, data, match):
  config = _config(**overrides)
  config.data.update(data)
  with pytest.raises(ConfigError, match=match):
    METRICS["latent_classifier"].check(config)


def test_classifier_inputs_mean_or_one_posterior_sample():
  from hebm_jax.evaluation.encode import Codes  # pylint: disable=g-import-not-at-top
  from hebm_jax.evaluation.evaluators.latent_classifier import classifier_inputs  # pylint: disable=g-import-not-at-top
  means = [np.arange(12, dtype=np.float32).reshape(6, 2)]
  logvars = [np.log(np.full((6, 2), 0.25, np.float32))]   # std 0.5
  codes = Codes(means, logvars, np.zeros(6, np.int32), {})
  key = jax.random.PRNGKey(7)
  np.testing.assert_array_equal(classifier_inputs(codes, 0, "mean", key), means[0])
  sample = classifier_inputs(codes, 0, "sample", key)
  eps = np.asarray(jax.random.normal(key, (6, 2)))
  np.testing.assert_allclose(sample, means[0] + 0.5 * eps, rtol=1e-6)
  np.testing.assert_array_equal(sample, classifier_inputs(codes, 0, "sample", key))
  assert not np.allclose(sample, classifier_inputs(codes, 0, "sample", jax.random.PRNGKey(8)))
  sharp = Codes(means, [np.full((6, 2), -60.0, np.float32)], codes.labels, {})
  np.testing.assert_allclose(classifier_inputs(sharp, 0, "sample", key), means[0], atol=1e-9)
  with pytest.raises(ValueError, match="kind must be one of"):
    classifier_inputs(codes, 0, "median", key)


def test_bad_classifier_input_names_the_field():
  with pytest.raises(ConfigError, match=r"eval.classifier.input: must be one of \('mean', "
                                        r"'sample'\), got 'median'"):
    METRICS["latent_classifier"].check(_config(input="median"))
