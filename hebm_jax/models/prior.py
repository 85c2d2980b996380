"""The joint energy-based prior f_alpha([z_1, ..., z_L]) (paper Eq. 3)."""

from __future__ import annotations

import flax.linen as nn
import jax

from hebm_jax.models.layers import activation_fn, torch_dense

Array = jax.Array


class _MaybeSNDense(nn.Module):
  """Torch-initialised Dense, optionally spectral-normalised (one power iteration per call)."""
  features: int
  spectral_norm: bool

  @nn.compact
  def __call__(self, x: Array, update_stats: bool) -> Array:
    dense = torch_dense(self.features, x.shape[-1], name="dense")
    if not self.spectral_norm:
      return dense(x)
    y = nn.SpectralNorm(dense, n_steps=1, epsilon=1e-12, name="sn")(x, update_stats=update_stats)
    if self.is_initializing():
      # flax's SpectralNorm writes W0 / sigma back into params at init; keep W0 itself (PyTorch's
      # `weight_orig`), so that parameters have the reference's scale and Adam steps its size.
      sigma = self.get_variable("batch_stats", "sn")["dense/kernel/sigma"]
      dense.put_variable("params", "kernel", dense.get_variable("params", "kernel") * sigma)
    return y


class EnergyPrior(nn.Module):
  """f_alpha([z_1..z_L]) = output_scale * MLP(z): `num_layers` x (Dense(width) -> act) -> Dense(1).

  With spectral normalisation (as in the reference, on every Dense including the output), each
  call with `update_stats=True` runs one power iteration and updates `u` in the `batch_stats`
  collection, as PyTorch's `spectral_norm` does in train mode. Every Dense then has spectral
  norm 1, and with a 1-Lipschitz activation (leaky ReLU, ELU) f is `output_scale`-Lipschitz:
  the scale bounds how far the prior can tilt N(0, I), while spectral norm keeps f from
  running away.
  """
  num_layers: int = 4
  width: int = 50
  activation: str = "leaky_relu"
  negative_slope: float = 0.2
  spectral_norm: bool = True
  output_scale: float = 1.0

  @nn.compact
  def __call__(self, z: Array, update_stats: bool = True) -> Array:
    """z: (B, D) concatenated latents -> f(z): (B,)."""
    act = activation_fn(self.activation, self.negative_slope)
    h = z
    for i in range(self.num_layers):
      h = act(_MaybeSNDense(self.width, self.spectral_norm, name=f"fc{i + 1}")(h, update_stats))
    # x * 1.0 is exact in floating point, so the default scale keeps the reference's numbers.
    f = _MaybeSNDense(1, self.spectral_norm, name="out")(h, update_stats)[..., 0]
    return self.output_scale * f
