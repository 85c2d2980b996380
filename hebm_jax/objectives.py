"""Losses of the hierarchical joint-EBM-prior model, exactly as the reference implements them.

Notation: x (B, H, W, C); per-layer posterior means and log-variances (B, d_l); z_l the
reparameterised sample; f = f_alpha(concat z) (B,). See REFERENCE Sec. 1.1.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array

KL_ESTIMATORS = ("sample", "analytic")
LIKELIHOODS = ("gaussian", "bernoulli", "l1")


def diag_normal_nll(z: Array, mean: Array, logvar: Array) -> Array:
  """-log N(z; mean, diag(exp(logvar))) without the 0.5*log(2 pi) constants: (B, d) -> (B,).

  The variance in the denominator carries +1e-6, as in the reference.
  """
  return 0.5 * jnp.sum(logvar, -1) + 0.5 * jnp.sum((z - mean) ** 2 / (1e-6 + jnp.exp(logvar)), -1)


def kl_single_sample(z: Array, mean: Array, logvar: Array) -> Array:
  """One-sample Monte-Carlo KL(q(z|x) || N(0, I)) = log q(z|x) - log N(z; 0, I) at z: (B,)."""
  zeros = jnp.zeros_like(z)
  return diag_normal_nll(z, zeros, zeros) - diag_normal_nll(z, mean, logvar)


def kl_analytic(mean: Array, logvar: Array) -> Array:
  """Closed-form KL(N(mean, exp(logvar)) || N(0, I)): (B, d) -> (B,)."""
  return 0.5 * jnp.sum(jnp.exp(logvar) + mean ** 2 - 1.0 - logvar, -1)


def reparameterize(mean: Array, logvar: Array, eps: Array) -> Array:
  """z = mean + exp(logvar / 2) * eps (Eq. 8 with the reparameterisation trick)."""
  return mean + jnp.exp(0.5 * logvar) * eps


def reconstruction_loss(x_hat: Array, x: Array) -> Array:
  """Sum over pixels of (x_hat - x)**2, averaged over the batch: scalar.

  Equals -log p_beta(x|z) * 2 sigma^2 up to a constant; the generator loss scales it by Gfactor
  = 1 / (2 sigma^2) (Eq. 4).
  """
  return jnp.sum((x_hat - x) ** 2) / x.shape[0]


def bernoulli_reconstruction_loss(logits: Array, x: Array) -> Array:
  """-log p(x|z) of a Bernoulli decoder, summed over pixels and averaged over the batch: scalar.

  Args:
    logits: (B, H, W, C) generator logits.
    x: (B, H, W, C) images in [-1, 1]; the Bernoulli targets are (x + 1) / 2 in [0, 1] (the
      sigmoid cross-entropy of pro-VLAE, which also takes non-binary intensities).
  """
  target = (x + 1.0) / 2.0
  # Stable sigmoid cross-entropy: max(l, 0) - l * t + log(1 + exp(-|l|)).
  ce = jnp.maximum(logits, 0.0) - logits * target + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  return jnp.sum(ce) / x.shape[0]


def l1_reconstruction_loss(x_hat: Array, x: Array) -> Array:
  """Sum over pixels of |x_hat - x| on the [0, 1] scale, averaged over the batch: scalar.

  VLAE's loss (`loss_ratio * D * mean|x_hat - x|` on [0, 1] images, REFERENCE 6.1) is Gfactor times
  this with Gfactor = loss_ratio; it is -log p(x|z) of a Laplace decoder with scale 1 / Gfactor up
  to a constant. Both arguments are in [-1, 1], so the [0, 1] difference is half theirs.

  Args:
    x_hat: (B, H, W, C) generated images in [-1, 1].
    x: (B, H, W, C) images in [-1, 1].
  """
  return 0.5 * jnp.sum(jnp.abs(x_hat - x)) / x.shape[0]


def likelihood_loss(generator_out: Array, x: Array, likelihood: str) -> Array:
  """The reconstruction term of the generator loss for `likelihood` (one of `LIKELIHOODS`).

  'gaussian': `reconstruction_loss` of the image (weighted by Gfactor = 1 / (2 sigma^2) in the
  loss); 'bernoulli': `bernoulli_reconstruction_loss` of the logits (use Gfactor = 1); 'l1':
  `l1_reconstruction_loss` of the image (Gfactor = VLAE's loss_ratio).
  """
  if likelihood == "gaussian":
    return reconstruction_loss(generator_out, x)
  if likelihood == "l1":
    return l1_reconstruction_loss(generator_out, x)
  if likelihood == "bernoulli":
    return bernoulli_reconstruction_loss(generator_out, x)
  raise ValueError(f"Unknown likelihood {likelihood!r}; expected one of {LIKELIHOODS}.")


def kl_terms(zs: Sequence[Array], means: Sequence[Array], logvars: Sequence[Array],
             estimator: str = "sample") -> Array:
  """Batch-mean KL per layer, (L,), with the single-sample ('sample') or closed-form estimator."""
  if estimator == "sample":
    kls = [kl_single_sample(z, m, lv) for z, m, lv in zip(zs, means, logvars)]
  elif estimator == "analytic":
    kls = [kl_analytic(m, lv) for m, lv in zip(means, logvars)]
  else:
    raise ValueError(f"Unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}.")
  return jnp.stack([jnp.mean(k) for k in kls])


def kl_warmup_weight(step: Array, warmup_steps: int) -> Array:
  """VLAE's KL warm-up coefficient 1 - exp(-(step + 1) / warmup_steps); 1 when warmup_steps is 0.

  `step` is the 0-based train step (VLAE counts iterations from 1, hence the + 1). Scalar in (0, 1].
  """
  if not warmup_steps:
    return jnp.ones((), jnp.float32)
  return -jnp.expm1(-(jnp.asarray(step, jnp.float32) + 1.0) / float(warmup_steps))


def generator_encoder_loss(rec: Array, kls: Array, f_posterior: Array, gfactor: float,
                           kl_weight: Array | float = 1.0) -> Array:
  """Negative ELBO (Eq. 9) without log Z: Gfactor * rec + w * (sum_l KL_l - mean_b f_alpha(z)).

  Args:
    rec: `reconstruction_loss`, scalar.
    kls: `kl_terms`, (L,): KL of each layer's posterior to N(0, I).
    f_posterior: f_alpha(z) on posterior samples, (B,); gradients reach the encoder through z
      (the -E_q[f] term turns KL(q || N(0, I)) into KL(q || p_alpha) up to log Z, Eq. 12).
    gfactor: 1 / (2 sigma^2).
    kl_weight: w, the KL warm-up coefficient (`kl_warmup_weight`) on the whole prior term
      KL(q || p_alpha) = sum_l KL_l - E_q[f] + log Z; 1 is the reference's loss.

  Returns:
    scalar loss, minimised over generator and encoder parameters (Eq. 11-12).
  """
  return gfactor * rec + kl_weight * (jnp.sum(kls) - jnp.mean(f_posterior))


def ebm_loss(f_prior_samples: Array, f_posterior_samples: Array) -> Array:
  """Contrastive EBM loss whose gradient is minus Eq. 10: mean f(z-) - mean f(z+).

  Args:
    f_prior_samples: f_alpha at short-run prior samples z- (B,).
    f_posterior_samples: f_alpha at posterior samples z+ (B,); the caller stops the gradient of z+
      so that only alpha is trained.

  Returns:
    scalar loss, minimised over the prior parameters alpha.
  """
  return jnp.mean(f_prior_samples) - jnp.mean(f_posterior_samples)
