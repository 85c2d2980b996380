"""The datasets of the paper, the `config.data` options, and their validation (no disk access).

Each dataset is described by a `DatasetSpec`: its split names, the shape of its stored images, its
label features and any fixed crop. `validate_data_config` checks a `config.data` against these
facts before anything is read; errors are `hebm_jax.config_validation.ConfigError`s whose message
starts with `config.data.<field>: `.

Split names accept the tfds slicing syntax on the dataset's own split names: 'train',
'train[:1000]', 'test[10%:]', 'train[-500:]', and '+' to concatenate ('train+test'). Slices are
applied by this package (for every dataset, tfds or not) with tfds' rounding for percentages.
"""

from __future__ import annotations

import dataclasses
import numbers
import re
from typing import Any

# CelebA: PIL `crop((15, 40, 178 - 15, 218 - 30))` of the 218x178 (H x W) image, i.e. the 148x148
# box rows 40:188, columns 15:163 (REFERENCE.md section 4), as (top, left, height, width).
CELEB_A_CROP = (40, 15, 148, 148)

# shapes3d factors in the canonical order of the dataset (and of the MIG code): floor hue, wall hue,
# object hue, scale, shape, orientation; with their number of values.
SHAPES3D_FACTORS = ("label_floor_hue", "label_wall_hue", "label_object_hue", "label_scale",
                    "label_shape", "label_orientation")
SHAPES3D_FACTOR_SIZES = (10, 10, 10, 8, 4, 15)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What a dataset is, as far as this pipeline needs to know.

  Attributes:
    name: the `config.data.name`.
    splits: its split names (before any slicing).
    shape: stored image shape (H, W, C).
    label_classes: label feature -> number of classes; empty if the dataset has no labels.
    default_label: the label feature behind `config.data.label_key='label'` (None: no label).
    tfds_name: the tfds dataset read, or None for an in-memory dataset.
    factors: features returned together as 'factors' (n, len(factors)) int32.
    crop: (top, left, height, width) box cut out before resizing, or None.
  """
  name: str
  splits: tuple[str, ...]
  shape: tuple[int, int, int]
  label_classes: dict[str, int]
  default_label: str | None = "label"
  tfds_name: str | None = None
  factors: tuple[str, ...] = ()
  crop: tuple[int, int, int, int] | None = None

  @property
  def channels(self) -> int:
    return self.shape[-1]


def _classification(name: str, splits, shape) -> DatasetSpec:
  return DatasetSpec(name, tuple(splits), shape, {"label": 10}, tfds_name=name)


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec("digits", ("train", "test"), (8, 8, 1), {"label": 10}),
    "mnist": _classification("mnist", ("train", "test"), (28, 28, 1)),
    "fashion_mnist": _classification("fashion_mnist", ("train", "test"), (28, 28, 1)),
    "svhn_cropped": _classification("svhn_cropped", ("train", "test", "extra"), (32, 32, 3)),
    "cifar10": _classification("cifar10", ("train", "test"), (32, 32, 3)),
    "celeb_a": DatasetSpec("celeb_a", ("train", "validation", "test"), (218, 178, 3), {},
                           default_label=None, tfds_name="celeb_a", crop=CELEB_A_CROP),
    "shapes3d": DatasetSpec("shapes3d", ("train",), (64, 64, 3),
                            dict(zip(SHAPES3D_FACTORS, SHAPES3D_FACTOR_SIZES)),
                            default_label="label_shape", tfds_name="shapes3d",
                            factors=SHAPES3D_FACTORS),
    # MNIST's 70,000 images re-split by the MEG protocol (hebm_jax.data.anomaly).
    "mnist_anomaly": DatasetSpec("mnist_anomaly", ("train", "test"), (28, 28, 1), {"label": 10},
                                 tfds_name="mnist"),
}


# 'meg': MEG's random draws exactly (its test set shares ~80 % of its normal images with training);
# 'disjoint': the protocol as described, test normal images are the 20 % not trained on.
ANOMALY_PROTOCOLS = ("meg", "disjoint")


@dataclasses.dataclass(frozen=True)
class DataOptions:
  """`config.data` as plain values; fields a config lacks take these defaults."""
  name: str = "svhn_cropped"
  data_dir: str = ""
  download: bool = False
  train_split: str = "train"
  eval_split: str = "test"
  image_size: int = 32
  channels: int = 3
  image_key: str = "image"
  label_key: str = "label"
  classes: tuple[Any, ...] = ()
  held_out_digit: Any = 1
  anomaly_protocol: str = "meg"
  random_flip: bool = False
  worker_count: int = 2
  prefetch: int = 2
  cache: bool = False

  @classmethod
  def from_config(cls, data_config) -> DataOptions:
    if isinstance(data_config, DataOptions):
      return data_config
    values = {}
    for field in dataclasses.fields(cls):
      if field.name in data_config:
        values[field.name] = data_config[field.name]
    if "classes" in values:
      classes = values["classes"]
      values["classes"] = tuple(classes) if isinstance(classes, (list, tuple)) else (classes,)
    return cls(**values)

  @property
  def spec(self) -> DatasetSpec:
    return DATASETS[self.name]


# ---------------------------------------------------------------------------------------------
# Split specs: 'train', 'train[:1000]', 'test[10%:]', 'train+test'.

_BOUND = r"\s*(-?\d+%?)?\s*"
_PART = re.compile(rf"^\s*([A-Za-z0-9_]+)\s*(?:\[{_BOUND}:{_BOUND}\])?\s*$")


@dataclasses.dataclass(frozen=True)
class SplitPart:
  """One '+'-separated part of a split spec: a base split and an optional [start:stop] slice."""
  base: str
  start: str | None = None
  stop: str | None = None

  def bounds(self, num_examples: int) -> tuple[int, int]:
    """Absolute [start, stop) of the slice within a split of `num_examples`."""
    def absolute(bound: str | None, default: int) -> int:
      if bound is None:
        return default
      if bound.endswith("%"):
        value = int(round(int(bound[:-1]) * num_examples / 100))  # tfds' 'closest' rounding
      else:
        value = int(bound)
      if value < 0:
        value += num_examples
      return min(max(value, 0), num_examples)
    start = absolute(self.start, 0)
    return start, max(start, absolute(self.stop, num_examples))


def parse_split(spec: str) -> list[SplitPart]:
  """Parses a split spec; raises ValueError on syntax errors (not on unknown split names)."""
  if not isinstance(spec, str) or not spec.strip():
    raise ValueError(f"a split must be a non-empty string, got {spec!r}.")
  parts = []
  for text in spec.split("+"):
    match = _PART.match(text)
    if not match:
      raise ValueError(f"cannot parse split {spec!r}: expected a split name with an optional "
                       "tfds slice, e.g. 'train', 'train[:1000]', 'test[10%:]', 'train+test'.")
    base, start, stop = match.groups()
    parts.append(SplitPart(base, start, stop))
  return parts


def _interval(part: SplitPart, unit: str) -> tuple[float, float] | None:
  """[start, stop) of a part in `unit` ('abs': examples, 'pct': percent) without knowing the size
  of the split; None if a bound is in the other unit or negative (it then needs the size)."""
  def value(bound, default):
    if bound is None:
      return default
    is_pct = bound.endswith("%")
    number = int(bound[:-1] if is_pct else bound)
    if is_pct != (unit == "pct") or number < 0:
      return None
    return float(number)
  start = value(part.start, 0.0)
  stop = value(part.stop, 100.0 if unit == "pct" else float("inf"))
  return None if start is None or stop is None else (start, stop)


def _parts_overlap(a: SplitPart, b: SplitPart, num_examples: int | None) -> bool:
  if a.base != b.base:
    return False
  if num_examples is not None:
    (a0, a1), (b0, b1) = a.bounds(num_examples), b.bounds(num_examples)
    return a0 < a1 and b0 < b1 and max(a0, b0) < min(a1, b1)
  for unit in ("abs", "pct"):
    ia, ib = _interval(a, unit), _interval(b, unit)
    if ia is not None and ib is not None:
      return ia[0] < ia[1] and ib[0] < ib[1] and max(ia[0], ib[0]) < min(ia[1], ib[1])
  return True  # mixed units or negative bounds: undecidable without the size, so possibly


def splits_overlap(a: str, b: str, num_examples: dict[str, int] | None = None) -> bool:
  """Whether two split specs of one dataset may share examples (by index within a base split).

  'train[:50000]' and 'train[50000:]' are disjoint, as are 'test' and 'train[50000:]'; 'train'
  and 'train[50000:]' overlap, as do 'train[:50%]' and 'train[40%:]'. Slices in the same unit
  (examples, or percent: tfds rounds both specs' percent bounds alike) are compared without the
  split's size; a slice in examples against one in percent, or a negative bound, needs the size
  (`num_examples`: base split -> examples) and counts as overlapping when it is not given. Empty
  slices overlap nothing. Distinct base split names count as disjoint: true of tfds' splits, but
  not of 'mnist_anomaly' under the 'meg' protocol, whose test normals were also trained on.

  Raises:
    ValueError: a spec that does not parse.
  """
  sizes = num_examples or {}
  return any(_parts_overlap(pa, pb, sizes.get(pa.base))
             for pa in parse_split(a) for pb in parse_split(b))


# ---------------------------------------------------------------------------------------------
# Validation.


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def label_feature(spec: DatasetSpec, label_key: str) -> str | None:
  """The feature that becomes 'label' (None: the dataset has no labels, 'label' is -1)."""
  if not spec.label_classes:
    return None
  if label_key == "label":
    return spec.default_label
  if label_key in spec.label_classes:
    return label_key
  raise ValueError(label_key)


def validate_data_config(data_config) -> None:
  """Raises `ConfigError` naming the first invalid `config.data` field. Reads nothing from disk."""
  from hebm_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top

  def require(cond: bool, field: str, message: str) -> None:
    if not cond:
      raise ConfigError(f"config.data.{field}: {message}")

  name = data_config["name"] if "name" in data_config else DataOptions.name
  require(isinstance(name, str) and name in DATASETS, "name",
          f"unknown dataset {name!r}; expected one of {tuple(DATASETS)}.")
  d = DataOptions.from_config(data_config)
  spec = d.spec

  for field in ("train_split", "eval_split"):
    value = getattr(d, field)
    try:
      parts = parse_split(value)
    except ValueError as e:
      raise ConfigError(f"config.data.{field}: {e}") from None
    for part in parts:
      require(part.base in spec.splits, field,
              f"dataset {name!r} has no split {part.base!r} (in {value!r}); its splits are "
              f"{spec.splits}.")

  require(_is_int(d.channels) and d.channels == spec.channels, "channels",
          f"dataset {name!r} has {spec.channels} channel(s), got {d.channels!r}.")
  require(_is_int(d.image_size) and d.image_size > 0, "image_size",
          f"must be a positive integer, got {d.image_size!r}.")
  require(d.image_key == "image", "image_key",
          f"dataset {name!r} stores its images under 'image', got {d.image_key!r}.")
  try:
    feature = label_feature(spec, d.label_key)
  except ValueError:
    raise ConfigError(
        f"config.data.label_key: dataset {name!r} has no label feature {d.label_key!r}; expected "
        f"'label' or one of {tuple(spec.label_classes)}.") from None

  if d.classes:
    require(feature is not None, "classes",
            f"dataset {name!r} has no labels to select classes {d.classes!r} by; use ().")
    num_classes = spec.label_classes[feature]
    require(all(_is_int(c) and 0 <= c < num_classes for c in d.classes), "classes",
            f"labels of {name!r} ({feature}) are integers 0..{num_classes - 1}, got {d.classes!r}.")
  require(_is_int(d.held_out_digit) and 0 <= d.held_out_digit <= 9, "held_out_digit",
          f"must be an integer digit 0-9, got {d.held_out_digit!r}.")
  require(d.anomaly_protocol in ANOMALY_PROTOCOLS, "anomaly_protocol",
          f"unknown protocol {d.anomaly_protocol!r}; expected one of {ANOMALY_PROTOCOLS}.")
  for field in ("random_flip", "cache", "download"):
    require(isinstance(getattr(d, field), bool), field,
            f"must be True or False, got {getattr(d, field)!r}.")
  for field in ("worker_count", "prefetch"):
    value = getattr(d, field)
    require(_is_int(value) and value >= 0, field, f"must be a non-negative integer, got {value!r}.")
  require(isinstance(d.data_dir, str), "data_dir", f"must be a path string, got {d.data_dir!r}.")
