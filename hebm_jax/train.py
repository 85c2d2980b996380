"""Training: the train state, the pure train step (REFERENCE Sec. 1.1 order) and the training loop.

One iteration, as the authors' code runs it:
  1. generator + encoder: one Adam step on Gfactor * rec + sum_l KL_l - mean f(z+) (z+ ~ q(z|x));
  2. prior sampling: K-step Langevin from N(0, I) with the current (not yet updated) f_alpha;
  3. EBM: one Adam step on mean f(z-) - mean f(stop_gradient(z+)), z+ from step 1's encoder.
The spectral-norm state of f_alpha is carried through every call in that order.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import time
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import struct

from hebm_jax import (checkpointing, compile_cache, device_prefetch, divergence, fileio,
                      input_pipeline, models, objectives, preemption, sampler, visualization,
                      xla_options)
from hebm_jax import workdir_lock
from hebm_jax.config_validation import validate_config

Array = jax.Array
AXIS = "batch"


class TrainState(struct.PyTreeNode):
  """Everything a run needs to continue: no randomness lives outside it (keys are folded from step).

  Attributes:
    step: number of completed iterations (scalar int32).
    params: {'encoder': ..., 'generator': ..., 'prior': ...} ('prior' is {} for a Gaussian prior).
    sn_state: spectral-norm power-iteration state of the prior ({} when there is none).
    opt_state_gi: optimiser state of encoder + generator.
    opt_state_prior: optimiser state of the prior.
    batch_stats: running batch-norm statistics {'encoder': ..., 'generator': ...} of the families
      that have batch norm; {} for the others.
  """
  step: Array
  params: dict
  sn_state: dict
  opt_state_gi: Any
  opt_state_prior: Any
  batch_stats: dict = struct.field(default_factory=dict)


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


@dataclasses.dataclass(frozen=True)
class HEBM:
  """The model's modules and the hyperparameters the step needs (static, hashable)."""
  encoder: models.HierarchicalEncoder
  generator: models.HierarchicalGenerator
  prior: models.EnergyPrior | None
  z_dims: tuple[int, ...]
  gfactor: float
  kl_estimator: str
  likelihood: str
  n_steps: int
  step_size: float
  tx_gi: optax.GradientTransformation
  tx_prior: optax.GradientTransformation
  schedules: tuple[tuple[str, Callable[[Array], Array]], ...]
  skip_nonfinite: bool = False  # keep the old state when an update is not finite (counted)
  compute_dtype: str = "float32"  # encoder/generator arithmetic in training; parameters stay f32

  @property
  def latent_dim(self) -> int:
    return sum(self.z_dims)


def lr_schedule(lr: float, decay: float, steps_per_epoch: int) -> optax.Schedule:
  """lr * decay**epoch with epoch = step // steps_per_epoch (the reference's per-epoch ExponentialLR)."""
  return optax.exponential_decay(lr, transition_steps=steps_per_epoch, decay_rate=decay,
                                 staircase=True)


def make_optimizers(optim_config, steps_per_epoch: int):
  """The reference's optimisers.

  Encoder + generator: coupled L2 (decay added to the gradient, PyTorch Adam `weight_decay`, not
  AdamW), Adam(b1, b2, eps), separate learning rates for encoder and generator. Prior: Adam without
  decay. Both learning rates decay by `lr_decay` per epoch.

  Returns:
    (tx_gi, tx_prior, schedules) where schedules is ((name, schedule), ...) for logging.
  """
  o = optim_config
  sched = {name: lr_schedule(o[f"lr_{name}"], o.lr_decay, steps_per_epoch)
           for name in ("encoder", "generator", "prior")}
  adam = functools.partial(optax.scale_by_adam, b1=o.b1, b2=o.b2, eps=o.eps)
  # Clipping acts on the raw gradients, before the coupled L2 term, as torch's clip_grad_norm_
  # before an Adam step with weight_decay would. Without it the chains are exactly the original
  # ones: the optimiser state's layout, and so every existing checkpoint, stays valid.
  clip = ([optax.clip_by_global_norm(o.grad_clip_norm)] if o.get("grad_clip_norm", 0.0) else [])
  tx_gi = optax.chain(
      *clip,
      optax.add_decayed_weights(o.weight_decay) if o.weight_decay else optax.identity(),
      adam(),
      optax.multi_transform(
          {k: optax.scale_by_learning_rate(sched[k]) for k in ("encoder", "generator")},
          lambda params: {k: k for k in params}))
  tx_prior = optax.chain(*clip, adam(), optax.scale_by_learning_rate(sched["prior"]))
  return tx_gi, tx_prior, tuple(sched.items())


def create_model(config, steps_per_epoch: int) -> HEBM:
  """Builds the static model description from a validated config."""
  encoder, generator, prior = models.build_models(config)
  tx_gi, tx_prior, schedules = make_optimizers(config.optim, steps_per_epoch)
  return HEBM(encoder=encoder, generator=generator, prior=prior, z_dims=tuple(config.model.z_dims),
              gfactor=float(config.objective.gfactor), kl_estimator=config.objective.kl,
              likelihood=config.objective.likelihood,
              n_steps=int(config.sampler.n_steps), step_size=float(config.sampler.step_size),
              tx_gi=tx_gi, tx_prior=tx_prior, schedules=schedules,
              skip_nonfinite=config.train.get("on_divergence", "stop") == "skip",
              compute_dtype=config.train.get("compute_dtype", "float32"))


def init_variables(model: HEBM, key: Array, image_shape: Sequence[int]) -> tuple[dict, dict, dict]:
  """Initial (params, sn_state, batch_stats) for images of shape (H, W, C).

  batch_stats is {'encoder': ..., 'generator': ...} for families with batch norm, else {}.
  """
  k_enc, k_gen, k_prior = jax.random.split(key, 3)
  x = jnp.zeros((2,) + tuple(image_shape), jnp.float32)  # 2: batch norm needs a batch
  zs = [jnp.zeros((2, d), jnp.float32) for d in model.z_dims]
  enc_vars = model.encoder.init(k_enc, x)
  gen_vars = model.generator.init(k_gen, zs)
  params = {"encoder": enc_vars["params"], "generator": gen_vars["params"], "prior": {}}
  batch_stats = {}
  if "batch_stats" in enc_vars or "batch_stats" in gen_vars:
    batch_stats = {"encoder": enc_vars.get("batch_stats", {}),
                   "generator": gen_vars.get("batch_stats", {})}
  sn_state = {}
  if model.prior is not None:
    variables = model.prior.init(k_prior, jnp.zeros((1, model.latent_dim), jnp.float32))
    params["prior"] = variables["params"]
    sn_state = variables.get("batch_stats", {})
  return params, sn_state, batch_stats


def init_params(model: HEBM, key: Array, image_shape: Sequence[int]) -> tuple[dict, dict]:
  """Initial (params, sn_state) for images of shape (H, W, C) (see `init_variables`)."""
  params, sn_state, _ = init_variables(model, key, image_shape)
  return params, sn_state


def create_train_state(model: HEBM, key: Array, image_shape: Sequence[int]) -> TrainState:
  """A fresh train state; `key` should be derived from the config seed."""
  params, sn_state, batch_stats = init_variables(model, key, image_shape)
  return state_from_params(model, params, sn_state, batch_stats=batch_stats)


def _schedules_at(opt_state: Any, step: int) -> Any:
  """Sets the count of every learning-rate schedule state in `opt_state` to `step`.

  optax schedules count their own updates, so fresh optimiser states would restart the per-epoch
  decay at epoch 0. Adam's count stays 0: its moments are fresh, so its bias correction must be.
  """
  is_sched = lambda n: isinstance(n, optax.ScaleByScheduleState)
  return jax.tree.map(
      lambda n: n._replace(count=jnp.asarray(step, n.count.dtype)) if is_sched(n) else n,
      opt_state, is_leaf=is_sched)


def state_from_params(model: HEBM, params: dict, sn_state: dict, step: int = 0,
                      batch_stats: dict | None = None) -> TrainState:
  """Wraps given parameters (e.g. converted ones) in a train state at `step`.

  Optimiser states are fresh (zero Adam moments) with learning-rate schedules positioned at
  `step`, so the per-epoch decay continues where the parameters left off.
  """
  gi = {"encoder": params["encoder"], "generator": params["generator"]}
  return TrainState(step=jnp.asarray(step, jnp.int32), params=params, sn_state=sn_state,
                    opt_state_gi=_schedules_at(model.tx_gi.init(gi), step),
                    opt_state_prior=_schedules_at(model.tx_prior.init(params["prior"]), step),
                    batch_stats=batch_stats or {})


def _variables(params: dict, batch_stats: dict, name: str) -> dict:
  variables = {"params": params}
  if batch_stats:
    variables["batch_stats"] = batch_stats[name]
  return variables


def network_variables(state: TrainState, name: str) -> dict:
  """Flax variables of network `name` ('encoder' or 'generator'): params, plus batch-norm stats."""
  return _variables(state.params[name], state.batch_stats, name)


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
    net = {k: _variables(gi_params[k], state.batch_stats, k) for k in ("encoder", "generator")}
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
    loss = objectives.generator_encoder_loss(rec, kls, f_pos, model.gfactor)
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
  error, or of the Bernoulli cross-entropy), 'kl/layer{l}' (closed form) and 'f_posterior'.
  """
  x = batch["image"]
  means, logvars = model.encoder.apply(network_variables(state, "encoder"), x)
  logits = model.generator.apply(network_variables(state, "generator"), means, return_logits=True)
  x_hat = models.output_image(logits, model.generator.output)
  sq = jnp.sum((x_hat - x) ** 2, axis=(1, 2, 3))
  rec = sq if model.likelihood == "gaussian" else jax.vmap(
      lambda l, t: objectives.bernoulli_reconstruction_loss(l[None], t[None]))(logits, x)
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


# ------------------------------------------------------------------------------------------------
# The training loop.
# ------------------------------------------------------------------------------------------------

DivergenceError = divergence.DivergenceError  # where callers have always found it


def image_summaries(model: HEBM, state: TrainState, key: Array, images: Array, num: int) -> dict:
  """Prior samples, reconstructions and a hierarchical-sampling batch (all in [-1, 1]).

  Returns:
    {'samples': (num, H, W, C), 'reconstructions': (n, H, 2W, C) original | reconstruction,
     'hierarchical': (L, num, H, W, C), layer l varied, others held at sample 0}.
  """
  k_prior, k_rec = jax.random.split(key)
  params = state.params
  gen_vars = network_variables(state, "generator")
  samples, zs, _ = sampler.generate(model.generator, gen_vars, model.prior,
                                    params["prior"], state.sn_state, k_prior, num, model.z_dims,
                                    model.n_steps, model.step_size)
  means, logvars = model.encoder.apply(network_variables(state, "encoder"), images)
  eps = [jax.random.normal(k, m.shape) for k, m in
         zip(jax.random.split(k_rec, len(means)), means)]
  zs_q = [objectives.reparameterize(m, lv, e) for m, lv, e in zip(means, logvars, eps)]
  recon = model.generator.apply(gen_vars, zs_q)
  return {"samples": samples,
          "reconstructions": jnp.concatenate([images, recon], axis=2),
          "hierarchical": sampler.hierarchical_sampling(model.generator, gen_vars, zs)}


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


def _write_images(writer, workdir: str, step: int, images: dict) -> None:
  images = jax.device_get(images)
  grids = {"samples": visualization.make_grid(images["samples"]),
           "reconstructions": visualization.make_grid(images["reconstructions"]),
           "hierarchical": visualization.with_titles(
               [visualization.make_grid(g) for g in images["hierarchical"]],
               visualization.layer_names(len(images["hierarchical"])))}
  if jax.process_index() == 0:
    scale = max(1, 48 // images["samples"].shape[1])
    for name, grid in grids.items():
      visualization.save_png(grid, os.path.join(workdir, "images", f"{name}_{step:08d}.png"), scale)
  writer.write_images(step, {k: v[None] for k, v in grids.items()})


def hide_accelerators_from_tensorflow() -> None:
  """Keeps TensorFlow (used only by clu's writers and tfds) off GPUs and TPUs, which JAX owns.

  Must run before TensorFlow touches a device; later calls log a warning and change nothing.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    for kind in ("GPU", "TPU"):
      if tf.config.list_physical_devices(kind):
        tf.config.set_visible_devices([], kind)
  except RuntimeError as e:  # TensorFlow already initialised its devices.
    logging.warning("Could not hide accelerators from TensorFlow: %s", e)


def _run_state_path(workdir: str) -> str:
  return os.path.join(workdir, "run_state.json")


def load_run_state(workdir: str) -> dict:
  """{'restores': n}: how often `train.on_divergence='restore'` reloaded a checkpoint in this run.

  Kept beside the checkpoints so that a resumed run uses the same randomness and learning rates
  as the run it continues.
  """
  path = _run_state_path(workdir)
  if not fileio.exists(path):
    return {"restores": 0}
  return {"restores": 0, **json.loads(fileio.read_text(path))}


def _save_run_state(workdir: str, run_state: dict) -> None:
  if jax.process_index() != 0:
    return
  fileio.write_text(_run_state_path(workdir), json.dumps(run_state))


def _scaled_learning_rates(config, factor: float):
  """`config` with every learning rate multiplied by `factor` (after divergence restores)."""
  if factor == 1.0:
    return config
  config = config.copy_and_resolve_references()
  for name in ("lr_generator", "lr_encoder", "lr_prior"):
    config.optim[name] = config.optim[name] * factor
  return config


@workdir_lock.released_on_exit
def train_and_evaluate(config, workdir: str) -> TrainState:
  """Trains (resuming from `workdir` if it holds a checkpoint), logs, checkpoints and evaluates.

  Writes to `workdir`: `checkpoints/` (orbax, with the config), TensorBoard event files, and
  `images/*.png` grids. Returns the final train state.

  Raises:
    preemption.TrainingInterrupted: after SIGTERM/SIGINT, once a checkpoint of the step in
      progress is saved (resume by calling again).
    divergence.DivergenceError: training diverged (after the restores `train.on_divergence`
      allows); the newest checkpoint on disk is the last good state.
  """
  validate_config(config, jax.device_count())
  # The data first: a missing dataset or a batch larger than its split is reported before
  # TensorFlow is imported and before anything is created in the workdir.
  train_source = input_pipeline.load_split(config.data, config.data.train_split)
  eval_source = input_pipeline.load_split(config.data, config.data.eval_split)
  for source in (train_source, eval_source):
    input_pipeline.check_source(source, config.data)
  steps_per_epoch = input_pipeline.steps_per_epoch(len(train_source), config.train.batch_size)
  input_pipeline.steps_per_epoch(len(eval_source), config.eval.batch_size, "eval.batch_size")
  steps_per_epoch = config.optim.steps_per_epoch or steps_per_epoch

  # clu's writers import TensorFlow; keep that cost out of `import hebm_jax.train`.
  hide_accelerators_from_tensorflow()
  from clu import metric_writers, periodic_actions  # pylint: disable=g-import-not-at-top
  checkpointing.ensure_workdir(workdir)
  # One training writer per workdir: a second trainer stops here, having written nothing.
  workdir_lock.acquire(workdir, config)  # released on return or error (the decorator)
  compile_cache.use(config.train.get("compilation_cache", ""), workdir)

  run_state = load_run_state(workdir)
  factor = config.train.restore_lr_factor ** run_state["restores"]
  model = create_model(_scaled_learning_rates(config, factor), steps_per_epoch)
  image_shape = (config.data.image_size, config.data.image_size, config.data.channels)

  root = jax.random.PRNGKey(config.seed)
  init_key, base_train_key, image_key = (jax.random.fold_in(root, i) for i in range(3))
  # After a divergence restore, fresh draws: the same ones would lead to the same blow-up.
  train_key = (jax.random.fold_in(base_train_key, run_state["restores"])
               if run_state["restores"] else base_train_key)
  manager = checkpointing.make_manager(workdir, config.checkpoint.max_to_keep)
  init_state = jax.jit(functools.partial(create_train_state, model, image_shape=image_shape))(
      init_key)
  state, restored_step = checkpointing.restore(manager, init_state, config)
  if restored_step is not None:
    logging.info("Resumed from %s at step %d.", manager.directory, restored_step)
  elif config.train.on_divergence == "restore":
    checkpointing.save(manager, 0, state, config)  # something to go back to from the start
  # Committed up front, so the step compiles once (not again when its outputs come back). A
  # fresh copy: the step donates its input, and `init_state` must stay readable for restores.
  state = jax.device_put(jax.device_get(state), checkpointing.local_replicated_sharding())

  # TensorBoard only: the console gets one progress line per log interval, written below.
  writer = (metric_writers.AsyncWriter(metric_writers.SummaryWriter(workdir))
            if jax.process_index() == 0 else metric_writers.MultiWriter([]))
  if restored_step is None:
    writer.write_hparams(_flatten(checkpointing.config_to_dict(config)))
  per_call = config.train.get("steps_per_dispatch", 1)
  options = xla_options.for_config(config.train)
  p_train_step = make_p_train_step(model, compiler_options=options)
  p_train_chunk = make_p_train_step(model, per_call, options) if per_call > 1 else None
  p_eval_step = make_p_eval_step(model, options)
  summaries = xla_options.compile_with(
      jax.jit(functools.partial(image_summaries, model, num=config.logging.num_images)), options)
  eval_images = next(input_pipeline.eval_batches(eval_source, min(16, len(eval_source)), 1))["image"]

  num_steps = config.train.num_steps
  step = int(jax.device_get(state.step))
  report = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer)
  logging.info("Training %s from step %d to %d on %d device(s), %d process(es), %d steps/epoch.",
               config.data.name, step, num_steps, jax.device_count(), jax.process_count(),
               steps_per_epoch)
  guard = divergence.Guard.from_config(config.train)

  def batches_from(start: int):
    # grain prepares host batches ahead (worker processes); a thread places the next one on the
    # devices while the current step runs, and measures how long each step waited for it.
    host = input_pipeline.train_iterator(
        train_source, config.data, config.train.batch_size, config.seed, start, num_steps,
        jax.process_index(), jax.process_count())
    # With train.steps_per_dispatch > 1 the host batches travel as stacked chunks.
    groups = stack_batches(host, start, num_steps, per_call)
    return host, device_prefetch.DevicePrefetcher(
        groups, lambda g: (g[0], shard_batch({"image": g[1]["image"]}, stacked=g[0] > 1)),
        size=2)

  host_batches, device_batches = batches_from(step)
  pending: list[tuple[int, dict]] = []
  window: list[dict] = []   # checked metrics of the steps since the last log line
  skipped = 0
  last_log_time, last_log_step, input_wait = time.time(), step, 0.0
  stop = preemption.StopRequest(sync_every=config.logging.log_every_steps)
  try:
    with stop:
      while step < num_steps:
        try:
          n, batch = next(device_batches)
          state, metrics = (p_train_chunk if n > 1 else p_train_step)(state, batch, train_key)
          input_wait += device_batches.last_wait_s
          step += n
          pending.append((step, metrics))
          report(step, time.time())
          is_last = step == num_steps
          stopping = stop.should_stop(step) or manager.reached_preemption(step)
          if step % config.logging.log_every_steps == 0 or is_last:
            kept, n_skipped = guard.check(pending)
            window, skipped, pending = window + kept, skipped + n_skipped, []
            summary = divergence.summarize(window, skipped)
            window, skipped = [], 0
            now = time.time()
            summary["steps_per_sec"] = (step - last_log_step) / max(now - last_log_time, 1e-9)
            summary["input_wait_ms"] = 1e3 * input_wait / max(step - last_log_step, 1)
            last_log_time, last_log_step, input_wait = now, step, 0.0
            writer.write_scalars(step, {f"train/{k}": v for k, v in summary.items()})
            logging.info("step %d/%d | loss %.3f | rec %.3f | kl %.3f | f(z+) %.4f | f(z-) %.4f "
                         "| ebm %.5f | %.1f steps/s | input wait %.2f ms/step%s", step, num_steps,
                         summary.get("loss", np.nan), summary.get("rec_loss", np.nan),
                         summary.get("kl", np.nan), summary.get("f_posterior", np.nan),
                         summary.get("f_prior", 0.0), summary.get("ebm_loss", 0.0),
                         summary["steps_per_sec"], summary["input_wait_ms"],
                         f" | {int(summary['skipped'])} updates skipped" if summary["skipped"]
                         else "")
          if step % config.checkpoint.every_steps == 0 or is_last or stopping:
            kept, n_skipped = guard.check(pending)  # never save a diverged state
            window, skipped, pending = window + kept, skipped + n_skipped, []
            checkpointing.save(manager, step, state, config)
          if stopping:
            manager.wait_until_finished()
            raise preemption.TrainingInterrupted(stop.signum or signal.SIGTERM, step)
          if step % config.logging.image_every_steps == 0 or is_last:
            with report.timed("images"):
              _write_images(writer, workdir, step,
                            summaries(state, jax.random.fold_in(image_key, step), eval_images))
          if step % config.eval.every_steps == 0 or is_last:
            with report.timed("eval"):
              result = evaluate(model, p_eval_step, state, eval_source, config)
            writer.write_scalars(step, {f"eval/{k}": v for k, v in result.items()})
            logging.info("eval at step %d | mse %.5f | rec %.3f | kl %.3f", step, result["mse"],
                         result["rec_loss"], result["kl"])
        except divergence.DivergenceError as e:
          if (config.train.on_divergence != "restore"
              or run_state["restores"] >= config.train.max_restores):
            raise
          manager.wait_until_finished()
          if manager.latest_step() is None:
            raise divergence.DivergenceError(
                f"{e} There is no checkpoint to restore yet.", e.first_bad_step) from e
          run_state["restores"] += 1
          _save_run_state(workdir, run_state)
          factor = config.train.restore_lr_factor ** run_state["restores"]
          logging.warning("%s Restoring the last good checkpoint (restore %d of %d) with fresh "
                          "randomness%s.", e, run_state["restores"], config.train.max_restores,
                          f" and learning rates x{factor:g}" if factor != 1.0 else "")
          if factor != 1.0:
            model = create_model(_scaled_learning_rates(config, factor), steps_per_epoch)
            p_train_step = make_p_train_step(model, compiler_options=options)
            p_train_chunk = make_p_train_step(model, per_call, options) if per_call > 1 else None
          train_key = jax.random.fold_in(base_train_key, run_state["restores"])
          state, _ = checkpointing.restore(manager, init_state, config)
          state = jax.device_put(state, checkpointing.local_replicated_sharding())
          step = int(jax.device_get(state.step))
          pending, window, skipped, guard.consecutive_skips = [], [], 0, 0
          device_batches.close()
          host_batches.close()
          host_batches, device_batches = batches_from(step)
          last_log_time, last_log_step, input_wait = time.time(), step, 0.0
  except BaseException:
    # Already unwinding (a divergence, an interrupt, a failed save): finish what can be finished
    # without letting a second error from the checkpoint writer replace the first.
    device_batches.close()
    host_batches.close()
    writer.flush()
    try:
      manager.wait_until_finished()
      manager.close()
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("While stopping, the checkpoint writer also failed: %s", e)
    raise
  device_batches.close()
  host_batches.close()
  writer.flush()
  manager.wait_until_finished()
  manager.close()
  return state


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = str(v) if isinstance(v, (list, tuple)) else v
  return out
