"""Supp. Table 2: MIG and MIG-sup of the posterior over all layers, on 3DShapes' factor labels."""

from __future__ import annotations

import numpy as np

from hebm_jax import input_pipeline
from hebm_jax.data.datasets import SHAPES3D_FACTOR_SIZES
from hebm_jax.evaluation import mig
from hebm_jax.evaluation.evaluators import base

# Number of values of each factor, for datasets that carry factor labels.
FACTOR_SIZES = {"shapes3d": SHAPES3D_FACTOR_SIZES}


class MutualInformationGap(base.Evaluator):
  """`mig.mig_scores` on the posterior of eval.mig.split (all layers' units concatenated)."""
  name = "mig"
  description = "MIG / MIG-sup (Supp. Table 2)"

  @classmethod
  def check(cls, config) -> None:
    spec = input_pipeline.DATASETS[config.data.name]
    base.require(bool(spec.factors) and config.data.name in FACTOR_SIZES, "eval.metrics",
                 f"'mig' needs ground-truth factor labels; dataset {config.data.name!r} has none "
                 "(3DShapes does: data.name='shapes3d').")
    m = config.eval.mig
    base.positive_int(config, "eval.mig.num_samples")
    base.require(isinstance(m.num_images, int) and m.num_images >= 0, "eval.mig.num_images",
                 f"must be a non-negative integer (0: the whole split), got {m.num_images!r}.")
    base.require(m.active_threshold >= 0, "eval.mig.active_threshold",
                 f"must be non-negative, got {m.active_threshold!r}.")
    try:
      input_pipeline.parse_split(m.split)
    except ValueError as e:
      raise base.ConfigError(f"config.eval.mig.split: {e}") from None

  def __init__(self, config, model, data):
    super().__init__(config, model, data)
    data.source(config.eval.mig.split)

  def settings(self) -> dict:
    m = self.config.eval.mig
    return {"split": m.split, "num_images": m.num_images or "all",
            "entropy_samples": m.num_samples, "active_threshold": m.active_threshold,
            "estimator": "pro-VLAE metric_MIG (beta-TCVAE entropy estimator), one z per image"}

  def run(self, state, step, key, with_figures=True) -> base.EvalResult:
    m = self.config.eval.mig
    codes = self.data.codes(state, step, m.split, m.num_images)
    out = mig.mig_scores(np.concatenate(codes.means, axis=1),
                         np.concatenate(codes.logvars, axis=1), codes.extras["factors"],
                         FACTOR_SIZES[self.config.data.name], key, num_samples=m.num_samples,
                         active_threshold=m.active_threshold)
    return base.EvalResult(
        scalars={f"{self.name}/mig": out["mig"], f"{self.name}/mig_sup": out["mig_sup"]},
        details={"normalised_mi": out["mi"], "active": out["active"],
                 "num_active": out["num_active"], "num_images": len(codes)})
