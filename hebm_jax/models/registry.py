"""Model families by name (`config.model.family`) and `build_models(config)`.

A family is an (encoder, generator) pair with the shared interface

    encoder.apply(variables, x (B, H, W, C) in [-1, 1], train=False) -> (means, logvars)
    generator.apply(variables, zs, train=False, return_logits=False) -> (B, H, W, C) in [-1, 1]

(lists of L arrays (B, d_l), bottom layer first), plus a check of the config fields it depends on.
Families with batch normalisation keep running statistics in the 'batch_stats' collection.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from hebm_jax.models import ladder, provlae, vlae
from hebm_jax.models.prior import EnergyPrior

Problem = tuple[str, str]  # (config field, message)


@dataclasses.dataclass(frozen=True)
class Family:
  """How to build and check one model family.

  Attributes:
    build: config -> (encoder, generator) modules; `output` is the generator's output activation.
    check: config -> list of (field, message) problems with the fields the family reads.
    description: one line for tables and error messages.
  """
  build: Callable
  check: Callable
  description: str


def _ladder_check(config) -> list[Problem]:
  m, d = config.model, config.data
  num_layers = len(m.z_dims)
  problems = []
  if len(m.channels) != num_layers:
    problems.append(("model.channels", f"needs one width per latent layer ({num_layers} for "
                     f"model.z_dims={tuple(m.z_dims)}), got {len(m.channels)}: {tuple(m.channels)}."))
  factor = 2 ** (num_layers - 1)
  if d.image_size % factor:
    problems.append(("data.image_size", f"{d.image_size} cannot be produced by a {num_layers}-layer "
                     f"{m.family!r} generator: it must be a multiple of 2**(L-1) = {factor}."))
  if m.batch_norm:
    problems.append(("model.batch_norm", f"the {m.family!r} family has no normalisation layers "
                     "(as the authors' code); use a 'vlae_*' or 'provlae' family for batch norm."))
  return problems


def _ladder_builder(merge: str) -> Callable:
  def build(config, output: str):
    m, d = config.model, config.data
    encoder = ladder.HierarchicalEncoder(z_dims=tuple(m.z_dims), channels=tuple(m.channels),
                                         negative_slope=m.encoder_negative_slope)
    generator = ladder.HierarchicalGenerator(
        z_dims=tuple(m.z_dims), channels=tuple(m.channels), image_size=d.image_size,
        image_channels=d.channels, merge=merge, top_width=m.top_width,
        negative_slope=m.generator_negative_slope, output=output)
    return encoder, generator
  return build


FAMILIES: dict[str, Family] = {
    "hs": Family(_ladder_builder("add"), _ladder_check,
                 "the authors' SVHN-HS networks: conv ladder, additive merge (REFERENCE 2.1)"),
    "fid": Family(_ladder_builder("concat"), _ladder_check,
                  "the authors' SVHN-FID networks: conv ladder, channel concatenation (REFERENCE 2.2)"),
    "vlae_small": Family(vlae.build_small, vlae.check_small,
                         "VLAE SmallLayers (MNIST 28x28): conv layer 0, fc layers above, gated add "
                         "(REFERENCE 6.1)"),
    "vlae_large": Family(vlae.build_large, vlae.check_large,
                         "VLAE LargeLayers (CelebA 64x64): 4 conv/fc layers, channel concatenation "
                         "(REFERENCE 6.1)"),
    "provlae": Family(provlae.build, provlae.check,
                      "pro-VLAE 3DShapes networks (64x64x3): ELU + BN conv ladder, concatenation "
                      "(REFERENCE 6.2)"),
}


def register_family(name: str, family: Family) -> None:
  """Adds a model family so configs can select it by `model.family = name`."""
  FAMILIES[name] = family


def family_problems(config) -> list[Problem]:
  """(field, message) for every problem of `config.model` with its family; [] when buildable."""
  name = config.model.family
  if name not in FAMILIES:
    return [("model.family", f"unknown model family {name!r}; expected one of {sorted(FAMILIES)}.")]
  return FAMILIES[name].check(config)


def generator_output(config) -> str:
  """`model.output` when set, else 'sigmoid' for the Bernoulli likelihood (logits -> mean in
  [0, 1]) and 'tanh' otherwise."""
  output = config.model.get("output", "")
  if output:
    return output
  return "sigmoid" if config.objective.likelihood == "bernoulli" else "tanh"


def build_models(config):
  """(encoder, generator, prior) from a config; prior is None for `prior.type='gaussian'`."""
  m, p = config.model, config.prior
  if m.family not in FAMILIES:
    raise ValueError(f"config.model.family: unknown model family {m.family!r}; expected one of "
                     f"{sorted(FAMILIES)}.")
  encoder, generator = FAMILIES[m.family].build(config, generator_output(config))
  prior = None
  if p.type == "ebm":
    prior = EnergyPrior(num_layers=p.num_layers, width=p.width, activation=p.activation,
                        negative_slope=p.negative_slope, spectral_norm=p.spectral_norm,
                        output_scale=float(p.get("output_scale", 1.0)))
  return encoder, generator, prior
