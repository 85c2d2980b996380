"""Table 1: test accuracy of an MLP trained on each layer's posterior means (or samples)."""

from __future__ import annotations

import jax
import numpy as np
from absl import logging

from hebm_jax import input_pipeline
from hebm_jax.config_validation import ConfigError
from hebm_jax.data import datasets
from hebm_jax.evaluation import classifier
from hebm_jax.evaluation.encode import Codes
from hebm_jax.evaluation.evaluators import base

# eval.classifier.input: what the classifier sees, as the results' settings describe it.
INPUTS = {"mean": "posterior means", "sample": "one posterior sample per image"}


def classifier_inputs(codes: Codes, layer: int, kind: str, key: jax.Array) -> np.ndarray:
  """The codes of layer `layer` that the classifier sees, (N, d_l).

  Args:
    codes: a split's posterior parameters.
    layer: 0-based layer index.
    kind: 'mean': q's means; 'sample': one draw mean + exp(logvar / 2) * eps per image.
    key: the draw's key (unused for 'mean'); a split's draws are a function of it alone.
  """
  mean = np.asarray(codes.means[layer], np.float32)
  if kind == "mean":
    return mean
  if kind != "sample":
    raise ValueError(f"kind must be one of {tuple(INPUTS)}, got {kind!r}")
  eps = np.asarray(jax.random.normal(key, mean.shape, np.float32))
  return mean + np.exp(0.5 * np.asarray(codes.logvars[layer], np.float32)) * eps


def classifier_splits(config) -> tuple[str, str]:
  """(training split, validation split or '') of the latent classifier."""
  c = config.eval.classifier
  return c.get("train_split", "") or config.data.train_split, c.get("validation_split", "")


def check_splits(config) -> None:
  """Raises `ConfigError` if a classifier split does not parse, is not a split of the dataset, or
  may share examples with the eval (test) split, or the training split with the validation split
  (`datasets.splits_overlap`)."""
  train, val = classifier_splits(config)
  test = config.data.eval_split
  spec = input_pipeline.DATASETS[config.data.name]
  fields = {"eval.classifier.train_split" if config.eval.classifier.get("train_split", "")
            else "data.train_split": train}
  if val:
    fields["eval.classifier.validation_split"] = val
  for field, value in fields.items():
    base.require(isinstance(value, str), field, f"must be a split string, got {value!r}.")
    try:
      parts = datasets.parse_split(value)
    except ValueError as e:
      raise ConfigError(f"config.{field}: {e}") from None
    for part in parts:
      base.require(part.base in spec.splits, field,
                   f"dataset {config.data.name!r} has no split {part.base!r} (in {value!r}); its "
                   f"splits are {spec.splits}.")
  for field, value in fields.items():
    base.require(not datasets.splits_overlap(value, test), field,
                 f"{value!r} may share examples with the test split data.eval_split={test!r}; the "
                 "classifier must not see test data (slice both in the same unit, examples or "
                 "percent, to make them comparable).")
  if val:
    base.require(not datasets.splits_overlap(train, val), "eval.classifier.validation_split",
                 f"{val!r} may share examples with the classifier's training split {train!r}.")


class LatentClassifier(base.Evaluator):
  """Per layer l: `classifier.latent_classifier` trained on eval.classifier.train_split's
  (data.train_split's if empty) posterior means, or one posterior sample per image with
  eval.classifier.input='sample' (first eval.classifier.num_train examples; 0: all), tested on
  data.eval_split's: 'latent_classifier/zK'. With eval.classifier.validation_split, the epoch is
  chosen on that split's accuracy, reported as 'latent_classifier_val/zK'."""
  name = "latent_classifier"
  description = "per-layer latent classifier accuracy (Table 1)"

  @classmethod
  def check(cls, config) -> None:
    base.require(base.dataset_labels(config) > 0, "eval.metrics",
                 f"'latent_classifier' needs class labels; dataset {config.data.name!r} has none "
                 f"for label_key {config.data.label_key!r}.")
    c = config.eval.classifier
    for field in ("hidden", "epochs", "batch_size"):
      base.positive_int(config, f"eval.classifier.{field}")
    base.require(c.learning_rate > 0, "eval.classifier.learning_rate",
                 f"must be positive, got {c.learning_rate!r}.")
    base.require(isinstance(c.num_train, int) and c.num_train >= 0, "eval.classifier.num_train",
                 f"must be a non-negative integer (0: all), got {c.num_train!r}.")
    kind = c.get("input", "mean")
    base.require(isinstance(kind, str) and kind in INPUTS, "eval.classifier.input",
                 f"must be one of {tuple(INPUTS)}, got {c.get('input')!r}.")
    check_splits(config)

  def __init__(self, config, model, data):
    super().__init__(config, model, data)
    for split in classifier_splits(config):
      if split:
        data.source(split)
    data.source(config.data.eval_split)

  def settings(self) -> dict:
    c = self.config.eval.classifier
    train, val = classifier_splits(self.config)
    return {**c.to_dict(), "train_split": train, "validation_split": val,
            "test_split": self.config.data.eval_split,
            "input": INPUTS[c.get("input", "mean")],
            "epoch_selection": "best validation accuracy" if val else "last epoch"}

  def run(self, state, step, key, with_figures=True) -> base.EvalResult:
    c = self.config.eval.classifier
    train_split, val_split = classifier_splits(self.config)
    train = self.data.codes(state, step, train_split, c.num_train)
    val = self.data.codes(state, step, val_split) if val_split else None
    test = self.data.codes(state, step, self.config.data.eval_split)
    num_classes = base.dataset_labels(self.config)
    result = base.EvalResult(details={"num_train": len(train), "num_test": len(test),
                                      "train_accuracy": {}})
    if val is not None:
      result.details.update({"num_validation": len(val), "selected_epoch": {}})
    kind = c.get("input", "mean")
    # Keys 0..L-1 train the classifiers (as before this option); the draws use their own.
    draw_key = jax.random.fold_in(key, 1_000)

    def inputs(codes, split_index, l):
      return classifier_inputs(codes, l, kind,
                               jax.random.fold_in(jax.random.fold_in(draw_key, split_index), l))

    for l in range(len(train.means)):
      out = classifier.latent_classifier(
          inputs(train, 0, l), train.labels, inputs(test, 1, l), test.labels, num_classes,
          jax.random.fold_in(key, l), hidden=c.hidden, epochs=c.epochs, batch_size=c.batch_size,
          learning_rate=c.learning_rate,
          val_codes=None if val is None else inputs(val, 2, l),
          val_labels=None if val is None else val.labels)
      name = f"z{l + 1}"
      result.scalars[f"{self.name}/{name}"] = out.accuracy
      result.details["train_accuracy"][name] = out.train_accuracy
      if val is not None:
        result.scalars[f"{self.name}_val/{name}"] = out.val_accuracy
        result.details["selected_epoch"][name] = out.epoch
        logging.info("step %d: latent classifier on %s: validation accuracy %.4f at epoch %d, "
                     "its test accuracy %.4f", step, name, out.val_accuracy, out.epoch,
                     out.accuracy)
      else:
        logging.info("step %d: latent classifier on %s: test accuracy %.4f (train %.4f)", step,
                     name, out.accuracy, out.train_accuracy)
    return result
