"""The train state and what builds it: the model description, optimisers and schedules.

`HEBM` is the static part of a run (modules, hyperparameters, optimisers); `TrainState` the part
that changes every step and is checkpointed. `create_train_state` makes a fresh one;
`state_from_params` wraps given (e.g. converted) parameters with fresh optimiser states positioned
at a step; `network_variables` reads one network's flax variables out of a state.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import struct

from hebm_jax import models

Array = jax.Array


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
  kl_warmup_steps: int = 0  # VLAE's KL warm-up 1 - exp(-step / T) on the prior term; 0: off

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
              compute_dtype=config.train.get("compute_dtype", "float32"),
              kl_warmup_steps=int(config.objective.get("kl_warmup_steps", 0)))


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


def variables_for(params: dict, batch_stats: dict, name: str) -> dict:
  """Flax variables of network `name`: its params, plus its batch-norm stats if there are any."""
  variables = {"params": params}
  if batch_stats:
    variables["batch_stats"] = batch_stats[name]
  return variables


def network_variables(state: TrainState, name: str) -> dict:
  """Flax variables of network `name` ('encoder' or 'generator'): params, plus batch-norm stats."""
  return variables_for(state.params[name], state.batch_stats, name)
