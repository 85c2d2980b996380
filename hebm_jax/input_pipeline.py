"""Numpy input pipeline: random-access sources and a stateless, seed-and-step-determined batch order.

The batch at step t is a pure function of (seed, t): epoch e = t // steps_per_epoch is shuffled by a
permutation drawn from `np.random.default_rng([seed, e])` and cut into global batches (the last
partial batch is dropped, as the reference's `drop_last=True`). A resumed run therefore sees exactly
the batches it would have seen, with no iterator state to checkpoint. Each host reads only its
contiguous share of the global batch.

Sources:
  * 'digits': scikit-learn's bundled 1,797 handwritten 8x8 digits (offline default), resized
    bilinearly to `data.image_size`; a fixed permutation (seed 0) gives 1,497 train / 300 test.
  * any other name: a prepared tfds dataset read with `tfds.data_source` (no TensorFlow, no
    download); `data.data_dir` points at its data_dir.
Images reach the model as float32 (B, H, W, C) in [-1, 1]; labels as int32 (B,).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Protocol

import numpy as np
from PIL import Image

DIGITS_NUM_TEST = 300


class Source(Protocol):
  """Random access to a split: `len(source)` and `source.get(indices) -> (images, labels)`."""

  def __len__(self) -> int: ...

  def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class ArraySource:
  """An in-memory split: images (N, H, W, C) float32 in [-1, 1], labels (N,) int32."""
  images: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.images)

  def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return self.images[indices], self.labels[indices]


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize of float images (N, H, W, C) to (N, size, size, C)."""
  if images.shape[1:3] == (size, size):
    return images
  out = np.empty((len(images), size, size, images.shape[-1]), np.float32)
  for i, img in enumerate(images):
    for c in range(images.shape[-1]):
      out[i, :, :, c] = np.asarray(Image.fromarray(img[:, :, c].astype(np.float32), mode="F")
                                   .resize((size, size), Image.BILINEAR))
  return out


def to_model_range(images: np.ndarray, image_size: int) -> np.ndarray:
  """uint8 [0, 255] or float [0, 1] images (N, H, W, C) -> float32 [-1, 1] at `image_size`."""
  x = images.astype(np.float32)
  if images.dtype == np.uint8:
    x = x / 255.0
  return resize_images(x, image_size) * 2.0 - 1.0


def load_digits(split: str, image_size: int) -> ArraySource:
  """scikit-learn's handwritten digits as a 'train' (1,497) or 'test' (300) split."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  digits = datasets.load_digits()
  images = (digits.images / 16.0).astype(np.float32)[..., None]
  labels = digits.target.astype(np.int32)
  perm = np.random.default_rng(0).permutation(len(images))
  if split == "train":
    idx = perm[DIGITS_NUM_TEST:]
  elif split == "test":
    idx = perm[:DIGITS_NUM_TEST]
  else:
    raise ValueError(f"config.data.train_split/eval_split: the digits dataset has splits 'train' "
                     f"and 'test', got {split!r}.")
  return ArraySource(to_model_range(images[idx], image_size), labels[idx])


@dataclasses.dataclass(frozen=True)
class TfdsSource:
  """A tfds `data_source` split, decoded and scaled per batch."""
  source: Any
  image_key: str
  label_key: str
  image_size: int

  def __len__(self) -> int:
    return len(self.source)

  def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keys = [int(i) for i in indices]
    try:
      records = self.source.__getitems__(keys)  # one batched read from array_record
    except TypeError:  # tfds' mock data sources only implement single-item access
      records = [self.source[k] for k in keys]
    images = np.stack([np.asarray(r[self.image_key]) for r in records])
    if images.ndim == 3:
      images = images[..., None]
    labels = np.asarray([r.get(self.label_key, -1) for r in records], np.int32)
    return to_model_range(images, self.image_size), labels


def load_tfds(data_config, split: str) -> TfdsSource:
  """Opens a prepared tfds dataset without downloading; fails with a clear message if absent."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  kwargs = {"data_dir": data_config.data_dir} if data_config.data_dir else {}
  try:
    source = tfds.data_source(data_config.name, split=split, download=False, **kwargs)
  except Exception as e:  # tfds raises several types for a missing or unprepared dataset
    where = data_config.data_dir or "tfds' default data_dir"
    raise FileNotFoundError(
        f"config.data.name={data_config.name!r}, split {split!r}: cannot open a prepared tfds "
        f"dataset in {where} ({type(e).__name__}: {e}). Prepare it on a machine with internet "
        f"access (tfds.builder(name).download_and_prepare()) and set config.data.data_dir.") from e
  return TfdsSource(source, data_config.image_key, data_config.label_key, data_config.image_size)


def load_split(data_config, split: str) -> Source:
  """The split `split` of the dataset described by `config.data`."""
  if data_config.name == "digits":
    return load_digits(split, data_config.image_size)
  return load_tfds(data_config, split)


def check_source(source: Source, data_config) -> None:
  """Raises if the source's preprocessed images do not have the configured shape."""
  if len(source) == 0:
    raise ValueError(f"config.data.name={data_config.name!r}: the split is empty.")
  images, _ = source.get(np.arange(1))
  expected = (data_config.image_size, data_config.image_size, data_config.channels)
  if images.shape[1:] != expected:
    raise ValueError(f"config.data: images of {data_config.name!r} come out as {images.shape[1:]}, "
                     f"but config.data.image_size/channels ask for {expected}.")


def steps_per_epoch(num_examples: int, batch_size: int, field: str = "train.batch_size") -> int:
  """Full global batches per epoch (the last partial batch is dropped); raises if there are none.

  `field` names the config entry the batch size came from, for the error message.
  """
  steps = num_examples // batch_size
  if steps == 0:
    raise ValueError(f"config.{field}={batch_size} is larger than the {num_examples} examples "
                     "of its split.")
  return steps


def global_batch_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """Indices of the global batch at `step`: (batch_size,) int64."""
  epoch, within = divmod(int(step), steps_per_epoch(num_examples, batch_size))
  perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
  return perm[within * batch_size:(within + 1) * batch_size]


def train_batch(source: Source, batch_size: int, seed: int, step: int, process_index: int = 0,
                process_count: int = 1) -> dict[str, np.ndarray]:
  """This host's share of the global training batch at `step`.

  Returns:
    {'image': (batch_size // process_count, H, W, C) float32, 'label': (...,) int32}.
  """
  indices = global_batch_indices(len(source), batch_size, seed, step)
  per_host = batch_size // process_count
  images, labels = source.get(indices[process_index * per_host:(process_index + 1) * per_host])
  return {"image": images, "label": labels}


def eval_batches(source: Source, batch_size: int, num_batches: int = 0, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Full batches of a split in order (num_batches=0: all full batches); this host's share of each."""
  total = len(source) // batch_size
  if num_batches:
    total = min(total, num_batches)
  per_host = batch_size // process_count
  for b in range(total):
    start = b * batch_size + process_index * per_host
    images, labels = source.get(np.arange(start, start + per_host))
    yield {"image": images, "label": labels}
