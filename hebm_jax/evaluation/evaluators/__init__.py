"""One evaluator class per metric; `METRICS` maps the names of `config.eval.metrics` to them."""

from hebm_jax.evaluation.evaluators.base import EvalData, EvalResult, Evaluator
from hebm_jax.evaluation.evaluators.detection import Anomaly, OutOfDistribution
from hebm_jax.evaluation.evaluators.figures import LatentAttack, Traversals
from hebm_jax.evaluation.evaluators.frechet import FID, ClassifierFD
from hebm_jax.evaluation.evaluators.latent_classifier import LatentClassifier
from hebm_jax.evaluation.evaluators.likelihood import LogLikelihood
from hebm_jax.evaluation.evaluators.long_run import LongRunLangevin
from hebm_jax.evaluation.evaluators.mig import MutualInformationGap
from hebm_jax.evaluation.evaluators.prior_kl import PriorKL
from hebm_jax.evaluation.evaluators.reconstruction import ReconstructionMSE

METRICS: dict[str, type[Evaluator]] = {
    cls.name: cls for cls in (LatentClassifier, Anomaly, OutOfDistribution, MutualInformationGap,
                LatentAttack, Traversals, ReconstructionMSE, LongRunLangevin, FID,
                ClassifierFD, LogLikelihood, PriorKL)
}

__all__ = ["METRICS", "EvalData", "EvalResult", "Evaluator"]
