"""Conversion between the authors' PyTorch checkpoints and hebm-jax parameters.

The official code (`jcui1224/hierarchical-representation-ebm`, `train_hs.py` / `train_fid.py`) saves
`{'epoch', 'netG', 'netE', 'netI', 'opt', 'optE'}` with `torch.save`, each `net*` entry a module
`state_dict`. `torch_to_params` maps the three state dicts onto this library's parameter trees
(`params = {'encoder', 'generator', 'prior'}`, `sn_state` = the prior's spectral-norm
'batch_stats'); `params_to_torch` is its inverse. Optimiser states ('opt', 'optE') are not
converted: a converted run starts with fresh Adam moments.

Layouts (PyTorch -> ours):
  * `Linear.weight` (out, in) -> Dense `kernel` (in, out); biases unchanged.
  * `Conv2d.weight` (out, in, kh, kw) -> HWIO `kernel` (kh, kw, in, out).
  * `ConvTranspose2d.weight` (in, out, kh, kw) -> `kernel` (kh, kw, out, in) of our
    `nn.ConvTranspose(transpose_kernel=True)`: the same axis permutation, no spatial flip (the
    golden test checks this numerically).
  * PyTorch flattens conv maps and reshapes Linear outputs in (C, H, W) order, we in (H, W, C): the
    input rows of Linear layers that read a flattened map (encoder heads of layers l < L-1 and the
    first top-layer Linear) and the output units of Linear layers whose output becomes a map
    (generator `project`, spatial `inject`, and the 'concat' family's `top_out`) are permuted.
  * Spectral norm (`torch.nn.utils.spectral_norm` on every EBM Linear): `weight_orig` -> kernel,
    `weight_u` (out,) -> `u` (1, out). Flax's `sigma` (used only with `update_stats=False`) is set
    to PyTorch's eval-mode value u . (W v) from the stored `weight_u`, `weight_v`. In the other
    direction `weight_v` is recomputed as normalize(W^T u) from the final u, which is not the v
    PyTorch stored (that one came from the previous u); PyTorch recomputes v before every train-mode
    forward, which is how the authors always run the EBM, so only eval-mode outputs could differ.

Module names, from the authors' code (`train_hs.py::_generation_4layers`, `_inference_4layer`;
`train_fid.py::_generation_5layers`, `_inference_5layer`; `energy_model`), for L layers with
top = L-1:

  netI: ladder{l}.{0,1}.convT (l < top; `conv2d_relu` wraps a Conv2d named `convT`),
        inference{l}.{0,1}.convT (our trunk{l}), ladder{l}_mean, ladder{l}_logvar (our head{l}),
        ladder{top}.{1,2}.lin (`fc_relu`; index 0 is a reshape) -> ladder{top}_fc{0,1}.
  netG, 'add' family (SVHN-HS): gen{top}.{0,2,4} -> top_fc0, top_fc1, top_out;
        latent{l}_act.0 -> inject{l}; gen{top-1}.0 -> project{top-1}; gen{top-1}.{3,5} -> up, conv;
        gen{l}.{0,2} -> up{l}, conv{l} for l < top-1.
  netG, 'concat' family (SVHN-FID): gen{top}.{0,2,4} -> top_fc0, top_fc1, top_out;
        latent{l}_act.0 -> inject{l}; gen{l}.{0,2,4} -> merge{l}, up{l}, conv{l};
        gen0.6 -> to_image.
        `torch.cat([trunk, activated code], dim=1)` puts the trunk's channels first, as ours does.
  netE: energy.fc{i} (i = 1..num_layers) and energy.out, with `weight_orig`, `weight_u`,
        `weight_v`, `bias` under spectral norm, else `weight`, `bias`.

The FID names come from `train_fid.py` (commit c4d9d4982ed2) and `sandbox-FIDScore.py`, which loads
such checkpoints with `strict=True`; no FID checkpoint or golden numbers were available, so the FID
mapping is tested by names and shapes, by an exact round trip, and (with torch installed)
numerically against a reduced-width PyTorch model of that layout. Configs other than the authors' two are mapped by
the same naming pattern (layer counts and widths generalised).

Reading checkpoints: `load_checkpoint` reads `.pth` files through torch (only needed for that) and
`.npz` files with keys `netI.<module path>` (optionally under a prefix such as the golden file's
'init/'). Command line:

  python -m hebm_jax.convert --checkpoint=ckpt.pth --config=configs/svhn.py --workdir=runs/svhn

writes an orbax checkpoint that `main.py --workdir=runs/svhn` resumes from.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import sys
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from hebm_jax import models

NETS = ("netI", "netG", "netE")
_SN_EPS = 1e-12  # torch.nn.utils.spectral_norm's default


class ConversionError(ValueError):
  """A checkpoint does not match the configured model; the message names the offending key."""


@dataclasses.dataclass(frozen=True)
class LayerMapping:
  """One PyTorch module and the sub-tree of our parameters it corresponds to.

  Attributes:
    net: 'netI', 'netG' or 'netE'.
    torch_name: module path inside the net, e.g. 'ladder0.0.convT'.
    group: 'encoder', 'generator' or 'prior' (top-level key of our params).
    path: module path inside the group, e.g. ('ladder0', 'down').
    kind: 'linear', 'conv', 'conv_transpose' or 'sn_linear' (spectral-normalised Linear; our
      params at path + ('dense',), the power-iteration state at path + ('sn',)).
    in_chw: (C, H, W) when the Linear reads a flattened (C, H, W) map in PyTorch.
    out_chw: (C, H, W) when the Linear's output is reshaped to a (C, H, W) map in PyTorch.
  """
  net: str
  torch_name: str
  group: str
  path: tuple[str, ...]
  kind: str
  in_chw: tuple[int, int, int] | None = None
  out_chw: tuple[int, int, int] | None = None


def layer_mappings(config) -> list[LayerMapping]:
  """Every parameterised module of the configured model with its PyTorch name (see the module
  docstring for the naming pattern)."""
  m, p = config.model, config.prior
  if m.family not in ("hs", "fid"):
    raise ConversionError(f"config.model.family={m.family!r} has no PyTorch counterpart: the "
                          "authors' code has only the 'hs' (train_hs.py) and 'fid' (train_fid.py) "
                          "networks.")
  if p.type == "ebm" and p.get("output_scale", 1.0) != 1.0:
    raise ConversionError(f"config.prior.output_scale={p.output_scale!r}: the authors' energy "
                          "network has no output scale; convert with 1.0.")
  num_layers = len(m.z_dims)
  top = num_layers - 1
  ch = tuple(m.channels)
  size = lambda l: config.data.image_size // 2 ** (l + 1)
  out = []

  def add(*args, **kwargs):
    out.append(LayerMapping(*args, **kwargs))

  # Encoder.
  for l in range(top):
    add("netI", f"ladder{l}.0.convT", "encoder", (f"ladder{l}", "down"), "conv")
    add("netI", f"ladder{l}.1.convT", "encoder", (f"ladder{l}", "conv"), "conv")
    for head in ("mean", "logvar"):
      add("netI", f"ladder{l}_{head}", "encoder", (f"head{l}", head), "linear",
          in_chw=(ch[l], size(l), size(l)))
    add("netI", f"inference{l}.0.convT", "encoder", (f"trunk{l}", "down"), "conv")
    add("netI", f"inference{l}.1.convT", "encoder", (f"trunk{l}", "conv"), "conv")
  add("netI", f"ladder{top}.1.lin", "encoder", (f"ladder{top}_fc0",), "linear",
      in_chw=(ch[top - 1], size(top - 1), size(top - 1)))
  add("netI", f"ladder{top}.2.lin", "encoder", (f"ladder{top}_fc1",), "linear")
  for head in ("mean", "logvar"):
    add("netI", f"ladder{top}_{head}", "encoder", (f"head{top}", head), "linear")

  # Generator.
  add("netG", f"gen{top}.0", "generator", ("top_fc0",), "linear")
  add("netG", f"gen{top}.2", "generator", ("top_fc1",), "linear")
  if m.family == "hs":
    add("netG", f"gen{top}.4", "generator", ("top_out",), "linear")
    for l in range(top - 1, -1, -1):
      if l == top - 1:
        add("netG", f"latent{l}_act.0", "generator", (f"inject{l}",), "linear")
        add("netG", f"gen{l}.0", "generator", (f"project{l}",), "linear",
            out_chw=(ch[l], size(l), size(l)))
        up, conv = 3, 5
      else:
        add("netG", f"latent{l}_act.0", "generator", (f"inject{l}",), "linear",
            out_chw=(ch[l], size(l), size(l)))
        up, conv = 0, 2
      add("netG", f"gen{l}.{up}", "generator", (f"up{l}",), "conv_transpose")
      add("netG", f"gen{l}.{conv}", "generator", (f"conv{l}",), "conv_transpose")
  else:  # "fid"
    add("netG", f"gen{top}.4", "generator", ("top_out",), "linear",
        out_chw=(ch[top], size(top - 1), size(top - 1)))
    for l in range(top - 1, -1, -1):
      c = ch[top] if l == top - 1 else ch[l + 1]  # channels of the map the code is joined to
      add("netG", f"latent{l}_act.0", "generator", (f"inject{l}",), "linear",
          out_chw=(c, size(l), size(l)))
      for index, name in ((0, "merge"), (2, "up"), (4, "conv")):
        add("netG", f"gen{l}.{index}", "generator", (f"{name}{l}",), "conv_transpose")
    add("netG", "gen0.6", "generator", ("to_image",), "conv_transpose")

  # Energy prior.
  if p.type == "ebm":
    kind = "sn_linear" if p.spectral_norm else "linear"
    names = [f"fc{i + 1}" for i in range(p.num_layers)] + ["out"]
    for name in names:
      path = (name,) if p.spectral_norm else (name, "dense")
      add("netE", f"energy.{name}", "prior", path, kind)
  return out


def abstract_variables(config) -> tuple[dict, dict]:
  """Shapes of (params, sn_state) of the configured model, without allocating them."""
  encoder, generator, prior = models.build_models(config)
  d = config.data
  x = jax.ShapeDtypeStruct((1, d.image_size, d.image_size, d.channels), jnp.float32)
  zs = [jax.ShapeDtypeStruct((1, z), jnp.float32) for z in config.model.z_dims]
  key = jax.random.PRNGKey(0)
  params = {"encoder": jax.eval_shape(encoder.init, key, x)["params"],
            "generator": jax.eval_shape(generator.init, key, zs)["params"],
            "prior": {}}
  sn_state = {}
  if prior is not None:
    z = jax.ShapeDtypeStruct((1, sum(config.model.z_dims)), jnp.float32)
    variables = jax.eval_shape(prior.init, key, z)
    params["prior"] = variables["params"]
    sn_state = variables.get("batch_stats", {})
  return _to_dict(params), _to_dict(sn_state)


def _to_dict(tree: Any) -> Any:
  if isinstance(tree, Mapping):
    return {k: _to_dict(v) for k, v in tree.items()}
  return tree


def _get(tree: Mapping, path: tuple[str, ...], what: str) -> Any:
  node = tree
  for part in path:
    if not isinstance(node, Mapping) or part not in node:
      raise ConversionError(f"Missing {what} {'/'.join(path)}.")
    node = node[part]
  return node


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
  for part in path[:-1]:
    tree = tree.setdefault(part, {})
  tree[path[-1]] = value


def _normalize(v: np.ndarray) -> np.ndarray:
  return v / max(float(np.linalg.norm(v)), _SN_EPS)  # torch's F.normalize


# Layout transforms, each with its inverse. Shapes are PyTorch's on the left, ours on the right.


def _linear_to_ours(w: np.ndarray, in_chw, out_chw) -> np.ndarray:
  """(out, in) -> (in, out), permuting (C, H, W)-ordered inputs or outputs to (H, W, C) order."""
  if in_chw is not None:
    c, h, wd = in_chw
    w = w.reshape(w.shape[0], c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
  if out_chw is not None:
    c, h, wd = out_chw
    w = w.reshape(c, h, wd, w.shape[-1]).transpose(1, 2, 0, 3).reshape(-1, w.shape[-1])
  return w.T


def _linear_to_torch(k: np.ndarray, in_chw, out_chw) -> np.ndarray:
  w = k.T
  if in_chw is not None:
    c, h, wd = in_chw
    w = w.reshape(w.shape[0], h, wd, c).transpose(0, 3, 1, 2).reshape(w.shape[0], -1)
  if out_chw is not None:
    c, h, wd = out_chw
    w = w.reshape(h, wd, c, w.shape[-1]).transpose(2, 0, 1, 3).reshape(-1, w.shape[-1])
  return w


def _bias_to_ours(b: np.ndarray, out_chw) -> np.ndarray:
  if out_chw is None:
    return b
  c, h, w = out_chw
  return b.reshape(c, h, w).transpose(1, 2, 0).reshape(-1)


def _bias_to_torch(b: np.ndarray, out_chw) -> np.ndarray:
  if out_chw is None:
    return b
  c, h, w = out_chw
  return b.reshape(h, w, c).transpose(2, 0, 1).reshape(-1)


def _torch_shape(our_shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
  """PyTorch weight shape of a kernel of shape `our_shape`."""
  if kind in ("linear", "sn_linear"):
    return our_shape[::-1]
  kh, kw, a, b = our_shape  # conv: (kh, kw, in, out); conv_transpose: (kh, kw, out, in)
  return (b, a, kh, kw)


def _torch_arrays(mapping: LayerMapping, abstract: dict) -> dict[str, tuple[int, ...]]:
  """The PyTorch state-dict keys of one module (without the net prefix) and their shapes."""
  name = mapping.torch_name
  abstract = abstract[mapping.group]
  if mapping.kind == "sn_linear":
    kernel = _get(abstract, mapping.path + ("dense", "kernel"), "parameter").shape
    return {f"{name}.weight_orig": kernel[::-1], f"{name}.bias": (kernel[1],),
            f"{name}.weight_u": (kernel[1],), f"{name}.weight_v": (kernel[0],)}
  kernel = _get(abstract, mapping.path + ("kernel",), "parameter").shape
  shapes = {f"{name}.weight": _torch_shape(kernel, mapping.kind)}
  if mapping.kind == "linear":
    shapes[f"{name}.bias"] = (kernel[1],)
  return shapes


def torch_state_dict_shapes(config) -> dict[str, dict[str, tuple[int, ...]]]:
  """The state-dict keys and shapes the authors' PyTorch modules have for `config`'s model.

  Returns:
    {'netI': {key: shape}, 'netG': {...}} plus 'netE' for an EBM prior.
  """
  abstract, _ = abstract_variables(config)
  out: dict[str, dict[str, tuple[int, ...]]] = {"netI": {}, "netG": {}}
  if config.prior.type == "ebm":
    out["netE"] = {}
  for mapping in layer_mappings(config):
    out[mapping.net].update(_torch_arrays(mapping, abstract))
  return out


def torch_to_params(state_dicts: Mapping[str, Mapping[str, Any]], config) -> tuple[dict, dict]:
  """The authors' PyTorch state dicts -> (params, sn_state) for `config`'s model.

  Args:
    state_dicts: {'netI': {...}, 'netG': {...}, 'netE': {...}}; keys are module paths inside each
      net (e.g. 'ladder0.0.convT.weight'), values arrays (numpy or anything `np.asarray` takes)
      in PyTorch layout. 'netE' may be absent or empty for a Gaussian-prior config.
    config: the experiment config ('add' or 'concat' generator, EBM or Gaussian prior).

  Returns:
    (params {'encoder', 'generator', 'prior'}, sn_state) as `train_state.init_params` returns them,
    float32 numpy arrays. sn_state[layer]['sn'] = {'dense/kernel/u': (1, out),
    'dense/kernel/sigma': ()} for each spectral-normalised prior layer.

  Raises:
    ConversionError: naming the key, for a missing key, an unexpected key or net, or a shape that
      does not match the configured model.
  """
  unknown = sorted(set(state_dicts) - set(NETS))
  if unknown:
    raise ConversionError(f"Unexpected networks {unknown} in the checkpoint; expected {NETS}.")
  if config.prior.type != "ebm" and state_dicts.get("netE"):
    raise ConversionError(
        f"config.prior.type={config.prior.type!r} has no energy prior, but the checkpoint has one "
        f"(netE.{next(iter(state_dicts['netE']))}, ...). Use prior.type='ebm' to convert it.")
  abstract, abstract_sn = abstract_variables(config)
  mappings = layer_mappings(config)
  _check_keys(state_dicts, mappings, abstract)
  params: dict = {"encoder": {}, "generator": {}, "prior": {}}
  sn_state: dict = {}

  for mapping in mappings:
    sd = state_dicts[mapping.net]
    arrays = {key.rsplit(".", 1)[1]: np.asarray(sd[key], np.float32)
              for key in _torch_arrays(mapping, abstract)}
    group = params[mapping.group]
    if mapping.kind == "linear":
      _set(group, mapping.path + ("kernel",),
           _linear_to_ours(arrays["weight"], mapping.in_chw, mapping.out_chw))
      _set(group, mapping.path + ("bias",), _bias_to_ours(arrays["bias"], mapping.out_chw))
    elif mapping.kind in ("conv", "conv_transpose"):
      _set(group, mapping.path + ("kernel",), arrays["weight"].transpose(2, 3, 1, 0))
    else:  # sn_linear
      w, u, v = arrays["weight_orig"], arrays["weight_u"], arrays["weight_v"]
      _set(group, mapping.path + ("dense", "kernel"), w.T)
      _set(group, mapping.path + ("dense", "bias"), arrays["bias"])
      _set(sn_state, mapping.path + ("sn",), {
          "dense/kernel/u": u[None, :],
          "dense/kernel/sigma": np.asarray(np.dot(u, w @ v), np.float32)})  # torch's eval sigma

  _check_tree(params, abstract, "parameter")
  _check_tree(sn_state, abstract_sn, "spectral-norm state")
  # Fresh C-ordered copies: never views of the caller's (possibly torch-owned, mutable) buffers.
  copy = lambda a: np.array(a, np.float32, order="C")
  return jax.tree.map(copy, params), jax.tree.map(copy, sn_state)


def _check_keys(state_dicts: Mapping[str, Mapping[str, Any]], mappings: list[LayerMapping],
                abstract: dict) -> None:
  """Raises one `ConversionError` listing missing keys, wrong shapes and unexpected keys."""
  expected = {}
  for mapping in mappings:
    expected.update({(mapping.net, k): v for k, v in _torch_arrays(mapping, abstract).items()})
  given = {(net, k): np.shape(v) for net, sd in state_dicts.items() for k, v in sd.items()}
  missing = [f"{net}.{k} (shape {shape})" for (net, k), shape in expected.items()
             if (net, k) not in given]
  wrong = [f"{net}.{k} has shape {given[net, k]}, the model needs {shape}"
           for (net, k), shape in expected.items() if (net, k) in given and given[net, k] != shape]
  unexpected = [f"{net}.{k}" for (net, k) in given if (net, k) not in expected]
  problems = []
  for title, items in (("Missing keys", missing), ("Wrong shapes", wrong),
                       ("Unexpected keys", unexpected)):
    if items:
      more = f"; and {len(items) - 5} more" if len(items) > 5 else ""
      problems.append(f"{title}: {'; '.join(items[:5])}{more}.")
  if problems:
    raise ConversionError("The checkpoint does not fit the configured model (does the config "
                          "match it?).\n  " + "\n  ".join(problems))


def _check_tree(tree: dict, abstract: dict, what: str) -> None:
  """Same structure and shapes (a guard against an incomplete mapping table)."""
  flat = {jax.tree_util.keystr(p): np.shape(v)
          for p, v in jax.tree_util.tree_leaves_with_path(tree)}
  want = {jax.tree_util.keystr(p): tuple(v.shape)
          for p, v in jax.tree_util.tree_leaves_with_path(abstract)}
  for key in sorted(set(flat) | set(want)):
    if key not in flat:
      raise ConversionError(f"Missing {what} {key} after conversion.")
    if key not in want:
      raise ConversionError(f"Unexpected {what} {key} after conversion.")
    if flat[key] != want[key]:
      raise ConversionError(f"{what} {key} has shape {flat[key]}; the model needs {want[key]}.")


def params_to_torch(params: Mapping, sn_state: Mapping, config) -> dict[str, dict[str, np.ndarray]]:
  """(params, sn_state) -> the authors' state dicts; the inverse of `torch_to_params`.

  Args:
    params: {'encoder', 'generator', 'prior'} as in a `TrainState` (jax or numpy arrays).
    sn_state: the prior's spectral-norm state ({} without spectral norm or EBM prior).
    config: the config the parameters belong to.

  Returns:
    {'netI': {...}, 'netG': {...}} plus 'netE' for an EBM prior; float32 numpy arrays in PyTorch
    layout, loadable with `module.load_state_dict(..., strict=True)` into the authors' modules.
    `weight_u` is our u; `weight_v` is recomputed as normalize(W^T u) (module docstring).

  Raises:
    ConversionError: naming our parameter path when it is missing or has the wrong shape.
  """
  abstract, abstract_sn = abstract_variables(config)
  params = jax.tree.map(lambda a: np.asarray(a, np.float32), _to_dict(params))
  sn_state = jax.tree.map(lambda a: np.asarray(a, np.float32), _to_dict(sn_state))
  _check_tree(params, abstract, "parameter")
  _check_tree(sn_state, abstract_sn, "spectral-norm state")
  out: dict[str, dict[str, np.ndarray]] = {"netI": {}, "netG": {}}
  if config.prior.type == "ebm":
    out["netE"] = {}

  for mapping in layer_mappings(config):
    group = params[mapping.group]
    name, dest = mapping.torch_name, out[mapping.net]
    if mapping.kind == "linear":
      kernel = _get(group, mapping.path + ("kernel",), "parameter")
      dest[f"{name}.weight"] = _linear_to_torch(kernel, mapping.in_chw, mapping.out_chw)
      dest[f"{name}.bias"] = _bias_to_torch(_get(group, mapping.path + ("bias",), "parameter"),
                                            mapping.out_chw)
    elif mapping.kind in ("conv", "conv_transpose"):
      dest[f"{name}.weight"] = _get(group, mapping.path + ("kernel",), "parameter").transpose(
          3, 2, 0, 1)
    else:  # sn_linear
      w = _get(group, mapping.path + ("dense", "kernel"), "parameter").T
      u = _get(sn_state, mapping.path + ("sn", "dense/kernel/u"), "spectral-norm state")[0]
      dest[f"{name}.bias"] = _get(group, mapping.path + ("dense", "bias"), "parameter")
      dest[f"{name}.weight_orig"] = w
      dest[f"{name}.weight_u"] = u
      dest[f"{name}.weight_v"] = _normalize(w.T @ u).astype(np.float32)
  return {net: {k: np.ascontiguousarray(v) for k, v in d.items()} for net, d in out.items()}


# ------------------------------------------------------------------------------------------------
# Reading checkpoint files.
# ------------------------------------------------------------------------------------------------


def _group_flat(flat: Mapping[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
  """{'<prefix>netI.a.b': x, ...} -> {'netI': {'a.b': x}, ...}; other keys are ignored."""
  out: dict[str, dict[str, Any]] = {}
  for key, value in flat.items():
    if not key.startswith(prefix):
      continue
    net, _, rest = key[len(prefix):].partition(".")
    if net in NETS and rest:
      out.setdefault(net, {})[rest] = value
  return out


def load_npz_checkpoint(path: str, prefix: str = "") -> dict[str, dict[str, np.ndarray]]:
  """Reads state dicts saved as one `.npz` with keys '<prefix>netI.<module path>'.

  Args:
    path: the .npz file.
    prefix: a stage prefix to select and strip, e.g. 'init/' or 'step1/' for the golden file;
      keys without it, or not under netI/netG/netE, are ignored.

  Returns:
    {'netI': {...}, 'netG': {...}, 'netE': {...}} (nets absent from the file are left out).
  """
  with np.load(path) as data:
    grouped = _group_flat({k: data[k] for k in data.files if k.startswith(prefix)}, prefix)
  if not grouped:
    raise ConversionError(f"{path} has no arrays named '{prefix}netI.*', '{prefix}netG.*' or "
                          f"'{prefix}netE.*'.")
  return grouped


def _strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  # nn.DataParallel saves 'module.<path>'.
  if state_dict and all(k.startswith("module.") for k in state_dict):
    return {k[len("module."):]: v for k, v in state_dict.items()}
  return dict(state_dict)


def load_torch_checkpoint(path: str, allow_pickle: bool = False
                          ) -> dict[str, dict[str, np.ndarray]]:
  """Reads an authors' `.pth` checkpoint (needs torch).

  Accepts the authors' format {'netI': state_dict, 'netG': ..., 'netE': ..., 'opt': ..., ...}, the
  common variants '<net>_state_dict' and one flat state dict with 'netI.'-prefixed keys; a
  'module.' (DataParallel) prefix is removed. Optimiser states and other entries are ignored.

  Args:
    path: the file.
    allow_pickle: load with `weights_only=False`, i.e. run arbitrary pickled code; only for
      trusted files that `weights_only=True` refuses.

  Returns:
    {'netI': {...}, 'netG': {...}, 'netE': {...}} of float32 numpy arrays.

  Raises:
    ImportError: torch is not installed.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f"Reading the PyTorch checkpoint {path} needs torch, which hebm-jax does not otherwise "
        "use: `pip install torch` (the CPU build is enough), or export the state dicts to .npz on "
        "a machine that has torch, e.g. np.savez('ckpt.npz', **{f'{net}.{k}': v.numpy() for net "
        "in ('netI', 'netG', 'netE') for k, v in ckpt[net].items()}).") from e
  try:
    obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
  except TypeError as e:  # torch < 1.13 has no weights_only: it can only unpickle
    if not allow_pickle:
      raise ConversionError(f"This torch ({torch.__version__}) cannot load {path} safely "
                            "(no weights_only); upgrade torch, or pass allow_pickle=True "
                            "(--allow_pickle) for a file you trust.") from e
    obj = torch.load(path, map_location="cpu")
  except pickle.UnpicklingError as e:
    raise ConversionError(f"torch.load(weights_only=True) refused {path} ({e}). For a file you "
                          "trust, pass allow_pickle=True (--allow_pickle).") from e
  if not isinstance(obj, Mapping):
    raise ConversionError(f"{path} holds a {type(obj).__name__}, not a dict of state dicts.")
  nets = {}
  for net in NETS:
    for key in (net, f"{net}_state_dict"):
      if isinstance(obj.get(key), Mapping):
        nets[net] = _strip_module_prefix(obj[key])
        break
  if not nets:
    flat = obj.get("state_dict", obj)
    nets = {net: _strip_module_prefix(sd) for net, sd in _group_flat(flat).items()}
  if not nets:
    raise ConversionError(f"{path} has none of {NETS} (keys: {sorted(map(str, obj))[:10]}).")

  def to_numpy(t):
    return t.detach().cpu().to(torch.float32).numpy() if torch.is_floating_point(t) else t.numpy()

  return {net: {k: to_numpy(v) for k, v in sd.items() if isinstance(v, torch.Tensor)}
          for net, sd in nets.items()}


def load_checkpoint(path: str, prefix: str = "", allow_pickle: bool = False
                    ) -> dict[str, dict[str, np.ndarray]]:
  """`load_npz_checkpoint` for '.npz' files, `load_torch_checkpoint` otherwise."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"No checkpoint at {path}.")
  if path.endswith(".npz"):
    return load_npz_checkpoint(path, prefix)
  if prefix:
    raise ConversionError("A key prefix applies to .npz files only.")
  return load_torch_checkpoint(path, allow_pickle)


# ------------------------------------------------------------------------------------------------
# Writing an hebm-jax checkpoint.
# ------------------------------------------------------------------------------------------------


def convert_checkpoint(checkpoint: str, config, workdir: str, step: int = 0, prefix: str = "",
                       allow_pickle: bool = False) -> str:
  """Converts an authors' checkpoint into an hebm-jax checkpoint in `workdir`.

  The train state has the converted parameters and spectral-norm state, `step`, and fresh
  optimiser states (the authors' Adam moments are not converted) whose learning-rate schedule
  counts start at `step`, so a resumed run continues the per-epoch decay. `train_state.create_model`
  needs a number of steps per epoch: `config.optim.steps_per_epoch`, or 1 when it is 0. It only
  shapes the schedule functions, which are not saved, so the written checkpoint does not depend
  on it; a resumed run derives its own from the dataset.

  Args:
    checkpoint: a `.pth` (needs torch) or `.npz` file (see `load_checkpoint`).
    config: the experiment config matching the checkpoint.
    workdir: the run directory; must not hold checkpoints yet.
    step: the iteration count to record (the authors' HS file names give it).
    prefix: key prefix for `.npz` files (e.g. 'init/').
    allow_pickle: see `load_torch_checkpoint`.

  Returns:
    the directory of the written checkpoint.

  Raises:
    FileExistsError: `workdir` already has checkpoints (nothing is written).
    ConversionError, ConfigError, ImportError: before anything is written.
  """
  # pylint: disable=g-import-not-at-top
  from hebm_jax import checkpointing, train_state
  from hebm_jax.config_validation import validate_config

  validate_config(config)
  if step < 0:
    raise ValueError(f"step must be non-negative, got {step}.")
  ckpt_dir = checkpointing.checkpoint_dir(workdir)
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
    raise FileExistsError(f"{ckpt_dir} already holds checkpoints; convert into a new --workdir. "
                          "Nothing was written.")
  state_dicts = load_checkpoint(checkpoint, prefix, allow_pickle)
  params, sn_state = torch_to_params(state_dicts, config)

  model = train_state.create_model(config, config.optim.steps_per_epoch or 1)
  state = train_state.state_from_params(model, jax.tree.map(jnp.asarray, params),
                                        jax.tree.map(jnp.asarray, sn_state), step)
  manager = checkpointing.make_manager(workdir, config.checkpoint.max_to_keep)
  checkpointing.save(manager, step, state, config)
  manager.wait_until_finished()
  manager.close()
  return os.path.join(ckpt_dir, str(step))


def _main() -> None:
  # Flags are defined only when run as a program: main.py defines --config and --workdir too.
  # pylint: disable=g-import-not-at-top
  from absl import app, flags, logging
  from ml_collections import config_flags

  flags.DEFINE_string("checkpoint", None, "The authors' .pth checkpoint, or an .npz export.")
  flags.DEFINE_string("workdir", None, "New run directory for the converted checkpoint.")
  flags.DEFINE_integer("step", 0, "Iteration count to record in the converted state.")
  flags.DEFINE_string("prefix", "", "Key prefix of .npz arrays, e.g. 'init/' for the golden file.")
  flags.DEFINE_bool("allow_pickle", False, "torch.load with weights_only=False (trusted files).")
  config_flags.DEFINE_config_file("config", None, "Experiment config matching the checkpoint.",
                                  lock_config=True)
  flags.mark_flags_as_required(["checkpoint", "config", "workdir"])
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from hebm_jax.config_validation import ConfigError
    try:
      where = convert_checkpoint(FLAGS.checkpoint, FLAGS.config, FLAGS.workdir, FLAGS.step,
                                 FLAGS.prefix, FLAGS.allow_pickle)
    except (ConversionError, ConfigError, FileExistsError, FileNotFoundError, ImportError) as e:
      sys.exit(f"Conversion failed: {e}")  # the user's input, not a bug: no traceback
    logging.info("Wrote %s", where)
    print(f"Converted {FLAGS.checkpoint} -> {where}")

  app.run(main)


if __name__ == "__main__":
  _main()
