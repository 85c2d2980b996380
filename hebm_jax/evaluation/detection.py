"""Detection metrics on scores where higher means "positive" (anomalous, or out of distribution).

AUPRC follows the MEG/ALAD evaluation script the paper's Table 3 baselines come from: the area
under scikit-learn's precision-recall curve by the trapezoidal rule (`auc(recall, precision)`),
not scikit-learn's step-wise `average_precision_score`.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
  labels = np.asarray(labels).reshape(-1)
  scores = np.asarray(scores, np.float64).reshape(-1)
  if labels.shape != scores.shape:
    raise ValueError(f"labels ({labels.size}) and scores ({scores.size}) differ in length.")
  if not set(np.unique(labels)) <= {0, 1}:
    raise ValueError(f"labels must be 0 or 1; got values {sorted(set(np.unique(labels)))[:5]}.")
  if labels.min() == labels.max():
    raise ValueError("labels hold a single class; AUPRC/AUROC need positives and negatives.")
  if not np.all(np.isfinite(scores)):
    raise ValueError(f"{int(np.sum(~np.isfinite(scores)))} scores are not finite.")
  return labels, scores


def auprc(labels, scores) -> float:
  """Area under the precision-recall curve, positives = label 1 (MEG's computation).

  Args:
    labels: (N,) 0/1.
    scores: (N,) higher = more likely positive.
  """
  labels, scores = _check(labels, scores)
  precision, recall, _ = skm.precision_recall_curve(labels, scores)
  return float(skm.auc(recall, precision))


def auroc(labels, scores) -> float:
  """Area under the ROC curve (scikit-learn `roc_auc_score`), positives = label 1: (N,) x2."""
  labels, scores = _check(labels, scores)
  return float(skm.roc_auc_score(labels, scores))


def detection_metrics(negative_scores, positive_scores) -> dict[str, float]:
  """AUPRC and AUROC of telling positives from negatives by score (higher = positive).

  Args:
    negative_scores: (N0,) scores of the in-distribution / normal examples (label 0).
    positive_scores: (N1,) scores of the OOD / anomalous examples (label 1).

  Returns:
    {'auprc': ..., 'auroc': ...}.
  """
  neg = np.asarray(negative_scores).reshape(-1)
  pos = np.asarray(positive_scores).reshape(-1)
  labels = np.concatenate([np.zeros(neg.size, np.int32), np.ones(pos.size, np.int32)])
  scores = np.concatenate([neg, pos])
  return {"auprc": auprc(labels, scores), "auroc": auroc(labels, scores)}
