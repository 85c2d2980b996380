"""The performance suite: one table (and a JSON file) of training, sampling and network throughput.

    python -m benchmarks.run [--configs svhn,svhn_fid,mnist,digits] [--repeats 5] [--json PATH]
                             [--fid_batch 4] [--options svhn,svhn_fid] [--scaling 1,2,4,8]
                             [--no_torch]

Runs without TensorFlow (random images and weights; the configs' models), so the same command
runs on the GPU machine with `PYTHONPATH=.`. For each config:
  * training iteration (`train.train_step` jitted with the state donated, as the trainer runs it):
    compile s, median ms, images/s, the FLOP count of the lowered step (XLA's cost analysis
    before optimisation; after it, cuDNN convolutions count as none) and its share of the
    matmul peak measured below; every program is compiled with the XLA options the config
    selects (`xla_options.for_config`, e.g. `svhn`'s `train.xla_cpu_ynnpack=False` on CPU);
  * prior sampling: the config's K Langevin steps on a batch of chains, chains/s and us per step;
  * encoder and generator forward and forward+backward, ms; encoder inference images/s;
  * for `svhn` and `svhn_fid`, the same work in PyTorch written the way the authors' code does
    (`benchmarks/torch_reference.py`), when torch is installed, and the speed-up.
Then, for the --options configs, the step under each of `config.train`'s speed options
(steps_per_dispatch=4, compute_dtype=bfloat16, and train.xla_cpu_ynnpack flipped from the
config's value on CPU): ms per training step, compile s and the size of
XLA's temporary buffers (`memory_analysis`). Then the input pipeline (in-memory digits through
grain, images/s) and data-parallel scaling of the `svhn` step over 1/2/4/8 forced CPU devices
(one subprocess each, pmap, fixed global batch).
Timing: one first call (its time is the compile time) and two more warm-up calls, then the
median of --repeats calls, each synchronised (`block_until_ready` / `torch.cuda.synchronize`)
before the clock is read. Run it on an otherwise idle machine; the header prints hardware,
versions, thread settings and GLIBC_TUNABLES (`hebm_jax.host_memory`: like main.py, the suite
re-executes itself with huge-page malloc, for both sides).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

CONFIGS = ("svhn", "svhn_fid", "mnist", "digits")
TORCH_MODELS = ("svhn", "svhn_fid")


def timed(fn, repeats: int, warmup: int = 2) -> tuple[float, float]:
  """(seconds of the first call, median seconds of `repeats` calls after `warmup` more untimed
  ones); fn must synchronise. The extra warm-up calls keep first-touch costs (fresh host pages,
  allocator growth) out of the median: with 5 repeats they had put one `svhn` row 24 % above
  the same program timed later in the same run."""
  t0 = time.perf_counter()
  fn()
  first = time.perf_counter() - t0
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return first, float(np.median(times))


def matmul_peak(repeats: int, precision: str = "default") -> float:
  """Measured dense f32 matmul FLOP/s of the default device at `precision` ('default': what the
  models' f32 products and convolutions run at, TF32 on recent NVIDIA GPUs; 'highest': full
  f32)."""
  n = 2048 if jax.default_backend() == "cpu" else 8192
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: jnp.matmul(x, x, precision=precision))
  _, t = timed(lambda: jax.block_until_ready(f(a)), repeats)
  return 2 * n ** 3 / t


def peak_memory_mb() -> float:
  """Peak device memory where the backend reports it, else this process's peak RSS."""
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2 ** 20
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _model_and_state(name: str, train_options: dict | None = None):
  """Config `name` (with `train_options` set in `config.train`), its model and a fresh state."""
  from hebm_jax import train  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"configs.{name}").get_config()
  config.train.update(train_options or {})
  model = train.create_model(config, steps_per_epoch=1000)
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  state = jax.jit(lambda k: train.create_train_state(model, k, shape))(jax.random.PRNGKey(0))
  return config, model, state, shape


def _compiler_options(config) -> dict | None:
  from hebm_jax import xla_options  # pylint: disable=g-import-not-at-top
  return xla_options.for_config(config.train) or None


def step_timing(model, state, x, key, repeats: int, steps_per_call: int = 1,
                compiler_options: dict | None = None):
  """Times the jitted, state-donating train step (or `train_steps` over `steps_per_call` copies
  of batch `x`), compiled with `compiler_options`: compile s, ms per training step, XLA's FLOPs
  per step and its temporary-buffer size. Returns (timings, the state after the calls)."""
  from hebm_jax import train  # pylint: disable=g-import-not-at-top
  fn = train.train_step if steps_per_call == 1 else train.train_steps
  batch = {"image": x if steps_per_call == 1 else jnp.stack([x] * steps_per_call)}
  t0 = time.perf_counter()
  lowered = jax.jit(functools.partial(fn, model), donate_argnums=(0,)).lower(state, batch, key)
  compiled = lowered.compile(compiler_options)
  compile_s = time.perf_counter() - t0
  # The count of the program as written, before optimisation: after it, XLA:GPU's convolutions
  # are cuDNN custom calls that its cost analysis counts as no FLOPs (the svhn_fid step read 40
  # of its 805 GFLOP on an H100).
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  try:
    temp_mb = compiled.memory_analysis().temp_size_in_bytes / 2 ** 20
  except (AttributeError, NotImplementedError):
    temp_mb = float("nan")
  holder = [state]

  def call():
    holder[0], metrics = compiled(holder[0], batch, key)
    jax.block_until_ready(metrics)

  _, t = timed(call, repeats)
  return ({"step_compile_s": compile_s, "step_ms": 1e3 * t / steps_per_call,
           "flops": float((cost or {}).get("flops", 0.0)) / steps_per_call,
           "step_temp_mb": temp_mb}, holder[0])


OPTIONS = (("default", {}), ("steps_per_dispatch=4", {"steps_per_dispatch": 4}),
           ("compute_dtype=bfloat16", {"compute_dtype": "bfloat16"}))


def option_rows(name: str, batch: int, repeats: int) -> Iterator[dict]:
  """The train step of config `name` under each of `config.train`'s speed options, a row each
  as soon as it is timed."""
  options = list(OPTIONS)
  if jax.default_backend() == "cpu":
    flipped = not importlib.import_module(f"configs.{name}").get_config().train.xla_cpu_ynnpack
    options.append((f"xla_cpu_ynnpack={flipped}", {"xla_cpu_ynnpack": flipped}))
  for label, option in options:
    config, model, state, shape = _model_and_state(name, option)
    x = jax.random.uniform(jax.random.PRNGKey(1), (batch,) + shape, minval=-1.0, maxval=1.0)
    timing, _ = step_timing(model, state, x, jax.random.PRNGKey(2), repeats,
                            option.get("steps_per_dispatch", 1), _compiler_options(config))
    timing.pop("flops")
    yield {"config": name, "batch": batch, "option": label, **timing}


def jax_rows(name: str, batch: int, repeats: int, peak: float) -> dict:
  """Training, sampling and network timings of config `name` at `batch`."""
  from hebm_jax import sampler, train  # pylint: disable=g-import-not-at-top
  config, model, state, shape = _model_and_state(name)
  x = jax.random.uniform(jax.random.PRNGKey(1), (batch,) + shape, minval=-1.0, maxval=1.0)
  key = jax.random.PRNGKey(2)
  out = {"config": name, "batch": batch}
  options = _compiler_options(config)
  jit = functools.partial(jax.jit, compiler_options=options)

  timing, state = step_timing(model, state, x, key, repeats, compiler_options=options)
  flops = timing.pop("flops")
  out.update(timing, step_images_per_s=batch / (timing["step_ms"] / 1e3), step_gflop=flops / 1e9,
             step_flops_share_of_peak=flops / (timing["step_ms"] / 1e3) / peak if peak else 0.0)

  if model.prior is not None:
    z0 = jax.random.normal(jax.random.PRNGKey(3), (batch, model.latent_dim))
    sample = jit(lambda p, s, z, k: sampler.sample_prior(
        model.prior, p, s, z, k, model.n_steps, model.step_size)[0])
    _, t = timed(lambda: jax.block_until_ready(
        sample(state.params["prior"], state.sn_state, z0, key)), repeats)
    out.update(langevin_ms=1e3 * t, chains_per_s=batch / t, us_per_langevin_step=1e6 * t / model.n_steps)

  enc = train.network_variables(state, "encoder")
  gen = train.network_variables(state, "generator")
  means = model.encoder.apply(enc, x)[0]
  enc_f = jit(lambda p: model.encoder.apply(p, x)[0])
  enc_fb = jit(jax.grad(lambda p: sum(jnp.sum(m) for m in model.encoder.apply(p, x)[0])))
  gen_f = jit(lambda p: model.generator.apply(p, means))
  gen_fb = jit(jax.grad(lambda p: jnp.sum(model.generator.apply(p, means) ** 2) / batch))
  for label, fn, arg in (("encoder_f", enc_f, enc), ("encoder_fb", enc_fb, enc),
                         ("generator_f", gen_f, gen), ("generator_fb", gen_fb, gen)):
    _, t = timed(lambda fn=fn, arg=arg: jax.block_until_ready(fn(arg)), repeats)
    out[f"{label}_ms"] = 1e3 * t
  out["encoder_inference_images_per_s"] = batch / (out["encoder_f_ms"] / 1e3)
  out["peak_memory_mb"] = peak_memory_mb()
  return out


def torch_rows(name: str, batch: int, repeats: int) -> dict:
  """The same work in PyTorch, the authors' way (`torch_reference`)."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_reference as tr  # pylint: disable=g-import-not-at-top
  device = "cuda" if torch.cuda.is_available() else "cpu"
  ref = tr.build(name, device=device)
  x = torch.rand(batch, 3, 32, 32, device=device) * 2 - 1
  zs = tr.random_latents(ref, batch)

  def sync(fn):
    def run():
      fn()
      tr.sync(device)
    return run

  out = {"torch_device": device, "torch_threads": torch.get_num_threads()}
  for label, fn in (("step", lambda: tr.iteration(ref, x)),
                    ("langevin", lambda: tr.prior_langevin(ref, batch)),
                    ("encoder_f", lambda: tr.encoder_forward(ref, x)),
                    ("encoder_fb", lambda: tr.encoder_forward_backward(ref, x)),
                    ("generator_f", lambda: tr.generator_forward(ref, zs)),
                    ("generator_fb", lambda: tr.generator_forward_backward(ref, zs))):
    _, t = timed(sync(fn), repeats)
    out[f"torch_{label}_ms"] = 1e3 * t
  return out


def input_pipeline_row(seconds: float = 3.0) -> dict:
  """Images/s of the in-memory digits training iterator (grain, no decoding), batch 100."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from hebm_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from configs import digits  # pylint: disable=g-import-not-at-top
  config = digits.get_config()
  config.data.worker_count = 0
  source = input_pipeline.load_split(config.data, config.data.train_split)
  it = input_pipeline.train_iterator(source, config.data, 100, 0, 0, 10 ** 6)
  next(it)
  n, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < seconds:
    n += next(it)["image"].shape[0]
  del ml_collections
  return {"input_digits_images_per_s": n / (time.perf_counter() - t0)}


def scaling_worker(devices: int, batch: int, repeats: int) -> None:
  """Child process: the pmapped `svhn` step on `devices` forced CPU devices; prints JSON."""
  from hebm_jax import checkpointing, train  # pylint: disable=g-import-not-at-top
  config, model, state, shape = _model_and_state("svhn")
  state = jax.device_put(jax.device_get(state), checkpointing.local_replicated_sharding())
  p_step = train.make_p_train_step(model, compiler_options=_compiler_options(config))
  x = np.random.default_rng(0).uniform(-1, 1, (batch,) + shape).astype(np.float32)
  images = train.shard_batch({"image": x})
  holder = [state]

  def one():
    holder[0], metrics = p_step(holder[0], images, jax.random.PRNGKey(0))
    jax.block_until_ready(metrics)

  _, t = timed(one, repeats)
  print(json.dumps({"devices": jax.device_count(), "step_ms": 1e3 * t,
                    "images_per_s": batch / t}))


def scaling_rows(counts: list[int], batch: int, repeats: int) -> list[dict]:
  rows = []
  for n in counts:
    env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(n), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--_scaling_worker", str(n),
                           "--scaling_batch", str(batch), "--repeats", str(repeats)],
                          env=env, capture_output=True, text=True, check=False)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    rows.append(json.loads(lines[-1]) if lines else {"devices": n, "error": proc.stderr[-300:]})
  return rows


def _config_names() -> list[str]:
  folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
  return sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py") and f[0] != "_"
                and f != "default.py")


def check_config_names(parser: argparse.ArgumentParser, names: list[str]) -> None:
  """Exits through `parser.error` naming every entry of `names` that is not a file in configs/."""
  unknown = sorted(set(names) - set(_config_names()))
  if unknown:
    parser.error(f"unknown config(s) {', '.join(unknown)}; configs/ has "
                 f"{', '.join(_config_names())}")


def environment() -> dict:
  env = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
         "machine": platform.machine(), "processor": platform.processor(),
         "cpu_count": os.cpu_count(), "python": platform.python_version(),
         "jax": jax.__version__, "backend": jax.default_backend(),
         "device": str(jax.devices()[0].device_kind), "device_count": jax.device_count(),
         "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
         "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", "")}
  try:
    import flax  # pylint: disable=g-import-not-at-top
    env["flax"] = flax.__version__
  except ImportError:
    pass
  try:
    import torch  # pylint: disable=g-import-not-at-top
    env["torch"] = torch.__version__
    env["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():  # PyTorch's defaults, which the authors' code runs with
      env["torch_cuda_matmul_tf32"] = torch.backends.cuda.matmul.allow_tf32
      env["torch_cudnn_tf32"] = torch.backends.cudnn.allow_tf32
  except ImportError:
    env["torch"] = None
  return env


def format_table(results: dict) -> str:
  """The results as one plain-text table (and the scaling rows)."""
  cols = [("config", "config", "s"), ("batch", "batch", "d"), ("compile s", "step_compile_s", ".1f"),
          ("step ms", "step_ms", ".1f"), ("img/s", "step_images_per_s", ".0f"),
          ("% peak", "step_flops_share_of_peak", ".1%"), ("torch step ms", "torch_step_ms", ".1f"),
          ("speed-up", "speedup_step", ".2f"), ("langevin us/step", "us_per_langevin_step", ".0f"),
          ("torch langevin ms", "torch_langevin_ms", ".1f"), ("enc f/fb ms", "enc", "s"),
          ("gen f/fb ms", "gen", "s"), ("torch enc/gen fb ms", "torch_fb", "s"),
          ("peak MB", "peak_memory_mb", ".0f")]
  lines = [" | ".join(c[0] for c in cols)]
  for r in results["configs"]:
    r = dict(r)
    r["enc"] = f"{r['encoder_f_ms']:.1f}/{r['encoder_fb_ms']:.1f}"
    r["gen"] = f"{r['generator_f_ms']:.1f}/{r['generator_fb_ms']:.1f}"
    if "torch_step_ms" in r:
      r["torch_fb"] = f"{r['torch_encoder_fb_ms']:.1f}/{r['torch_generator_fb_ms']:.1f}"
    lines.append(" | ".join(format(r[k], f) if k in r else "-" for _, k, f in cols))
  env = results["environment"]
  highest = results.get("matmul_peak_highest_gflops")
  precision = f"default precision; {highest:.0f} at highest" if highest else "default precision"
  lines.append(f"matmul peak {results['matmul_peak_gflops']:.0f} GFLOP/s (f32, {precision}); "
               f"{env['device']} x{env['device_count']}, jax {env['jax']}, "
               f"torch {env.get('torch')}, GLIBC_TUNABLES={env.get('GLIBC_TUNABLES') or '(unset)'}")
  for r in results.get("options", []):
    lines.append(f"option: {r['config']} (batch {r['batch']}) {r['option']}: "
                 f"{r['step_ms']:.1f} ms/step, compile {r['step_compile_s']:.1f} s, "
                 f"XLA temporaries {r['step_temp_mb']:.0f} MB")
  for r in results.get("scaling", []):
    lines.append(f"scaling: {r.get('devices')} CPU devices: "
                 + (f"{r['step_ms']:.1f} ms/step, {r['images_per_s']:.0f} images/s"
                    if "step_ms" in r else r.get("error", "")))
  if "input_digits_images_per_s" in results:
    lines.append(f"input pipeline (digits, in memory, batch 100): "
                 f"{results['input_digits_images_per_s']:.0f} images/s")
  return "\n".join(lines)


def print_rows(title: str, results: dict, columns: list[tuple[str, str, str]]) -> None:
  """Prints `results['rows']` as one table: a title line with the device and jax version, then
  a column per (header, key, format spec); a row without the key shows '-'."""
  env = results["environment"]
  print(f"{title}; {env['device']}, jax {env['jax']}")
  print(" | ".join(c[0] for c in columns))
  for r in results["rows"]:
    print(" | ".join(format(r[k], f) if k in r else "-" for _, k, f in columns))


def default_batch(name: str, fid_batch: int = 0, batch: int = 0) -> int:
  """The batch timed for config `name`: `fid_batch` for svhn_fid (0: 4 on CPU, as in the
  issue's measurement, else 100), else `batch` or the config's train.batch_size."""
  if name == "svhn_fid":
    return fid_batch or (4 if jax.default_backend() == "cpu" else 100)
  return batch or importlib.import_module(f"configs.{name}").get_config().train.batch_size


def write_json(path: str, results: dict) -> None:
  """Writes `results` to `path` (called after each part, so a run cut short keeps what it has)."""
  with open(path, "w") as f:
    json.dump(results, f, indent=1)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default=",".join(CONFIGS))
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--batch", type=int, default=0, help="0: each config's train.batch_size")
  parser.add_argument("--fid_batch", type=int, default=0,
                      help="svhn_fid batch; 0: 4 on CPU (as in the issue's measurement), else 100")
  parser.add_argument("--options", default="svhn,svhn_fid",
                      help="configs whose step is also timed with each of config.train's speed "
                           "options (steps_per_dispatch, compute_dtype); empty to skip")
  parser.add_argument("--scaling", default="1,2,4,8", help="CPU device counts; empty to skip")
  parser.add_argument("--scaling_batch", type=int, default=96)
  parser.add_argument("--no_torch", action="store_true")
  parser.add_argument("--json", default="")
  parser.add_argument("--_scaling_worker", type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args._scaling_worker:  # pylint: disable=protected-access
    scaling_worker(args._scaling_worker, args.scaling_batch, args.repeats)  # pylint: disable=protected-access
    return

  names = [c for c in args.configs.split(",") if c]
  option_names = [c for c in args.options.split(",") if c]
  check_config_names(parser, names + option_names)

  def batch_of(name):
    return default_batch(name, args.fid_batch, args.batch)

  def save():
    if args.json:
      write_json(args.json, results)

  results = {"environment": environment(), "matmul_peak_gflops": matmul_peak(args.repeats) / 1e9}
  if jax.default_backend() != "cpu":
    results["matmul_peak_highest_gflops"] = matmul_peak(args.repeats, "highest") / 1e9
  peak = results["matmul_peak_gflops"] * 1e9
  rows = results["configs"] = []
  for name in names:
    batch = batch_of(name)
    row = jax_rows(name, batch, args.repeats, peak)
    if name in TORCH_MODELS and not args.no_torch:
      try:
        row.update(torch_rows(name, batch, args.repeats))
        row["speedup_step"] = row["torch_step_ms"] / row["step_ms"]
      except ImportError:
        row["torch_step_ms_note"] = "torch not installed"
    rows.append(row)
    save()
    print(f"{name}: step {row['step_ms']:.1f} ms", flush=True)
  results["options"] = []
  for name in option_names:
    for row in option_rows(name, batch_of(name), args.repeats):
      results["options"].append(row)
      save()
  try:
    results.update(input_pipeline_row())
  except ImportError as e:  # grain or scikit-learn missing (the GPU machine)
    results["input_pipeline_note"] = f"skipped: {e}"
  if args.scaling and jax.default_backend() == "cpu":
    results["scaling"] = scaling_rows([int(n) for n in args.scaling.split(",")],
                                      args.scaling_batch, args.repeats)
  save()
  print(format_table(results))


if __name__ == "__main__":
  from hebm_jax import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.reexec_with_hugepages()  # measure what main.py runs (both sides share it)
  main()
