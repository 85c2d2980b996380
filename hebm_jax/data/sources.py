"""Random-access sources of preprocessed (not augmented) examples, and `load_split`.

A source has `len(source)`, `read(indices)` and `get(indices)`:
  * `read` returns the stored form: {'image': uint8 (n, S, S, C) already cropped and resized to
    `data.image_size` (float32 in [-1, 1] for the in-memory digits), 'label': int32 (n,) (-1 where
    the dataset has none), plus 'factors' int32 (n, 6) for shapes3d and 'anomaly' int32 (n,) for
    mnist_anomaly}. The RAM cache stores this form.
  * `get` is `read` with the image mapped to float32 [-1, 1] (x / 127.5 - 1, so 0 -> -1 and
    255 -> 1 exactly): what the model sees.

tfds datasets are opened with `tfds.data_source` (no TensorFlow, no download). For array_record
data the split's files are then read directly and the records parsed here (tf.train.Example
protos, PNG/JPEG decoded with PIL), at under half the CPU cost of tfds' generic reader and decoder;
otherwise (other formats, `tfds.testing.mock_data`) tfds decodes and the decoded examples take the
same preprocessing path.

Image preprocessing, per example: the dataset's crop (CelebA: the 148x148 box rows 40:188,
columns 15:163), then, only if the size differs from `data.image_size`, PIL's bilinear resize, which
antialiases when shrinking (as torchvision's `Resize` on PIL images), in uint8.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import os
import socket
import threading
import time
from typing import Any, Mapping

from absl import logging
from etils import epath
import numpy as np
from PIL import Image, JpegImagePlugin, PngImagePlugin

from hebm_jax import fileio
from hebm_jax.data import anomaly, datasets, workers
from hebm_jax.data.datasets import DataOptions, DatasetSpec
from hebm_jax.errors import ConfigError

DIGITS_NUM_TEST = 300

_UINT8_TO_MODEL = np.arange(256, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


def to_model_range(images: np.ndarray) -> np.ndarray:
  """uint8 images -> float32 in [-1, 1]; float32 images (already in range) pass through."""
  if images.dtype == np.uint8:
    return _UINT8_TO_MODEL[images]
  return np.asarray(images, np.float32)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize of float images (N, H, W, C) to (N, size, size, C), without rounding."""
  if images.shape[1:3] == (size, size):
    return images
  out = np.empty((len(images), size, size, images.shape[-1]), np.float32)
  for i, img in enumerate(images):
    for c in range(images.shape[-1]):
      out[i, :, :, c] = np.asarray(Image.fromarray(img[:, :, c].astype(np.float32), mode="F")
                                   .resize((size, size), Image.Resampling.BILINEAR))
  return out


def in_memory(source) -> bool:
  """Whether `source` serves from RAM (no decoding): arrays, or views of them."""
  if isinstance(source, ArraySource):
    return True
  if isinstance(source, IndexView):
    return in_memory(source.base)
  if isinstance(source, ConcatSource):
    return all(in_memory(s) for s in source.sources)
  return False


class Source:
  """Random access to one split: `len`, `read(indices)` (stored form), `get(indices)` (model form)."""

  def __len__(self) -> int:
    raise NotImplementedError

  def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    raise NotImplementedError

  def get(self, indices) -> dict[str, np.ndarray]:
    """{'image': float32 (n, H, W, C) in [-1, 1], 'label': int32 (n,), extras} for `indices`."""
    batch = self.read(self.check_indices(indices))
    batch["image"] = to_model_range(batch["image"])
    return batch

  def all_labels(self) -> np.ndarray:
    """(len,) int32 labels of the whole split (generic: reads everything in chunks)."""
    n = len(self)
    return np.concatenate([np.zeros(0, np.int32)] + [
        self.read(np.arange(s, min(s + 1024, n)))["label"] for s in range(0, n, 1024)])

  def check_indices(self, indices) -> np.ndarray:
    """`indices` as a flat int64 array; IndexError if any is out of range."""
    indices = np.asarray(indices, np.int64).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
      raise IndexError(f"indices out of range for a split of {len(self)} examples: "
                       f"[{indices.min()}, {indices.max()}].")
    return indices


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySource(Source):
  """An in-memory split: images uint8 (or float32 in [-1, 1]) (N, H, W, C), labels (N,) int32."""
  images: np.ndarray
  labels: np.ndarray
  extras: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return len(self.images)

  def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    out = {"image": self.images[indices], "label": self.labels[indices]}
    out.update({k: v[indices] for k, v in self.extras.items()})
    return out

  def all_labels(self) -> np.ndarray:
    return self.labels


class IndexView(Source):
  """`base` restricted to `indices` (in that order), with optional per-position extra fields."""

  def __init__(self, base: Source, indices: np.ndarray,
               extras: Mapping[str, np.ndarray] | None = None):
    indices = np.asarray(indices, np.int64).reshape(-1)
    extras = {k: np.asarray(v) for k, v in (extras or {}).items()}
    if isinstance(base, IndexView):  # flatten views of views
      extras = {**{k: v[indices] for k, v in base.extras.items()}, **extras}
      indices, base = base.indices[indices], base.base
    if indices.size and (indices.min() < 0 or indices.max() >= len(base)):
      raise IndexError(f"view indices out of range for a source of {len(base)} examples.")
    if any(len(v) != len(indices) for v in extras.values()):
      raise ValueError("every extra field needs one value per index.")
    self.base, self.indices, self.extras = base, indices, extras

  def __len__(self) -> int:
    return len(self.indices)

  def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    out = self.base.read(self.indices[indices])
    out.update({k: v[indices] for k, v in self.extras.items()})
    return out

  def all_labels(self) -> np.ndarray:
    return self.base.all_labels()[self.indices]


class ConcatSource(Source):
  """Sources one after the other (they must return the same fields)."""

  def __init__(self, sources):
    self.sources = list(sources)
    self.offsets = np.cumsum([0] + [len(s) for s in self.sources])

  def __len__(self) -> int:
    return int(self.offsets[-1])

  def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    which = np.searchsorted(self.offsets, indices, side="right") - 1
    out = None
    for s in np.unique(which) if len(indices) else [0]:
      pos = np.flatnonzero(which == s)
      part = self.sources[s].read(indices[pos] - self.offsets[s])
      if out is None:
        out = {k: np.empty((len(indices),) + v.shape[1:], v.dtype) for k, v in part.items()}
      for k, v in part.items():
        out[k][pos] = v
    return out

  def all_labels(self) -> np.ndarray:
    return np.concatenate([s.all_labels() for s in self.sources])


# ---------------------------------------------------------------------------------------------
# tfds sources.

_example_proto = None


def _parse_example(record: bytes, keys) -> dict[str, Any]:
  """The first value of each feature in `keys` of a serialized tf.train.Example."""
  global _example_proto
  if _example_proto is None:
    from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=g-import-not-at-top
    _example_proto = tf_example_pb2.Example
  feature_map = _example_proto.FromString(record).features.feature
  out = {}
  for key in keys:
    if key not in feature_map:
      raise KeyError(f"feature {key!r} is not in the record (it has {sorted(feature_map)}).")
    feature = feature_map[key]
    kind = feature.WhichOneof("kind")
    out[key] = getattr(feature, kind).value[0]
  return out


def _open_image(data: bytes) -> Image.Image:
  # The format plugins directly: Image.open's format probing costs about as much as a small decode.
  if data.startswith(b"\x89PNG\r\n\x1a\n"):
    return PngImagePlugin.PngImageFile(io.BytesIO(data))
  if data.startswith(b"\xff\xd8\xff"):
    return JpegImagePlugin.JpegImageFile(io.BytesIO(data))
  return Image.open(io.BytesIO(data))


def prepare_image(image, size: int, crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
  """Encoded bytes (PNG/JPEG) or a uint8 array (H, W[, C]) -> uint8 (size, size, C).

  Crops `crop` = (top, left, height, width) if given, then resizes with PIL's bilinear filter
  (antialiased when shrinking) only if the size differs.
  """
  pil, arr = None, None
  if isinstance(image, (bytes, bytearray, memoryview)):
    pil = _open_image(bytes(image))
  else:
    arr = np.asarray(image)
  if crop is not None:
    top, left, height, width = crop
    if arr is not None:
      arr = arr[top:top + height, left:left + width]
    else:
      pil = pil.crop((left, top, left + width, top + height))
  hw = arr.shape[:2] if arr is not None else pil.size[::-1]
  if tuple(hw) != (size, size):
    if pil is None:
      pil = Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr)
    pil = pil.resize((size, size), Image.Resampling.BILINEAR)
    arr = None
  if arr is None:
    arr = np.asarray(pil)
  return arr[..., None] if arr.ndim == 2 else arr


class ArrayRecordShards:
  """The array_record files of one tfds split, read directly: one ascending `read` per file.

  tfds' data source reads through a new thread pool on every call, which for small records costs
  several times the CPU of the reads themselves. Readers are opened lazily, one per thread (so the
  prefetch threads never share one) and per process (they are dropped when pickled to a worker).
  """

  def __init__(self, files: list[tuple[str, int, int]]):
    """`files`: (filename, skip, take) for each file, in the split's order."""
    self.filenames = [f for f, _, _ in files]
    self.skips = np.asarray([skip for _, skip, _ in files], np.int64)
    self.starts = np.cumsum([0] + [take for _, _, take in files])
    self._local = threading.local()

  @classmethod
  def of(cls, data_source, split: str) -> ArrayRecordShards | None:
    """The files behind a real tfds array_record data source; None otherwise (e.g. mock data)."""
    try:
      instructions = data_source.dataset_info.splits[split].file_instructions
      files = [(os.fspath(i.filename), int(i.skip), int(i.take)) for i in instructions]
    except Exception:  # pylint: disable=broad-except  # any other layout: use tfds' reader
      return None
    if not files or sum(take for _, _, take in files) != len(data_source) or not all(
        ".array_record-" in os.path.basename(f) and os.path.isfile(f) for f, _, _ in files):
      return None
    return cls(files)

  def __len__(self) -> int:
    return int(self.starts[-1])

  def __getstate__(self):
    state = dict(self.__dict__)
    del state["_local"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._local = threading.local()

  def _reader(self, shard: int):
    from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
    readers = self._local.__dict__.setdefault("readers", {})
    if shard not in readers:
      readers[shard] = array_record_module.ArrayRecordReader(
          self.filenames[shard], options="readahead_buffer_size:0")
    return readers[shard]

  def read(self, keys) -> list[bytes]:
    keys = np.asarray(keys, np.int64)
    shards = np.searchsorted(self.starts, keys, side="right") - 1
    out = [None] * len(keys)
    for shard in np.unique(shards):
      where = np.flatnonzero(shards == shard)
      positions = keys[where] - self.starts[shard] + self.skips[shard]
      order = np.argsort(positions, kind="stable")  # ascending reads are about twice as fast
      records = self._reader(int(shard)).read([int(p) for p in positions[order]])
      for j, record in zip(where[order], records):
        out[j] = record
    return out


class TfdsSource(Source):
  """A split of a tfds dataset read with `tfds.data_source`, decoded and preprocessed here."""

  def __init__(self, data_source, spec: DatasetSpec, label: str | None, image_size: int,
               shards: ArrayRecordShards | None = None):
    self.data_source, self.shards = data_source, shards
    self.spec, self.label, self.image_size = spec, label, image_size
    self._keys = ("image",) + ((label,) if label else ()) + tuple(
        f for f in spec.factors if f != label)
    self._labels = None

  def __len__(self) -> int:
    return len(self.data_source)

  def _records(self, keys: list[int]) -> list:
    """Serialized records (array_record files read directly) or, through tfds' own decoding
    (other formats, `tfds.testing.mock_data`, plain sequences), decoded examples."""
    if self.shards is not None:
      return self.shards.read(keys)
    try:
      return list(self.data_source.__getitems__(keys))
    except (AttributeError, TypeError):  # mock data sources only implement single-item access
      return [self.data_source[k] for k in keys]

  def _features(self, record, keys) -> Mapping[str, Any]:
    if isinstance(record, (bytes, bytearray, memoryview)):
      return _parse_example(record, keys)
    if isinstance(record, Mapping):
      return record
    raise TypeError(f"unexpected record type {type(record).__name__} from {self.spec.tfds_name!r}.")

  def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    keys = [int(i) for i in indices]
    n, size = len(keys), self.image_size
    images = np.empty((n, size, size, self.spec.channels), np.uint8)
    labels = np.full((n,), -1, np.int32)
    factors = np.empty((n, len(self.spec.factors)), np.int32)
    records = self._records(keys) if n else []
    for i, record in enumerate(records):
      features = self._features(record, self._keys)
      images[i] = prepare_image(features["image"], size, self.spec.crop)
      if self.label:
        labels[i] = features[self.label]
      for j, name in enumerate(self.spec.factors):
        factors[i, j] = features[name]
    out = {"image": images, "label": labels}
    if self.spec.factors:
      out["factors"] = factors
    return out

  def all_labels(self) -> np.ndarray:
    """Labels of the whole split, parsing only the label feature (no image decoding)."""
    if self._labels is None:
      n = len(self)
      labels = np.full((n,), -1, np.int32)
      if self.label:
        for start in range(0, n, 8192):
          keys = list(range(start, min(start + 8192, n)))
          for i, record in zip(keys, self._records(keys)):
            labels[i] = self._features(record, (self.label,))[self.label]
      self._labels = labels
    return self._labels


def _prepare_command(tfds_name: str, data_dir: str) -> str:
  return ('python -c "import tensorflow_datasets as tfds; '
          f"tfds.builder({tfds_name!r}, data_dir={data_dir!r}, file_format='array_record')"
          '.download_and_prepare()"')


def _prepared_copies(root: str, tfds_name: str) -> list[tuple[str, str]]:
  """(version dir, file format) of each prepared copy of `tfds_name` under data_dir `root`."""
  copies = []
  base = epath.Path(root) / tfds_name  # also a gs:// data_dir, as on TPU pods
  if not base.is_dir():
    return copies
  # <name>/<version>/ or <name>/<config>/<version>/; explicit levels, as object-store globs
  # do not recurse with '**'.
  infos = [*base.glob("*/dataset_info.json"), *base.glob("*/*/dataset_info.json")]
  for info in sorted(infos, key=str):
    folder = str(info.parent)
    names = [p.name for p in info.parent.iterdir()]
    fmt = "unknown"
    for candidate in ("array_record", "parquet", "tfrecord"):
      if any(f".{candidate}-" in name for name in names):
        fmt = candidate
        break
    copies.append((folder, fmt))
  return copies


# `data.download`: a missing dataset is prepared by tfds only if this host answers (tfds' own data
# bucket): one TCP connection with a short timeout, instead of minutes of tfds download retries.
NETWORK_PROBE = ("storage.googleapis.com", 443)
NETWORK_PROBE_TIMEOUT_S = 3.0


def network_available() -> bool:
  """Whether `NETWORK_PROBE` accepts a TCP connection within `NETWORK_PROBE_TIMEOUT_S`."""
  try:
    socket.create_connection(NETWORK_PROBE, timeout=NETWORK_PROBE_TIMEOUT_S).close()
    return True
  except OSError:
    return False


def _no_download_reason(download: bool) -> str:
  if download:
    host, port = NETWORK_PROBE
    return (f"config.data.download is on, but there is no network access (no connection to "
            f"{host}:{port} within {NETWORK_PROBE_TIMEOUT_S:g} s), so nothing was downloaded")
  return ("nothing is downloaded unless config.data.download=True (on a machine with internet "
          "access, tfds then prepares it in place)")


PREPARE_EXTRA = 'pip install -e ".[prepare]"'


def require_tensorflow_to_prepare(tfds_name: str) -> None:
  """tfds' download_and_prepare needs TensorFlow, which only the `prepare` extra installs.

  Raises:
    ConfigError: naming config.data.download and the extra, when TensorFlow is not installed.
  """
  if importlib.util.find_spec("tensorflow") is None:
    raise ConfigError(
        f"config.data.download=True: preparing tfds dataset {tfds_name!r} needs TensorFlow, "
        f"which is not installed; install it with {PREPARE_EXTRA} (training itself does not "
        "need it).")


def prepare_tfds(tfds_name: str, root: str) -> None:
  """tfds' own download-and-prepare of `tfds_name` into data_dir `root`, as array_record."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  logging.warning("Preparing tfds dataset %r in %s (array_record): downloading; this runs once.",
                  tfds_name, root)
  epath.Path(root).mkdir(parents=True, exist_ok=True)
  tfds.builder(tfds_name, data_dir=root, file_format="array_record").download_and_prepare()


def _missing_data_error(name: str, tfds_name: str, split: str, root: str, explicit_dir: bool,
                        error: Exception, download: bool = False) -> tuple[Exception, bool]:
  """A FileNotFoundError saying what is missing and how to prepare it; and whether to chain."""
  cmd = _prepare_command(tfds_name, root)
  where = root if explicit_dir else (f"{root} (tfds' default data_dir; config.data.data_dir is "
                                     "empty)")
  copies = _prepared_copies(root, tfds_name)
  readable = [folder for folder, fmt in copies if fmt in ("array_record", "parquet")]
  if not copies:
    return FileNotFoundError(
        f"config.data.name={name!r}: tfds dataset {tfds_name!r} is not prepared in {where}: "
        f"nothing under {os.path.join(root, tfds_name)}; {_no_download_reason(download)}. On a "
        f"machine with internet access and TensorFlow installed ({PREPARE_EXTRA}), prepare it "
        f"in the array_record format that tfds.data_source reads:\n  {cmd}\nthen copy that "
        "data_dir here if needed "
        "and set config.data.data_dir to it."), False
  folders = ", ".join(folder for folder, _ in copies)
  if not readable:
    return FileNotFoundError(
        f"config.data.name={name!r}: tfds dataset {tfds_name!r} in {folders} was prepared as "
        f"{copies[0][1].upper()}, which tfds.data_source cannot read (random access needs the "
        "array_record format). Prepare it again as array_record, into another data_dir or after "
        f"deleting {folders}, on a machine with internet access and TensorFlow installed "
        f"({PREPARE_EXTRA}):\n"
        f"  {cmd}\nand set config.data.data_dir to that data_dir."), False
  message = str(error).strip().splitlines()[0] if str(error).strip() else ""
  return FileNotFoundError(
      f"config.data.name={name!r}: tfds could not open split {split!r} of {tfds_name!r} prepared "
      f"in {folders} ({type(error).__name__}: {message}). If the copy is incomplete or of another "
      f"version, prepare it again with\n  {cmd}\nand set config.data.data_dir to that data_dir."), True


def open_tfds(spec: DatasetSpec, split: str, data_dir: str, download: bool = False):
  """`tfds.data_source` for one split; fails at once, with one clear message, if it is absent.

  With `download`, a dataset absent from the data_dir is first prepared there by tfds (as
  array_record) when the network is reachable (`network_available`); never otherwise.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ModuleNotFoundError(
        f"config.data.name={spec.name!r} is read with tensorflow_datasets and array_record, which "
        "are not installed (pip install tensorflow-datasets array-record).") from None
  explicit_dir = bool(data_dir)
  root = os.path.expanduser(data_dir) if explicit_dir else tfds.core.constants.get_default_data_dir()
  missing = (explicit_dir and not fileio.is_dir(root)) or not _prepared_copies(root, spec.tfds_name)
  if missing and download:
    require_tensorflow_to_prepare(spec.tfds_name)
  if missing and download and network_available():
    prepare_tfds(spec.tfds_name, root)
  elif explicit_dir and not fileio.is_dir(root):
    raise FileNotFoundError(
        f"config.data.data_dir={data_dir!r} does not exist or is not a directory (looking for "
        f"tfds dataset {spec.tfds_name!r} of config.data.name={spec.name!r}). Prepare the dataset "
        f"on a machine with internet access and TensorFlow installed ({PREPARE_EXTRA}):\n  "
        f"{_prepare_command(spec.tfds_name, root)}\nand point config.data.data_dir at that "
        f"data_dir ({_no_download_reason(download)}).")
  try:
    return tfds.data_source(spec.tfds_name, split=split, data_dir=root if explicit_dir else None,
                            download=False)
  except Exception as e:  # pylint: disable=broad-except  # tfds raises many types for this
    error, chain = _missing_data_error(spec.name, spec.tfds_name, split, root, explicit_dir, e,
                                       download)
    if chain:
      raise error from e
    raise error from None


# ---------------------------------------------------------------------------------------------
# Datasets.


def load_digits(split: str, image_size: int) -> ArraySource:
  """scikit-learn's handwritten digits as a 'train' (1,497) or 'test' (300) split, float32."""
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top

  digits = sk_datasets.load_digits()
  images = (digits.images / 16.0).astype(np.float32)[..., None]
  labels = digits.target.astype(np.int32)
  perm = np.random.default_rng(0).permutation(len(images))
  if split == "train":
    idx = perm[DIGITS_NUM_TEST:]
  elif split == "test":
    idx = perm[:DIGITS_NUM_TEST]
  else:
    raise ConfigError(f"config.data.train_split/eval_split: the digits dataset has splits 'train' "
                     f"and 'test', got {split!r}.")
  return ArraySource(resize_images(images[idx], image_size) * 2.0 - 1.0, labels[idx])


def load_mnist_anomaly(d: DataOptions, split: str) -> IndexView:
  """The MEG anomaly split of MNIST's 70,000 images (tfds train then test): 'anomaly' = 1 for
  `held_out_digit`, 'label' the digit."""
  base = ConcatSource([tfds_source(d, s, "label") for s in ("train", "test")])
  labels = base.all_labels()
  train, test = anomaly.mnist_anomaly_split(labels, d.held_out_digit,
                                            meg_rng_sequence=d.anomaly_protocol == "meg")
  idx = {"train": train, "test": test}[split]
  return IndexView(base, idx, {"anomaly": (labels[idx] == d.held_out_digit).astype(np.int32)})


def tfds_source(d: DataOptions, split: str, label: str | None) -> TfdsSource:
  """The tfds split `split` (a plain split name) of `d.spec`, as a source."""
  data_source = open_tfds(d.spec, split, d.data_dir, d.download)
  return TfdsSource(data_source, d.spec, label, d.image_size,
                    ArrayRecordShards.of(data_source, split))


def _open_split(d: DataOptions, base_split: str) -> Source:
  spec = d.spec
  if spec.name == "digits":
    return load_digits(base_split, d.image_size)
  if spec.name == "mnist_anomaly":
    return load_mnist_anomaly(d, base_split)
  return tfds_source(d, base_split, datasets.label_feature(spec, d.label_key))


class _ReadChunk:
  """Reads examples [start, start + size) of a source (a picklable grain map function)."""

  def __init__(self, source: Source, size: int):
    self.source, self.size = source, size

  def __call__(self, start: int):
    stop = min(start + self.size, len(self.source))
    return start, self.source.read(np.arange(start, stop))


def cache_in_memory(source: Source, worker_count: int = 0, description: str = "split",
                    chunk: int = 512) -> ArraySource:
  """Reads a whole source once (with `worker_count` grain worker processes) into RAM."""
  import grain  # pylint: disable=g-import-not-at-top

  n = len(source)
  ds = grain.MapDataset.range(0, n, chunk).map(_ReadChunk(source, chunk))
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0 if worker_count else 1,
                                            prefetch_buffer_size=0 if worker_count else 2))
  if worker_count:
    ds = workers.prefetch_in_workers(ds, worker_count, per_worker_buffer_size=2)
  logging.info("Caching %s: decoding %d examples into memory (%d worker processes).",
               description, n, worker_count)
  t0 = last_log = time.monotonic()
  arrays, done = None, 0
  it = iter(ds)
  try:
    for start, part in it:
      if arrays is None:
        arrays = {k: np.empty((n,) + v.shape[1:], v.dtype) for k, v in part.items()}
      for k, v in part.items():
        arrays[k][start:start + len(v)] = v
      done += len(part["image"])
      now = time.monotonic()
      if now - last_log > 10 or done == n:
        logging.info("Caching %s: %d/%d examples (%.0f/s).", description, done, n,
                     done / max(now - t0, 1e-9))
        last_log = now
  finally:
    if hasattr(it, "close"):
      it.close()
  if arrays is None:
    arrays = source.read(np.zeros(0, np.int64))
  image, label = arrays.pop("image"), arrays.pop("label")
  logging.info("Cached %s: %.2f GB in %.1f s.", description,
               (image.nbytes + label.nbytes) / 1e9, time.monotonic() - t0)
  return ArraySource(image, label, arrays)


def load_split(data_config, split: str) -> Source:
  """The split `split` (tfds slicing syntax allowed) of the dataset described by `config.data`.

  Checks `config.data` first (`validate_data_config`), opens the split (failing at once with a
  message naming the missing data and how to prepare it), keeps only `data.classes` if set, and
  with `data.cache` decodes the result once into memory.
  """
  datasets.validate_data_config(data_config)
  d = DataOptions.from_config(data_config)
  try:
    parts = datasets.parse_split(split)
  except ValueError as e:
    raise ConfigError(f"config.data.train_split/eval_split: {e}") from None
  for part in parts:
    if part.base not in d.spec.splits:
      raise ConfigError(f"config.data.train_split/eval_split: dataset {d.name!r} has no split "
                       f"{part.base!r}; its splits are {d.spec.splits}.")
  pieces = []
  for part in parts:
    source = _open_split(d, part.base)
    if part.start is not None or part.stop is not None:
      source = IndexView(source, np.arange(*part.bounds(len(source))))
    pieces.append(source)
  source = pieces[0] if len(pieces) == 1 else ConcatSource(pieces)
  if d.classes:
    keep = np.flatnonzero(np.isin(source.all_labels(), np.asarray(d.classes)))
    if not keep.size:
      raise ConfigError(f"config.data.classes={d.classes!r}: no example of {d.name!r} split "
                       f"{split!r} has these labels.")
    source = IndexView(source, keep)
  if d.cache and not in_memory(source):
    source = cache_in_memory(source, d.worker_count, f"{d.name} {split!r}")
  return source


def check_source(source: Source, data_config) -> None:
  """Raises if the source's preprocessed images do not have the configured shape."""
  d = DataOptions.from_config(data_config)
  if len(source) == 0:
    raise ConfigError(f"config.data.name={d.name!r}: the split is empty.")
  images = source.get(np.arange(1))["image"]
  expected = (d.image_size, d.image_size, d.channels)
  if images.shape[1:] != expected:
    raise ConfigError(f"config.data: images of {d.name!r} come out as {images.shape[1:]}, "
                      f"but config.data.image_size/channels ask for {expected}.")
  if images.dtype != np.float32 or not np.all(np.isfinite(images)) or (
      images.min() < -1.0 - 1e-6 or images.max() > 1.0 + 1e-6):
    raise ConfigError(f"config.data: images of {d.name!r} come out as {images.dtype} in "
                      f"[{images.min():.3g}, {images.max():.3g}]; the models take float32 in [-1, 1].")
