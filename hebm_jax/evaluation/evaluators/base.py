"""What every evaluator is: a class checked against the config before any work, then `run`."""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, ClassVar

import jax
import numpy as np

from hebm_jax import input_pipeline
from hebm_jax.config_validation import ConfigError
from hebm_jax.evaluation import encode


@dataclasses.dataclass
class EvalResult:
  """One evaluator's output for one checkpoint.

  Attributes:
    scalars: result name -> number (named '<metric>/<quantity>', e.g. 'anomaly/auprc').
    figures: figure name -> float [0, 1] image (H, W, C), saved as PNG and to TensorBoard.
    details: other JSON-serialisable results (per-layer matrices, counts), kept in the results file.
  """
  scalars: dict[str, float] = dataclasses.field(default_factory=dict)
  figures: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  details: dict[str, Any] = dataclasses.field(default_factory=dict)


class EvalData:
  """Sources and posterior codes shared by the evaluators of one run (loaded once, cached)."""

  def __init__(self, config, model):
    self.config, self.model = config, model
    self._sources: dict[tuple, Any] = {}
    self._codes: dict[tuple, encode.Codes] = {}

  def source(self, split: str, dataset: str | None = None):
    """The split of the configured dataset (or of `dataset`, same image size and channels)."""
    key = (dataset or self.config.data.name, split)
    if key not in self._sources:
      data = self.config.data
      if dataset and dataset != data.name:
        data = data.copy_and_resolve_references()
        data.name = dataset
        data.classes = ()
      source = input_pipeline.load_split(data, split)
      input_pipeline.check_source(source, data)
      self._sources[key] = source
    return self._sources[key]

  def codes(self, state, step: int, split: str, limit: int = 0) -> encode.Codes:
    """Posterior codes of `split` under the checkpoint at `step` (cached per step and split)."""
    key = (step, split, limit)
    if key not in self._codes:
      # Codes of older checkpoints are no longer needed once a newer one is evaluated.
      self._codes = {k: v for k, v in self._codes.items() if k[0] == step}
      self._codes[key] = encode.encode_split(
          self.model, state, self.source(split), self.config.eval.batch_size,
          f"step {step}: encoding {self.config.data.name} {split}", limit)
    return self._codes[key]


class Evaluator:
  """Base class. Subclasses set `name` and `description` and implement `run`.

  `check(config)` runs before any data is read or checkpoint restored and raises `ConfigError`
  when the metric does not fit the experiment; `__init__` opens the data it needs (so a missing
  dataset fails before any evaluation runs); `run` evaluates one checkpoint.
  """
  name: ClassVar[str] = ""
  description: ClassVar[str] = ""

  def __init__(self, config, model, data: EvalData):
    self.config, self.model, self.data = config, model, data

  @classmethod
  def check(cls, config) -> None:
    """Raises `ConfigError` naming the problem if this metric cannot run on `config`."""

  def settings(self) -> dict:
    """The settings behind the numbers, recorded in the results file."""
    return {}

  def run(self, state, step: int, key: jax.Array, with_figures: bool = True) -> EvalResult:
    """Evaluates the train state of checkpoint `step`; figures only when `with_figures`."""
    raise NotImplementedError

  @classmethod
  def key_for(cls, base: jax.Array) -> jax.Array:
    """This metric's own stream of randomness (stable across runs and metric lists)."""
    return jax.random.fold_in(base, zlib.crc32(cls.name.encode()) & 0x7FFFFFFF)


def require(cond: bool, field: str, message: str) -> None:
  if not cond:
    raise ConfigError(f"config.{field}: {message}")


def positive_int(config, field: str) -> None:
  value = config
  for part in field.split("."):
    value = value[part]
  require(isinstance(value, int) and not isinstance(value, bool) and value > 0, field,
          f"must be a positive integer, got {value!r}.")


def dataset_labels(config) -> int:
  """Number of classes of the configured label, 0 if the dataset has none."""
  from hebm_jax.data.datasets import label_feature  # pylint: disable=g-import-not-at-top
  spec = input_pipeline.DATASETS[config.data.name]
  feature = label_feature(spec, config.data.label_key)
  return spec.label_classes[feature] if feature else 0
