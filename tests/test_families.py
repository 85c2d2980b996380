"""Tests of the VLAE / pro-VLAE model families ('vlae_small', 'vlae_large', 'provlae').

Architectures: REFERENCE Sec. 6.1 (VLAE SmallLayers / LargeLayers) and 6.2 (pro-VLAE 3DShapes).
Parameter counts are checked against counts computed by hand from each family's layer list.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from hebm_jax import models
from hebm_jax.models import FAMILIES, vlae

# Tiny widths for forward passes, at each family's default image size and channels.
TINY = {
    "vlae_small": dict(image_size=28, channels=1, z_dims=(2, 3, 2), widths=(4, 6, 10)),
    "vlae_large": dict(image_size=64, channels=3, z_dims=(2, 3, 2, 4), widths=(3, 4, 5, 6, 7)),
    "provlae": dict(image_size=64, channels=3, z_dims=(3, 2, 3), widths=(4, 9)),
}
NAMES = sorted(TINY)


def _config(family, image_size, channels, z_dims, widths, batch_norm=False):
  config = default.get_config()
  config.model.family = family
  config.data.image_size = image_size
  config.data.channels = channels
  config.model.z_dims = tuple(z_dims)
  config.model.channels = tuple(widths)
  config.model.batch_norm = batch_norm
  return config


def _tiny_config(family, batch_norm=False, **overrides):
  return _config(family, batch_norm=batch_norm, **{**TINY[family], **overrides})


def _count(tree):
  return int(sum(np.prod(np.shape(a)) for a in jax.tree_util.tree_leaves(tree)))


def _inputs(config, batch=3, seed=0):
  size, ch = config.data.image_size, config.data.channels
  keys = jax.random.split(jax.random.PRNGKey(seed), len(config.model.z_dims) + 1)
  x = jax.random.uniform(keys[0], (batch, size, size, ch), minval=-1.0, maxval=1.0)
  zs = [jax.random.normal(k, (batch, d)) for k, d in zip(keys[1:], config.model.z_dims)]
  return x, zs


def _filled(module, *args, seed=0):
  """Variables of `module` with the init's shapes, filled with cheap numpy draws.

  Avoids compiling the initialisers on CPU; BN running statistics start as flax's (mean 0, var 1).
  """
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *args)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if "'batch_stats'" in name:
      return jnp.full(leaf.shape, 1.0 if name.endswith("['var']") else 0.0, leaf.dtype)
    fan_in = max(int(np.prod(leaf.shape[:-1])), 1)
    return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _shape_counts(config, output="tanh"):
  """(encoder params, generator params, encoder variables, generator variables) via eval_shape."""
  encoder, generator = FAMILIES[config.model.family].build(config, output)
  size, ch = config.data.image_size, config.data.channels
  x = jax.ShapeDtypeStruct((2, size, size, ch), jnp.float32)
  zs = [jax.ShapeDtypeStruct((2, d), jnp.float32) for d in config.model.z_dims]
  enc_vars = jax.eval_shape(encoder.init, jax.random.PRNGKey(0), x)
  gen_vars = jax.eval_shape(generator.init, jax.random.PRNGKey(0), zs)
  return _count(enc_vars["params"]), _count(gen_vars["params"]), enc_vars, gen_vars


@pytest.fixture(scope="module", params=[(name, bn) for name in NAMES for bn in (False, True)],
                ids=lambda p: f"{p[0]}-bn{int(p[1])}")
def built(request):
  """A tiny model of each family, with and without batch norm, initialised."""
  family, batch_norm = request.param
  config = _tiny_config(family, batch_norm)
  encoder, generator = FAMILIES[family].build(config, "sigmoid")
  x, zs = _inputs(config)
  enc_vars = _filled(encoder, x, seed=1)
  gen_vars = _filled(generator, zs, seed=2)
  return dict(config=config, encoder=encoder, generator=generator, x=x, zs=zs, enc_vars=enc_vars,
              gen_vars=gen_vars, batch_norm=batch_norm,
              enc_apply=jax.jit(encoder.apply, static_argnames=("train", "mutable")),
              gen_apply=jax.jit(generator.apply,
                                static_argnames=("train", "return_logits", "mutable")))


# --------------------------------------------------------------------------------------------------
# Registry and interface


def test_families_registered():
  for name in NAMES:
    assert name in FAMILIES
    assert FAMILIES[name].description
  config = _tiny_config("provlae")
  config.objective.likelihood = "bernoulli"
  encoder, generator, _ = models.build_models(config)
  assert isinstance(encoder, models.provlae.ProEncoder)
  assert generator.output == "sigmoid"
  assert generator.image_size == 64 and generator.image_channels == 3


def test_build_reads_config():
  config = _tiny_config("vlae_small", batch_norm=True)
  config.model.encoder_negative_slope = 0.1
  config.model.generator_negative_slope = 0.3
  encoder, generator = FAMILIES["vlae_small"].build(config, "tanh")
  assert encoder.negative_slope == 0.1 and generator.negative_slope == 0.3
  assert encoder.batch_norm and generator.batch_norm
  assert encoder.bn_axis_name is None and generator.bn_axis_name is None
  assert tuple(generator.z_dims) == (2, 3, 2) and tuple(generator.channels) == (4, 6, 10)
  assert generator.image_size == 28 and generator.image_channels == 1
  assert generator.output == "tanh"


def test_output_shapes(built):
  c = built["config"]
  means, logvars = built["enc_apply"](built["enc_vars"], built["x"])
  batch = built["x"].shape[0]
  assert [m.shape for m in means] == [(batch, d) for d in c.model.z_dims]
  assert [v.shape for v in logvars] == [(batch, d) for d in c.model.z_dims]
  image = built["gen_apply"](built["gen_vars"], built["zs"])
  size = c.data.image_size
  assert image.shape == (batch, size, size, c.data.channels)
  assert bool(jnp.all(jnp.abs(image) <= 1.0))
  assert all(bool(jnp.all(jnp.isfinite(a))) for a in means + logvars)


def test_logits_relation(built):
  image = built["gen_apply"](built["gen_vars"], built["zs"])
  logits = built["gen_apply"](built["gen_vars"], built["zs"], return_logits=True)
  assert not np.allclose(image, logits)
  np.testing.assert_allclose(image, 2.0 * jax.nn.sigmoid(logits) - 1.0, atol=1e-6)


def test_every_code_influences_output(built):
  base = built["gen_apply"](built["gen_vars"], built["zs"], return_logits=True)
  for l in range(len(built["zs"])):
    zs = list(built["zs"])
    zs[l] = zs[l] + 1.0
    out = built["gen_apply"](built["gen_vars"], zs, return_logits=True)
    assert float(jnp.max(jnp.abs(out - base))) > 1e-4, f"layer {l}'s code has no effect"


def test_batch_stats_collection(built):
  for variables in (built["enc_vars"], built["gen_vars"]):
    if built["batch_norm"]:
      assert set(variables) == {"params", "batch_stats"}
    else:
      assert set(variables) == {"params"}


def _bn_modes(apply, variables, inputs, others):
  """Checks train/eval semantics of batch norm for one module.

  `others`: `inputs` with every example but the first replaced (same shapes, so no recompiling).
  """
  flat = lambda t: jnp.concatenate([jnp.ravel(a) for a in jax.tree_util.tree_leaves(t)])
  first = lambda t: flat(jax.tree_util.tree_map(lambda a: a[:1], t))
  out_train, updates = apply(variables, inputs, train=True, mutable=("batch_stats",))
  old, new = variables["batch_stats"], updates["batch_stats"]
  changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), old, new)
  assert all(jax.tree_util.tree_leaves(changed)), "train=True left some running statistics unchanged"
  updated = {**variables, "batch_stats": new}
  out_eval = apply(updated, inputs, train=False)
  assert float(jnp.max(jnp.abs(flat(out_train) - flat(out_eval)))) > 1e-3
  # Evaluation normalises with the running averages: an example's output ignores the others ...
  np.testing.assert_allclose(first(apply(updated, others, train=False)), first(out_eval),
                             rtol=1e-5, atol=1e-6)
  # ... which is not true with batch statistics (so the check above can fail).
  out_others_train, _ = apply(updated, others, train=True, mutable=("batch_stats",))
  assert not np.allclose(first(out_others_train), first(out_train), atol=1e-3)


def test_batch_norm_train_and_eval(built):
  if not built["batch_norm"]:
    pytest.skip("batch norm off")
  enc_apply = lambda v, x, train, **kw: built["enc_apply"](v, x, train=train, **kw)
  gen_apply = lambda v, zs, train, **kw: built["gen_apply"](v, zs, train=train, **kw)
  replace = lambda a: a.at[1:].set(2.0 * a[1:] + 0.5)
  _bn_modes(enc_apply, built["enc_vars"], built["x"], replace(built["x"]))
  _bn_modes(gen_apply, built["gen_vars"], built["zs"], [replace(z) for z in built["zs"]])


def test_without_batch_norm_train_flag_is_inert(built):
  if built["batch_norm"]:
    pytest.skip("batch norm on")
  a = built["gen_apply"](built["gen_vars"], built["zs"], train=True)
  b = built["gen_apply"](built["gen_vars"], built["zs"], train=False)
  np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("family", NAMES)
def test_bn_axis_name_averages_over_devices(family):
  """With bn_axis_name, each 'device' normalises with the statistics of the global batch."""
  config = _tiny_config(family, batch_norm=True, image_size=16)
  encoder, _ = FAMILIES[family].build(config, "tanh")
  x, _ = _inputs(config, batch=4)
  variables = _filled(encoder, x)
  whole, stats = jax.jit(lambda v, x: encoder.apply(v, x, train=True, mutable=("batch_stats",)))(
      variables, x)
  sharded = encoder.clone(bn_axis_name="devices")
  run = lambda xs: sharded.apply(variables, xs, train=True, mutable=("batch_stats",))
  per_device, per_stats = jax.jit(jax.vmap(run, axis_name="devices"))(x.reshape(2, 2, *x.shape[1:]))
  for a, b in zip(jax.tree_util.tree_leaves(per_device), jax.tree_util.tree_leaves(whole)):
    np.testing.assert_allclose(a.reshape(b.shape), b, rtol=1e-4, atol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(per_stats), jax.tree_util.tree_leaves(stats)):
    np.testing.assert_allclose(a[0], b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(a[1], b, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Parameter counts by hand


def _dense(i, o):
  return i * o + o


def _conv(i, o, k):
  return k * k * i * o  # bias-free


def _head(i, d):
  return 2 * _dense(i, d)


def _small_counts(h, c, z, widths, bn):
  """vlae_small: (encoder, generator) from the layer list in `vlae.SmallEncoder/SmallGenerator`."""
  c1, c2, f = widths
  s = h // 4
  top = len(z) - 1
  off = (lambda n: n) if bn else (lambda n: 0)  # BN offset (no scale, as VLAE)
  enc = _conv(c, c1, 4) + _conv(c1, c2, 4) + off(c1 + c2) + _head(s * s * c2, z[0])       # ladder0
  enc += _conv(c, c1, 4) + _conv(c1, c2, 4) + off(c1 + c2) + _dense(s * s * c2, f)        # trunk0
  for l in range(1, top + 1):
    enc += 2 * _dense(f, f) + off(2 * f) + _head(f, z[l])                                 # ladder_l
    if l < top:
      enc += 3 * _dense(f, f) + off(2 * f)                                                # trunk_l
  gen = _dense(z[top], f) + 2 * _dense(f, f) + off(2 * f)                                  # gen_top
  for l in range(top - 1, -1, -1):
    gen += _dense(z[l], f) + off(f) + f                                                   # inject + gate
    if l > 0:
      gen += 2 * _dense(f, f) + _dense(f, f) + off(2 * f)
  gen += _dense(f, s * s * c2) + off(s * s * c2) + _conv(c2, c1, 4) + off(c1) + _conv(c1, c, 4)
  return enc, gen


def _large_counts(h, c, z, widths, bn):
  """vlae_large: (encoder, generator) from the layer list in `vlae.LargeEncoder/LargeGenerator`."""
  c1, c2, c3, c4, c5 = widths
  off = (lambda n: n) if bn else (lambda n: 0)
  stage0 = _conv(c, c1, 4) + _conv(c1, c1, 3) + off(2 * c1)
  stage1 = _conv(c1, c2, 4) + _conv(c2, c2, 3) + _conv(c2, c3, 4) + off(2 * c2 + c3)
  stage2 = _conv(c3, c3, 3) + _conv(c3, c4, 4) + _conv(c4, c4, 3) + off(c3 + 2 * c4)
  s2, s8, s16 = h // 2, h // 8, h // 16
  enc = 2 * (stage0 + stage1 + stage2)  # ladder + trunk
  enc += _head(s2 * s2 * c1, z[0]) + _head(s8 * s8 * c3, z[1]) + _head(s16 * s16 * c4, z[2])
  enc += _dense(s16 * s16 * c4, c5) + _dense(c5, c5) + off(2 * c5) + _head(c5, z[3])
  gen = _dense(z[3], c5) + _dense(c5, c5) + _dense(c5, s16 * s16 * c4) + off(2 * c5 + s16 * s16 * c4)
  gen += _dense(z[2], s16 * s16 * c4) + off(s16 * s16 * c4)
  gen += _conv(2 * c4, c4, 3) + _conv(c4, c3, 4) + _conv(c3, c3, 3) + off(c4 + 2 * c3)
  gen += _dense(z[1], s8 * s8 * c3) + off(s8 * s8 * c3)
  gen += _conv(2 * c3, c2, 4) + _conv(c2, c2, 3) + _conv(c2, c1, 4) + off(2 * c2 + c1)
  gen += _dense(z[0], s2 * s2 * c1) + off(s2 * s2 * c1)
  gen += _conv(2 * c1, c1, 4) + off(c1) + _conv(c1, c, 3)
  return enc, gen


def _pro_counts(h, c, z, widths, bn):
  """provlae: (encoder, generator) from the layer list in `provlae.ProEncoder/ProGenerator`."""
  cw, f = widths
  bnp = (lambda n: 2 * n) if bn else (lambda n: 0)  # BN scale and offset (tf.layers)
  enc = gen = 0
  for l, d in enumerate(z):
    s = h // 2 ** (l + 2)
    enc += _conv(c if l == 0 else cw, cw, 4) + bnp(cw)                                     # trunk_l
    enc += _conv(cw, cw, 4) + bnp(cw) + _dense(s * s * cw, f) + bnp(f) + _head(f, d)       # ladder_l
    gen += _dense(d, f) + bnp(f) + _dense(f, s * s * cw) + bnp(s * s * cw)
    gen += _conv(cw if l == len(z) - 1 else 2 * cw, cw, 4) + bnp(cw)
  gen += _conv(cw, c, 4)
  return enc, gen


HAND = {"vlae_small": _small_counts, "vlae_large": _large_counts, "provlae": _pro_counts}

COUNT_CASES = [
    ("vlae_small", 28, 1, (2, 2, 2), (64, 128, 1024)),   # VLAE MNIST
    ("vlae_small", 28, 1, (2, 2, 2), (24, 48, 352)),     # ~3.2M (paper's F-MNIST size)
    ("vlae_small", 32, 3, (2, 3, 4, 5), (5, 7, 11)),
    ("vlae_large", 64, 3, (10, 10, 10, 10), (64, 128, 256, 512, 1024)),  # VLAE CelebA
    ("vlae_large", 32, 1, (1, 2, 3, 4), (3, 5, 6, 7, 9)),
    ("provlae", 64, 3, (3, 3, 3), (32, 256)),            # pro-VLAE 3DShapes
    ("provlae", 32, 1, (2, 4), (5, 7)),
]


@pytest.mark.parametrize("bn", [False, True], ids=["bn0", "bn1"])
@pytest.mark.parametrize("case", COUNT_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{len(c[3])}x")
def test_parameter_counts_by_hand(case, bn):
  family, h, c, z, widths = case
  config = _config(family, h, c, z, widths, batch_norm=bn)
  assert FAMILIES[family].check(config) == []
  enc, gen, _, _ = _shape_counts(config)
  assert (enc, gen) == HAND[family](h, c, z, widths, bn)


def test_reported_parameter_counts():
  """The numbers quoted in the docs (batch norm off)."""
  fmnist = _config("vlae_small", 28, 1, (2, 2, 2), (24, 48, 352))
  enc, gen, _, _ = _shape_counts(fmnist)
  assert (enc, gen) == (1_747_916, 1_474_224)
  assert abs(enc + gen - 3.2e6) / 3.2e6 < 0.03
  assert sum(_shape_counts(_config("vlae_small", 28, 1, (2, 2, 2), (64, 128, 1024)))[:2]) == 25_888_396
  assert sum(_shape_counts(_config("vlae_large", 64, 3, (10,) * 4,
                                   (64, 128, 256, 512, 1024)))[:2]) == 42_354_448
  assert sum(_shape_counts(_config("provlae", 64, 3, (3, 3, 3), (32, 256)))[:2]) == 5_691_154


def test_vlae_gates_start_at_vlae_value():
  config = _tiny_config("vlae_small")
  _, generator = FAMILIES["vlae_small"].build(config, "tanh")
  _, zs = _inputs(config)
  params = jax.jit(generator.init)(jax.random.key(0, impl="rbg"), zs)["params"]
  gates = {k: v for k, v in params.items() if k.endswith("_gate")}
  assert sorted(gates) == ["gen0_gate", "gen1_gate"]  # one per merged (non-top) layer
  for gate in gates.values():
    assert gate.shape == (10,)
    np.testing.assert_array_equal(gate, np.full((10,), vlae.GATE_INIT, np.float32))
  assert vlae.GATE_INIT == 0.1


def test_provlae_batch_norm_follows_activation():
  """pro-VLAE: activation then BN (scale and offset); VLAE: BN (offset only) then activation."""
  block = vlae.Block("dense", 16, activation="elu", batch_norm=True, bn_after_activation=True,
                     bn_scale=True)
  x = jax.random.normal(jax.random.PRNGKey(0), (64, 8)) * 3.0
  variables = block.init(jax.random.PRNGKey(1), x, train=True)
  out, _ = block.apply(variables, x, train=True, mutable=("batch_stats",))
  np.testing.assert_allclose(jnp.mean(out, 0), 0.0, atol=1e-4)  # normalised last
  assert set(variables["params"]["norm"]["bn"]) == {"scale", "bias"}
  vlae_block = vlae.Block("dense", 16, activation="leaky_relu", negative_slope=0.0, batch_norm=True)
  vars2 = vlae_block.init(jax.random.PRNGKey(1), x, train=True)
  out2, _ = vlae_block.apply(vars2, x, train=True, mutable=("batch_stats",))
  assert float(jnp.min(out2)) >= 0.0  # activation last (ReLU)
  assert set(vars2["params"]["norm"]["bn"]) == {"bias"}  # VLAE: offset only


# --------------------------------------------------------------------------------------------------
# Config checks


def _problems(config):
  return models.family_problems(config)


@pytest.mark.parametrize("family", NAMES)
def test_check_accepts_reference_settings(family):
  assert _problems(_tiny_config(family)) == []
  assert _problems(_tiny_config(family, batch_norm=True)) == []


def _fields(problems):
  return {field: message for field, message in problems}


def test_check_vlae_small():
  p = _fields(_problems(_tiny_config("vlae_small", image_size=30)))
  assert set(p) == {"data.image_size"} and "30" in p["data.image_size"] and "multiple of 4" in p[
      "data.image_size"]
  p = _fields(_problems(_tiny_config("vlae_small", widths=(64, 128))))
  assert set(p) == {"model.channels"}
  assert "3 widths" in p["model.channels"] and "(64, 128)" in p["model.channels"]
  p = _fields(_problems(_tiny_config("vlae_small", z_dims=(2,))))
  assert set(p) == {"model.z_dims"} and "at least 2" in p["model.z_dims"]
  p = _fields(_problems(_tiny_config("vlae_small", z_dims=(2, 0, 2))))
  assert set(p) == {"model.z_dims"} and "(2, 0, 2)" in p["model.z_dims"]
  config = _tiny_config("vlae_small")
  config.model.top_width = 64
  p = _fields(_problems(config))
  assert set(p) == {"model.top_width"} and "64" in p["model.top_width"]


def test_check_vlae_large():
  p = _fields(_problems(_tiny_config("vlae_large", image_size=72)))
  assert set(p) == {"data.image_size"} and "72" in p["data.image_size"] and "multiple of 16" in p[
      "data.image_size"]
  p = _fields(_problems(_tiny_config("vlae_large", z_dims=(10, 10, 10))))
  assert set(p) == {"model.z_dims"} and "exactly 4" in p["model.z_dims"]
  p = _fields(_problems(_tiny_config("vlae_large", widths=(64, 128, 256, 512))))
  assert set(p) == {"model.channels"} and "5 widths" in p["model.channels"]
  assert _problems(_tiny_config("vlae_large", image_size=128)) == []


def test_check_provlae():
  p = _fields(_problems(_tiny_config("provlae", image_size=40)))
  assert set(p) == {"data.image_size"} and "40" in p["data.image_size"] and "2**(L+1) = 16" in p[
      "data.image_size"]
  # Four layers need a multiple of 32.
  p = _fields(_problems(_tiny_config("provlae", z_dims=(3, 3, 3, 3), image_size=48)))
  assert set(p) == {"data.image_size"} and "32" in p["data.image_size"]
  assert _problems(_tiny_config("provlae", z_dims=(3, 3, 3, 3), image_size=64)) == []
  p = _fields(_problems(_tiny_config("provlae", widths=(32, 256, 256))))
  assert set(p) == {"model.channels"} and "2 widths" in p["model.channels"]
  p = _fields(_problems(_tiny_config("provlae", z_dims=())))
  assert "model.z_dims" in p


def test_checked_values_build():
  """Every value a check accepts builds and runs at that size (checks are not too permissive)."""
  for family, size, z in [("vlae_small", 12, (1, 1)), ("vlae_large", 16, (1, 1, 1, 1)),
                          ("provlae", 8, (1, 1))]:
    config = _tiny_config(family, image_size=size, z_dims=z)
    assert _problems(config) == []
    enc, gen, enc_vars, gen_vars = _shape_counts(config)
    encoder, generator = FAMILIES[family].build(config, "tanh")
    x = jax.ShapeDtypeStruct((2, size, size, config.data.channels), jnp.float32)
    out = jax.eval_shape(lambda v: generator.apply(v, [jnp.zeros((2, d)) for d in z]), gen_vars)
    assert out.shape == (2, size, size, config.data.channels)
    means, _ = jax.eval_shape(lambda v, x: encoder.apply(v, x), enc_vars, x)
    assert [m.shape for m in means] == [(2, d) for d in z]
