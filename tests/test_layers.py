"""The layers' own formulations against XLA's and Flax's: transposed convolutions (sub-pixel form
against the input-dilated one), convolutions, and the Gaussian heads' fused product."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebm_jax.models import layers

# (kernel, stride, padding): the models' k4 s2 p1 and k3 s1 p1, and shapes that leave phases with
# different tap counts, negative offsets or an output size that is not a multiple of the stride,
# and a kernel smaller than the stride (phases no tap writes).
CASES = [(4, 2, 1), (3, 1, 1), (3, 2, 1), (5, 2, 2), (4, 2, 0), (2, 2, 0), (4, 4, 0), (1, 1, 0),
         (1, 2, 0)]


def _reference(x, kernel, stride, padding):
  pad = kernel.shape[0] - 1 - padding
  return jax.lax.conv_transpose(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True)


@pytest.mark.parametrize("impl", ["conv", "matmul", "shift"])
@pytest.mark.parametrize("k,s,p", CASES)
def test_values_and_gradients_match_the_dilated_form(k, s, p, impl):
  rng = np.random.default_rng(k * 100 + s * 10 + p)
  x = jnp.asarray(rng.normal(size=(2, 5, 4, 3)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(k, k, 6, 3)), jnp.float32)
  want = _reference(x, kernel, s, p)
  got = layers.conv_transpose_2d(x, kernel, s, p, impl)
  assert got.shape == want.shape == (2, 4 * s - 2 * p + k, 3 * s - 2 * p + k, 6)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  w = jnp.asarray(rng.normal(size=want.shape), jnp.float32)
  grads = [jax.grad(lambda a, b, f=f: jnp.sum(f(a, b) * w), (0, 1))(x, kernel)
           for f in (lambda a, b: layers.conv_transpose_2d(a, b, s, p, impl),
                     lambda a, b: _reference(a, b, s, p))]
  for g, r in zip(*grads):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


def test_auto_uses_products_only_for_weight_bound_layers():
  x_small = jnp.zeros((2, 2, 2, 64))   # 2 * 2 * 2 = 8 outputs per phase < 64 channels
  x_large = jnp.zeros((8, 8, 8, 4))
  for x, expect_dot in ((x_small, True), (x_large, False)):
    kernel = jnp.zeros((4, 4, 5, x.shape[-1]))
    jaxpr = str(jax.make_jaxpr(lambda a, b: layers.conv_transpose_2d(a, b, 2, 1))(x, kernel))
    assert ("dot_general" in jaxpr) == expect_dot
    assert ("conv_general_dilated" in jaxpr) != expect_dot


def test_unknown_implementation_is_named():
  with pytest.raises(ValueError, match="'fft'"):
    layers.conv_transpose_2d(jnp.zeros((1, 2, 2, 1)), jnp.zeros((4, 4, 1, 1)), 2, 1, "fft")


def test_parameters_are_those_of_flax_conv_transpose():
  """Same name, shape and initial values: checkpoints and the converter are unaffected."""
  x = jnp.ones((1, 4, 4, 3))
  ours = layers.conv_transpose(8, 4, 2, "up").init(jax.random.PRNGKey(0), x)
  flax_module = nn.ConvTranspose(8, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                                 transpose_kernel=True, use_bias=False,
                                 kernel_init=layers._conv_init, name="up")  # pylint: disable=protected-access
  theirs = flax_module.init(jax.random.PRNGKey(0), x)
  assert jax.tree.structure(ours) == jax.tree.structure(theirs)
  np.testing.assert_array_equal(ours["params"]["kernel"], theirs["params"]["kernel"])
  np.testing.assert_allclose(layers.conv_transpose(8, 4, 2, "up").apply(ours, x),
                             flax_module.apply(theirs, x), rtol=1e-5, atol=1e-5)


# (kernel, stride, padding) of Conv2d: the models' k4 s2 p1 and k3 s1 p1, the VLAE networks'
# unpadded and odd-sized cases.
CONV_CASES = [(4, 2, 1), (3, 1, 1), (3, 2, 0), (5, 1, 2), (1, 1, 0), (4, 2, 0)]


@pytest.mark.parametrize("impl", ["conv", "matmul", "shift"])
@pytest.mark.parametrize("k,s,p", CONV_CASES)
def test_conv_values_and_gradients_match_flax(k, s, p, impl):
  rng = np.random.default_rng(k * 100 + s * 10 + p)
  x = jnp.asarray(rng.normal(size=(2, 7, 6, 3)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(k, k, 3, 5)), jnp.float32)
  module = nn.Conv(5, (k, k), strides=(s, s), padding=((p, p), (p, p)), use_bias=False)
  reference = lambda a, b: module.apply({"params": {"kernel": b}}, a)
  want = reference(x, kernel)
  got = layers.conv_2d(x, kernel, s, p, impl)
  assert got.shape == want.shape == (2, (7 + 2 * p - k) // s + 1, (6 + 2 * p - k) // s + 1, 5)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  w = jnp.asarray(rng.normal(size=want.shape), jnp.float32)
  grads = [jax.grad(lambda a, b, f=f: jnp.sum(f(a, b) * w), (0, 1))(x, kernel)
           for f in (lambda a, b: layers.conv_2d(a, b, s, p, impl), reference)]
  for g, r in zip(*grads):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


def test_conv_auto_uses_products_only_for_weight_bound_layers():
  for x, expect_dot in ((jnp.zeros((2, 4, 4, 64)), True),   # 2 * 2 * 2 = 8 outputs < 64 channels
                        (jnp.zeros((8, 8, 8, 4)), False)):
    kernel = jnp.zeros((4, 4, x.shape[-1], 5))
    jaxpr = str(jax.make_jaxpr(lambda a, b: layers.conv_2d(a, b, 2, 1))(x, kernel))
    assert ("dot_general" in jaxpr) == expect_dot
    assert ("conv_general_dilated" in jaxpr) != expect_dot
  with pytest.raises(ValueError, match="'fft'"):
    layers.conv_2d(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1)), 1, 1, "fft")


def test_conv_parameters_are_those_of_flax_conv():
  x = jnp.ones((1, 8, 8, 3))
  ours = layers.conv(16, 4, 2, "down").init(jax.random.PRNGKey(0), x)
  theirs = nn.Conv(16, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False,
                   kernel_init=layers._conv_init, name="down").init(jax.random.PRNGKey(0), x)  # pylint: disable=protected-access
  assert jax.tree.structure(ours) == jax.tree.structure(theirs)
  np.testing.assert_array_equal(ours["params"]["kernel"], theirs["params"]["kernel"])


def test_auto_picks_the_formulation_by_layer_shape():
  # (positions B * H' * W', Cin, kh * kw * Cout) -> formulation
  assert layers._conv_impl("auto", 8, 64, 16 * 5) == "matmul"      # weight-bound  # pylint: disable=protected-access
  assert layers._conv_impl("auto", 102400, 32, 27) == "shift"      # the svhn image layer  # pylint: disable=protected-access
  assert layers._conv_impl("auto", 102400, 32, 9 * 32) == "conv"  # pylint: disable=protected-access
  assert layers._conv_impl("conv", 102400, 32, 27) == "conv"  # pylint: disable=protected-access
  x, kernel = jnp.zeros((4, 8, 8, 32)), jnp.zeros((3, 3, 3, 32))   # 32 -> 3 channels, k3 s1
  jaxpr = str(jax.make_jaxpr(lambda a, b: layers.conv_transpose_2d(a, b, 1, 1))(x, kernel))
  assert "dot_general" in jaxpr and "conv_general_dilated" not in jaxpr
  jaxpr = str(jax.make_jaxpr(lambda a, b: layers.conv_2d(a, b, 1, 1))(x, kernel.transpose(0, 1, 3, 2)))
  assert "dot_general" in jaxpr and "conv_general_dilated" not in jaxpr


@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (4, 2, 1), (3, 2, 0)])
def test_shift_form_of_an_image_layer_matches_flax(k, s, p):
  """The 'shift' form where 'auto' picks it: many input channels, few output channels."""
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.normal(size=(3, 9, 8, 32)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(k, k, 32, 3)), jnp.float32)
  module = nn.Conv(3, (k, k), strides=(s, s), padding=((p, p), (p, p)), use_bias=False)
  for ours, theirs in ((lambda a, b: layers.conv_2d(a, b, s, p),
                        lambda a, b: module.apply({"params": {"kernel": b}}, a)),
                       (lambda a, b: layers.conv_transpose_2d(a, b.transpose(0, 1, 3, 2), s, p),
                        lambda a, b: _reference(a, b.transpose(0, 1, 3, 2), s, p))):
    want = theirs(x, kernel)
    np.testing.assert_allclose(ours(x, kernel), want, rtol=1e-4, atol=1e-4)
    w = jnp.asarray(rng.normal(size=want.shape), jnp.float32)
    grads = [jax.grad(lambda a, b, f=f: jnp.sum(f(a, b) * w), (0, 1))(x, kernel) for f in (ours, theirs)]
    for g, r in zip(*grads):
      np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("dim", [2, 10])
def test_gaussian_head_is_two_torch_dense_layers(dim):
  """One fused product, the parameters and numbers of two `torch_dense` layers (mean, logvar)."""

  class TwoDense(nn.Module):
    @nn.compact
    def __call__(self, h):
      h = h.reshape(h.shape[0], -1)
      return (layers.torch_dense(dim, h.shape[-1], "mean")(h),
              layers.torch_dense(dim, h.shape[-1], "logvar")(h))

  h = jax.random.normal(jax.random.PRNGKey(1), (5, 4, 4, 8))
  ours = layers.GaussianHead(dim).init(jax.random.PRNGKey(0), h)
  theirs = TwoDense().init(jax.random.PRNGKey(0), h)
  assert jax.tree.structure(ours) == jax.tree.structure(theirs)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_array_equal(a, b)
  w = jax.random.normal(jax.random.PRNGKey(2), (2, 5, dim))
  loss = lambda module: lambda v, x: jnp.sum(jnp.stack(module.apply(v, x)) * w)
  for got, want in zip(jax.grad(loss(layers.GaussianHead(dim)), (0, 1))(ours, h),
                       jax.grad(loss(TwoDense()), (0, 1))(theirs, h)):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
