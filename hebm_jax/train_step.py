"""The pure train step (REFERENCE Sec. 1.1 order), the eval step, and their pmapped forms.

One iteration, as the authors' code runs it:
  1. generator + encoder: one Adam step on Gfactor * rec + sum_l KL_l - mean f(z+) (z+ ~ q(z|x));
  2. prior sampling: K-step Langevin from N(0, I) with the current (not yet updated) f_alpha;
  3. EBM: one Adam step on mean f(z-) - mean f(stop_gradient(z+)), z+ from step 1's encoder.
The spectral-norm state of f_alpha is carried through every call in that order.

Also here: the per-example random draws of a step, `train_steps` (S steps in one call, for
`train.steps_per_dispatch`), and the placement of host batches on the devices (`shard_batch`,
`stack_batches`).
"""

from __future__ import annotations

import functools
from typing import Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hebm_jax import input_pipeline, models, objectives, sampler, xla_options
from hebm_jax.train_state import HEBM, TrainState, network_variables, variables_for

Array = jax.Array
AXIS = "batch"


class StepDraws(NamedTuple):
  """Every random draw of one iteration (B examples, D = sum of latent sizes, K Langevin steps).

  Attributes:
    eps: (B, D) reparameterisation noise for z+ = mean + std * eps, layers concatenated.
    langevin_init: (B, D) N(0, I) starting points of the prior chains.
    langevin_noise: (K, B, D) Langevin noise.
  """
  eps: Array
  langevin_init: Array
  langevin_noise: Array


def _cast_floats(tree, dtype):
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x, tree)


def _apply_network(module, variables: dict, *args, train: bool, axis_name: str | None = None,
                   compute_dtype: str = "float32", **kwargs):
  """module.apply in train or eval mode -> (output, updated batch stats or None).

  In training, batch-norm statistics are computed over the pmap axis `axis_name` (the global
  batch) and the running averages are returned updated.

  compute_dtype='bfloat16' runs the network on bf16 copies of its parameters and inputs and
  returns float32 outputs: the parameters, their gradients (cast back by the cast's transpose),
  the optimiser, the batch-norm statistics and everything outside the network stay float32.
  """
  low = compute_dtype != "float32"
  if low:
    dtype = jnp.dtype(compute_dtype)
    variables = {**variables, "params": _cast_floats(variables["params"], dtype)}
    args = _cast_floats(args, dtype)
  if "batch_stats" not in variables:
    out, stats = module.apply(variables, *args, train=train, **kwargs), None
  elif not train:
    out, stats = module.apply(variables, *args, train=False, **kwargs), variables["batch_stats"]
  else:
    module = module.clone(bn_axis_name=axis_name)
    out, updates = module.apply(variables, *args, train=True, mutable=["batch_stats"], **kwargs)
    stats = updates["batch_stats"]
  return (_cast_floats(out, jnp.float32), _cast_floats(stats, jnp.float32)) if low else (out, stats)


def draw_step_randomness(key: Array, step: Array, example_ids: Array, latent_dim: int,
                         n_steps: int) -> StepDraws:
  """All draws of one iteration, keyed per example: fold_in(fold_in(key, step), example_id).

  Keying by global example index (not by device) makes a run's numbers independent of how the
  global batch is split over devices and hosts.
  """
  step_key = jax.random.fold_in(key, step)

  def one(example_id):
    k_eps, k_init, k_noise = jax.random.split(jax.random.fold_in(step_key, example_id), 3)
    return (jax.random.normal(k_eps, (latent_dim,)), jax.random.normal(k_init, (latent_dim,)),
            jax.random.normal(k_noise, (n_steps, latent_dim)))

  eps, init, noise = jax.vmap(one)(example_ids)
  return StepDraws(eps, init, jnp.swapaxes(noise, 0, 1))


def _global_norm(tree) -> Array:
  return optax.global_norm(tree) if jax.tree.leaves(tree) else jnp.zeros(())


def _pmean(tree, axis_name):
  return jax.lax.pmean(tree, axis_name) if axis_name else tree


def train_step_from_draws(model: HEBM, state: TrainState, images: Array, draws: StepDraws,
                          axis_name: str | None = None) -> tuple[TrainState, dict]:
  """One iteration given its random draws (the golden tests feed the authors' draws here).

  Args:
    model: static model description.
    state: current train state (identical on every device).
    images: (B, H, W, C) this device's images in [-1, 1].
    draws: `StepDraws` for these B examples.
    axis_name: pmap axis to average gradients and metrics over, or None on one device.

  Returns:
    (new state, metrics dict of scalars averaged over devices).
  """
  params = state.params
  prior = model.prior

  # (1) generator + encoder.
  def gi_loss_fn(gi_params):
    net = {k: variables_for(gi_params[k], state.batch_stats, k) for k in ("encoder", "generator")}
    options = {"train": True, "axis_name": axis_name, "compute_dtype": model.compute_dtype}
    (means, logvars), enc_stats = _apply_network(model.encoder, net["encoder"], images, **options)
    eps = models.split_latents(draws.eps, model.z_dims)
    zs = [objectives.reparameterize(m, lv, e) for m, lv, e in zip(means, logvars, eps)]
    z = models.concat_latents(zs)
    f_pos, sn_state = sampler.energy(prior, params["prior"], state.sn_state, z)
    out, gen_stats = _apply_network(model.generator, net["generator"], zs, **options,
                                    return_logits=model.likelihood == "bernoulli")
    rec = objectives.likelihood_loss(out, images, model.likelihood)
    kls = objectives.kl_terms(zs, means, logvars, model.kl_estimator)
    kl_weight = objectives.kl_warmup_weight(state.step, model.kl_warmup_steps)
    loss = objectives.generator_encoder_loss(rec, kls, f_pos, model.gfactor, kl_weight)
    batch_stats = {"encoder": enc_stats, "generator": gen_stats} if state.batch_stats else {}
    return loss, (z, sn_state, rec, kls, jnp.mean(f_pos), batch_stats)

  gi_params = {"encoder": params["encoder"], "generator": params["generator"]}
  (loss, (z_pos, sn_state, rec, kls, f_pos, batch_stats)), gi_grads = jax.value_and_grad(
      gi_loss_fn, has_aux=True)(gi_params)
  gi_grads = _pmean(gi_grads, axis_name)
  updates, opt_state_gi = model.tx_gi.update(gi_grads, state.opt_state_gi, gi_params)
  gi_params = optax.apply_updates(gi_params, updates)
  update_norms = {f"update_norm/{k}": _global_norm(updates[k]) for k in ("encoder", "generator")}

  metrics = {"loss": loss, "rec_loss": rec, "kl": jnp.sum(kls), "f_posterior": f_pos,
             "grad_norm/encoder": _global_norm(gi_grads["encoder"]),
             "grad_norm/generator": _global_norm(gi_grads["generator"])}
  metrics.update({f"kl/layer{l}": kls[l] for l in range(len(model.z_dims))})
  if model.kl_warmup_steps:
    metrics["kl_weight"] = objectives.kl_warmup_weight(state.step, model.kl_warmup_steps)

  # (2) prior sampling with the current f_alpha, then (3) the EBM update.
  prior_params, opt_state_prior = params["prior"], state.opt_state_prior
  if prior is not None:
    z_neg, sn_state = sampler.sample_prior(prior, prior_params, sn_state, draws.langevin_init,
                                           None, model.n_steps, model.step_size,
                                           noise=draws.langevin_noise)
    z_pos = jax.lax.stop_gradient(z_pos)

    def ebm_loss_fn(p):
      f_p, st = sampler.energy(prior, p, sn_state, z_pos)
      f_n, st = sampler.energy(prior, p, st, z_neg)
      return objectives.ebm_loss(f_n, f_p), (st, jnp.mean(f_n))

    (e_loss, (sn_state, f_neg)), prior_grads = jax.value_and_grad(
        ebm_loss_fn, has_aux=True)(prior_params)
    prior_grads = _pmean(prior_grads, axis_name)
    updates, opt_state_prior = model.tx_prior.update(prior_grads, opt_state_prior, prior_params)
    prior_params = optax.apply_updates(prior_params, updates)
    metrics.update({"ebm_loss": e_loss, "f_prior": f_neg,
                    "grad_norm/prior": _global_norm(prior_grads)})
    update_norms["update_norm/prior"] = _global_norm(updates)

  new_params = {**gi_params, "prior": prior_params}
  metrics.update({f"param_norm/{k}": _global_norm(v) for k, v in new_params.items() if v})
  metrics.update(update_norms)
  metrics.update({f"lr/{name}": fn(state.step) for name, fn in model.schedules})
  metrics = _pmean(metrics, axis_name)
  new_state = state.replace(step=state.step + 1, params=new_params, sn_state=sn_state,
                            opt_state_gi=opt_state_gi, opt_state_prior=opt_state_prior,
                            batch_stats=batch_stats)
  if model.skip_nonfinite:
    new_state, metrics = _keep_finite(state, new_state, metrics)
  return new_state, metrics


def _all_finite(tree) -> Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _keep_finite(old: TrainState, new: TrainState, metrics: dict) -> tuple[TrainState, dict]:
  """`new`, or `old` with only the step advanced when anything in `new` or the loss is not finite.

  The values compared are the same on every device (gradients are averaged first), so every
  device makes the same choice. The step still advances: the next batch and draws are those of
  the next step, as in a run where this update was applied.
  """
  ok = _all_finite((new.params, new.sn_state, new.opt_state_gi, new.opt_state_prior,
                    new.batch_stats, metrics["loss"], metrics.get("ebm_loss", 0.0)))
  kept = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new.replace(step=old.step), old)
  return kept.replace(step=new.step), {**metrics, "skipped": 1.0 - ok.astype(jnp.float32)}


def train_step(model: HEBM, state: TrainState, batch: dict, key: Array,
               axis_name: str | None = None) -> tuple[TrainState, dict]:
  """One iteration; randomness from fold_in(key, step) and each example's global index.

  Args:
    model: static model description.
    state: train state, identical on every device.
    batch: {'image': (B, H, W, C)} this device's share of the global batch.
    key: the run's base key (from the config seed), identical on every device.
    axis_name: the pmap axis name, or None when not under pmap.
  """
  images = batch["image"]
  b = images.shape[0]
  device = jax.lax.axis_index(axis_name) if axis_name else 0
  ids = device * b + jnp.arange(b)
  draws = draw_step_randomness(key, state.step, ids, model.latent_dim, model.n_steps)
  return train_step_from_draws(model, state, images, draws, axis_name)


def train_steps(model: HEBM, state: TrainState, batches: dict, key: Array,
                axis_name: str | None = None, unroll: bool | None = None
                ) -> tuple[TrainState, dict]:
  """S consecutive iterations in one call (`lax.scan` over `train_step`).

  Each iteration draws from fold_in(key, its own step), so S steps in one call give the numbers
  of S calls of `train_step` (up to float rounding).

  Args:
    model, state, key, axis_name: as `train_step`.
    batches: {'image': (S, B, H, W, C)}, this device's share of S consecutive global batches.
    unroll: unroll the scan fully; None: on the CPU backend only. XLA:CPU runs the convolutions
      of a while-loop body without its fast convolution kernels: a rolled 4-step scan of the
      `svhn` encoder's forward+backward measured 40x slower per step than one call.

  Returns:
    (state after S steps, metrics dict of (S,) arrays, one entry per step).
  """
  if unroll is None:
    unroll = jax.default_backend() == "cpu"
  return jax.lax.scan(lambda s, batch: train_step(model, s, batch, key, axis_name), state, batches,
                      unroll=bool(unroll))


def make_p_train_step(model: HEBM, steps_per_call: int = 1,
                      compiler_options: dict[str, str] | None = None):
  """`train_step` (or `train_steps` when steps_per_call > 1) under `jax.pmap`.

  State and key are unreplicated (in_axes=None); the batch is split on axis 0, the device axis
  `shard_batch` adds. `compiler_options` (`xla_options.for_config`) go to XLA with the program.
  """
  # The old state is donated: its buffers hold the new one, so the step never holds two copies
  # of the parameters and optimiser moments (74M parameters x 3 for `svhn_fid`).
  fn = train_step if steps_per_call == 1 else train_steps
  return xla_options.compile_with(
      jax.pmap(functools.partial(fn, model, axis_name=AXIS), axis_name=AXIS,
               in_axes=(None, 0, None), out_axes=None, donate_argnums=(0,)), compiler_options)


def dispatch_size(step: int, num_steps: int, steps_per_dispatch: int) -> int:
  """How many steps the call starting at `step` runs: a full chunk where one fits on the grid of
  multiples of `steps_per_dispatch` (so logging, checkpoint and eval intervals fall on chunk
  ends), else one (a resume from an off-grid step, or the tail before `num_steps`)."""
  k = steps_per_dispatch
  return k if step % k == 0 and step + k <= num_steps else 1


def eval_step(model: HEBM, state: TrainState, batch: dict, axis_name: str | None = None) -> dict:
  """Reconstruction and KL on a batch with the posterior means (no randomness).

  Returns sums over the batch (so they add up over batches and devices): 'count', 'mse'
  (per-image mean over pixels, [-1, 1] range), 'rec_loss' (per-image pixel sums of the squared
  error, of the [0, 1]-scale absolute error ('l1') or of the Bernoulli cross-entropy), 'kl/layer{l}'
  (closed form) and 'f_posterior'.
  """
  x = batch["image"]
  means, logvars = model.encoder.apply(network_variables(state, "encoder"), x)
  logits = model.generator.apply(network_variables(state, "generator"), means, return_logits=True)
  x_hat = models.output_image(logits, model.generator.output)
  sq = jnp.sum((x_hat - x) ** 2, axis=(1, 2, 3))
  if model.likelihood == "gaussian":
    rec = sq
  else:  # per image: the training loss of one-image batches
    out = logits if model.likelihood == "bernoulli" else x_hat
    rec = jax.vmap(lambda g, t: objectives.likelihood_loss(g[None], t[None], model.likelihood))(out, x)
  f, _ = sampler.energy(model.prior, state.params["prior"], state.sn_state,
                        models.concat_latents(means), update_stats=False)
  out = {"count": jnp.asarray(x.shape[0], jnp.float32), "rec_loss": jnp.sum(rec),
         "mse": jnp.sum(sq) / np.prod(x.shape[1:]), "f_posterior": jnp.sum(f)}
  for l, (m, lv) in enumerate(zip(means, logvars)):
    out[f"kl/layer{l}"] = jnp.sum(objectives.kl_analytic(m, lv))
  return jax.lax.psum(out, axis_name) if axis_name else out


def make_p_eval_step(model: HEBM, compiler_options: dict[str, str] | None = None):
  """`eval_step` under `jax.pmap` (state unreplicated, batch split on axis 0), compiled with
  `compiler_options`."""
  return xla_options.compile_with(
      jax.pmap(functools.partial(eval_step, model, axis_name=AXIS), axis_name=AXIS,
               in_axes=(None, 0), out_axes=None), compiler_options)


def shard_batch(batch: dict, devices: Sequence[jax.Device] | None = None,
                stacked: bool = False) -> dict:
  """(B, ...) host arrays -> (n, B // n, ...) arrays placed one slice per local device.

  With `stacked`, (S, B, ...) arrays of S steps' batches -> (n, S, B // n, ...).
  Placing the slices up front matters: handing numpy arrays to a pmapped function costs several
  times the step itself on CPU.
  """
  devices = list(devices or jax.local_devices())
  n = len(devices)
  sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.asarray(devices), (AXIS,)),
                                        jax.sharding.PartitionSpec(AXIS))

  def split(x):
    if not stacked:
      return x.reshape((n, -1) + x.shape[1:])
    return np.moveaxis(np.asarray(x).reshape(x.shape[:1] + (n, -1) + x.shape[2:]), 1, 0)

  return jax.tree.map(lambda x: jax.device_put(split(x), sharding), batch)


def stack_batches(host_batches: Iterator[dict], start: int, num_steps: int,
                  steps_per_dispatch: int) -> Iterator[tuple[int, dict]]:
  """Groups per-step host batches into (S, dict of (S, B, ...) arrays) as `dispatch_size` says."""
  step = start
  while step < num_steps:
    n = dispatch_size(step, num_steps, steps_per_dispatch)
    try:
      group = [next(host_batches) for _ in range(n)]
    except StopIteration:
      return
    yield n, (group[0] if n == 1 else jax.tree.map(lambda *xs: np.stack(xs), *group))
    step += n


def evaluate(model: HEBM, p_eval_step, state: TrainState, source, config) -> dict:
  """Per-example means over the eval split of `eval_step`'s sums."""
  totals = None
  for batch in input_pipeline.eval_batches(source, config.eval.batch_size, config.eval.num_batches,
                                           jax.process_index(), jax.process_count()):
    out = jax.device_get(p_eval_step(state, shard_batch({"image": batch["image"]})))
    totals = out if totals is None else jax.tree.map(np.add, totals, out)
  count = totals.pop("count")
  result = {k: float(v / count) for k, v in totals.items()}
  result["kl"] = sum(v for k, v in result.items() if k.startswith("kl/"))
  return result
