"""Checks a config before anything is built or compiled; errors name the offending field."""

from __future__ import annotations

import numbers

from hebm_jax import compile_cache, models, objectives

PRIOR_TYPES = ("ebm", "gaussian")
DIVERGENCE_POLICIES = ("stop", "skip", "restore")
COMPUTE_DTYPES = ("float32", "bfloat16")


from hebm_jax.errors import ConfigError  # re-exported: callers catch it from here

def _require(cond: bool, field: str, message: str) -> None:
  if not cond:
    raise ConfigError(f"config.{field}: {message}")


def _positive(config, field: str, integer: bool = False) -> None:
  value = config
  for part in field.split("."):
    value = value[part]
  kind = numbers.Integral if integer else numbers.Real
  _require(isinstance(value, kind) and not isinstance(value, bool) and value > 0, field,
           f"must be a positive {'integer' if integer else 'number'}, got {value!r}.")


def validate_config(config, num_devices: int | None = None) -> None:
  """Raises `ConfigError` naming the first invalid field.

  Args:
    config: the experiment `ConfigDict`.
    num_devices: global device count; when given, the global batch must divide evenly.
  """
  from hebm_jax.data.datasets import validate_data_config  # pylint: disable=g-import-not-at-top

  _positive(config, "data.image_size", integer=True)
  _positive(config, "data.channels", integer=True)
  validate_data_config(config.data)
  m, p = config.model, config.prior
  z_dims = tuple(m.z_dims)
  num_layers = len(z_dims)
  _require(num_layers >= 2, "model.z_dims", f"needs at least 2 layers, got {z_dims}.")
  _require(all(isinstance(v, int) and v > 0 for v in z_dims), "model.z_dims",
           f"latent sizes must be positive integers, got {z_dims}.")
  _require(all(isinstance(v, int) and v > 0 for v in m.channels), "model.channels",
           f"widths must be positive integers, got {tuple(m.channels)}.")
  _require(isinstance(m.top_width, int) and m.top_width >= 0, "model.top_width",
           f"must be a non-negative integer, got {m.top_width!r}.")
  _require(isinstance(m.batch_norm, bool), "model.batch_norm",
           f"must be True or False, got {m.batch_norm!r}.")
  _require(config.objective.likelihood in objectives.LIKELIHOODS, "objective.likelihood",
           f"unknown likelihood {config.objective.likelihood!r}; expected one of "
           f"{objectives.LIKELIHOODS}.")
  output = m.get("output", "")
  _require(output in ("",) + models.OUTPUTS, "model.output",
           f"unknown generator output {output!r}; expected '' (by likelihood) or one of "
           f"{models.OUTPUTS}.")
  _require(not (config.objective.likelihood == "bernoulli" and output == "tanh"), "model.output",
           "'tanh' cannot parameterise the Bernoulli likelihood (its logits need 'sigmoid').")
  std_head = m.get("std_head", "logvar")
  _require(std_head in models.STD_HEADS, "model.std_head",
           f"unknown std head {std_head!r}; expected one of {models.STD_HEADS}.")
  _require(std_head == "logvar" or m.family in ("vlae_small", "vlae_large"), "model.std_head",
           f"{std_head!r} is read by the 'vlae_small' and 'vlae_large' families only; "
           f"{m.family!r} has the reference's log-variance head ('logvar').")
  warmup = config.objective.get("kl_warmup_steps", 0)
  _require(isinstance(warmup, int) and warmup >= 0, "objective.kl_warmup_steps",
           f"must be a non-negative integer (0: off), got {warmup!r}.")
  for field, message in models.family_problems(config):
    raise ConfigError(f"config.{field}: {message}")

  _require(p.type in PRIOR_TYPES, "prior.type", f"unknown prior {p.type!r}; expected one of {PRIOR_TYPES}.")
  if p.type == "ebm":
    _require(isinstance(p.num_layers, int) and p.num_layers >= 0, "prior.num_layers",
             f"must be a non-negative integer, got {p.num_layers!r}.")
    _positive(config, "prior.width", integer=True)
    _require(p.activation in models.ACTIVATIONS, "prior.activation",
             f"unknown activation {p.activation!r}; expected one of {models.ACTIVATIONS}.")
    if "output_scale" in p:
      _positive(config, "prior.output_scale")

  _positive(config, "sampler.n_steps", integer=True)
  _positive(config, "sampler.step_size")
  _positive(config, "objective.gfactor")
  _require(config.objective.kl in objectives.KL_ESTIMATORS, "objective.kl",
           f"unknown KL estimator {config.objective.kl!r}; expected one of {objectives.KL_ESTIMATORS}.")

  for field in ("lr_generator", "lr_encoder", "lr_prior", "eps"):
    _positive(config, f"optim.{field}")
  for field in ("b1", "b2"):
    value = config.optim[field]
    _require(0.0 <= value < 1.0, f"optim.{field}", f"must be in [0, 1), got {value!r}.")
  _require(config.optim.weight_decay >= 0, "optim.weight_decay",
           f"must be non-negative, got {config.optim.weight_decay!r}.")
  _require(0.0 < config.optim.lr_decay <= 1.0, "optim.lr_decay",
           f"must be in (0, 1], got {config.optim.lr_decay!r}.")
  _require(isinstance(config.optim.steps_per_epoch, int) and config.optim.steps_per_epoch >= 0,
           "optim.steps_per_epoch", f"must be a non-negative integer, got {config.optim.steps_per_epoch!r}.")

  _positive(config, "train.batch_size", integer=True)
  _positive(config, "train.num_steps", integer=True)
  _require(config.train.max_abs_ebm_loss >= 0, "train.max_abs_ebm_loss",
           f"must be non-negative (0 disables the guard), got {config.train.max_abs_ebm_loss!r}.")
  for field in ("max_abs_energy", "max_norm"):
    _require(config.train[field] >= 0, f"train.{field}",
             f"must be non-negative (0 disables the guard), got {config.train[field]!r}.")
  _require(config.train.on_divergence in DIVERGENCE_POLICIES, "train.on_divergence",
           f"unknown policy {config.train.on_divergence!r}; expected one of {DIVERGENCE_POLICIES}.")
  _positive(config, "train.max_consecutive_skips", integer=True)
  _require(isinstance(config.train.max_restores, int) and config.train.max_restores >= 0,
           "train.max_restores", f"must be a non-negative integer, got {config.train.max_restores!r}.")
  _require(0.0 < config.train.restore_lr_factor <= 1.0, "train.restore_lr_factor",
           f"must be in (0, 1], got {config.train.restore_lr_factor!r}.")
  _require(config.optim.grad_clip_norm >= 0, "optim.grad_clip_norm",
           f"must be non-negative (0: no clipping), got {config.optim.grad_clip_norm!r}.")
  _positive(config, "checkpoint.every_steps", integer=True)
  _positive(config, "checkpoint.max_to_keep", integer=True)
  _positive(config, "logging.log_every_steps", integer=True)
  _positive(config, "logging.image_every_steps", integer=True)
  _positive(config, "logging.num_images", integer=True)
  _positive(config, "eval.every_steps", integer=True)
  _positive(config, "eval.batch_size", integer=True)
  _require(isinstance(config.eval.num_batches, int) and config.eval.num_batches >= 0,
           "eval.num_batches", f"must be a non-negative integer, got {config.eval.num_batches!r}.")
  if "steps_per_dispatch" in config.train:
    _positive(config, "train.steps_per_dispatch", integer=True)
  per_call = config.train.get("steps_per_dispatch", 1)
  for field in ("logging.log_every_steps", "logging.image_every_steps", "checkpoint.every_steps",
                "eval.every_steps"):
    section, name = field.split(".")
    _require(config[section][name] % per_call == 0, field,
             f"{config[section][name]} is not a multiple of train.steps_per_dispatch={per_call} "
             "(logging, checkpoints and evaluation happen between dispatches).")
  _require(isinstance(config.train.get("xla_cpu_ynnpack", True), bool), "train.xla_cpu_ynnpack",
           f"must be True or False, got {config.train.get('xla_cpu_ynnpack')!r}.")
  compile_cache.cache_dir(config.train.get("compilation_cache", ""), "")  # its type, named
  _require(config.train.get("compute_dtype", "float32") in COMPUTE_DTYPES, "train.compute_dtype",
           f"unknown dtype {config.train.get('compute_dtype')!r}; expected one of {COMPUTE_DTYPES}.")
  from hebm_jax import workdir_lock  # pylint: disable=g-import-not-at-top
  _require(config.train.get("workdir_lock", "auto") in workdir_lock.MODES, "train.workdir_lock",
           f"unknown lock {config.train.get('workdir_lock')!r}; expected one of "
           f"{workdir_lock.MODES}.")
  if "lease_timeout_s" in config.train:
    _positive(config, "train.lease_timeout_s")
  _require(isinstance(config.eval.get("follow", False), bool), "eval.follow",
           f"must be True or False, got {config.eval.get('follow')!r}.")
  if "follow_poll_s" in config.eval:
    _positive(config, "eval.follow_poll_s")
  timeout = config.eval.get("follow_timeout_s", 0.0)
  _require(isinstance(timeout, numbers.Real) and not isinstance(timeout, bool) and timeout >= 0,
           "eval.follow_timeout_s", f"must be a non-negative number (0: wait for ever), got "
           f"{timeout!r}.")
  if num_devices is not None:
    for field in ("train.batch_size", "eval.batch_size"):
      section, name = field.split(".")
      batch = config[section][name]
      _require(batch % num_devices == 0, field,
               f"the global batch {batch} is not divisible by the {num_devices} devices.")
