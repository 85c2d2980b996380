"""Evaluation: the paper's experiments as pure functions, plus thin drivers for `--mode=eval`.

Pure functions (usable on any model and data):
  detection    auprc, auroc, detection_metrics                    (Table 3, Supp. Table 1)
  log_joint    log_likelihood, log_joint, posterior_log_joint, anomaly_scores
  classifier   latent_classifier (the Table 1 MLP), predict
  mig          entropy_estimates, mutual_information, mig_scores   (Supp. Table 2)
  attack       gaussian_kl, latent_attack, attack_layers, attack_grid   (Fig. 9)
  traversal    traversal_latents, layer_traversals, traversal_figure, prior_chains,
               langevin_transition_figure                         (Figs. 6, 7)
  fid          feature_statistics, frechet_distance, kernel_inception_distance   (Tables 2, 4-6)
  inception    the FID Inception-v3 (pytorch-fid's) in Flax: load_weights, feature_fn
  feature_classifier   a small CNN for an offline Frechet distance on labelled data
  long_run     long_run_profile, energy_profile_figure                 (Fig. 8)
  prior_kl     prior_kl (KL(p_alpha || N(0, I)), joint and per layer), prior_kl_scalars
  likelihood   log_normalizer_ais, log_normalizer_is, importance_weighted_log_likelihood,
               bits_per_dim
  encode       encode_split (posterior codes of a split), map_split

Drivers: `evaluators.METRICS` maps each name of `config.eval.metrics` to an evaluator class
(`check(config)`, then `run(state, step, key)`); `driver.run_evaluation(config, workdir)` is
`--mode=eval`; `in_training.TrainMetrics` runs config.eval.train_metrics at the trainer's evals;
`paper.paper_numbers(config)` holds the reported numbers set beside ours.
"""

from hebm_jax.evaluation import (attack, classifier, detection, encode, fid, likelihood, log_joint,
                                 long_run, mig, prior_kl, traversal)
from hebm_jax.evaluation.attack import attack_layers, latent_attack
from hebm_jax.evaluation.classifier import latent_classifier
from hebm_jax.evaluation.detection import auprc, auroc, detection_metrics
from hebm_jax.evaluation.log_joint import anomaly_scores, log_joint as unnormalized_log_joint
from hebm_jax.evaluation.mig import mig_scores

__all__ = ["attack", "classifier", "detection", "encode", "fid", "likelihood", "log_joint",
           "long_run", "mig", "prior_kl", "traversal",
           "anomaly_scores", "attack_layers", "auprc", "auroc", "detection_metrics",
           "latent_attack", "latent_classifier", "mig_scores", "unnormalized_log_joint"]
