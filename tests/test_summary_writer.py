"""TensorBoard events without TensorFlow: `hebm_jax.summary_writer`, read back with tensorboard's
own event reader, and a training run in a process where `import tensorflow` fails."""

import io
import os
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
from PIL import Image

from hebm_jax import progress, summary_writer
from hebm_jax.data import sources
from hebm_jax.errors import ConfigError, LogDirError
from tests.conftest import compilation_cache_of_this_process

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(logdir):
  """{tag: (plugin name, [(step, tensor proto)])} through tensorboard's plugin event reader.

  `tensorboard.compat.notf` makes tensorboard use its own file reading even where TensorFlow is
  installed (as `tensorboard --logdir` does without it), instead of importing TensorFlow here.
  """
  sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
  from tensorboard.backend.event_processing import plugin_event_accumulator as pea  # pylint: disable=g-import-not-at-top
  acc = pea.EventAccumulator(str(logdir), size_guidance={pea.TENSORS: 0})
  acc.Reload()
  return {tag: (acc.SummaryMetadata(tag).plugin_data.plugin_name,
                [(e.step, e.tensor_proto) for e in acc.Tensors(tag)])
          for tag in acc.Tags()["tensors"]}


def test_scalars_images_texts_and_hparams_read_back_with_tensorboard(tmp_path):
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  grid = np.zeros((5, 7, 1), np.float32)
  grid[1, 2] = 1.0
  writer = summary_writer.AsyncWriter(summary_writer.SummaryWriter(str(tmp_path)))
  writer.write_hparams({"model.z_dims": "(2, 2, 4)", "train.batch_size": np.int64(20)})
  writer.write_scalars(1, {"train/loss": 1.5, "eval/mse": np.float32(0.25)})
  writer.write_scalars(2, {"train/loss": 1.25})
  writer.write_images(2, {"samples": grid[None]})
  writer.write_texts(2, {"notes": "hello"})
  writer.close()

  events = _read(tmp_path)
  assert {t: p for t, (p, _) in events.items()} == {
      "_hparams_/session_start_info": "hparams", "train/loss": "scalars", "eval/mse": "scalars",
      "samples": "images", "notes": "text"}
  loss = [(step, float(tensor_util.make_ndarray(t))) for step, t in events["train/loss"][1]]
  assert loss == [(1, 1.5), (2, 1.25)]
  (step, image), = events["samples"][1]
  width, height, png = tensor_util.make_ndarray(image)
  assert step == 2 and (int(width), int(height)) == (7, 5)
  decoded = np.asarray(Image.open(io.BytesIO(png)))
  assert decoded.shape == (5, 7) and decoded[1, 2] == 255 and decoded.sum() == 255


def test_an_unwritable_tensorboard_directory_is_named(tmp_path):
  afile = tmp_path / "events"
  afile.write_text("")
  with pytest.raises(LogDirError, match=rf"TensorBoard directory {afile} cannot be written"):
    summary_writer.check_writable(str(afile))
  with pytest.raises(LogDirError, match=rf"TensorBoard directory {afile}/eval cannot be written"):
    summary_writer.SummaryWriter(str(afile / "eval"))
  assert issubclass(LogDirError, ConfigError)  # main.py prints it as one `error:` line


def test_an_async_writer_raises_a_background_error_at_flush(tmp_path):
  writer = summary_writer.AsyncWriter(summary_writer.SummaryWriter(str(tmp_path)))
  writer.write_images(0, {"bad": np.zeros((2, 4, 4, 2))})  # two channels: not an image
  with pytest.raises(ValueError, match=r"image summary 'bad'"):
    writer.flush()
  writer.close()


def test_progress_reports_steps_per_sec_after_every_secs_and_at_the_last_step():
  class Recorder(summary_writer.NoOpWriter):
    def __init__(self):
      self.scalars = []

    def write_scalars(self, step, scalars):
      self.scalars.append((step, round(scalars["steps_per_sec"], 6), "uptime" in scalars))

  recorder = Recorder()
  report = progress.ReportProgress(num_train_steps=10, writer=recorder, every_secs=60.0)
  # (step, time): the first call starts the clock; 61 s later at step 4; the last step 10.
  calls = [(1, 0.0), (2, 30.0), (4, 61.0), (6, 100.0), (10, 110.0)]
  assert [report(step, t) for step, t in calls] == [False, False, True, False, True]
  assert recorder.scalars == [(4, round(3 / 61, 6), True), (10, round(6 / 49, 6), True)]


def test_download_without_tensorflow_names_the_prepare_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow", None)  # find_spec: not installed
  with pytest.raises(ConfigError, match=r'config\.data\.download=True: .*pip install -e "\.\[prepare\]"'):
    sources.require_tensorflow_to_prepare("mnist")


# TensorFlow as if it were not installed, in every Python process that has this directory on its
# path (main.py's re-exec included): the path finder no longer finds it, so `import tensorflow`
# raises ModuleNotFoundError and `importlib.util.find_spec` returns None. (A None entry in
# sys.modules would also stop the import, but tfds reads "'tensorflow' in sys.modules" as loaded.)
_NO_TENSORFLOW = textwrap.dedent("""\
    import importlib.machinery
    import sys


    class _PathFinderWithoutTensorFlow(importlib.machinery.PathFinder):
      @classmethod
      def find_spec(cls, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
          return None
        return super().find_spec(name, path, target)


    sys.meta_path[:] = [_PathFinderWithoutTensorFlow if f is importlib.machinery.PathFinder else f
                        for f in sys.meta_path]
    """)


@pytest.mark.slow
def test_main_trains_and_writes_events_when_tensorflow_cannot_be_imported(tmp_path):
  blocker = tmp_path / "no_tensorflow"
  blocker.mkdir()
  (blocker / "sitecustomize.py").write_text(_NO_TENSORFLOW)
  env = dict(os.environ, PYTHONPATH=f"{blocker}{os.pathsep}{REPO}")
  probe = subprocess.run(
      [sys.executable, "-c", "import importlib.util; assert importlib.util.find_spec('tensorflow') "
       "is None; import tensorflow"], env=env, cwd=REPO, capture_output=True, text=True)
  assert "ModuleNotFoundError: No module named 'tensorflow'" in probe.stderr, probe.stderr
  workdir = tmp_path / "run"
  # tiny_digits_config's model, sampler and batch sizes, so that the programs compiled by other
  # tests of this process load from the shared compilation cache.
  tiny = ["--config.model.z_dims=(2,2,4)", "--config.model.channels=(8,16,32)",
          "--config.prior.width=16", "--config.sampler.n_steps=5", "--config.train.batch_size=20",
          "--config.train.num_steps=2", "--config.logging.log_every_steps=1",
          "--config.checkpoint.every_steps=2", "--config.logging.image_every_steps=2",
          "--config.eval.every_steps=2", "--config.eval.batch_size=20",
          "--config.eval.num_batches=1", "--config.logging.num_images=4",
          "--config.data.worker_count=0",
          f"--config.train.compilation_cache={compilation_cache_of_this_process()}"]
  proc = subprocess.run([sys.executable, "main.py", "--config=configs/digits.py",
                         f"--workdir={workdir}", *tiny], env=env, cwd=REPO, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]
  events = _read(workdir)
  assert [s for s, _ in events["train/loss"][1]] == [1, 2]
  assert {"samples", "reconstructions", "hierarchical"} <= {
      t for t, (plugin, _) in events.items() if plugin == "images"}
  assert "eval/mse" in events
