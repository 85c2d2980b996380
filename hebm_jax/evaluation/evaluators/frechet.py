"""Table 2/4/5/6's FID (and KID) of prior samples, and an offline classifier-feature distance.

Both compare the statistics of `num_samples` prior samples (the training sampler: N(0, I), K
Langevin steps of size s, decoded) with those of `num_reference` random images of the reference
split (the training split by default, as the authors' FID code; REFERENCE 3.1), in the feature
space of a fixed network. Reference statistics are computed once and cached under
`eval.cache_dir` (default ~/.cache/hebm_jax), in a file whose name and contents record the
dataset, split, image shape, count and seed; a cached file made for other data is refused.
"""

from __future__ import annotations

import os
import re

import jax
import numpy as np
from absl import logging
from flax import serialization

from hebm_jax import fileio, prior_samples
from hebm_jax.evaluation import encode, feature_classifier, fid, inception
from hebm_jax.evaluation.checkpoints import EvaluationError
from hebm_jax.evaluation.evaluators import base

_REFERENCE_STREAM = 5  # fold_in index of the reference-image draw (distinct from other streams)


def cache_dir(config) -> str:
  return os.path.expanduser(config.eval.cache_dir or "~/.cache/hebm_jax")


def _safe(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")


class _Frechet(base.Evaluator):
  """Shared machinery: the reference statistics (cached), sample features, the distance."""
  section = ""          # config.eval.<section>
  implementation = ""   # recorded in the statistics file and the results

  @classmethod
  def check(cls, config) -> None:
    for field in ("num_samples", "num_reference"):
      base.positive_int(config, f"eval.{cls.section}.{field}")
    split = config.eval[cls.section].reference_split
    if split:
      try:
        base.input_pipeline.parse_split(split)
      except ValueError as e:
        raise base.ConfigError(f"config.eval.{cls.section}.reference_split: {e}") from None

  def __init__(self, config, model, data):
    super().__init__(config, model, data)
    self.options = config.eval[self.section]
    self.reference_split = self.options.reference_split or config.data.train_split
    data.source(self.reference_split)
    self.image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
    self._features = self.build_features()  # before any checkpoint: a missing file fails here
    self._reference = None
    if os.path.exists(self.stats_path()):  # a cached file for other data fails here too
      try:
        fid.load_statistics(self.stats_path(), dataset=config.data.name,
                            split=self.reference_split, image_shape=self.image_shape)
      except ValueError as e:
        raise EvaluationError(f"{self.name}: the cached reference statistics do not fit: {e} "
                              "Delete the file or choose another config.eval.cache_dir.") from None

  def build_features(self):
    raise NotImplementedError

  def settings(self) -> dict:
    return {"implementation": self.implementation, "reference_split": self.reference_split,
            "num_reference": self.options.num_reference, "num_samples": self.options.num_samples,
            "sampler": f"N(0, I) + K={self.config.sampler.n_steps} Langevin steps, "
                       f"s={self.config.sampler.step_size}",
            "statistics_file": self.stats_path()}

  def stats_path(self) -> str:
    d = self.config.data
    name = (f"{self.section}_{_safe(d.name)}_{_safe(self.reference_split)}_"
            f"{'x'.join(map(str, self.image_shape))}_n{self.options.num_reference}"
            f"_seed{self.config.seed}.npz")
    return os.path.join(cache_dir(self.config), name)

  def reference(self) -> tuple[fid.Statistics, np.ndarray | None]:
    """(statistics, features or None) of the reference images, computed once and cached."""
    if self._reference is not None:
      return self._reference
    path, d = self.stats_path(), self.config.data
    features = None
    if os.path.exists(path):
      stats = fid.load_statistics(path, dataset=d.name, split=self.reference_split,
                                  image_shape=self.image_shape)
      if os.path.exists(path + ".features.npy"):
        features = np.load(path + ".features.npy")
      logging.info("%s: reference statistics from %s (%d images).", self.name, path,
                   stats.num_images)
    else:
      source = self.data.source(self.reference_split)
      num = min(self.options.num_reference, len(source))
      key = jax.random.fold_in(jax.random.PRNGKey(self.config.seed), _REFERENCE_STREAM)
      order = np.sort(np.asarray(jax.random.permutation(key, len(source)))[:num])
      view = base.input_pipeline.IndexView(source, order)
      features = encode.map_split(lambda b: {"f": self._features(b["image"])}, view,
                                  self.config.eval.batch_size,
                                  f"{self.name}: features of {num} {d.name} "
                                  f"{self.reference_split} images")["f"]
      mu, sigma = fid.feature_statistics(features)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      fid.save_statistics(path, mu, sigma, dataset=d.name, split=self.reference_split,
                          num_images=num, image_shape=self.image_shape,
                          implementation=self.implementation)
      np.save(path + ".features.npy", features[:self.kept_reference_features()])
      stats = fid.load_statistics(path, dataset=d.name, split=self.reference_split,
                                  image_shape=self.image_shape)
      logging.info("%s: reference statistics of %d images written to %s.", self.name, num, path)
    self._reference = (stats, features)
    return self._reference

  def kept_reference_features(self) -> int:
    return 0

  def sample_features(self, state, step, key) -> np.ndarray:
    n = self.options.num_samples
    batches = prior_samples.prior_sample_batches(
        self.model, state, key, n, self.config.eval.batch_size, self.config.sampler.n_steps,
        self.config.sampler.step_size)
    progress = encode.Progress(f"step {step}: {self.name} features of prior samples", n)
    out, done = [], 0
    for images, _, _ in batches:
      out.append(np.asarray(self._features(images)))
      done += len(images)
      progress.update(done)
    return np.concatenate(out)

  def distances(self, sample_features, reference) -> dict[str, float]:
    stats, _ = reference
    mu, sigma = fid.feature_statistics(sample_features)
    return {"fd": fid.frechet_distance(mu, sigma, stats.mu, stats.sigma)}

  def run(self, state, step, key, with_figures=True) -> base.EvalResult:
    reference = self.reference()
    feats = self.sample_features(state, step, key)
    values = self.distances(feats, reference)
    values.update(self.real_floor(len(feats), reference))
    return base.EvalResult(scalars={f"{self.name}/{k}": v for k, v in values.items()},
                           details={"num_samples": len(feats),
                                    "num_reference": reference[0].num_images})

  def real_floor(self, num: int, reference) -> dict[str, float]:
    """Distances of as many real held-out images as samples: what a perfect model would get."""
    return {}


class FID(_Frechet):
  """FID and KID with pytorch-fid's Inception (`evaluation.inception`), weights from
  eval.fid.inception_weights (never downloaded)."""
  name = "fid"
  description = "FID / KID of prior samples (Tables 2, 4, 5, 6)"
  section = "fid"
  implementation = inception.IMPLEMENTATION

  @classmethod
  def check(cls, config) -> None:
    super().check(config)
    f = config.eval.fid
    base.require(bool(f.inception_weights), "eval.fid.inception_weights",
                 f"FID needs pytorch-fid's Inception weights: the file {inception.FID_WEIGHTS_FILE} "
                 f"({inception.FID_WEIGHTS_URL}), converted once with `{inception.CONVERT_COMMAND}`; "
                 "pass its path here.")
    for field in ("kid_subsets", "kid_subset_size"):
      base.positive_int(config, f"eval.fid.{field}")

  def build_features(self):
    return inception.feature_fn(inception.load_weights(self.options.inception_weights))

  def kept_reference_features(self) -> int:
    return self.options.kid_subset_size * 10  # enough distinct rows for the KID subsets

  def settings(self) -> dict:
    return {**super().settings(), "kid_subsets": self.options.kid_subsets,
            "kid_subset_size": self.options.kid_subset_size}

  def distances(self, sample_features, reference) -> dict[str, float]:
    stats, ref_features = reference
    mu, sigma = fid.feature_statistics(sample_features)
    out = {"fid": fid.frechet_distance(mu, sigma, stats.mu, stats.sigma)}
    if ref_features is not None and len(ref_features) >= 2:
      kid, kid_std = fid.kernel_inception_distance(
          sample_features, ref_features, num_subsets=self.options.kid_subsets,
          subset_size=self.options.kid_subset_size, seed=self.config.seed)
      out.update(kid=kid, kid_std=kid_std)
    return out


class ClassifierFD(_Frechet):
  """Frechet distance in the 128-d features of `feature_classifier.FeatureCNN`, trained once on
  the labelled training split and cached: a sample-quality number that needs no download. Not
  FID: compare it only between runs on the same data."""
  name = "classifier_fd"
  description = "Frechet distance in an MNIST-style classifier's features (offline, not FID)"
  section = "classifier_fd"

  @property
  def implementation(self) -> str:
    return (f"hebm_jax FeatureCNN ({feature_classifier.FEATURE_DIM}-d), trained on "
            f"{self.config.data.name} {self.config.data.train_split}")

  @classmethod
  def check(cls, config) -> None:
    super().check(config)
    base.require(base.dataset_labels(config) > 0, "eval.metrics",
                 f"'classifier_fd' trains a classifier on the labels; dataset "
                 f"{config.data.name!r} has none for label_key {config.data.label_key!r}.")
    base.positive_int(config, "eval.classifier_fd.epochs")
    base.positive_int(config, "eval.classifier_fd.num_train")

  def build_features(self):
    num_classes = base.dataset_labels(self.config)
    d = self.config.data
    path = os.path.join(cache_dir(self.config),
                        f"feature_classifier_{_safe(d.name)}_{_safe(d.train_split)}_"
                        f"{'x'.join(map(str, self.image_shape))}_seed{self.config.seed}.msgpack")
    key = jax.random.fold_in(jax.random.PRNGKey(self.config.seed), _REFERENCE_STREAM + 1)
    template = feature_classifier.FeatureCNN(num_classes).init(
        key, np.zeros((1,) + self.image_shape, np.float32))["params"]
    if os.path.exists(path):
      with open(path, "rb") as f:
        params = serialization.from_bytes(template, f.read())
    else:
      source = self.data.source(d.train_split)
      n = min(self.options.num_train, len(source))
      logging.info("classifier_fd: training the feature classifier on %d %s images (once; cached "
                   "at %s).", n, d.name, path)
      batch = source.get(np.arange(n))
      params = feature_classifier.train_feature_classifier(
          batch["image"], batch["label"], num_classes, key, epochs=self.options.epochs)
      test = self.data.source(d.eval_split)
      m = min(len(test), 10_000)
      t = test.get(np.arange(m))
      acc = feature_classifier.accuracy(params, num_classes, t["image"], t["label"])
      logging.info("classifier_fd: feature classifier test accuracy %.4f on %d images.", acc, m)
      fileio.write_bytes(path, serialization.to_bytes(params))
    self.classifier_path = path
    return feature_classifier.feature_fn(params, num_classes)

  def settings(self) -> dict:
    return {**super().settings(), "classifier_file": self.classifier_path,
            "fd_real": f"the same distance for real {self.config.data.eval_split} images"}

  def real_floor(self, num: int, reference) -> dict[str, float]:
    if not hasattr(self, "_floor"):  # the same for every checkpoint
      split = self.config.data.eval_split
      feats = encode.map_split(lambda b: {"f": self._features(b["image"])},
                               self.data.source(split), self.config.eval.batch_size,
                               f"{self.name}: features of real {split} images", num)["f"]
      self._floor = self.distances(feats, reference)["fd"]
    return {"fd_real": self._floor}
