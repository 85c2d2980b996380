"""A small CNN classifier whose penultimate features give an offline Frechet distance.

FID needs the Inception weights, which machines without internet access cannot fetch. On a
labelled dataset, the Frechet distance between prior samples and real images in the feature space
of a classifier trained on that dataset ranks sample quality in the same way (the classic
"FID with a domain classifier" of MNIST GAN papers). Its values are not FIDs and are not
comparable with the paper's; they compare runs of this code on the same data.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array
FEATURE_DIM = 128


class FeatureCNN(nn.Module):
  """conv 32 -> conv 64 (stride 2) -> conv 64 (stride 2) -> dense 128 (features) -> logits."""
  num_classes: int

  @nn.compact
  def __call__(self, x: Array, features: bool = False) -> Array:
    x = nn.relu(nn.Conv(32, (3, 3))(x))
    x = nn.relu(nn.Conv(64, (3, 3), strides=2)(x))
    x = nn.relu(nn.Conv(64, (3, 3), strides=2)(x))
    h = nn.relu(nn.Dense(FEATURE_DIM)(x.reshape((x.shape[0], -1))))
    return h if features else nn.Dense(self.num_classes)(h)


def train_feature_classifier(images, labels, num_classes: int, key: Array, *, epochs: int = 2,
                             batch_size: int = 128, learning_rate: float = 1e-3) -> dict:
  """Trains `FeatureCNN` with Adam and cross-entropy; returns its params.

  Args:
    images: (N, H, W, C) float in [-1, 1].
    labels: (N,) int in [0, num_classes).
    key: PRNG key (initialisation, and the shuffle of epoch e from fold_in(key, e)).
  """
  images = jnp.asarray(images, jnp.float32)
  labels = jnp.asarray(labels, jnp.int32)
  module = FeatureCNN(num_classes)
  k_init, k_shuffle = jax.random.split(key)
  params = module.init(k_init, images[:1])["params"]
  tx = optax.adam(learning_rate)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, idx):
    def loss_fn(p):
      logits = module.apply({"params": p}, images[idx])
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels[idx]).mean()
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  n = images.shape[0] // batch_size * batch_size
  for epoch in range(epochs):
    order = np.asarray(jax.random.permutation(jax.random.fold_in(k_shuffle, epoch), images.shape[0]))
    for i in range(0, n, batch_size):
      params, opt_state = step(params, opt_state, order[i:i + batch_size])
  return params


@functools.partial(jax.jit, static_argnums=(0, 3))
def _apply(num_classes, params, images, features):
  return FeatureCNN(num_classes).apply({"params": params}, images, features=features)


def feature_fn(params: dict, num_classes: int) -> Callable[[Array], Array]:
  """images (B, H, W, C) in [-1, 1] -> (B, 128) penultimate features (jitted)."""
  return lambda images: _apply(num_classes, params, jnp.asarray(images, jnp.float32), True)


def accuracy(params: dict, num_classes: int, images, labels, batch_size: int = 1000) -> float:
  """Test accuracy of the trained classifier (recorded beside the distance it defines)."""
  hits = 0
  for i in range(0, len(images), batch_size):
    logits = _apply(num_classes, params, jnp.asarray(images[i:i + batch_size], jnp.float32), False)
    hits += int(np.sum(np.asarray(jnp.argmax(logits, -1)) == np.asarray(labels[i:i + batch_size])))
  return hits / max(len(images), 1)
