"""Table 3 (MNIST anomaly AUPRC) and Supp. Table 1 (OOD AUPRC / AUROC) from -log p(x, z) or one
of its variants (`hebm_jax.evaluation.scores`, config.eval.score)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hebm_jax import input_pipeline
from hebm_jax.config_validation import ConfigError
from hebm_jax.evaluation import detection, encode, scores
from hebm_jax.evaluation.evaluators import base


def split_scores(model, state, source, batch_size: int, key: jax.Array,
                 variants: tuple[scores.ScoreVariant, ...], what: str,
                 limit: int = 0) -> dict[str, np.ndarray]:
  """`scores.many_variant_scores` of every example of a split: 'score<i>' (N,) for variant i, plus
  the split's 'anomaly'/'label' fields.

  Batch b draws its z samples from fold_in(key, b) (the same draws for every variant), so the
  scores do not depend on anything but the key, the checkpoint and the batch size.
  """
  counter = iter(range(1 << 30))

  def fn(batch):
    k = jax.random.fold_in(key, next(counter))
    values = scores.many_variant_scores(model, state, jnp.asarray(batch["image"]), k, variants)
    out = {f"score{i}": values[i] for i in range(len(variants))}
    out.update({f: batch[f] for f in ("anomaly", "label") if f in batch})
    return out

  return encode.map_split(fn, source, batch_size, what, limit)


def _score_settings(config) -> dict:
  v = scores.variant_from_config(config)
  return {"z_samples_per_image": config.eval.score_samples, "score_variant": v.label,
          **({"refine_steps": v.refine_steps, "refine_step_size": v.refine_step_size}
             if v.z == "refined" else {}),
          "score": "-log p_w(x, z) = w R(x, g(z)) - f(z) - log N(z; 0, I), averaged over z "
                   "(w = gfactor: the model's own -log p(x, z)); hebm_jax.evaluation.scores"}


def ood_data_config(config):
  """`config.data` with the OOD dataset in place of the training one (its eval split = ood.split)."""
  data = config.data.copy_and_resolve_references()
  data.name = config.eval.ood.dataset
  data.eval_split = data.train_split = config.eval.ood.split
  data.classes = ()
  return data


def _check_samples(config) -> None:
  scores.check_score_config(config)


class Anomaly(base.Evaluator):
  """AUPRC of -log p(x, z) at telling the held-out digit from the normal test digits (MEG split).

  The score is the variant of config.eval.score; with eval.score.variants_table, also every variant
  of `scores.table_variants` on the same checkpoint and draws, as 'anomaly_variants/<label>/auprc'
  (and '/auroc')."""
  name = "anomaly"
  description = "MNIST anomaly detection AUPRC (Table 3)"

  @classmethod
  def check(cls, config) -> None:
    base.require(config.data.name == "mnist_anomaly", "eval.metrics",
                 f"'anomaly' needs a dataset with anomaly labels (data.name='mnist_anomaly'); "
                 f"got {config.data.name!r}.")
    _check_samples(config)

  def __init__(self, config, model, data):
    super().__init__(config, model, data)
    data.source(config.data.eval_split)

  def settings(self) -> dict:
    return {"split": self.config.data.eval_split, "held_out_digit": self.config.data.held_out_digit,
            "protocol": self.config.data.anomaly_protocol,
            **_score_settings(self.config),
            **({"variants_table": [v.label for v in scores.table_variants(self.config)]}
               if self.config.eval.score.variants_table else {})}

  def run(self, state, step, key, with_figures=True) -> base.EvalResult:
    split = self.config.data.eval_split
    variants = (scores.variant_from_config(self.config),)
    if self.config.eval.score.variants_table:
      variants += scores.table_variants(self.config)
    out = split_scores(self.model, state, self.data.source(split), self.config.eval.batch_size,
                       key, variants, f"step {step}: anomaly scores {split}")
    labels = out["anomaly"]
    values = out["score0"]
    result = base.EvalResult(
        scalars={f"{self.name}/auprc": detection.auprc(labels, values),
                 f"{self.name}/auroc": detection.auroc(labels, values)},
        details={"num_normal": int(np.sum(labels == 0)), "num_anomalous": int(np.sum(labels == 1)),
                 "mean_score_normal": float(np.mean(values[labels == 0])),
                 "mean_score_anomalous": float(np.mean(values[labels == 1]))})
    for i, v in enumerate(variants[1:], start=1):
      for metric, fn in (("auprc", detection.auprc), ("auroc", detection.auroc)):
        result.scalars[f"{self.name}_variants/{v.label}/{metric}"] = fn(labels, out[f"score{i}"])
    return result


class OutOfDistribution(base.Evaluator):
  """AUPRC and AUROC of -log p(x, z) at telling eval.ood.dataset (positive) from data.eval_split."""
  name = "ood"
  description = "out-of-distribution detection AUPRC / AUROC (Supp. Table 1)"

  @classmethod
  def check(cls, config) -> None:
    ood = config.eval.ood
    base.require(bool(ood.dataset), "eval.ood.dataset",
                 "'ood' needs an out-of-distribution dataset, e.g. --config.eval.ood.dataset=mnist.")
    base.require(ood.dataset in input_pipeline.DATASETS, "eval.ood.dataset",
                 f"unknown dataset {ood.dataset!r}; expected one of {sorted(input_pipeline.DATASETS)}.")
    base.require(ood.dataset != config.data.name, "eval.ood.dataset",
                 f"is the training dataset {ood.dataset!r} itself.")
    spec = input_pipeline.DATASETS[ood.dataset]
    base.require(spec.channels == config.data.channels, "eval.ood.dataset",
                 f"{ood.dataset!r} has {spec.channels} channel(s); the model takes "
                 f"{config.data.channels}.")
    try:
      input_pipeline.validate_data_config(ood_data_config(config))
    except ConfigError as e:
      raise ConfigError(f"config.eval.ood: {ood.dataset!r} {ood.split!r}: {e}") from None
    base.require(isinstance(ood.num_examples, int) and ood.num_examples >= 0,
                 "eval.ood.num_examples", f"must be a non-negative integer (0: all), got {ood.num_examples!r}.")
    _check_samples(config)

  def __init__(self, config, model, data):
    super().__init__(config, model, data)
    data.source(config.data.eval_split)
    data.source(config.eval.ood.split, config.eval.ood.dataset)

  def settings(self) -> dict:
    ood = self.config.eval.ood
    return {"in_distribution": f"{self.config.data.name} {self.config.data.eval_split}",
            "out_of_distribution": f"{ood.dataset} {ood.split}", "num_examples": ood.num_examples,
            "positive_class": "out-of-distribution", **_score_settings(self.config)}

  def run(self, state, step, key, with_figures=True) -> base.EvalResult:
    ood, bs = self.config.eval.ood, self.config.eval.batch_size
    k_in, k_out = jax.random.split(key)
    split = self.config.data.eval_split
    variants = (scores.variant_from_config(self.config),)
    s_in = split_scores(self.model, state, self.data.source(split), bs, k_in, variants,
                        f"step {step}: scores {split}", ood.num_examples)["score0"]
    s_out = split_scores(self.model, state, self.data.source(ood.split, ood.dataset), bs, k_out,
                         variants, f"step {step}: scores {ood.dataset} {ood.split}",
                         ood.num_examples)["score0"]
    metrics = detection.detection_metrics(s_in, s_out)
    return base.EvalResult(
        scalars={f"{self.name}/{k}": v for k, v in metrics.items()},
        details={"num_in": len(s_in), "num_out": len(s_out),
                 "mean_score_in": float(np.mean(s_in)), "mean_score_out": float(np.mean(s_out))})
