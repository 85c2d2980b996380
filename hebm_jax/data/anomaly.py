"""The MNIST anomaly-detection split of MEG/ALAD (used by LEBM and the paper's Table 3).

Protocol (REFERENCE.md section 5.3, and MEG's `data/mnist_anomaly.py`): all 70,000 MNIST images are
concatenated (here: tfds 'train' then 'test'), the held-out digit is removed, the remaining
"normal" images are permuted with `np.random.RandomState(42)`, training takes the first 80 % of
them, and the test set is the other 20 % plus every image of the held-out digit, permuted again.

RNG draws, matched to MEG: one module-level `RandomState(42)` serves both of its calls, and its
script calls `get_train(label)` before `get_test(label)`. Each call draws a permutation of the
normal images and then a permutation of that call's test set, so training uses draw 1 (draw 2 is
discarded), and the test set is built from draw 3 and permuted by draw 4. Because draws 1 and 3
differ, the normal part of MEG's test set is not disjoint from its training set (about 80 % of it
was trained on); `meg_rng_sequence=False` gives the disjoint split from the first call alone.

A caveat that no code can remove: MEG's array order was its own `mnist.npz` ('x_train', 'x_test',
'x_valid'), and tfds stores MNIST in its own shuffled order, so the same seed selects different
images here; the procedure, sizes and class contents are the same.
"""

from __future__ import annotations

import numpy as np

MEG_SEED = 42
TRAIN_FRACTION = 0.8


def _one_call(rng: np.random.RandomState, labels: np.ndarray, held_out_digit: int):
  """One call of MEG's `_get_adapted_dataset`: (train indices, test indices), drawing twice."""
  normal = np.flatnonzero(labels != held_out_digit)
  anomalous = np.flatnonzero(labels == held_out_digit)
  normal = normal[rng.permutation(normal.shape[0])]
  cut = int(normal.shape[0] * TRAIN_FRACTION)
  test = np.concatenate([normal[cut:], anomalous])
  test = test[rng.permutation(test.shape[0])]
  return normal[:cut], test


def mnist_anomaly_split(labels: np.ndarray, held_out_digit: int,
                        meg_rng_sequence: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Indices into `labels` (the 70,000 concatenated MNIST labels) of the train and test splits.

  Args:
    labels: (N,) digit labels, in the order the images are concatenated.
    held_out_digit: the anomalous digit.
    meg_rng_sequence: True: MEG's draws (train from its first call, test from its second);
      False: train and test from one call, so they are disjoint.

  Returns:
    (train_indices, test_indices), int64. Anomaly labels are `labels[idx] == held_out_digit`.
  """
  labels = np.asarray(labels)
  rng = np.random.RandomState(MEG_SEED)
  train, test = _one_call(rng, labels, held_out_digit)
  if meg_rng_sequence:
    _, test = _one_call(rng, labels, held_out_digit)
  return train.astype(np.int64), test.astype(np.int64)
