"""The latent classifier of Table 1: how much class information each layer's code carries.

Per layer l, an MLP Linear(d_l, 256) -> ReLU -> Linear(256, classes) -> softmax (REFERENCE 5.1) is
trained with cross-entropy and Adam on the posterior means of the training split, and its accuracy
on the test split's posterior means is reported. The paper leaves optimiser and epochs open; the
defaults (Adam 1e-3, 50 epochs, batch 256) are REFERENCE's suggestion. Given validation codes, the
epoch is chosen on them (the parameters after the epoch of best validation accuracy, the first on
ties), so that the test split is only ever read for the number reported.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array


class LatentMLP(nn.Module):
  """Linear(d, hidden) -> ReLU -> Linear(hidden, num_classes); returns logits (B, num_classes)."""
  num_classes: int
  hidden: int = 256

  @nn.compact
  def __call__(self, z: Array) -> Array:
    return nn.Dense(self.num_classes)(nn.relu(nn.Dense(self.hidden)(z)))


class ClassifierResult(NamedTuple):
  """accuracy: test accuracy in [0, 1] (of the selected epoch); train_accuracy: on the training
  codes; params: the MLP's (of the selected epoch); losses: (epochs,) mean training cross-entropy
  per epoch; val_accuracy: validation accuracy of the selected epoch (NaN without validation
  codes); epoch: the epochs trained for the returned params (1..epochs; all of them without
  validation codes); val_accuracies: (epochs,) validation accuracy after each epoch (empty
  without validation codes)."""
  accuracy: float
  train_accuracy: float
  params: dict
  losses: np.ndarray
  val_accuracy: float = float("nan")
  epoch: int = 0
  val_accuracies: np.ndarray = np.zeros(0, np.float32)


@functools.partial(jax.jit, static_argnames=("module", "batch_size", "tx"))
def _epoch(module, tx, params, opt_state, codes, labels, key, batch_size):
  n = codes.shape[0]
  num_batches = n // batch_size
  order = jax.random.permutation(key, n)[:num_batches * batch_size].reshape(num_batches, batch_size)

  def loss_fn(p, idx):
    logits = module.apply({"params": p}, codes[idx])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels[idx]).mean()

  def step(carry, idx):
    p, s = carry
    loss, grads = jax.value_and_grad(loss_fn)(p, idx)
    updates, s = tx.update(grads, s, p)
    return (optax.apply_updates(p, updates), s), loss

  (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), order)
  return params, opt_state, jnp.mean(losses)


@functools.partial(jax.jit, static_argnames=("module",))
def _predict(module, params, codes):
  return jnp.argmax(module.apply({"params": params}, codes), axis=-1)


def predict(params: dict, codes, num_classes: int, hidden: int = 256, batch_size: int = 10_000) -> np.ndarray:
  """Class predictions of a trained `LatentMLP`: codes (N, d) -> (N,) int."""
  module = LatentMLP(num_classes, hidden)
  codes = np.asarray(codes, np.float32)
  return np.concatenate([np.asarray(_predict(module, params, codes[i:i + batch_size]))
                         for i in range(0, len(codes), batch_size)]) if len(codes) else np.zeros(0, int)


def latent_classifier(train_codes, train_labels, test_codes, test_labels, num_classes: int,
                      key: Array, *, hidden: int = 256, epochs: int = 50, batch_size: int = 256,
                      learning_rate: float = 1e-3, val_codes=None,
                      val_labels=None) -> ClassifierResult:
  """Trains the Table 1 MLP on one layer's codes and returns its test accuracy.

  Args:
    train_codes: (N, d) float, e.g. posterior means of layer l on the training split.
    train_labels: (N,) int in [0, num_classes).
    test_codes: (M, d); test_labels: (M,).
    num_classes: number of classes.
    key: PRNG key (initialisation and the per-epoch shuffles, folded by epoch: the first k epochs
      of a run are those of a run of k epochs).
    hidden, epochs, batch_size, learning_rate: MLP width and Adam training schedule.
    val_codes, val_labels: (V, d), (V,) validation codes; when given, the parameters returned (and
      tested) are those after the epoch of best validation accuracy.

  Returns:
    `ClassifierResult`.
  """
  train_codes = np.asarray(train_codes, np.float32)
  test_codes = np.asarray(test_codes, np.float32)
  train_labels = np.asarray(train_labels).astype(np.int32)
  test_labels = np.asarray(test_labels).astype(np.int32)
  if train_codes.ndim != 2 or test_codes.ndim != 2 or train_codes.shape[1] != test_codes.shape[1]:
    raise ValueError(f"codes must be (N, d) with the same d; got train {train_codes.shape}, "
                     f"test {test_codes.shape}.")
  if len(train_labels) != len(train_codes) or len(test_labels) != len(test_codes):
    raise ValueError(f"{len(train_codes)} train codes with {len(train_labels)} labels, "
                     f"{len(test_codes)} test codes with {len(test_labels)} labels.")
  validate = val_codes is not None
  if validate:
    val_codes = np.asarray(val_codes, np.float32)
    val_labels = np.asarray(val_labels).astype(np.int32)
    if val_codes.ndim != 2 or val_codes.shape[1] != train_codes.shape[1] or not len(val_codes):
      raise ValueError(f"validation codes must be (V > 0, {train_codes.shape[1]}); got "
                       f"{val_codes.shape}.")
    if len(val_labels) != len(val_codes):
      raise ValueError(f"{len(val_codes)} validation codes with {len(val_labels)} labels.")
  for name, labels in (("train", train_labels), ("test", test_labels),
                       ("validation", val_labels if validate else test_labels)):
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
      raise ValueError(f"{name} labels must lie in [0, {num_classes}); got {labels.min()}..{labels.max()}.")
  if len(train_codes) < batch_size:
    raise ValueError(f"{len(train_codes)} training codes are fewer than one batch ({batch_size}).")

  module = LatentMLP(num_classes, hidden)
  k_init, k_shuffle = jax.random.split(key)
  params = module.init(k_init, train_codes[:1])["params"]
  tx = optax.adam(learning_rate)
  opt_state = tx.init(params)
  codes, labels = jnp.asarray(train_codes), jnp.asarray(train_labels)
  accuracy = lambda p, c, y: (float(np.mean(predict(p, c, num_classes, hidden) == y)) if len(y)
                              else float("nan"))
  losses, val_accuracies = [], []
  best = (-1.0, 0, params)  # (validation accuracy, epoch, params)
  for epoch in range(epochs):
    params, opt_state, loss = _epoch(module, tx, params, opt_state, codes, labels,
                                     jax.random.fold_in(k_shuffle, epoch), batch_size)
    losses.append(loss)
    if validate:
      val_accuracies.append(accuracy(params, val_codes, val_labels))
      if val_accuracies[-1] > best[0]:
        best = (val_accuracies[-1], epoch + 1, params)
  val_accuracy, epoch, params = best if validate else (float("nan"), epochs, params)
  return ClassifierResult(accuracy(params, test_codes, test_labels),
                          accuracy(params, train_codes, train_labels), params,
                          np.asarray(jax.device_get(losses), np.float32), val_accuracy, epoch,
                          np.asarray(val_accuracies, np.float32))
