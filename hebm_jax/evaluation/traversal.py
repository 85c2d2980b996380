"""Latent traversals (paper Fig. 6) and the prior Langevin-transition plot (paper Fig. 7).

Fig. 6 (MNIST 0/1/2, two 2-d layers) decodes a grid of values of two units of one layer with every
other unit held; Fig. 7 draws the posterior codes of a 2-d layer (coloured by class) together with
short-run Langevin chains of the joint prior, restricted to that layer. See REFERENCE Sec. 4.

The decoder enters only as a pure function `decode_fn(list of L arrays (N, d_l)) -> (N, H, W, C)`
images in [-1, 1]; close over the trained variables.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hebm_jax import sampler, visualization

Array = jax.Array
DecodeFn = Callable[[Sequence[Array]], Array]

DEFAULT_VALUES = tuple(float(v) for v in np.linspace(-2.0, 2.0, 7))


def _default_values(values: Array | Sequence[float] | None) -> Array:
  values = jnp.asarray(DEFAULT_VALUES if values is None else values, jnp.float32)
  if values.ndim != 1 or values.shape[0] < 1:
    raise ValueError(f"values must be a non-empty 1-d array, got shape {values.shape}.")
  return values


def traversal_latents(zs_base: Sequence[Array], layer: int, units: tuple[int, int] = (0, 1),
                      values: Array | Sequence[float] | None = None) -> list[Array]:
  """Latents of a 2-d traversal of two units of one layer, everything else held at `zs_base`.

  The two units of `layer` are *set* to every pair of `values` on an n x n grid, in row-major order:
  entry i * n + j has unit `units[0]` = values[i] (grid row) and unit `units[1]` = values[j] (grid
  column). All other units of `layer` and all other layers keep their `zs_base` values.

  A layer with a single unit has no second unit to traverse: it gets a 1-d traversal of unit 0,
  i.e. n entries with that unit = values[i], and `units` is ignored.

  Args:
    zs_base: list of L arrays (d_l,): one code per layer (a prior sample, a posterior mean, ...).
    layer: the traversed layer (0 = bottom).
    units: the two distinct units of `layer` to traverse.
    values: (n,) values each unit takes; default linspace(-2, 2, 7).

  Returns:
    list of L arrays (n * n, d_l), or (n, d_l) when `layer` has one unit.

  Raises:
    ValueError: on a non-1-d base code, an out-of-range layer, or invalid units.
  """
  values = _default_values(values)
  n = values.shape[0]
  zs_base = [jnp.asarray(z) for z in zs_base]
  for l, z in enumerate(zs_base):
    if z.ndim != 1:
      raise ValueError(f"zs_base[{l}] must be one code of shape (d_l,), got shape {z.shape}.")
  num_layers = len(zs_base)
  if not 0 <= layer < num_layers:
    raise ValueError(f"layer {layer} is out of range for L={num_layers} layers.")
  dim = zs_base[layer].shape[0]

  if dim == 1:
    column = values[:, None].astype(zs_base[layer].dtype)
    count = n
  else:
    u0, u1 = units
    if u0 == u1:
      raise ValueError(f"units must be two distinct units, got {tuple(units)}.")
    for u in (u0, u1):
      if not 0 <= u < dim:
        raise ValueError(f"unit {u} is out of range for layer {layer}, which has {dim} units.")
    count = n * n
    rows, cols = jnp.meshgrid(values, values, indexing="ij")
    column = jnp.broadcast_to(zs_base[layer], (count, dim))
    column = column.at[:, u0].set(rows.reshape(-1)).at[:, u1].set(cols.reshape(-1))

  return [column if l == layer else jnp.broadcast_to(z, (count,) + z.shape)
          for l, z in enumerate(zs_base)]


def layer_traversals(decode_fn: DecodeFn, zs_base: Sequence[Array],
                     values: Array | Sequence[float] | None = None) -> list[Array]:
  """One traversal per layer, on its first two units (or its only unit), decoded.

  All layers are decoded in a single `decode_fn` call (so a jitted decoder compiles once).

  Args:
    decode_fn: list of L arrays (N, d_l) -> (N, H, W, C) images.
    zs_base: list of L arrays (d_l,): the held code.
    values: (n,) traversal values; default linspace(-2, 2, 7).

  Returns:
    list of L arrays (n, n, H, W, C) (grid row = unit 0, column = unit 1), or (1, n, H, W, C) for
    a layer with one unit.
  """
  values = _default_values(values)
  n = values.shape[0]
  per_layer = [traversal_latents(zs_base, l, (0, 1), values) for l in range(len(zs_base))]
  counts = [lat[0].shape[0] for lat in per_layer]
  batched = [jnp.concatenate([lat[k] for lat in per_layer]) for k in range(len(zs_base))]
  images = decode_fn(batched)
  out, start = [], 0
  for count in counts:
    block = images[start:start + count]
    out.append(block.reshape((count // n, n) + block.shape[1:]))
    start += count
  return out


def traversal_figure(traversals: Sequence[Array]) -> np.ndarray:
  """Figure of `layer_traversals`: one grid per layer, side by side, titled with the layer names.

  Args:
    traversals: list of L arrays (r_l, n, H, W, C) in [-1, 1] (r_l = n, or 1 for 1-d layers).

  Returns:
    (rows, cols, C) float32 image in [0, 1]; shorter grids are padded with white at the bottom.
  """
  grids = []
  for t in traversals:
    t = np.asarray(t)
    if t.ndim != 5:
      raise ValueError(f"each traversal must be (rows, n, H, W, C), got shape {t.shape}.")
    grids.append(visualization.make_grid(t.reshape((-1,) + t.shape[2:]), ncol=t.shape[1]))
  height = max(g.shape[0] for g in grids)
  grids = [np.concatenate([g, np.ones((height - g.shape[0],) + g.shape[1:], np.float32)])
           for g in grids]
  return visualization.with_titles(grids, visualization.layer_names(len(grids)))


def prior_chains(log_prob_fn_with_state: Callable[[Array, Any], tuple[Array, Any]], z0: Array,
                 state: Any, key: Array, n_steps: int, step_size: float) -> Array:
  """Prior Langevin trajectories including the start (`sampler.langevin_with_state`).

  For Fig. 7 run the chain on the joint prior (all layers concatenated) and slice the plotted
  layer afterwards, e.g. `models.split_latents(chains, z_dims)[layer]`: the joint EBM couples the
  layers, so a chain of one layer alone would sample a different distribution. The chain uses the
  same noise as `sampler.sample_prior` with the same key, so its last entry is that sample. The
  updated state (e.g. spectral-norm vectors) is dropped: this is for plots only.

  Args:
    log_prob_fn_with_state: (z (B, D), state) -> (log p(z) (B,), state), e.g.
      `sampler.prior_log_prob_fn(prior, params)`.
    z0: (B, D) starting points.
    state: the log density's state (`()` for none).
    key: PRNG key for the chain's noise.
    n_steps: T (static).
    step_size: s.

  Returns:
    (T + 1, B, D): entry 0 is z0, entry t the chain after t steps.
  """
  _, _, trajectory = sampler.langevin_with_state(log_prob_fn_with_state, z0, state, key, n_steps,
                                                 step_size, return_trajectory=True)
  return jnp.concatenate([jnp.asarray(z0)[None], trajectory])


def langevin_transition_figure(posterior_codes: Array, labels: Array | None, chains: Array,
                               layer_name: str, step_indices: Sequence[int] | None = None, *,
                               max_chains: int = 100, figsize: tuple[float, float] = (5.0, 5.0),
                               dpi: int = 100) -> np.ndarray:
  """Fig. 7: posterior codes of a 2-d layer with prior Langevin chains drawn over them.

  Posterior codes are a scatter of small points, coloured by label (tab10/tab20, with a legend when
  there are at most 10 classes) or in one colour when `labels` is None. Each chain is a faint line
  from its start (circle) to its end (star). Rendered off-screen with `matplotlib.figure.Figure` and
  the Agg canvas, never pyplot, so matplotlib's global backend is left as it was.

  Args:
    posterior_codes: (N, 2) posterior codes (e.g. means) of the layer.
    labels: (N,) integer class labels, or None.
    chains: (T, M, 2) prior Langevin chains of that layer (T steps including the start, M chains),
      e.g. a slice of `prior_chains`.
    layer_name: shown in the title, e.g. 'z2 (top)'.
    step_indices: optional chain steps (indices into T, negatives allowed) whose positions are
      also marked, coloured from early to late, to show how the chains move; default none.
    max_chains: draw at most this many chains (the first ones) to keep the plot readable.
    figsize, dpi: matplotlib figure size (inches) and resolution.

  Returns:
    (H, W, 3) float32 image in [0, 1], H = figsize[1] * dpi, W = figsize[0] * dpi.
  """
  # pylint: disable=g-import-not-at-top
  import matplotlib
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  # pylint: enable=g-import-not-at-top

  codes = np.asarray(posterior_codes, np.float64)
  chains = np.asarray(chains, np.float64)
  if codes.ndim != 2 or codes.shape[1] != 2:
    raise ValueError(f"posterior_codes must be (N, 2), got shape {codes.shape}.")
  if chains.ndim != 3 or chains.shape[2] != 2 or chains.shape[0] < 1:
    raise ValueError(f"chains must be (T, M, 2) with T >= 1, got shape {chains.shape}.")
  if labels is not None:
    labels = np.asarray(labels)
    if labels.shape != (codes.shape[0],):
      raise ValueError(f"labels must be ({codes.shape[0]},), got shape {labels.shape}.")
  num_steps = chains.shape[0]
  steps = [] if step_indices is None else [int(i) for i in step_indices]
  for i in steps:
    if not -num_steps <= i < num_steps:
      raise ValueError(f"step index {i} is out of range for chains with T={num_steps} steps.")
  chains = chains[:, :max_chains]

  fig = Figure(figsize=figsize, dpi=dpi)
  canvas = FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)

  if labels is None:
    ax.scatter(codes[:, 0], codes[:, 1], s=3, c="tab:orange", alpha=0.5, linewidths=0,
               label="posterior")
  else:
    classes = np.unique(labels)
    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for k, c in enumerate(classes):
      sel = labels == c
      ax.scatter(codes[sel, 0], codes[sel, 1], s=3, color=cmap(k % cmap.N), alpha=0.5,
                 linewidths=0, label=f"class {c}" if len(classes) <= 10 else None)

  for m in range(chains.shape[1]):
    # Black, so that a chain never shares its colour with a class (tab10 starts with blue).
    ax.plot(chains[:, m, 0], chains[:, m, 1], color="black", alpha=0.3, linewidth=0.6)
  ax.scatter(chains[0, :, 0], chains[0, :, 1], s=14, marker="o", facecolors="none",
             edgecolors="black", linewidths=0.7, label="chain start", zorder=3)
  ax.scatter(chains[-1, :, 0], chains[-1, :, 1], s=30, marker="*", color="black",
             edgecolors="white", linewidths=0.3, label="chain end", zorder=4)
  for rank, i in enumerate(steps):
    shade = 0.3 + 0.6 * rank / max(len(steps) - 1, 1)
    ax.scatter(chains[i, :, 0], chains[i, :, 1], s=8, marker="D", color=(0.0, 0.0, shade),
               alpha=0.8, label=f"step {i % num_steps}", zorder=3)

  ax.set_title(f"Prior Langevin transitions and posterior, {layer_name}")
  ax.set_xlabel("unit 1")
  ax.set_ylabel("unit 2")
  ax.legend(loc="best", fontsize=6, markerscale=2, framealpha=0.8)
  fig.tight_layout()
  canvas.draw()
  rgba = np.asarray(canvas.buffer_rgba(), np.float32)
  return rgba[..., :3] / 255.0
