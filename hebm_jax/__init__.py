"""hebm-jax: hierarchical latent-variable models with a joint latent-space EBM prior, in JAX/Flax.

Reimplements Cui, Wu & Han, "Learning Hierarchical Features with Joint Latent Space Energy-Based
Prior", ICCV 2023. Modules:
  models          EnergyPrior and the encoder/generator families (FAMILIES, build_models)
  sampler         langevin, langevin_with_state, langevin_trace, mala_with_state, sample_prior,
                  sample_prior_mala, sample_joint_prior, hierarchical_sampling, prior_log_density
                  (the prior's log density as a pure function of z, e.g. for blackjax)
  objectives      the reference's losses (single-sample KL, reconstruction, EBM contrastive loss)
  input_pipeline  the paper's datasets through tfds + grain (load_split, train_iterator)
  train_state     TrainState, the model description (HEBM), optimisers and schedules
  train_step      train_step, eval_step and their pmapped forms
  train           train_and_evaluate (the loop); re-exports TrainState and train_step
  evaluation      the paper's metrics as pure functions, and `--mode=eval` (evaluation.driver)
  prior_samples   decoded prior samples in batches (sampling and FID)
  generate        `--mode=sample`: prior samples, reconstructions, hierarchical grids
  sweep           `python -m hebm_jax.sweep`: ablation grids trained and evaluated
  summary         parameter counts and shapes of a config (`--mode=summary`)
"""

from hebm_jax import models, objectives, sampler
from hebm_jax.models import EnergyPrior, HierarchicalEncoder, HierarchicalGenerator
from hebm_jax.sampler import (hierarchical_sampling, langevin, langevin_with_state,
                              prior_log_density, sample_joint_prior, sample_prior)

__version__ = "0.1.0"

__all__ = ["models", "objectives", "sampler", "EnergyPrior", "HierarchicalEncoder",
           "HierarchicalGenerator", "hierarchical_sampling", "langevin", "langevin_with_state",
           "prior_log_density", "sample_joint_prior", "sample_prior"]
