"""Table 1: test accuracy of an MLP trained on each layer's posterior means."""

from __future__ import annotations

import jax
from absl import logging

from hebm_jax.evaluation import classifier
from hebm_jax.evaluation.evaluators import base


class LatentClassifier(base.Evaluator):
  """Per layer l: `classifier.latent_classifier` trained on data.train_split's posterior means
  (first eval.classifier.num_train examples; 0: all), tested on data.eval_split's."""
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

  def __init__(self, config, model, data):
    super().__init__(config, model, data)
    data.source(config.data.train_split)
    data.source(config.data.eval_split)

  def settings(self) -> dict:
    c = self.config.eval.classifier
    return {"train_split": self.config.data.train_split, "test_split": self.config.data.eval_split,
            "input": "posterior means", **c.to_dict()}

  def run(self, state, step, key, with_figures=True) -> base.EvalResult:
    c = self.config.eval.classifier
    train = self.data.codes(state, step, self.config.data.train_split, c.num_train)
    test = self.data.codes(state, step, self.config.data.eval_split)
    num_classes = base.dataset_labels(self.config)
    result = base.EvalResult(details={"num_train": len(train), "num_test": len(test),
                                      "train_accuracy": {}})
    for l, (tr, te) in enumerate(zip(train.means, test.means)):
      out = classifier.latent_classifier(
          tr, train.labels, te, test.labels, num_classes, jax.random.fold_in(key, l),
          hidden=c.hidden, epochs=c.epochs, batch_size=c.batch_size, learning_rate=c.learning_rate)
      name = f"z{l + 1}"
      result.scalars[f"{self.name}/{name}"] = out.accuracy
      result.details["train_accuracy"][name] = out.train_accuracy
      logging.info("step %d: latent classifier on %s: test accuracy %.4f (train %.4f)", step, name,
                   out.accuracy, out.train_accuracy)
    return result
