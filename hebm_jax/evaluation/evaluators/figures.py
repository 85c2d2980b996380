"""Fig. 9 (latent attack per layer), Fig. 6 (traversals) and Fig. 7 (Langevin transitions)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hebm_jax import models, sampler
from hebm_jax.evaluation import attack, traversal
from hebm_jax.evaluation.evaluators import base
from hebm_jax.train_state import network_variables


def _encode_fn(model, state):
  variables = network_variables(state, "encoder")
  return lambda x: model.encoder.apply(variables, x)


def _decode_fn(model, state):
  variables = network_variables(state, "generator")
  return jax.jit(lambda zs: model.generator.apply(variables, zs))


def attack_pairs(batch: dict, num: int) -> tuple[np.ndarray, np.ndarray]:
  """(originals, targets), `num` each: image i of the batch, and the first later image whose label
  differs (any later image when the dataset has no labels)."""
  images, labels = batch["image"], batch.get("label")
  targets = []
  for i in range(num):
    j = next((j for j in range(num, len(images))
              if labels is None or labels[0] < 0 or labels[j] != labels[i]), num + i)
    targets.append(j)
  return images[:num], images[np.asarray(targets)]


class LatentAttack(base.Evaluator):
  """`attack.attack_layers` on eval.attack.num_images test images, one target image each."""
  name = "latent_attack"
  description = "per-layer latent attack (Fig. 9)"

  @classmethod
  def check(cls, config) -> None:
    a = config.eval.attack
    base.positive_int(config, "eval.attack.num_images")
    base.positive_int(config, "eval.attack.num_steps")
    base.require(a.lam >= 0, "eval.attack.lam", f"must be non-negative, got {a.lam!r}.")
    base.require(a.learning_rate > 0, "eval.attack.learning_rate",
                 f"must be positive, got {a.learning_rate!r}.")

  def __init__(self, config, model, data):
    super().__init__(config, model, data)
    source = data.source(config.data.eval_split)
    need = 2 * config.eval.attack.num_images
    if len(source) < need:
      raise base.ConfigError(
          f"config.eval.attack.num_images: {config.eval.attack.num_images} originals and as many "
          f"targets need {need} images; {config.data.eval_split!r} has {len(source)}.")

  def settings(self) -> dict:
    return {"split": self.config.data.eval_split, "norm": "L2", "optimiser": "Adam, clipped to [-1, 1]",
            "targets": "the next test image of another class", **self.config.eval.attack.to_dict()}

  def run(self, state, step, key, with_figures=True) -> base.EvalResult:
    a = self.config.eval.attack
    source = self.data.source(self.config.data.eval_split)
    batch = source.get(np.arange(min(len(source), 10 * a.num_images)))
    x_orig, x_target = attack_pairs(batch, a.num_images)
    out = jax.device_get(attack.attack_layers(
        _encode_fn(self.model, state), _decode_fn(self.model, state), jnp.asarray(x_orig),
        jnp.asarray(x_target), len(self.model.z_dims), lam=a.lam, num_steps=a.num_steps,
        learning_rate=a.learning_rate))
    result = base.EvalResult(details={
        "kl_all_layers_mean": np.mean(out["kl_all_layers"], axis=-1),  # [attacked l, layer k]
        "note": "kl = KL(q(z_l|x_adv) || q(z_l|x_target)) of the attacked layer, batch mean"})
    for l in range(len(self.model.z_dims)):
      name = f"{self.name}/z{l + 1}"
      result.scalars[f"{name}_kl_before"] = float(np.mean(out["kl_initial"][l]))
      result.scalars[f"{name}_kl_after"] = float(np.mean(out["kl"][l]))
      result.scalars[f"{name}_distortion"] = float(np.mean(out["distortion"][l]))
    if with_figures:
      result.figures["latent_attack"] = attack.attack_grid(x_orig, x_target, out["adversarial"],
                                                           out["reconstruction"])
    return result


class Traversals(base.Evaluator):
  """Figures only: the layer traversals around a test image's code, and, for every 2-d layer,
  the prior's Langevin chains over that layer's posterior codes."""
  name = "traversals"
  description = "traversal grids (Fig. 6) and Langevin transitions in 2-d layers (Fig. 7)"

  @classmethod
  def check(cls, config) -> None:
    t = config.eval.traversal
    base.require(t.range > 0, "eval.traversal.range", f"must be positive, got {t.range!r}.")
    for field in ("num_values", "num_codes", "num_chains"):
      base.positive_int(config, f"eval.traversal.{field}")

  def __init__(self, config, model, data):
    super().__init__(config, model, data)
    data.source(config.data.eval_split)

  def settings(self) -> dict:
    return {"held_code": f"posterior mean of {self.config.data.eval_split} image 0",
            "chain_steps": self.config.sampler.n_steps, "step_size": self.config.sampler.step_size,
            **self.config.eval.traversal.to_dict()}

  def run(self, state, step, key, with_figures=True) -> base.EvalResult:
    result = base.EvalResult()
    if not with_figures:
      return result
    t, model = self.config.eval.traversal, self.model
    codes = self.data.codes(state, step, self.config.data.eval_split, t.num_codes)
    values = jnp.linspace(-t.range, t.range, t.num_values)
    grids = traversal.layer_traversals(_decode_fn(model, state), [m[0] for m in codes.means],
                                       values)
    result.figures["traversals"] = traversal.traversal_figure(jax.device_get(grids))
    k_init, k_chain = jax.random.split(key)
    z0 = jax.random.normal(k_init, (t.num_chains, model.latent_dim))
    chains = jax.jit(traversal.prior_chains, static_argnums=(0, 4))(
        sampler.prior_log_prob_fn(model.prior, state.params["prior"]), z0, state.sn_state,
        k_chain, model.n_steps, model.step_size) if model.prior is not None else None
    labels = codes.labels if np.all(codes.labels >= 0) else None
    for l, d in enumerate(model.z_dims):
      if d != 2 or chains is None:
        continue
      layer_chains = models.split_latents(chains, model.z_dims)[l]
      name = f"z{l + 1}"
      result.figures[f"langevin_transition_{name}"] = traversal.langevin_transition_figure(
          codes.means[l], labels, np.asarray(layer_chains), name)
    return result
