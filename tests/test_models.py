"""Tests of hebm_jax.models: architecture (REFERENCE Sec. 2.1, 2.2), PyTorch semantics, init."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default, digits, svhn_fid
from hebm_jax import models
from hebm_jax.models import vlae


def _count(tree):
  return int(sum(np.prod(np.shape(a)) for a in jax.tree_util.tree_leaves(tree)))


def _filled(module, *args, seed=0):
  """Variables of `module` with the init's shapes, filled with cheap numpy draws.

  Avoids compiling the initialisers (threefry) for tests that only need shapes and some values.
  """
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *args)
  rng = np.random.default_rng(seed)

  def fill(leaf):
    fan_in = max(int(np.prod(leaf.shape[:-1])), 1)
    return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)

  return jax.tree_util.tree_map(fill, shapes)


def _latents(key, z_dims, batch):
  keys = jax.random.split(key, len(z_dims))
  return [jax.random.normal(k, (batch, d)) for k, d in zip(keys, z_dims)]


# --------------------------------------------------------------------------------------------------
# SVHN-HS model (configs/default.py, REFERENCE Sec. 2.1)


@pytest.fixture(scope="module")
def hs():
  config = default.get_config()
  encoder, generator, prior = models.build_models(config)
  batch = 2
  x = jax.random.uniform(jax.random.PRNGKey(0), (batch, 32, 32, 3), minval=-1.0, maxval=1.0)
  zs = _latents(jax.random.PRNGKey(1), config.model.z_dims, batch)
  # rbg keys: the same initialisers, but far cheaper to compile on CPU than threefry.
  enc_vars = jax.jit(encoder.init)(jax.random.key(2, impl="rbg"), x)
  gen_vars = jax.jit(generator.init)(jax.random.key(3, impl="rbg"), zs)
  prior_vars = prior.init(jax.random.PRNGKey(4), jnp.zeros((batch, sum(config.model.z_dims))))
  return dict(config=config, encoder=encoder, generator=generator, prior=prior, x=x, zs=zs,
              enc_vars=enc_vars, gen_vars=gen_vars, prior_vars=prior_vars,
              enc_apply=jax.jit(encoder.apply), gen_apply=jax.jit(generator.apply))


def test_hs_parameter_counts(hs):
  assert _count(hs["prior_vars"]["params"]) == 8551
  assert _count(hs["enc_vars"]["params"]) == 752160
  assert _count(hs["gen_vars"]["params"]) == 392288
  # Encoder and generator hold only parameters (no mutable collections).
  assert set(hs["enc_vars"].keys()) == {"params"}
  assert set(hs["gen_vars"].keys()) == {"params"}


def test_hs_output_shapes_and_range(hs):
  images = hs["gen_apply"](hs["gen_vars"], hs["zs"])
  assert images.shape == (2, 32, 32, 3)
  assert bool(jnp.all(jnp.abs(images) <= 1.0))
  # Large latents push the tanh output to its bounds but never past them.
  big = [100.0 * z for z in hs["zs"]]
  images = hs["gen_apply"](hs["gen_vars"], big)
  assert bool(jnp.all(jnp.abs(images) <= 1.0))
  assert float(jnp.max(jnp.abs(images))) > 0.99

  means, logvars = hs["enc_apply"](hs["enc_vars"], hs["x"])
  assert len(means) == len(logvars) == 4
  assert [m.shape for m in means] == [(2, 2), (2, 2), (2, 2), (2, 10)]
  assert [lv.shape for lv in logvars] == [(2, 2), (2, 2), (2, 2), (2, 10)]

  f = hs["prior"].apply(hs["prior_vars"], jnp.ones((2, 16)), update_stats=False)
  assert f.shape == (2,)


def test_hs_layer_shapes(hs):
  gen = hs["gen_vars"]["params"]
  assert gen["inject0"]["kernel"].shape == (2, 8192)
  assert gen["inject0"]["bias"].shape == (8192,)
  assert gen["inject1"]["kernel"].shape == (2, 4096)
  assert gen["inject2"]["kernel"].shape == (2, 64)
  assert gen["top_fc0"]["kernel"].shape == (10, 256)
  assert gen["top_fc1"]["kernel"].shape == (256, 256)
  assert gen["top_out"]["kernel"].shape == (256, 64)
  assert gen["project2"]["kernel"].shape == (64, 1024)
  assert gen["up2"]["kernel"].shape == (4, 4, 64, 64)
  assert gen["up0"]["kernel"].shape == (4, 4, 32, 32)
  # ConvTranspose kernels are (kh, kw, out, in): conv1 is ConvT(64 -> 32), conv0 ConvT(32 -> 3).
  assert gen["conv1"]["kernel"].shape == (3, 3, 32, 64)
  assert gen["conv0"]["kernel"].shape == (3, 3, 3, 32)
  # Convolutions have no bias (bias=False in the reference).
  for name in ("up0", "up1", "up2", "conv0", "conv1", "conv2"):
    assert set(gen[name].keys()) == {"kernel"}

  enc = hs["enc_vars"]["params"]
  assert enc["head0"]["mean"]["kernel"].shape == (8192, 2)
  assert enc["head0"]["logvar"]["kernel"].shape == (8192, 2)
  assert enc["head1"]["mean"]["kernel"].shape == (4096, 2)
  assert enc["head2"]["mean"]["kernel"].shape == (1024, 2)
  assert enc["ladder3_fc0"]["kernel"].shape == (1024, 256)
  assert enc["ladder3_fc1"]["kernel"].shape == (256, 256)
  assert enc["head3"]["mean"]["kernel"].shape == (256, 10)
  assert enc["ladder0"]["down"]["kernel"].shape == (4, 4, 3, 32)
  assert enc["ladder0"]["conv"]["kernel"].shape == (3, 3, 32, 32)
  assert enc["trunk1"]["down"]["kernel"].shape == (4, 4, 32, 64)
  assert set(enc["trunk1"]["down"].keys()) == {"kernel"}

  prior = hs["prior_vars"]["params"]
  assert prior["fc1"]["dense"]["kernel"].shape == (16, 50)
  assert prior["out"]["dense"]["kernel"].shape == (50, 1)


def test_hs_encoder_ladders_are_independent(hs):
  """Changing the bottom ladder's head weights changes only the bottom layer's posterior."""
  params = jax.tree_util.tree_map(lambda a: a, hs["enc_vars"]["params"])
  params = dict(params)
  head0 = dict(params["head0"])
  head0["mean"] = {"kernel": params["head0"]["mean"]["kernel"] + 1.0,
                   "bias": params["head0"]["mean"]["bias"]}
  params["head0"] = head0
  means0, _ = hs["enc_apply"](hs["enc_vars"], hs["x"])
  means1, _ = hs["enc_apply"]({"params": params}, hs["x"])
  assert not np.allclose(means0[0], means1[0])
  for l in (1, 2, 3):
    np.testing.assert_array_equal(means0[l], means1[l])


# --------------------------------------------------------------------------------------------------
# SVHN-FID model (configs/svhn_fid.py, REFERENCE Sec. 2.2), shapes only: never materialised.


def test_fid_model_parameter_counts_and_shapes():
  config = svhn_fid.get_config()
  encoder, generator, prior = models.build_models(config)
  batch = 3
  key = jax.random.PRNGKey(0)
  zs = [jax.ShapeDtypeStruct((batch, d), jnp.float32) for d in config.model.z_dims]
  x = jax.ShapeDtypeStruct((batch, 32, 32, 3), jnp.float32)
  gen_vars = jax.eval_shape(generator.init, key, zs)
  enc_vars = jax.eval_shape(encoder.init, key, x)
  prior_vars = jax.eval_shape(prior.init, key, jax.ShapeDtypeStruct((batch, 50), jnp.float32))
  assert _count(gen_vars["params"]) == 55_348_608
  assert _count(enc_vars["params"]) == 18_999_396
  # EBM: Linear(50,100), Linear(100,100), Linear(100,1) = 5100 + 10100 + 101.
  assert _count(prior_vars["params"]) == 15_301

  images = jax.eval_shape(generator.apply, gen_vars, zs)
  assert images.shape == (batch, 32, 32, 3)
  means, logvars = jax.eval_shape(encoder.apply, enc_vars, x)
  assert [m.shape for m in means] == [(batch, 10)] * 5
  assert [lv.shape for lv in logvars] == [(batch, 10)] * 5

  gen = gen_vars["params"]
  assert gen["top_fc0"]["kernel"].shape == (10, 2048)
  assert gen["top_out"]["kernel"].shape == (2048, 2 * 2 * 1024)
  assert gen["merge3"]["kernel"].shape == (3, 3, 1024, 2048)  # ConvT(2048 -> 1024)
  assert gen["to_image"]["kernel"].shape == (3, 3, 3, 128)
  assert enc_vars["params"]["head0"]["mean"]["kernel"].shape == (32768, 10)


# --------------------------------------------------------------------------------------------------
# Other layer counts, image sizes and merge modes.


@pytest.mark.parametrize("merge", ["add", "concat"])
@pytest.mark.parametrize("z_dims,channels,image_size,image_channels", [
    ((2, 3), (4, 8), 16, 1),
    ((2, 2, 6), (4, 8, 16), 16, 1),
    ((1, 2, 3, 4, 5), (2, 4, 4, 4, 8), 64, 3),
])
def test_generic_shapes(merge, z_dims, channels, image_size, image_channels):
  batch = 2
  encoder = models.HierarchicalEncoder(z_dims=z_dims, channels=channels)
  generator = models.HierarchicalGenerator(z_dims=z_dims, channels=channels,
                                           image_size=image_size, image_channels=image_channels,
                                           merge=merge)
  zs = _latents(jax.random.PRNGKey(0), z_dims, batch)
  gen_vars = _filled(generator, zs)
  images = jax.jit(generator.apply)(gen_vars, zs)
  assert images.shape == (batch, image_size, image_size, image_channels)
  assert bool(jnp.all(jnp.abs(images) <= 1.0))

  x = jnp.zeros((batch, image_size, image_size, image_channels))
  enc_vars = _filled(encoder, x)
  means, logvars = jax.jit(encoder.apply)(enc_vars, x)
  assert [m.shape for m in means] == [(batch, d) for d in z_dims]
  assert [lv.shape for lv in logvars] == [(batch, d) for d in z_dims]


def test_every_latent_layer_affects_the_image():
  z_dims, channels = (2, 2, 6), (4, 8, 16)
  for merge in ("add", "concat"):
    generator = models.HierarchicalGenerator(z_dims=z_dims, channels=channels, image_size=16,
                                             image_channels=1, merge=merge)
    zs = _latents(jax.random.PRNGKey(0), z_dims, 2)
    gen_vars = _filled(generator, zs)
    apply = jax.jit(generator.apply)
    base = apply(gen_vars, zs)
    for l in range(len(z_dims)):
      changed = list(zs)
      changed[l] = zs[l] + 1.0
      assert not np.allclose(base, apply(gen_vars, changed), atol=1e-6), (merge, l)


def test_digits_config_shapes():
  config = digits.get_config()
  encoder, generator, prior = models.build_models(config)
  zs = _latents(jax.random.PRNGKey(0), config.model.z_dims, 2)
  images = jax.jit(generator.apply)(_filled(generator, zs), zs)
  assert images.shape == (2, 16, 16, 1)
  x = jnp.zeros((2, 16, 16, 1))
  means, _ = jax.jit(encoder.apply)(_filled(encoder, x), x)
  assert [m.shape for m in means] == [(2, 1), (2, 1), (2, 8)]
  assert isinstance(encoder, vlae.SmallEncoder) and isinstance(generator, vlae.SmallGenerator)
  assert isinstance(prior, models.EnergyPrior) and prior.num_layers == 2


def test_build_models_gaussian_prior_is_none():
  config = default.get_config()
  config.prior.type = "gaussian"
  assert models.build_models(config)[2] is None


def test_unknown_merge_mode_raises():
  generator = models.HierarchicalGenerator(z_dims=(2, 2), channels=(4, 8), image_size=8,
                                           image_channels=1, merge="multiply")
  zs = _latents(jax.random.PRNGKey(0), (2, 2), 1)
  with pytest.raises(ValueError, match="'multiply'"):
    jax.eval_shape(generator.init, jax.random.PRNGKey(1), zs)


# --------------------------------------------------------------------------------------------------
# PyTorch padding semantics against direct numpy definitions.


def _np_conv_transpose_torch(x, w, stride, padding):
  """PyTorch ConvTranspose2d, x (C, H, W), w (C_in, C_out, kh, kw) -> (C_out, H', W')."""
  c_in, h, wd = x.shape
  _, c_out, kh, kw = w.shape
  full = np.zeros((c_out, (h - 1) * stride + kh, (wd - 1) * stride + kw))
  for c in range(c_in):
    for i in range(h):
      for j in range(wd):
        for ki in range(kh):
          for kj in range(kw):
            full[:, i * stride + ki, j * stride + kj] += x[c, i, j] * w[c, :, ki, kj]
  h_out = (h - 1) * stride - 2 * padding + kh
  w_out = (wd - 1) * stride - 2 * padding + kw
  return full[:, padding:padding + h_out, padding:padding + w_out]


def _np_conv_torch(x, w, stride, padding):
  """PyTorch Conv2d (cross-correlation), x (C, H, W), w (C_out, C_in, kh, kw)."""
  c_in, h, wd = x.shape
  c_out, _, kh, kw = w.shape
  xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))
  h_out = (h + 2 * padding - kh) // stride + 1
  w_out = (wd + 2 * padding - kw) // stride + 1
  out = np.zeros((c_out, h_out, w_out))
  for o in range(c_out):
    for y in range(h_out):
      for xx in range(w_out):
        patch = xp[:, y * stride:y * stride + kh, xx * stride:xx * stride + kw]
        out[o, y, xx] = np.sum(patch * w[o])
  return out


# (kind, kernel, stride, input size, PyTorch output size with padding 1)
_CONV_CASES = [("conv_transpose", 4, 2, 5, 10), ("conv_transpose", 3, 1, 5, 5),
               ("conv", 4, 2, 6, 3), ("conv", 3, 1, 5, 5)]


@pytest.mark.parametrize("kind,kernel,stride,size,expected_size", _CONV_CASES)
def test_conv_layers_match_pytorch(kind, kernel, stride, size, expected_size):
  rng = np.random.default_rng(0)
  c_in, c_out = 3, 2
  x = rng.normal(size=(c_in, size, size))
  if kind == "conv":  # PyTorch weight layouts: Conv2d (out, in, k, k), ConvTranspose2d (in, out, k, k)
    w_torch = rng.normal(size=(c_out, c_in, kernel, kernel))
    expected = _np_conv_torch(x, w_torch, stride, 1)
    layer, kernel_shape = models.conv(c_out, kernel, stride, "conv"), (kernel, kernel, c_in, c_out)
  else:
    w_torch = rng.normal(size=(c_in, c_out, kernel, kernel))
    expected = _np_conv_transpose_torch(x, w_torch, stride, 1)
    layer, kernel_shape = models.conv_transpose(c_out, kernel, stride, "ct"), (kernel, kernel, c_out, c_in)
  assert expected.shape == (c_out, expected_size, expected_size)

  x_nhwc = jnp.asarray(x.transpose(1, 2, 0)[None], jnp.float32)
  variables = jax.eval_shape(layer.init, jax.random.PRNGKey(0), x_nhwc)
  assert variables["params"]["kernel"].shape == kernel_shape
  assert set(variables["params"].keys()) == {"kernel"}
  kernel_ours = jnp.asarray(w_torch.transpose(2, 3, 1, 0), jnp.float32)
  out = layer.apply({"params": {"kernel": kernel_ours}}, x_nhwc)
  assert out.shape == (1, expected_size, expected_size, c_out)
  np.testing.assert_allclose(np.asarray(out[0]).transpose(2, 0, 1), expected, rtol=1e-4,
                             atol=1e-4)


def test_down_and_up_sizes():
  x = jnp.ones((1, 16, 16, 3))
  down = models.conv(4, 4, 2, "d")
  assert down.apply(_filled(down, x), x).shape == (1, 8, 8, 4)
  up = models.conv_transpose(4, 4, 2, "u")
  assert up.apply(_filled(up, x), x).shape == (1, 32, 32, 4)


# --------------------------------------------------------------------------------------------------
# Initialisation statistics (PyTorch defaults for Linear, xavier normal for convs).


def test_dense_init_is_torch_default(hs):
  gen = hs["gen_vars"]["params"]
  enc = hs["enc_vars"]["params"]
  layers = [gen["top_fc1"], gen["inject0"], gen["project2"], enc["ladder3_fc0"],
            enc["head0"]["mean"]]
  for layer in layers:
    kernel, bias = np.asarray(layer["kernel"]), np.asarray(layer["bias"])
    bound = 1.0 / np.sqrt(kernel.shape[0])
    assert np.all(np.abs(kernel) <= bound + 1e-7)
    assert np.all(np.abs(bias) <= bound + 1e-7)
    if kernel.size >= 1000:
      # Uniform on (-bound, bound): std bound / sqrt(3), and it fills the interval.
      np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3), rtol=0.05)
      assert np.abs(kernel).max() > 0.95 * bound
  # The bias bound uses fan_in = 2 (not fan_out = 8192): U(-1/sqrt(2), 1/sqrt(2)).
  bias = np.asarray(gen["inject0"]["bias"])
  assert np.abs(bias).max() > 0.95 / np.sqrt(2)
  np.testing.assert_allclose(bias.std(), 1 / np.sqrt(6), rtol=0.05)


@pytest.mark.parametrize("module,name,fan_in,fan_out", [
    ("gen", "up1", 16 * 64, 16 * 64),
    ("gen", "conv1", 9 * 64, 9 * 32),
    ("enc", "trunk1/down", 16 * 32, 16 * 64),
])
def test_conv_init_is_xavier_normal(hs, module, name, fan_in, fan_out):
  params = hs["gen_vars"]["params"] if module == "gen" else hs["enc_vars"]["params"]
  for part in name.split("/"):
    params = params[part]
  kernel = np.asarray(params["kernel"]).ravel()
  assert kernel.size >= 10_000
  std = np.sqrt(2.0 / (fan_in + fan_out))
  np.testing.assert_allclose(kernel.std(), std, rtol=0.03)
  assert abs(kernel.mean()) < 4 * std / np.sqrt(kernel.size)
  # Plain (not truncated) normal: about 4.55% of the draws lie beyond 2 std.
  tail = np.mean(np.abs(kernel) > 2 * std)
  assert 0.035 < tail < 0.056


# --------------------------------------------------------------------------------------------------
# EnergyPrior.


def test_prior_init_is_torch_default_with_and_without_spectral_norm():
  """PyTorch's spectral_norm keeps weight_orig = the default-initialised weight W0.

  The stored kernels of a spectrally normalised prior must therefore be the same U(+-1/sqrt(fan_in))
  draws as those of the prior without spectral norm (same key, same variable paths), not W0 / sigma.
  """
  z = jnp.zeros((2, 16))
  plain = models.EnergyPrior(spectral_norm=False).init(jax.random.PRNGKey(4), z)["params"]
  sn_vars = models.EnergyPrior(spectral_norm=True).init(jax.random.PRNGKey(4), z)
  for name in ("fc1", "fc2", "fc3", "fc4", "out"):
    kernel = np.asarray(plain[name]["dense"]["kernel"])
    bound = 1.0 / np.sqrt(kernel.shape[0])
    assert np.all(np.abs(kernel) <= bound + 1e-7), name
    np.testing.assert_array_equal(sn_vars["params"][name]["dense"]["bias"],
                                  plain[name]["dense"]["bias"])
  for name in ("fc1", "fc2", "fc3", "fc4", "out"):
    kernel = np.asarray(sn_vars["params"][name]["dense"]["kernel"])
    bound = 1.0 / np.sqrt(kernel.shape[0])
    sigma = float(sn_vars["batch_stats"][name]["sn"]["dense/kernel/sigma"])
    assert np.all(np.abs(kernel) <= bound + 1e-7), (
        f"{name}: stored spectral-norm kernel exceeds the PyTorch init bound {bound:.4f} "
        f"(max |k| = {np.abs(kernel).max():.4f}); it looks like W0 / sigma, sigma = {sigma:.4f}")
    np.testing.assert_allclose(kernel, plain[name]["dense"]["kernel"], rtol=1e-5, atol=1e-7,
                               err_msg=f"{name}: stored kernel is not the raw initial weight "
                               f"W0 (flax SpectralNorm writes W0 / sigma back at init; "
                               f"sigma = {sigma:.4f})")


def _np_prior_forward(params, z, sigmas, negative_slope=0.2):
  h = np.asarray(z, np.float64)
  names = sorted(k for k in params if k.startswith("fc")) + ["out"]
  for i, name in enumerate(names):
    kernel = np.asarray(params[name]["dense"]["kernel"], np.float64) / sigmas[name]
    h = h @ kernel + np.asarray(params[name]["dense"]["bias"], np.float64)
    if i < len(names) - 1:
      h = np.where(h > 0, h, negative_slope * h)
  return h[:, 0]


def test_spectral_norm_power_iteration_converges(hs):
  prior, variables = hs["prior"], hs["prior_vars"]
  params = variables["params"]
  stats = variables["batch_stats"]
  z = jax.random.normal(jax.random.PRNGKey(5), (3, 16))
  apply = jax.jit(lambda st: prior.apply({"params": params, "batch_stats": st}, z,
                                         update_stats=True, mutable=["batch_stats"]))
  for _ in range(60):
    f, updates = apply(stats)
    stats = updates["batch_stats"]

  true_sigmas = {}
  for name in ("fc1", "fc2", "fc3", "fc4", "out"):
    kernel = np.asarray(params[name]["dense"]["kernel"], np.float64)
    top = np.linalg.svd(kernel, compute_uv=False)[0]
    true_sigmas[name] = top
    sigma = float(stats[name]["sn"]["dense/kernel/sigma"])
    np.testing.assert_allclose(sigma, top, rtol=1e-3, err_msg=name)
    # The effective (normalised) weight has spectral norm 1.
    np.testing.assert_allclose(np.linalg.svd(kernel / sigma, compute_uv=False)[0], 1.0, rtol=1e-3)
    # u is a unit vector of the kernel's output space.
    u = np.asarray(stats[name]["sn"]["dense/kernel/u"])
    assert u.shape == (1, kernel.shape[1])
    np.testing.assert_allclose(np.linalg.norm(u), 1.0, rtol=1e-5)

  # The forward pass uses kernel / sigma in every layer, the output layer included.
  expected = _np_prior_forward(params, z, true_sigmas)
  np.testing.assert_allclose(np.asarray(f), expected, rtol=2e-3, atol=1e-5)


def test_spectral_norm_update_stats_false_keeps_state(hs):
  prior, variables = hs["prior"], hs["prior_vars"]
  z = jnp.ones((2, 16))
  _, updates = prior.apply(variables, z, update_stats=False, mutable=["batch_stats"])
  for a, b in zip(jax.tree_util.tree_leaves(variables["batch_stats"]),
                  jax.tree_util.tree_leaves(updates["batch_stats"])):
    np.testing.assert_array_equal(a, b)
  _, updates = prior.apply(variables, z, update_stats=True, mutable=["batch_stats"])
  u_before = variables["batch_stats"]["fc1"]["sn"]["dense/kernel/u"]
  u_after = updates["batch_stats"]["fc1"]["sn"]["dense/kernel/u"]
  assert not np.allclose(u_before, u_after)


def test_prior_without_spectral_norm():
  prior = models.EnergyPrior(num_layers=2, width=8, spectral_norm=False)
  z = jax.random.normal(jax.random.PRNGKey(0), (5, 6))
  variables = prior.init(jax.random.PRNGKey(1), z)
  assert set(variables.keys()) == {"params"}
  assert _count(variables["params"]) == (6 * 8 + 8) + (8 * 8 + 8) + (8 + 1)
  f = prior.apply(variables, z)
  assert f.shape == (5,)
  sigmas = {name: 1.0 for name in variables["params"]}
  np.testing.assert_allclose(np.asarray(f), _np_prior_forward(variables["params"], z, sigmas),
                             rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_prior_output_scale_multiplies_f_and_keeps_init(spectral_norm):
  z = jax.random.normal(jax.random.PRNGKey(0), (7, 6))
  base = models.EnergyPrior(num_layers=2, width=8, spectral_norm=spectral_norm)
  scaled = models.EnergyPrior(num_layers=2, width=8, spectral_norm=spectral_norm, output_scale=3.0)
  variables = base.init(jax.random.PRNGKey(1), z)
  # Same parameters and spectral-norm state at init: the scale is not a parameter.
  jax.tree.map(np.testing.assert_array_equal, variables, scaled.init(jax.random.PRNGKey(1), z))
  kwargs = {"mutable": ["batch_stats"]} if spectral_norm else {}
  f, f3 = base.apply(variables, z, **kwargs), scaled.apply(variables, z, **kwargs)
  if spectral_norm:
    (f, stats), (f3, stats3) = f, f3
    jax.tree.map(np.testing.assert_array_equal, stats, stats3)
  np.testing.assert_allclose(np.asarray(f3), 3.0 * np.asarray(f), rtol=1e-6, atol=1e-7)


def test_spectral_norm_prior_is_output_scale_lipschitz():
  """With converged power iterations, |grad f| <= output_scale everywhere (leaky ReLU)."""
  prior = models.EnergyPrior(num_layers=3, width=16, output_scale=2.5)
  z = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (256, 6))
  variables = prior.init(jax.random.PRNGKey(1), z)
  # Sharpen the weights so that an unnormalised f would be far steeper than the bound.
  variables = {**variables,
               "params": jax.tree.map(lambda w: 10.0 * w, variables["params"])}
  stats = variables["batch_stats"]
  for _ in range(100):
    _, updates = prior.apply({**variables, "batch_stats": stats}, z, mutable=["batch_stats"])
    stats = updates["batch_stats"]
  f = lambda zi: prior.apply({**variables, "batch_stats": stats}, zi[None], update_stats=False)[0]
  grad_norms = np.linalg.norm(np.asarray(jax.vmap(jax.grad(f))(z)), axis=-1)
  assert grad_norms.max() <= 2.5 * (1 + 1e-3), grad_norms.max()
  plain = models.EnergyPrior(num_layers=3, width=16, spectral_norm=False)
  g = lambda zi: plain.apply({"params": variables["params"]}, zi[None])[0]
  assert np.linalg.norm(np.asarray(jax.vmap(jax.grad(g))(z)), axis=-1).max() > 10 * 2.5


def test_build_models_passes_prior_output_scale():
  config = default.get_config()
  config.prior.output_scale = 5.0
  assert models.build_models(config)[2].output_scale == 5.0
  config.prior.output_scale = 1.0
  assert models.build_models(config)[2].output_scale == 1.0


def test_checkpoints_from_before_output_scale_match_scale_one_only():
  from hebm_jax import checkpointing  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  saved = checkpointing.config_to_dict(config)
  del saved["prior"]["output_scale"]  # as written before the field existed
  assert checkpointing.architecture_differences(saved, config) == []
  config.prior.output_scale = 4.0
  assert checkpointing.architecture_differences(saved, config) == [
      "prior.output_scale: checkpoint None vs config 4.0"]


@pytest.mark.parametrize("activation,fn", [
    ("leaky_relu", lambda x: np.where(x > 0, x, 0.2 * x)),
    ("gelu", None),
    ("swish", lambda x: x / (1 + np.exp(-x))),
    ("elu", lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0)))),
])
def test_prior_activations(activation, fn):
  prior = models.EnergyPrior(num_layers=1, width=4, activation=activation, spectral_norm=False)
  z = jax.random.normal(jax.random.PRNGKey(0), (3, 5))
  variables = prior.init(jax.random.PRNGKey(1), z)
  f = prior.apply(variables, z)
  assert f.shape == (3,)
  assert bool(jnp.all(jnp.isfinite(f)))
  p = variables["params"]
  dense = lambda name: (np.asarray(p[name]["dense"]["kernel"]),
                        np.asarray(p[name]["dense"]["bias"]))
  kernel, bias = dense("fc1")
  pre = np.asarray(z) @ kernel + bias
  if fn is None:  # exact (erf) gelu
    from scipy.special import erf  # pylint: disable=g-import-not-at-top
    fn = lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2)))
  kernel, bias = dense("out")
  expected = fn(pre) @ kernel + bias
  np.testing.assert_allclose(np.asarray(f), expected[:, 0], rtol=1e-4, atol=1e-5)


def test_unknown_activation_raises():
  prior = models.EnergyPrior(num_layers=1, width=4, activation="tanh")
  with pytest.raises(ValueError, match=re.escape("'tanh'")):
    prior.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
  with pytest.raises(ValueError, match="Unknown activation 'relu6'"):
    models.activation_fn("relu6")


def test_activation_fn_negative_slope():
  x = jnp.array([-2.0, 3.0])
  np.testing.assert_allclose(models.activation_fn("leaky_relu", 0.01)(x), [-0.02, 3.0], rtol=1e-6)
  np.testing.assert_allclose(models.activation_fn("leaky_relu")(x), [-0.4, 3.0], rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# Latent helpers.


def test_split_concat_round_trip():
  z_dims = (2, 3, 1, 4)
  zs = _latents(jax.random.PRNGKey(0), z_dims, 5)
  z = models.concat_latents(zs)
  assert z.shape == (5, 10)
  np.testing.assert_array_equal(z[:, :2], zs[0])
  np.testing.assert_array_equal(z[:, 6:], zs[3])
  parts = models.split_latents(z, z_dims)
  assert [p.shape for p in parts] == [(5, d) for d in z_dims]
  for a, b in zip(parts, zs):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(models.concat_latents(parts), z)
  # Leading batch axes are kept.
  parts = models.split_latents(jnp.zeros((7, 5, 10)), z_dims)
  assert [p.shape for p in parts] == [(7, 5, d) for d in z_dims]
