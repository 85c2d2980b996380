"""Workdirs given as object-store URLs: the files a run writes beside its checkpoints go there.

Cloud Storage is simulated with `etils.epath.testing.mock_epath`, which sends every gs:// call to
a local directory; the point is that no code path opens a URL with the local file API (which
would create a directory named 'gs:' under the current one) or mangles it with `abspath`.
"""

import json
import os

import numpy as np
import pytest
from etils.epath import gpath
from etils.epath import testing as epath_testing
from PIL import Image

from hebm_jax import checkpointing, divergence, fileio, visualization
from hebm_jax.data import sources
from hebm_jax.evaluation import fid, results


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  """(url prefix, local directory it maps to); the cwd is an empty directory to catch strays."""
  root = tmp_path / "store"
  root.mkdir()
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)

  def local(path):
    path = os.fspath(path)
    if path.startswith(str(root)):  # the local backend calling itself with a mapped path
      return path
    assert path.startswith("gs://"), path
    return str(root / path[len("gs://"):])

  def one(fn, path, *args, **kwargs):
    return fn(local(path), *args, **kwargs)

  def two(fn, src, dst, *args, **kwargs):
    return fn(local(src), local(dst), *args, **kwargs)

  # With TensorFlow installed epath sends gs:// to tf.io.gfile, past the mock; this keeps it on
  # the mocked backend.
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
  mocks = {name: one for name in ("open", "exists", "isdir", "listdir", "makedirs", "mkdir",
                                  "remove", "rmtree", "stat")}
  def glob(fn, pattern):
    return [f"gs://{os.path.relpath(p, root)}" for p in fn(local(pattern))]

  mocks.update(rename=two, replace=two, copy=two, glob=glob)
  with epath_testing.mock_epath(**mocks):
    yield "gs://bucket/run", root / "bucket" / "run"
  assert os.listdir(cwd) == [], "a URL was written through the local file API"


def test_urls_stay_urls_and_local_paths_become_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert fileio.is_remote("gs://b/run") and not fileio.is_remote("runs/x")
  assert checkpointing.checkpoint_dir("gs://b/run") == "gs://b/run/checkpoints"
  assert checkpointing.checkpoint_dir("runs/x") == str(tmp_path / "runs" / "x" / "checkpoints")
  assert fileio.absolute("s3://b/run") == "s3://b/run"


def test_run_state_round_trips_through_a_bucket(bucket):
  url, local = bucket
  assert divergence.load_run_state(url) == {"restores": 0}
  divergence.save_run_state(url, {"restores": 2})
  assert json.loads((local / "run_state.json").read_text()) == {"restores": 2}
  assert divergence.load_run_state(url) == {"restores": 2}


def test_png_is_written_into_the_bucket(bucket):
  url, local = bucket
  grid = np.linspace(0.0, 1.0, 8 * 6 * 3, dtype=np.float32).reshape(8, 6, 3)
  visualization.save_png(grid, f"{url}/images/samples_00000010.png", scale=2)
  with Image.open(local / "images" / "samples_00000010.png") as image:
    pixels = np.asarray(image)
  assert pixels.shape == (16, 12, 3)
  np.testing.assert_array_equal(pixels[::2, ::2], (grid * 255 + 0.5).astype(np.uint8))


def test_fid_statistics_round_trip_through_a_bucket(bucket):
  url, local = bucket
  mu, sigma = np.arange(3.0), np.eye(3) * 2.0
  fid.save_statistics(f"{url}/stats/svhn.npz", mu, sigma, dataset="svhn", split="test",
                      num_images=10, image_shape=(32, 32, 3), implementation="x")
  assert (local / "stats" / "svhn.npz").exists()
  stats = fid.load_statistics(f"{url}/stats/svhn.npz", dataset="svhn", split="test",
                              image_shape=(32, 32, 3))
  np.testing.assert_array_equal(stats.mu, mu)
  np.testing.assert_array_equal(stats.sigma, sigma)
  with pytest.raises(FileNotFoundError, match="gs://"):
    fid.load_statistics(f"{url}/stats/none.npz", dataset="svhn", split="test",
                        image_shape=(32, 32, 3))


def _record(steps, values):
  """An evaluation record as `driver.run_evaluation` writes it (the fields merging reads)."""
  return {"checkpoint_steps": steps, "results": values, "settings": {}, "figures": [],
          "per_checkpoint": {step: values for step in steps}}


def test_eval_results_merge_and_set_aside_in_a_bucket(bucket):
  url, local = bucket
  path = f"{url}/eval/results_00000100.json"
  results.write_json(path, results.merge_with_existing(path, _record([100], {"mse": 0.5})))
  results.write_json(path, results.merge_with_existing(path, _record([100], {"fid": 30.0})))
  saved = json.loads((local / "eval" / "results_00000100.json").read_text())
  assert saved["results"] == {"mse": 0.5, "fid": 30.0}
  # Results of other checkpoints are moved aside under a time stamp, not overwritten.
  other = _record([50, 100], {"mse": 0.4})
  results.write_json(path, results.merge_with_existing(path, other))
  names = sorted(os.listdir(local / "eval"))
  assert len(names) == 2 and names[1] == "results_00000100.json", names
  assert json.loads((local / "eval" / names[0]).read_text())["results"] == saved["results"]


def test_prepared_tfds_copies_are_found_in_a_bucket(bucket):
  _, local = bucket
  version = local.parent / "tfds" / "mnist" / "3.0.1"
  version.mkdir(parents=True)
  (version / "dataset_info.json").write_text("{}")
  (version / "mnist-train.array_record-00000-of-00001").write_bytes(b"")
  old = local.parent / "tfds" / "mnist" / "1.0.0"
  old.mkdir()
  (old / "dataset_info.json").write_text("{}")
  (old / "mnist-train.tfrecord-00000-of-00001").write_bytes(b"")
  assert sources._prepared_copies("gs://bucket/tfds", "mnist") == [  # pylint: disable=protected-access
      ("gs://bucket/tfds/mnist/1.0.0", "tfrecord"), ("gs://bucket/tfds/mnist/3.0.1", "array_record")]
  assert sources._prepared_copies("gs://bucket/tfds", "svhn_cropped") == []  # pylint: disable=protected-access


def test_local_writes_replace_the_file_whole(tmp_path):
  path = str(tmp_path / "deep" / "dir" / "state.json")
  fileio.write_text(path, "old")
  fileio.write_text(path, "new")
  assert fileio.read_text(path) == "new"
  assert os.listdir(tmp_path / "deep" / "dir") == ["state.json"]  # no temporary left behind


def test_runs_over_seeds_are_read_from_a_bucket(bucket):
  from hebm_jax.evaluation import seeds  # pylint: disable=g-import-not-at-top
  url, _ = bucket
  for prior, z3 in (("ebm", 0.7), ("gaussian", 0.6)):
    results.write_json(f"{url}/out/table1_{prior}_s5/eval/results_00000100.json",
                       _record([100], {"latent_classifier/z3": z3}))
  runs = seeds.load_runs(f"{url}/out")
  assert [(r.prior, r.seed, r.results["latent_classifier/z3"]) for r in runs] == [
      ("ebm", 5, 0.7), ("gaussian", 5, 0.6)]
  assert seeds.main(["seeds", f"{url}/out"]) == 0
