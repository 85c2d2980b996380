"""The speed options of `config.train`: steps per dispatch, bf16 compute, XLA compiler options."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import svhn, svhn_fid
from hebm_jax import checkpointing, divergence, input_pipeline, train, xla_options
from hebm_jax.config_validation import ConfigError, validate_config
from tests.test_train import _max_abs_diff, _model_and_state


def _batches(config, num, batch_size):
  source = input_pipeline.load_split(config.data, "train")
  return [input_pipeline.train_batch(source, batch_size, 0, t)["image"] for t in range(num)]


def test_steps_per_dispatch_gives_the_numbers_of_single_steps(tiny_config):
  model, state = _model_and_state(tiny_config)
  images = _batches(tiny_config, 4, 8 * jax.local_device_count())
  key = jax.random.PRNGKey(5)
  sharding = checkpointing.local_replicated_sharding()

  single = train.make_p_train_step(model)
  s1 = jax.device_put(jax.device_get(state), sharding)
  per_step = []
  for x in images:
    s1, m = single(s1, train.shard_batch({"image": x}), key)
    per_step.append(jax.device_get(m))

  chunk = train.make_p_train_step(model, steps_per_call=2)
  s2 = jax.device_put(jax.device_get(state), sharding)
  chunked = []
  for t in (0, 2):
    stacked = train.shard_batch({"image": np.stack(images[t:t + 2])}, stacked=True)
    assert stacked["image"].shape[:3] == (jax.local_device_count(), 2, 8)
    s2, m = chunk(s2, stacked, key)
    chunked.append(jax.device_get(m))

  assert int(s1.step) == int(s2.step) == 4
  assert _max_abs_diff(s1.params, s2.params) < 1e-5
  assert _max_abs_diff(s1.opt_state_gi, s2.opt_state_gi) < 1e-5
  assert chunked[0]["loss"].shape == (2,)
  for i, m in enumerate(per_step):
    np.testing.assert_allclose(chunked[i // 2]["loss"][i % 2], m["loss"], rtol=1e-5)
    np.testing.assert_allclose(chunked[i // 2]["ebm_loss"][i % 2], m["ebm_loss"], rtol=1e-4,
                               atol=1e-6)


def test_stack_batches_follows_the_dispatch_grid():
  host = iter([{"image": np.full((2, 1), t)} for t in range(4, 10)])
  groups = list(train.stack_batches(host, start=4, num_steps=10, steps_per_dispatch=3))
  # Off the grid at 4: single steps to 6, a chunk 6-9, a single tail step to 10.
  assert [n for n, _ in groups] == [1, 1, 3, 1]
  assert groups[2][1]["image"].shape == (3, 2, 1)
  np.testing.assert_array_equal(groups[2][1]["image"][:, 0, 0], [6, 7, 8])
  assert [train.dispatch_size(s, 10, 3) for s in (0, 3, 6, 7, 8, 9)] == [3, 3, 3, 1, 1, 1]


def test_the_divergence_guard_splits_chunked_metrics_into_steps():
  guard = divergence.Guard(max_abs_ebm_loss=10.0)
  kept, skipped = guard.check([(2, {"loss": np.array([1.0, 2.0]), "ebm_loss": np.zeros(2)})])
  assert [m["loss"] for m in kept] == [1.0, 2.0] and skipped == 0
  with pytest.raises(divergence.DivergenceError, match=r"steps 3-6 \(first bad step 5\)") as e:
    guard.check([(4, {"loss": np.array([1.0, 1.0]), "ebm_loss": np.zeros(2)}),
                 (6, {"loss": np.array([np.nan, 1.0]), "ebm_loss": np.zeros(2)})])
  assert e.value.first_bad_step == 5


@pytest.mark.parametrize("field,value,message", [
    ("train.steps_per_dispatch", 0, "must be a positive integer"),
    ("logging.log_every_steps", 3, "not a multiple of train.steps_per_dispatch=2"),
    ("train.compute_dtype", "float16", "unknown dtype 'float16'"),
    ("train.xla_cpu_ynnpack", "no", "must be True or False, got 'no'"),
    ("checkpoint.every_steps", 3, "not a multiple of train.steps_per_dispatch=2"),
])
def test_bad_speed_options_are_named(tiny_config, field, value, message):
  tiny_config.train.steps_per_dispatch = 2
  tiny_config.checkpoint.every_steps = 2
  section, name = field.split(".")
  del tiny_config[section][name]   # past ConfigDict's own type check, as a config file can be
  tiny_config[section][name] = value
  with pytest.raises(ConfigError, match=f"config.{field}: .*{message}"):
    validate_config(tiny_config)


def _one_step(config, images):
  model, state = _model_and_state(config)
  return jax.jit(lambda s, b, k: train.train_step(model, s, b, k))(
      state, {"image": images}, jax.random.PRNGKey(3))


def test_bfloat16_compute_keeps_float32_state_and_a_close_loss(tiny_config):
  images = _batches(tiny_config, 1, 16)[0]
  f32, m32 = _one_step(tiny_config, images)
  tiny_config.train.compute_dtype = "bfloat16"
  bf16, m16 = _one_step(tiny_config, images)
  for tree in (bf16.params, bf16.opt_state_gi, bf16.opt_state_prior):
    assert {leaf.dtype for leaf in jax.tree.leaves(tree) if hasattr(leaf, "dtype")
            and jnp.issubdtype(leaf.dtype, jnp.floating)} == {jnp.dtype("float32")}
  # bf16 keeps 8 mantissa bits: the loss moves by about 2**-8 relative, not by more.
  np.testing.assert_allclose(m16["loss"], m32["loss"], rtol=2e-2)
  assert float(m16["loss"]) != float(m32["loss"])  # the option does change the arithmetic
  for k in ("encoder", "generator"):
    np.testing.assert_allclose(m16[f"grad_norm/{k}"], m32[f"grad_norm/{k}"], rtol=5e-2)


# ------------------------------------------------------------------------------------------------
# train.xla_cpu_ynnpack: XLA compiler options per compiled program.
# ------------------------------------------------------------------------------------------------


def _conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_config_field_selects_the_options_on_cpu_only(tiny_config):
  assert xla_options.for_config(tiny_config.train, "cpu") == {}
  tiny_config.train.xla_cpu_ynnpack = False
  assert xla_options.for_config(tiny_config.train, "cpu") == xla_options.YNNPACK_OFF
  assert xla_options.for_config(tiny_config.train, "gpu") == {}
  assert xla_options.for_config(tiny_config.train, "tpu") == {}
  del tiny_config.train["xla_cpu_ynnpack"]
  assert xla_options.for_config(tiny_config.train, "cpu") == {}   # older configs
  assert svhn.get_config().train.xla_cpu_ynnpack is False
  assert svhn_fid.get_config().train.xla_cpu_ynnpack is True


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the option names an XLA:CPU pass")
def test_the_option_reaches_xla_and_keeps_the_numbers():
  """By default XLA:CPU runs this convolution as a YNNPACK fusion; with the option it does not."""
  x = jax.random.normal(jax.random.PRNGKey(0), (32, 16, 16, 32))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 32, 32))
  default = jax.jit(_conv)
  wrapped = xla_options.compile_with(jax.jit(_conv), xla_options.YNNPACK_OFF)
  np.testing.assert_allclose(wrapped(x, w), default(x, w), rtol=1e-5, atol=1e-4)
  assert "ynn_fusion" in default.lower(x, w).compile().as_text()
  (program,) = wrapped.programs.values()
  assert "convolution(" in program.as_text() and "ynn_fusion" not in program.as_text()


def test_compile_with_compiles_once_per_signature():
  traces = []

  def f(x):
    traces.append(x.shape)
    return x * 2.0

  wrapped = xla_options.compile_with(jax.jit(f), {"xla_cpu_experimental_ynn_fusion_type": ""})
  for _ in range(3):
    np.testing.assert_array_equal(wrapped(jnp.ones(3)), 2.0)
  wrapped(jnp.ones(4))
  assert traces == [(3,), (4,)] and len(wrapped.programs) == 2
  assert xla_options.compile_with(jax.jit(f), {}) is not wrapped   # no options: fn itself
  plain = jax.jit(f)
  assert xla_options.compile_with(plain, {}) is plain


def test_an_option_xla_does_not_know_only_warns(caplog):
  wrapped = xla_options.compile_with(jax.jit(lambda x: x + 1.0), {"xla_no_such_option": "1"})
  with caplog.at_level("WARNING"):
    np.testing.assert_array_equal(wrapped(jnp.zeros(2)), 1.0)
  assert "xla_no_such_option" in caplog.text


def test_pmapped_step_with_the_option_matches_the_default(tiny_config):
  model, state = _model_and_state(tiny_config)
  (x,) = _batches(tiny_config, 1, 8 * jax.local_device_count())
  key = jax.random.PRNGKey(5)
  sharding = checkpointing.local_replicated_sharding()
  results = []
  for options in ({}, xla_options.YNNPACK_OFF):
    step = train.make_p_train_step(model, compiler_options=options)
    s = jax.device_put(jax.device_get(state), sharding)
    for _ in range(2):   # the second call reuses the program and the donated state
      s, m = step(s, train.shard_batch({"image": x}), key)
    results.append((s, jax.device_get(m)))
  assert len(step.programs) == 1
  (s1, m1), (s2, m2) = results
  assert int(s1.step) == int(s2.step) == 2
  np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=1e-5)
  assert _max_abs_diff(s1.params, s2.params) < 1e-5


def test_a_run_with_the_option_trains_evaluates_and_writes_images(tiny_config, tmp_path):
  """The trainer's step, eval step and image summaries all go through `compile_with`."""
  tiny_config.train.xla_cpu_ynnpack = False
  state = train.train_and_evaluate(tiny_config, str(tmp_path))
  assert int(state.step) == tiny_config.train.num_steps
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "6"]
  assert (tmp_path / "images" / "hierarchical_00000006.png").exists()


@pytest.mark.parametrize("form", ["conv", "lax"])
def test_benchmarked_conv_formulations_match_the_library_rule_and_are_undone(form):
  """`benchmarks.conv_formulations` times the step under other formulations: they must compute
  the same function (up to float rounding), and leave `layers` as it was."""
  from benchmarks import conv_formulations  # pylint: disable=g-import-not-at-top
  from hebm_jax.models import layers  # pylint: disable=g-import-not-at-top
  saved = (layers._conv_impl, layers.conv_2d, layers.conv_transpose_2d)  # pylint: disable=protected-access
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 16))
  down, up = layers.conv(8, 4, 2, "down"), layers.conv_transpose(3, 4, 2, "up")
  p_down = down.init(jax.random.PRNGKey(1), x)
  p_up = up.init(jax.random.PRNGKey(2), down.apply(p_down, x))
  f = lambda: up.apply(p_up, down.apply(p_down, x))  # pylint: disable=unnecessary-lambda-assignment
  want = f()
  with conv_formulations.formulation(form):
    assert (layers._conv_impl, layers.conv_2d, layers.conv_transpose_2d) != saved  # pylint: disable=protected-access
    got = f()
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  assert (layers._conv_impl, layers.conv_2d, layers.conv_transpose_2d) == saved  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="unknown formulation"):
    with conv_formulations.formulation("fft"):
      pass


def test_benchmarked_unrolled_chain_reaches_the_program_and_is_undone():
  """`benchmarks.langevin_unroll` rebinds the trainer's chain: the traced loop carries the unroll,
  the chain is the same, and `sampler.sample_prior` is restored afterwards."""
  from benchmarks import langevin_unroll  # pylint: disable=g-import-not-at-top
  from hebm_jax import models, sampler  # pylint: disable=g-import-not-at-top
  prior = models.EnergyPrior(num_layers=2, width=8)
  variables = prior.init(jax.random.PRNGKey(0), jnp.zeros((1, 5)))
  z0 = jax.random.normal(jax.random.PRNGKey(1), (3, 5))

  def chain():
    return sampler.sample_prior(prior, variables["params"], variables["batch_stats"], z0,
                                jax.random.PRNGKey(2), 6, 0.3)[0]

  def program():   # a fresh function each time: JAX caches traces per function
    return str(jax.make_jaxpr(lambda: chain())())  # pylint: disable=unnecessary-lambda

  original = sampler.sample_prior
  assert "unroll=3" not in program()
  with langevin_unroll.unrolled(3):
    assert "unroll=3" in program()
    got = chain()
  assert sampler.sample_prior is original
  np.testing.assert_allclose(got, chain(), rtol=1e-6, atol=1e-6)
