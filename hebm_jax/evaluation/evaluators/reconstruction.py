"""Table 2's MSE: per-pixel squared error of test reconstructions from the posterior means."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from hebm_jax import models
from hebm_jax.evaluation import encode
from hebm_jax.evaluation.evaluators import base
from hebm_jax.train_state import network_variables


def reconstruction_mse(images: jax.Array, reconstructions: jax.Array) -> jax.Array:
  """Per-image mean over pixels of (x - x_hat)^2 on the [-1, 1] scale: (B, H, W, C) x2 -> (B,).

  On the [0, 1] scale the value is a quarter of this ((x + 1) / 2 halves every difference).
  """
  return jnp.mean((images - reconstructions) ** 2, axis=tuple(range(1, images.ndim)))


@functools.partial(jax.jit, static_argnums=0)
def _posterior_mean_mse(model, state, images):
  means, _ = model.encoder.apply(network_variables(state, "encoder"), images)
  logits = model.generator.apply(network_variables(state, "generator"), means, return_logits=True)
  return reconstruction_mse(images, models.output_image(logits, model.generator.output))


class ReconstructionMSE(base.Evaluator):
  """Mean over data.eval_split (the first eval.mse.num_images; 0: all) of `reconstruction_mse`,
  decoding the posterior means (REFERENCE 5.2; the paper's scale is unconfirmed, so both)."""
  name = "mse"
  description = "reconstruction MSE on the test split (Table 2)"

  @classmethod
  def check(cls, config) -> None:
    n = config.eval.mse.num_images
    base.require(isinstance(n, int) and n >= 0, "eval.mse.num_images",
                 f"must be a non-negative integer (0: the whole split), got {n!r}.")

  def __init__(self, config, model, data):
    super().__init__(config, model, data)
    data.source(config.data.eval_split)

  def settings(self) -> dict:
    return {"split": self.config.data.eval_split, "num_images": self.config.eval.mse.num_images or "all",
            "latent": "posterior mean", "per": "pixel and channel"}

  def run(self, state, step, key, with_figures=True) -> base.EvalResult:
    split = self.config.data.eval_split
    out = encode.map_split(
        lambda b: {"mse": _posterior_mean_mse(self.model, state, jnp.asarray(b["image"]))},
        self.data.source(split), self.config.eval.batch_size, f"step {step}: reconstructing {split}",
        self.config.eval.mse.num_images)
    mse = float(out["mse"].mean())
    return base.EvalResult(scalars={f"{self.name}/mse": mse, f"{self.name}/mse_01": mse / 4.0},
                           details={"num_images": int(out["mse"].size)})
