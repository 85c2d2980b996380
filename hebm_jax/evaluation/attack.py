"""Latent-space adversarial attack on one latent layer (paper Fig. 9, REFERENCE Sec. 5.6).

The attack of Gondim-Ribeiro et al. 2018 (their Eq. 5): for a source image x_o and a target x_t,
find a perturbation d minimising

    KL(q(z_l | x_o + d) || q(z_l | x_t)) + lam * ||d||_2          (per image)

subject to x_o + d lying in the valid pixel range. Following the paper, the KL is taken over the
attacked layer l only, and one attack is run per layer (bottom -> top); how far the other layers'
posteriors move shows how entangled the layers are.

The encoder enters only as a pure function `encode_fn(images) -> (means, logvars)` (lists of L
arrays (B, d_l)), so nothing here knows about our model classes: close over the trained variables,
e.g. `encode_fn = lambda x: encoder.apply(enc_vars, x)`.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hebm_jax import visualization

Array = jax.Array
EncodeFn = Callable[[Array], tuple[Sequence[Array], Sequence[Array]]]
DecodeFn = Callable[[Sequence[Array]], Array]

# ||d||_2 = sqrt(sum d^2) has no gradient at d = 0, where the attack starts (and where pixels the
# attacked layer does not read stay). Inside the optimised objective we use sqrt(sum d^2 + eps):
# its gradient at 0 is exactly 0 (a valid subgradient of the norm), so unread pixels are never
# pushed, and it differs from the norm by at most sqrt(eps) = 1e-6 anywhere. Reported distortions
# use the exact norm.
_NORM_EPS = 1e-12


class AttackResult(NamedTuple):
  """Outcome of `latent_attack`.

  Attributes:
    adversarial: (B, H, W, C) x_o + d, inside the pixel range.
    kl: (B,) final KL(q(z_l | x_adv) || q(z_l | x_t)) of the attacked layer.
    kl_initial: (B,) KL(q(z_l | x_o) || q(z_l | x_t)) before the attack.
    distortion: (B,) ||d||_2 = ||x_adv - x_o||_2 per image.
    objective: (num_steps,) batch mean of KL + lam * ||d|| after each optimiser step.
  """
  adversarial: Array
  kl: Array
  kl_initial: Array
  distortion: Array
  objective: Array


def gaussian_kl(mean_p: Array, logvar_p: Array, mean_q: Array, logvar_q: Array) -> Array:
  """Closed-form KL(N(mean_p, diag exp(logvar_p)) || N(mean_q, diag exp(logvar_q))).

  Args:
    mean_p, logvar_p: (B, d) parameters of the first Gaussian.
    mean_q, logvar_q: (B, d) parameters of the second Gaussian (broadcastable).

  Returns:
    (B,) KL summed over the d units.
  """
  var_ratio = jnp.exp(logvar_p - logvar_q)
  mahalanobis = (mean_p - mean_q) ** 2 * jnp.exp(-logvar_q)
  return 0.5 * jnp.sum(var_ratio + mahalanobis - 1.0 - (logvar_p - logvar_q), axis=-1)


def _per_image_norm(d: Array, eps: float = 0.0) -> Array:
  """(B, ...) -> (B,) sqrt(sum of squares over all but the batch axis + eps)."""
  return jnp.sqrt(jnp.sum(d.reshape(d.shape[0], -1) ** 2, axis=-1) + eps)


def _check_layer(layer: int, num_layers: int) -> None:
  if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool):
    raise ValueError(f"layer must be a Python int (static), got {layer!r}.")
  if not 0 <= layer < num_layers:
    raise ValueError(f"layer {layer} is out of range: the encoder has L={num_layers} layers "
                     f"(valid layers 0..{num_layers - 1}).")


def latent_attack(encode_fn: EncodeFn, x_orig: Array, x_target: Array, layer: int, *,
                  lam: float = 1.0, num_steps: int = 500, learning_rate: float = 1e-2,
                  pixel_range: tuple[float, float] = (-1.0, 1.0)) -> AttackResult:
  """Latent attack on one layer: min_d KL(q(z_l|x_o+d) || q(z_l|x_t)) + lam ||d||_2 (per image).

  The adversarial image x_adv = x_o + d is optimised directly with Adam, starting at x_o (d = 0),
  and projected onto the pixel box by clipping after every step. Optimising x_adv rather than d
  keeps the result exactly inside `pixel_range` (x_o + (clip(x_o + d) - x_o) can overshoot the
  bound by one ulp in floating point). The optimised loss is the batch *sum* of the per-image
  objectives, so each image's gradient is that of its own objective and images do not interact.
  The target posterior is computed once, outside the gradient. The iterate after the last step is
  returned (not the best one seen).

  Jittable with `encode_fn`, `layer` and `num_steps` static, e.g.
  `jax.jit(latent_attack, static_argnums=(0, 3), static_argnames="num_steps")`; `lam`,
  `learning_rate` and `pixel_range` may be static or traced.

  Args:
    encode_fn: images (B, H, W, C) -> (means, logvars), each a list of L arrays (B, d_l).
    x_orig: (B, H, W, C) source images x_o.
    x_target: (B, H, W, C) target images x_t (same shape).
    layer: the attacked layer, 0 (bottom) .. L-1 (top).
    lam: weight of the distortion penalty ||d||_2.
    num_steps: Adam steps (>= 1).
    learning_rate: Adam step size (in pixel units).
    pixel_range: (low, high) valid pixel values.

  Returns:
    `AttackResult`.

  Raises:
    ValueError: on mismatched image shapes, an out-of-range layer, or num_steps < 1.
  """
  if x_orig.shape != x_target.shape:
    raise ValueError(f"x_orig has shape {x_orig.shape} but x_target has shape {x_target.shape}; "
                     "they must match.")
  if x_orig.ndim < 2:
    raise ValueError(f"images need a leading batch axis; got shape {x_orig.shape}.")
  if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
    raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}.")
  low, high = pixel_range
  if isinstance(low, (int, float)) and isinstance(high, (int, float)) and not low < high:
    raise ValueError(f"pixel_range must satisfy low < high, got {pixel_range}.")

  means_t, logvars_t = encode_fn(x_target)
  _check_layer(layer, len(means_t))
  mean_t = jax.lax.stop_gradient(means_t[layer])
  logvar_t = jax.lax.stop_gradient(logvars_t[layer])

  def layer_kl(x):
    means, logvars = encode_fn(x)
    return gaussian_kl(means[layer], logvars[layer], mean_t, logvar_t)

  def loss(x_adv):
    kl = layer_kl(x_adv)
    objective = kl + lam * _per_image_norm(x_adv - x_orig, _NORM_EPS)
    return jnp.sum(objective), objective

  optimizer = optax.adam(learning_rate)
  grad_fn = jax.value_and_grad(loss, has_aux=True)

  def step(carry, _):
    x_adv, opt_state = carry
    (_, objective), grad = grad_fn(x_adv)
    updates, opt_state = optimizer.update(grad, opt_state, x_adv)
    x_adv = jnp.clip(optax.apply_updates(x_adv, updates), low, high)
    return (x_adv, opt_state), jnp.mean(objective)

  x0 = jnp.asarray(x_orig)
  (x_adv, _), before = jax.lax.scan(step, (x0, optimizer.init(x0)), None, length=num_steps)
  # The scan evaluated the objective at iterates 0..T-1 (before each step); one more evaluation at
  # iterate T turns that into the objective after each step.
  _, final_objective = loss(x_adv)
  objective = jnp.concatenate([before[1:], jnp.mean(final_objective)[None]])

  return AttackResult(adversarial=x_adv,
                      kl=layer_kl(x_adv),
                      kl_initial=layer_kl(x0),
                      distortion=_per_image_norm(x_adv - x0),
                      objective=objective)


def attack_layers(encode_fn: EncodeFn, decode_fn: DecodeFn, x_orig: Array, x_target: Array,
                  num_layers: int, **kw) -> dict[str, Array]:
  """Runs `latent_attack` on every layer 0..L-1 (bottom -> top) and decodes the results.

  Args:
    encode_fn: as in `latent_attack`.
    decode_fn: list of L arrays (B, d_l) -> (B, H, W, C) images.
    x_orig, x_target: (B, H, W, C) source and target images.
    num_layers: L; must equal the number of layers `encode_fn` returns.
    **kw: keyword arguments of `latent_attack` (lam, num_steps, learning_rate, pixel_range).

  Returns:
    dict with
      'adversarial': (L, B, H, W, C) x_adv of the attack on each layer;
      'reconstruction': (L, B, H, W, C) decode_fn(posterior means of x_adv);
      'kl', 'kl_initial', 'distortion': (L, B) from each layer's `AttackResult`;
      'kl_all_layers': (L, L, B); [l, k] is KL(q(z_k | x_adv) || q(z_k | x_t)) for the attack on
        layer l, i.e. whether attacking l also moves layer k (the diagonal equals 'kl').
  """
  means_t, logvars_t = encode_fn(x_target)
  if len(means_t) != num_layers:
    raise ValueError(f"num_layers={num_layers} but encode_fn returns {len(means_t)} layers.")

  outputs = {name: [] for name in ("adversarial", "reconstruction", "kl", "kl_initial",
                                   "distortion", "kl_all_layers")}
  for layer in range(num_layers):
    # One compiled program per layer (the layer is static); the encoder is closed over.
    attack = jax.jit(functools.partial(latent_attack, encode_fn, layer=layer, **kw))
    result = attack(x_orig, x_target)
    means_a, logvars_a = encode_fn(result.adversarial)
    outputs["adversarial"].append(result.adversarial)
    outputs["reconstruction"].append(decode_fn(list(means_a)))
    outputs["kl"].append(result.kl)
    outputs["kl_initial"].append(result.kl_initial)
    outputs["distortion"].append(result.distortion)
    outputs["kl_all_layers"].append(jnp.stack([
        gaussian_kl(means_a[k], logvars_a[k], means_t[k], logvars_t[k])
        for k in range(num_layers)]))
  return {name: jnp.stack(values) for name, values in outputs.items()}


def attack_grid(x_orig: Array, x_target: Array, adversarial: Array,
                reconstruction: Array) -> np.ndarray:
  """Figure of `attack_layers`' output (paper Fig. 9), one titled block per layer, side by side.

  Each block has one row per image and the columns original | target | adversarial |
  reconstruction of the adversarial image; blocks are titled with `visualization.layer_names`.

  Args:
    x_orig, x_target: (B, H, W, C) in [-1, 1].
    adversarial, reconstruction: (L, B, H, W, C) in [-1, 1].

  Returns:
    (rows, cols, C) float32 image in [0, 1].
  """
  x_orig, x_target = np.asarray(x_orig), np.asarray(x_target)
  adversarial, reconstruction = np.asarray(adversarial), np.asarray(reconstruction)
  if x_orig.shape != x_target.shape or x_orig.ndim != 4:
    raise ValueError(f"x_orig {x_orig.shape} and x_target {x_target.shape} must both be "
                     "(B, H, W, C).")
  if adversarial.shape != reconstruction.shape or adversarial.shape[1:] != x_orig.shape:
    raise ValueError(f"adversarial {adversarial.shape} and reconstruction {reconstruction.shape} "
                     f"must both be (L,) + {x_orig.shape}.")
  num_layers = adversarial.shape[0]
  grids = []
  for layer in range(num_layers):
    # (B, 4, H, W, C) -> row-major (4B, H, W, C): each grid row is one image's four panels.
    panels = np.stack([x_orig, x_target, adversarial[layer], reconstruction[layer]], axis=1)
    grids.append(visualization.make_grid(panels.reshape((-1,) + x_orig.shape[1:]), ncol=4))
  return visualization.with_titles(grids, visualization.layer_names(num_layers))
