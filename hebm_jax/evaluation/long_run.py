"""Long-run Langevin on the learned prior (paper Fig. 8, REFERENCE 5.7) and MALA diagnostics.

A well-behaved learned energy keeps its samples realistic far beyond the K steps it was trained
with: the energy profile along a 2,500-step chain stays flat instead of drifting into
oversaturated modes. `long_run_profile` runs the training update (unadjusted Langevin from
N(0, I), step size s) as one jitted scan and records only what the plots need.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from hebm_jax import sampler

Array = jax.Array


def long_run_profile(energy_fn: Callable[[Array], Array], decode_fn: Callable[[Array], Array],
                     z0: Array, key: Array, n_steps: int, step_size: float, record_every: int,
                     num_shown: int) -> dict[str, Array]:
  """Energies along prior Langevin chains, and decoded images of the first chains.

  Runs z <- z + s^2/2 grad_z [f(z) - |z|^2/2] + s eps (`sampler.langevin_trace`), recording at
  step 0 and every `record_every` steps.

  Args:
    energy_fn: f_alpha, (B, D) -> (B,) (the spectral-norm state held fixed).
    decode_fn: (b, D) concatenated latents -> (b, H, W, C) images.
    z0: (B, D) chain starts, N(0, I) draws.
    key: PRNG key of the chain's noise.
    n_steps: chain length T (static), a multiple of `record_every`.
    step_size: s.
    record_every: R (static).
    num_shown: chains decoded at every record (static, <= B).

  Returns:
    {'steps': (T/R + 1,) int, 'neg_f': (T/R + 1, B) -f(z_t), 'energy': (T/R + 1, B)
     -f(z_t) + |z_t|^2 / 2 (the full energy of p_alpha), 'images': (T/R + 1, num_shown, H, W, C)}.
  """
  log_prob = lambda z: energy_fn(z) - 0.5 * jnp.sum(z ** 2, axis=-1)

  def record(z):
    f = energy_fn(z)
    return {"neg_f": -f, "energy": -f + 0.5 * jnp.sum(z ** 2, axis=-1),
            "images": decode_fn(z[:num_shown])}

  _, records = sampler.langevin_trace(log_prob, z0, key, n_steps, step_size, record_every, record)
  first = record(z0)
  out = {k: jnp.concatenate([first[k][None], records[k]]) for k in first}
  out["steps"] = jnp.arange(0, n_steps + 1, record_every)
  return out


def energy_profile_figure(steps, neg_f, energy, title: str = "", train_steps: int | None = None,
                          *, figsize=(8.0, 3.2), dpi: int = 100) -> np.ndarray:
  """Fig. 8's energy plot: mean +- std over chains of -f and of -f + |z|^2/2 against the step.

  Args:
    steps: (R,) recorded steps; neg_f, energy: (R, B).
    title: figure title.
    train_steps: marks the training K with a vertical line when given.

  Returns:
    (H, W, 3) float32 image in [0, 1] (matplotlib Agg, the global backend untouched).
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  steps = np.asarray(steps)
  fig = Figure(figsize=figsize, dpi=dpi)
  canvas = FigureCanvasAgg(fig)
  axes = fig.subplots(1, 2)
  for ax, values, label in ((axes[0], neg_f, r"$-f_\alpha(z)$"),
                            (axes[1], energy, r"$-f_\alpha(z) + \|z\|^2/2$")):
    values = np.asarray(values)
    mean, std = values.mean(axis=1), values.std(axis=1)
    ax.plot(steps, mean, color="C0")
    ax.fill_between(steps, mean - std, mean + std, color="C0", alpha=0.25, linewidth=0)
    if train_steps:
      ax.axvline(train_steps, color="C3", linestyle="--", linewidth=1, label=f"training K={train_steps}")
      ax.legend(fontsize=7, loc="best")
    ax.set_xlabel("Langevin step")
    ax.set_title(label, fontsize=9)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  canvas.draw()
  return np.asarray(canvas.buffer_rgba(), np.float32)[..., :3] / 255.0
