"""Input pipeline: batch order and grain iterator, every dataset under tfds mock data, CelebA crop
and flips, the MNIST anomaly split, class subsets, split slicing, the RAM cache, missing-data
messages and config validation. No test needs ../shared or a network."""

import io
import json
import multiprocessing
import os
import socket
import time

import ml_collections
import numpy as np
import pytest
from PIL import Image

from hebm_jax import input_pipeline
from hebm_jax.config_validation import ConfigError
from tests.conftest import tiny_digits_config

tfds = pytest.importorskip("tensorflow_datasets")


def _data(**overrides):
  """The tiny digits `config.data`, with every pipeline field set, then `overrides` (as a fresh
  ConfigDict, so that an override may change a field's type)."""
  fields = dict(classes=(), held_out_digit=1, random_flip=False, worker_count=0, prefetch=2,
                cache=False)
  fields.update(tiny_digits_config().data.to_dict())
  fields.update(worker_count=0)
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


def _mnist_arrays(num, seed):
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 256, (num, 28, 28, 1), dtype=np.uint8),
          "label": rng.integers(0, 10, num)}


@pytest.fixture(scope="module")
def synthetic_mnist(tmp_path_factory):
  """A tfds-format 'mnist' (array_record, PNG images) of 64 train / 16 test random images."""
  from hebm_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  arrays = {"train": _mnist_arrays(64, 0), "test": _mnist_arrays(16, 1)}
  synthetic.write_tfds_dataset("mnist", data_dir, arrays)
  return data_dir, arrays


def _mnist_config(data_dir, **overrides):
  return _data(name="mnist", data_dir=data_dir, image_size=28, channels=1, **overrides)


# ---------------------------------------------------------------------------------------------
# Reading real array_record files.


def test_array_record_reader_matches_the_written_images_and_tfds_decoding(synthetic_mnist):
  data_dir, arrays = synthetic_mnist
  source = input_pipeline.load_split(_mnist_config(data_dir), "train")
  assert source.shards is not None  # the direct array_record path, not tfds' decoder
  idx = np.array([5, 63, 0, 17, 5])
  stored = source.read(idx)
  np.testing.assert_array_equal(stored["image"], arrays["train"]["image"][idx])
  np.testing.assert_array_equal(stored["label"], arrays["train"]["label"][idx])
  ds = tfds.data_source("mnist", split="train", data_dir=data_dir, download=False)
  np.testing.assert_array_equal(stored["image"], np.stack([ds[int(i)]["image"] for i in idx]))
  np.testing.assert_array_equal(source.all_labels(), arrays["train"]["label"])
  batch = source.get(idx)
  assert batch["image"].dtype == np.float32 and batch["label"].dtype == np.int32
  np.testing.assert_array_equal(batch["image"], stored["image"] / np.float32(127.5) - 1)


# ---------------------------------------------------------------------------------------------
# Batch order and the grain iterator.


def test_iterator_equals_train_batch_for_any_worker_count_resume_and_hosts(synthetic_mnist):
  data_dir, _ = synthetic_mnist
  source = input_pipeline.load_split(_mnist_config(data_dir), "train")
  expected = [input_pipeline.train_batch(source, 8, 3, t, random_flip=True) for t in range(11)]
  assert not np.array_equal(expected[0]["image"], expected[8]["image"])  # epochs reshuffle

  def run(worker_count, start, stop, **kw):
    config = _mnist_config(data_dir, worker_count=worker_count, random_flip=True)
    with input_pipeline.train_iterator(source, config, 8, 3, start, stop, **kw) as it:
      batches = [next(it)]
      live = multiprocessing.active_children()
      batches += list(it)
    return batches, live

  with_workers, live = run(2, 0, 11)  # 11 steps cross the 8-step epoch boundary
  assert len(live) == 2  # batches really came from two worker processes
  assert multiprocessing.active_children() == []  # and closing stopped them
  in_process, live = run(0, 0, 11)
  assert live == []
  resumed, _ = run(0, 7, 11)
  for t in range(11):
    for batch in (with_workers[t], in_process[t]) + ((resumed[t - 7],) if t >= 7 else ()):
      assert batch.keys() == expected[t].keys()
      for key in expected[t]:
        assert type(batch[key]) is np.ndarray
        np.testing.assert_array_equal(batch[key], expected[t][key])
  # Host shares, each from its own iterator, concatenate to the single-host batch.
  shares = [run(0, 4, 6, process_index=h, process_count=2)[0] for h in range(2)]
  for k, t in enumerate((4, 5)):
    np.testing.assert_array_equal(
        np.concatenate([shares[0][k]["image"], shares[1][k]["image"]]), expected[t]["image"])


def test_iterator_closes_its_workers_when_dropped(synthetic_mnist):
  data_dir, _ = synthetic_mnist
  source = input_pipeline.load_split(_mnist_config(data_dir), "train")
  it = input_pipeline.train_iterator(source, _mnist_config(data_dir, worker_count=1), 8, 0, 0, 100)
  next(it)
  assert len(multiprocessing.active_children()) == 1
  del it
  deadline = time.monotonic() + 30
  while multiprocessing.active_children() and time.monotonic() < deadline:
    time.sleep(0.1)
  assert multiprocessing.active_children() == []


def test_eval_batches_are_in_order_with_host_shares():
  source = input_pipeline.load_split(_data(), "test")
  batches = list(input_pipeline.eval_batches(source, 64, 0))
  assert len(batches) == 300 // 64
  np.testing.assert_array_equal(batches[1]["image"], source.get(np.arange(64, 128))["image"])
  parts = [next(input_pipeline.eval_batches(source, 64, 1, h, 4)) for h in range(4)]
  np.testing.assert_array_equal(np.concatenate([p["label"] for p in parts]), batches[0]["label"])
  with pytest.raises(ValueError, match="does not split evenly"):
    input_pipeline.train_batch(source, 10, 0, 0, 0, 3)


# ---------------------------------------------------------------------------------------------
# Every tfds dataset under mock data.

DATASET_CASES = [  # name, image_size, channels, train split, eval split
    ("mnist", 28, 1, "train", "test"),
    ("fashion_mnist", 32, 1, "train", "test"),
    ("svhn_cropped", 32, 3, "extra", "test"),
    ("cifar10", 32, 3, "train", "test"),
    ("celeb_a", 64, 3, "train", "validation"),
    ("shapes3d", 64, 3, "train[:75%]", "train[75%:]"),
    ("mnist_anomaly", 28, 1, "train", "test"),
]


@pytest.mark.parametrize("name,size,channels,train_split,eval_split", DATASET_CASES)
def test_each_dataset_loads_under_mock_data(name, size, channels, train_split, eval_split):
  config = _data(name=name, image_size=size, channels=channels, train_split=train_split,
                 eval_split=eval_split)
  input_pipeline.validate_data_config(config)
  with tfds.testing.mock_data(num_examples=24):
    for split in (train_split, eval_split):
      source = input_pipeline.load_split(config, split)
      input_pipeline.check_source(source, config)
      batch = source.get(np.arange(len(source)))
      extra = {"shapes3d": {"factors"}, "mnist_anomaly": {"anomaly"}}.get(name, set())
      assert set(batch) == {"image", "label"} | extra
      assert batch["image"].shape == (len(source), size, size, channels)
      assert batch["image"].dtype == np.float32 and batch["label"].dtype == np.int32
      assert -1.0 <= batch["image"].min() < -0.5 and 0.5 < batch["image"].max() <= 1.0
      if name == "celeb_a":
        np.testing.assert_array_equal(batch["label"], -1)
      else:
        assert 0 <= batch["label"].min() and batch["label"].max() < 10
      if name == "shapes3d":
        assert batch["factors"].shape == (len(source), 6) and batch["factors"].dtype == np.int32
        assert np.all(batch["factors"] < np.array([10, 10, 10, 8, 4, 15]))
        np.testing.assert_array_equal(batch["label"], batch["factors"][:, 4])  # the shape factor
      if name == "mnist_anomaly":
        np.testing.assert_array_equal(batch["anomaly"], (batch["label"] == 1).astype(np.int32))
    if name == "shapes3d":
      assert len(source) == 6  # 'train[75%:]' of 24
    if name == "mnist_anomaly":  # 48 images (24 train + 24 test)
      train, test = (input_pipeline.load_split(config, s) for s in ("train", "test"))
      held = int(np.sum(test.get(np.arange(len(test)))["anomaly"]))
      assert len(train) == int((48 - held) * 0.8) and len(test) == 48 - len(train)
      assert not np.any(train.get(np.arange(len(train)))["anomaly"])


# ---------------------------------------------------------------------------------------------
# CelebA: crop box, resize, flips.


def _celeb_image(seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)


def test_celeb_a_crop_takes_rows_40_to_188_and_columns_15_to_163():
  image = _celeb_image()
  np.testing.assert_array_equal(input_pipeline.prepare_image(image, 148, (40, 15, 148, 148)),
                                image[40:188, 15:163])
  # Encoded (JPEG, as tfds stores CelebA) and array inputs take the same path.
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="JPEG")
  decoded = np.asarray(Image.open(buf))
  np.testing.assert_array_equal(input_pipeline.prepare_image(buf.getvalue(), 148, (40, 15, 148, 148)),
                                decoded[40:188, 15:163])
  # Then the reference's transform: PIL crop((15, 40, 178 - 15, 218 - 30)), bilinear resize.
  reference = Image.fromarray(image).crop((15, 40, 178 - 15, 218 - 30)).resize(
      (64, 64), Image.Resampling.BILINEAR)
  np.testing.assert_array_equal(input_pipeline.prepare_image(image, 64, (40, 15, 148, 148)),
                                np.asarray(reference))


def test_celeb_a_source_crops_resizes_and_flips_only_training_batches():
  images = np.stack([_celeb_image(s) for s in range(6)])
  # Mark the crop box's top-left corner so that a flip is visible.
  images[:, 40:60, 15:35] = 255
  records = [{"image": img, "attributes": {}} for img in images]
  config = _data(name="celeb_a", image_size=148, channels=3, random_flip=True)
  with tfds.testing.mock_data(as_data_source_fn=lambda *a, **k: records):
    source = input_pipeline.load_split(config, "train")
  assert len(source) == 6
  unflipped = source.get(np.arange(6))["image"]
  np.testing.assert_array_equal(unflipped, images[:, 40:188, 15:163] / np.float32(127.5) - 1)
  for step in range(4):
    plain = input_pipeline.train_batch(source, 6, 0, step)
    flipped = input_pipeline.train_batch(source, 6, 0, step, random_flip=True)
    again = input_pipeline.train_batch(source, 6, 0, step, random_flip=True)
    np.testing.assert_array_equal(flipped["image"], again["image"])  # deterministic in (seed, t)
    mask = input_pipeline.flip_mask(6, 0, step)
    np.testing.assert_array_equal(flipped["image"][mask], plain["image"][mask][:, :, ::-1])
    np.testing.assert_array_equal(flipped["image"][~mask], plain["image"][~mask])
    # The marked corner moved to the right edge exactly where flipped.
    np.testing.assert_array_equal(flipped["image"][:, 0, -1, 0] == 1.0, mask)
  # Eval batches never flip.
  np.testing.assert_array_equal(next(input_pipeline.eval_batches(source, 6))["image"], unflipped)


def test_flip_draws_are_fair_and_keyed_by_seed_step_and_position():
  masks = np.stack([input_pipeline.flip_mask(100, 0, t) for t in range(50)])
  assert 0.45 < masks.mean() < 0.55
  assert 0.3 < masks[:, 7].mean() < 0.7  # each position too
  np.testing.assert_array_equal(input_pipeline.flip_mask(40, 0, 3), masks[3, :40])  # prefix
  assert not np.array_equal(masks[3], masks[4])
  assert not np.array_equal(masks[3], input_pipeline.flip_mask(100, 1, 3))
  # Host shares of a flipped batch concatenate to the single-host batch.
  source = input_pipeline.load_split(_data(), "train")
  whole = input_pipeline.train_batch(source, 40, 0, 2, random_flip=True)
  parts = [input_pipeline.train_batch(source, 40, 0, 2, h, 4, random_flip=True) for h in range(4)]
  np.testing.assert_array_equal(np.concatenate([p["image"] for p in parts]), whole["image"])


# ---------------------------------------------------------------------------------------------
# MNIST anomaly split (MEG protocol) on synthetic labels.


def _meg_literal(labels, label):
  """MEG's `_get_adapted_dataset` steps, transcribed onto index arrays, called as its script
  does: get_train, then get_test, on one module-level RandomState(42)."""
  rng = np.random.RandomState(42)
  full_x = np.arange(len(labels))
  out = []
  for split in ("train", "test"):
    normal_x = full_x[labels != label]
    normal_x = normal_x[rng.permutation(normal_x.shape[0])]
    index = int(normal_x.shape[0] * 0.8)
    testing_x = np.concatenate([normal_x[index:], full_x[labels == label]], axis=0)
    testing_x = testing_x[rng.permutation(testing_x.shape[0])]
    out.append(normal_x[:index] if split == "train" else testing_x)
  return out


@pytest.mark.parametrize("held_out", [1, 4, 9])
def test_mnist_anomaly_split_sizes_contents_and_rng_order(held_out):
  labels = np.random.default_rng(0).integers(0, 10, 70_000)
  train, test = input_pipeline.mnist_anomaly_split(labels, held_out)
  num_held = int(np.sum(labels == held_out))
  num_normal = 70_000 - num_held
  assert len(train) == int(num_normal * 0.8)
  assert len(test) == num_normal - len(train) + num_held
  assert not np.any(labels[train] == held_out)
  assert len(np.unique(train)) == len(train) and len(np.unique(test)) == len(test)
  np.testing.assert_array_equal(np.sort(test[labels[test] == held_out]),
                                np.flatnonzero(labels == held_out))  # every held-out image once
  expected_train, expected_test = _meg_literal(labels, held_out)
  np.testing.assert_array_equal(train, expected_train)
  np.testing.assert_array_equal(test, expected_test)
  # MEG's draw order makes test-normal overlap training (about 80 %); the one-call split does not.
  test_normal = test[labels[test] != held_out]
  assert 0.75 < np.isin(test_normal, train).mean() < 0.85
  train1, test1 = input_pipeline.mnist_anomaly_split(labels, held_out, meg_rng_sequence=False)
  np.testing.assert_array_equal(train1, train)
  assert not np.isin(test1, train1).any()
  assert len(np.union1d(train1, test1)) == 70_000


@pytest.mark.parametrize("protocol,overlaps", [("meg", True), ("disjoint", False)])
def test_anomaly_protocol_field_selects_the_split(protocol, overlaps):
  config = _data(name="mnist_anomaly", image_size=28, channels=1, held_out_digit=3,
                 anomaly_protocol=protocol)
  with tfds.testing.mock_data(num_examples=200):
    train, test = (input_pipeline.load_split(config, s) for s in ("train", "test"))
  assert np.isin(test.indices, train.indices).any() == overlaps
  assert not np.any(train.get(np.arange(len(train)))["label"] == 3)
  batch = test.get(np.arange(len(test)))
  np.testing.assert_array_equal(batch["anomaly"], (batch["label"] == 3).astype(np.int32))


# ---------------------------------------------------------------------------------------------
# Class subsets, split slicing, cache.


def test_mnist_class_subset_keeps_exactly_those_labels():
  config = _data(name="mnist", image_size=28, channels=1)
  with tfds.testing.mock_data(num_examples=60):
    full = input_pipeline.load_split(config, "train")
    config.classes = (0, 1, 2)
    subset = input_pipeline.load_split(config, "train")
  labels = full.get(np.arange(len(full)))["label"]
  keep = np.flatnonzero(np.isin(labels, (0, 1, 2)))
  assert 0 < len(keep) < len(full) and len(subset) == len(keep)
  np.testing.assert_array_equal(subset.get(np.arange(len(subset)))["image"],
                                full.get(keep)["image"])
  assert set(subset.all_labels()) <= {0, 1, 2}


def test_digits_class_subset_and_split_slicing():
  config = _data(classes=(3, 7))
  source = input_pipeline.load_split(config, "train")
  assert set(np.unique(source.get(np.arange(len(source)))["label"])) == {3, 7}
  full = input_pipeline.load_split(_data(), "train")
  head = input_pipeline.load_split(_data(), "train[:100]")
  np.testing.assert_array_equal(head.get(np.arange(100))["image"], full.get(np.arange(100))["image"])
  assert len(input_pipeline.load_split(_data(), "train[10%:20%]")) == 149  # 299 - 150
  assert len(input_pipeline.load_split(_data(), "train[-97:]")) == 97
  both = input_pipeline.load_split(_data(), "train+test[:50]")
  assert len(both) == 1547
  np.testing.assert_array_equal(
      both.get([1497])["image"], input_pipeline.load_split(_data(), "test").get([0])["image"])


def test_cache_serves_the_same_examples_from_ram(synthetic_mnist):
  data_dir, _ = synthetic_mnist
  plain = input_pipeline.load_split(_mnist_config(data_dir), "train")
  cached = input_pipeline.load_split(_mnist_config(data_dir, cache=True), "train")
  assert isinstance(cached, input_pipeline.ArraySource) and cached.images.dtype == np.uint8
  idx = np.array([3, 60, 3, 0])
  for a, b in ((plain.get(idx), cached.get(idx)),
               (input_pipeline.train_batch(plain, 8, 0, 9), input_pipeline.train_batch(cached, 8, 0, 9))):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


# ---------------------------------------------------------------------------------------------
# Missing data: one clear message, at once, no network.


@pytest.fixture
def no_network(monkeypatch):
  attempts = []

  def refuse(*args, **kwargs):
    attempts.append(args)
    raise OSError("network disabled in this test")

  monkeypatch.setattr(socket, "create_connection", refuse)
  monkeypatch.setattr(socket.socket, "connect", refuse)
  return attempts


def test_missing_dataset_says_where_it_looked_and_how_to_prepare_it(tmp_path, no_network):
  config = _data(name="svhn_cropped", data_dir=str(tmp_path), image_size=32, channels=3)
  start = time.monotonic()
  with pytest.raises(FileNotFoundError) as info:
    input_pipeline.load_split(config, "train")
  assert time.monotonic() - start < 30 and no_network == []
  message = str(info.value)
  assert "config.data.name='svhn_cropped'" in message and str(tmp_path) in message
  assert (f"tfds.builder('svhn_cropped', data_dir='{tmp_path}', file_format='array_record')"
          ".download_and_prepare()") in message
  assert "config.data.data_dir" in message
  assert "already prepared" not in message and info.value.__cause__ is None


def _tensorflow_installed(monkeypatch):
  """tfds' preparation needs TensorFlow (the [prepare] extra); these tests fake the network side,
  so stand in for the installed extra."""
  from hebm_jax.data import sources  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(sources, "require_tensorflow_to_prepare", lambda name: None)


def test_download_without_network_fails_at_once_after_one_probe(tmp_path, no_network, monkeypatch):
  _tensorflow_installed(monkeypatch)
  config = _data(name="svhn_cropped", data_dir=str(tmp_path), image_size=32, channels=3,
                 download=True)
  start = time.monotonic()
  with pytest.raises(FileNotFoundError) as info:
    input_pipeline.load_split(config, "train")
  assert time.monotonic() - start < 30 and len(no_network) == 1  # the probe, nothing else
  message = str(info.value)
  assert "config.data.download is on, but there is no network access" in message
  assert "file_format='array_record'" in message


def test_download_with_network_lets_tfds_prepare_array_record(tmp_path, monkeypatch):
  _tensorflow_installed(monkeypatch)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from hebm_jax.data import sources, synthetic  # pylint: disable=g-import-not-at-top
  calls = []
  real_builder = tfds.builder

  class FakeBuilder:  # stands in for the network: writes the dataset tfds would have prepared
    def __init__(self, name, data_dir, file_format):
      calls.append((name, data_dir, file_format))
      self.name, self.data_dir = name, data_dir

    def download_and_prepare(self):
      synthetic.write_tfds_dataset(self.name, self.data_dir, {"train": _mnist_arrays(6, 0)})

  monkeypatch.setattr(sources, "network_available", lambda: True)
  monkeypatch.setattr(tfds, "builder", lambda name, **kw: (
      FakeBuilder(name, **kw) if kw.get("file_format") == "array_record" and not calls
      else real_builder(name, **kw)))
  root = tmp_path / "fresh"  # does not exist yet
  source = input_pipeline.load_split(_mnist_config(str(root), download=True), "train")
  assert calls == [("mnist", str(root), "array_record")]
  assert len(source) == 6 and source.get(np.arange(6))["image"].shape == (6, 28, 28, 1)
  input_pipeline.load_split(_mnist_config(str(root), download=True), "train")
  assert len(calls) == 1  # prepared once; the second run reads it


def test_missing_data_dir_is_named(tmp_path, no_network):
  config = _data(name="cifar10", data_dir=str(tmp_path / "nowhere"), image_size=32, channels=3)
  with pytest.raises(FileNotFoundError) as info:
    input_pipeline.load_split(config, "test")
  message = str(info.value)
  assert f"config.data.data_dir='{tmp_path / 'nowhere'}' does not exist" in message
  assert "tfds.builder('cifar10'" in message and "file_format='array_record'" in message


def test_tfrecord_copy_is_reported_as_unreadable_format(tmp_path, no_network):
  from hebm_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  folder = synthetic.write_tfds_dataset("mnist", str(tmp_path), {"train": _mnist_arrays(4, 0)})
  for name in os.listdir(folder):  # make it look like a default (TFRECORD) preparation
    if ".array_record-" in name:
      os.rename(os.path.join(folder, name),
                os.path.join(folder, name.replace(".array_record-", ".tfrecord-")))
  info_path = os.path.join(folder, "dataset_info.json")
  with open(info_path) as f:
    info = json.load(f)
  info["fileFormat"] = "tfrecord"
  with open(info_path, "w") as f:
    json.dump(info, f)
  with pytest.raises(FileNotFoundError) as error:
    input_pipeline.load_split(_mnist_config(str(tmp_path)), "train")
  message = str(error.value)
  assert "prepared as TFRECORD" in message and folder in message
  assert "file_format='array_record'" in message and "already prepared" not in message


# ---------------------------------------------------------------------------------------------
# Config validation (no disk).


@pytest.mark.parametrize("overrides,field,words", [
    (dict(name="imagenet"), "name", "'mnist', 'fashion_mnist', 'svhn_cropped'"),
    (dict(name="mnist", image_size=28, train_split="validation"), "train_split", "('train', 'test')"),
    (dict(name="celeb_a", channels=3, eval_split="extra"), "eval_split", "'validation'"),
    (dict(name="shapes3d", channels=3, eval_split="test"), "eval_split", "('train',)"),
    (dict(train_split="train[:"), "train_split", "cannot parse"),
    (dict(name="mnist_anomaly", held_out_digit=10), "held_out_digit", "0-9"),
    (dict(name="mnist_anomaly", held_out_digit=1.0), "held_out_digit", "0-9"),
    (dict(name="mnist_anomaly", held_out_digit=True), "held_out_digit", "0-9"),
    (dict(name="mnist", classes=(0, 10)), "classes", "0..9"),
    (dict(name="shapes3d", channels=3, eval_split="train", classes=(4,)), "classes", "0..3"),
    (dict(name="celeb_a", channels=3, classes=(0,)), "classes", "no labels"),
    (dict(name="mnist", channels=3), "channels", "1 channel"),
    (dict(name="cifar10", channels=1), "channels", "3 channel"),
    (dict(worker_count=-1), "worker_count", "non-negative"),
    (dict(prefetch=-2), "prefetch", "non-negative"),
    (dict(name="mnist", label_key="digit"), "label_key", "no label feature 'digit'"),
])
def test_validate_data_config_names_the_field(overrides, field, words):
  with pytest.raises(ConfigError) as info:
    input_pipeline.validate_data_config(_data(**overrides))
  assert str(info.value).startswith(f"config.data.{field}: ")
  assert words in str(info.value)


def test_validate_data_config_accepts_the_papers_settings(tmp_path):
  missing = str(tmp_path / "not-there")  # validation never looks at the disk
  for overrides in (
      dict(name="svhn_cropped", channels=3, train_split="extra", data_dir=missing),
      dict(name="mnist", classes=(0, 1, 2), train_split="train[:1000]", random_flip=True),
      dict(name="celeb_a", channels=3, image_size=128, random_flip=True, eval_split="validation"),
      dict(name="shapes3d", channels=3, eval_split="train[-1000:]", label_key="label_scale",
           classes=(7,)),
      dict(name="mnist_anomaly", held_out_digit=9, cache=True, worker_count=0, prefetch=0),
      dict(name="digits", train_split="train+test"),
  ):
    input_pipeline.validate_data_config(_data(**overrides))
