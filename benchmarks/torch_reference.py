"""The authors' training iteration in PyTorch, for side-by-side speed comparisons.

Written from the facts in REFERENCE.md (sections 1.1, 2, 2.1, 2.2, 9) the way the authors' `fit`
(`train_hs.py` / `train_fid.py`) writes it: eager PyTorch, one Adam over encoder + generator, a
Python loop of `torch.autograd.grad` calls for the prior Langevin chain, and a spectral-normalised
EBM that stays in train mode, so that every call of it runs one power iteration and updates `u`.

    ref = build("svhn", device="cuda")
    stats = iteration(ref, x)          # x: (B, 3, 32, 32) in [-1, 1], a torch tensor on ref.device
    sync(ref.device)

Module paths (and so `state_dict` keys) follow the authors' layout, so the SVHN-HS golden weights
(`/work/shared/golden/svhn_hs_golden.npz`, keys `init/netI.<path>` etc.) load by name with
`load_golden_hs`. PyTorch is imported lazily: this module imports without it and raises a clear
error only when a function that needs it is called.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any, Callable, Sequence

HS_NAME = "svhn"
FID_NAME = "svhn_fid"


@dataclasses.dataclass(frozen=True)
class Hyper:
  """Per-model settings of `train_hs.py` / `train_fid.py` (REFERENCE §2.1, §2.2)."""
  z_dims: tuple[int, ...]  # bottom (z0) to top
  cs: tuple[int, ...]  # channel widths, cs[0] = 3 image channels
  en_layers: int  # hidden Linear+LReLU blocks of the EBM
  en_ndf: int  # their width
  gfactor: float  # 1 / (2 sigma^2)
  n_steps: int  # prior Langevin K
  step_size: float  # prior Langevin s
  lr: float = 3e-4  # lrG, used for encoder and generator together
  weight_decay: float = 5e-4  # coupled L2 on encoder + generator
  lr_e: float = 2e-6
  betas: tuple[float, float] = (0.0, 0.9)


HYPERS: dict[str, Hyper] = {
    HS_NAME: Hyper(z_dims=(2, 2, 2, 10), cs=(3, 32, 64, 64, 256), en_layers=4, en_ndf=50,
                   gfactor=3.0, n_steps=60, step_size=0.4),
    FID_NAME: Hyper(z_dims=(10,) * 5, cs=(3, 128, 256, 256, 512, 1024, 2048), en_layers=2,
                    en_ndf=100, gfactor=10.0, n_steps=100, step_size=0.3),
}


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("benchmarks.torch_reference needs PyTorch: pip install torch "
                      "(the CPU wheel is enough for the tests).") from e
  return torch


@functools.lru_cache(maxsize=None)
def _modules() -> Any:
  """The network classes; built on first use so that importing this file does not need torch."""
  torch = _torch()
  nn, F = torch.nn, torch.nn.functional

  class Reshape(nn.Module):
    """Their `Reshape`: (B, ...) -> (B, *shape)."""

    def __init__(self, *shape: int):
      super().__init__()
      self.shape = shape

    def forward(self, x):
      return x.view((x.shape[0],) + self.shape)

  class ConvAct(nn.Module):
    """Their `conv2d_relu`. The attribute is named `convT` in their code although it is a Conv2d;
    kept so that the state_dict keys match theirs."""

    def __init__(self, cin: int, cout: int, downsample: bool):
      super().__init__()
      if downsample:
        self.convT = nn.Conv2d(cin, cout, 4, 2, 1, bias=False)
      else:
        self.convT = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)

    def forward(self, x):
      return F.leaky_relu(self.convT(x))  # default slope 0.01, unlike G and E (0.2)

  class LinAct(nn.Module):
    """Their `fc_relu`: Linear (with bias) + leaky_relu(0.01)."""

    def __init__(self, cin: int, cout: int):
      super().__init__()
      self.lin = nn.Linear(cin, cout)

    def forward(self, x):
      return F.leaky_relu(self.lin(x))

  class Encoder(nn.Module):
    """VLAE-style ladder encoder: `ladder{l}` heads off a shared `inference{l}` trunk.

    Layers 0..L-2 are conv ladders at 16, 8, 4, (2) pixels; the top one is an MLP on the flattened
    last trunk. forward: x (B, 3, 32, 32) -> [(mean_l, logvar_l), each (B, z_l)] bottom to top.
    """

    def __init__(self, z_dims: Sequence[int], cs: Sequence[int]):
      super().__init__()
      self.num_layers = len(z_dims)
      top = self.num_layers - 1
      prev, size = cs[0], 32
      for l in range(top):
        c, size = cs[l + 1], size // 2
        setattr(self, f"ladder{l}", nn.Sequential(
            ConvAct(prev, c, True), ConvAct(c, c, False), Reshape(c * size * size)))
        setattr(self, f"ladder{l}_mean", nn.Linear(c * size * size, z_dims[l]))
        setattr(self, f"ladder{l}_logvar", nn.Linear(c * size * size, z_dims[l]))
        setattr(self, f"inference{l}", nn.Sequential(ConvAct(prev, c, True), ConvAct(c, c, False)))
        prev = c
      flat, width = prev * size * size, cs[top + 1]
      setattr(self, f"ladder{top}", nn.Sequential(
          Reshape(flat), LinAct(flat, width), LinAct(width, width)))
      setattr(self, f"ladder{top}_mean", nn.Linear(width, z_dims[top]))
      setattr(self, f"ladder{top}_logvar", nn.Linear(width, z_dims[top]))

    def forward(self, x):
      heads, r = [], x
      for l in range(self.num_layers):
        h = getattr(self, f"ladder{l}")(r)
        heads.append((getattr(self, f"ladder{l}_mean")(h), getattr(self, f"ladder{l}_logvar")(h)))
        if l < self.num_layers - 1:
          r = getattr(self, f"inference{l}")(r)
      return heads

  def act():
    return nn.LeakyReLU(0.2)

  def convt(cin: int, cout: int, up: bool):
    return (nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False) if up
            else nn.ConvTranspose2d(cin, cout, 3, 1, 1, bias=False))

  class GeneratorHS(nn.Module):
    """`_generation_4layers` (svhn_4layers_v4): codes are *added* to pre-activation features.

    forward: [z0 (B, 2), z1, z2, z3 (B, 10)] -> x (B, 3, 32, 32) in (-1, 1).
    """

    def __init__(self, z_dims: Sequence[int], cs: Sequence[int]):
      super().__init__()
      c1, c2, c3, c4 = cs[1:5]
      self.gen3 = nn.Sequential(nn.Linear(z_dims[3], c4), act(), nn.Linear(c4, c4), act(),
                                nn.Linear(c4, c3))
      self.latent2_act = nn.Sequential(nn.Linear(z_dims[2], c3))
      self.gen2 = nn.Sequential(nn.Linear(c3, 4 * 4 * c3), act(), Reshape(c3, 4, 4),
                                convt(c3, c3, True), act(), convt(c3, c2, False))
      self.latent1_act = nn.Sequential(nn.Linear(z_dims[1], 8 * 8 * c2), Reshape(c2, 8, 8))
      self.gen1 = nn.Sequential(convt(c2, c2, True), act(), convt(c2, c1, False))
      self.latent0_act = nn.Sequential(nn.Linear(z_dims[0], 16 * 16 * c1), Reshape(c1, 16, 16))
      self.gen0 = nn.Sequential(convt(c1, c1, True), act(), convt(c1, 3, False), nn.Tanh())

    def forward(self, zs):
      h = self.gen3(zs[3])
      h = self.gen2(h + self.latent2_act(zs[2]))
      h = self.gen1(h + self.latent1_act(zs[1]))
      return self.gen0(h + self.latent0_act(zs[0]))

  class GeneratorFID(nn.Module):
    """`_generation_5layers`: codes are *concatenated* on channels; LReLU after every layer.

    forward: [z0 .. z4, each (B, 10)] -> x (B, 3, 32, 32) in (-1, 1).
    """

    def __init__(self, z_dims: Sequence[int], cs: Sequence[int]):
      super().__init__()
      self.gen4 = nn.Sequential(nn.Linear(z_dims[4], cs[6]), act(), nn.Linear(cs[6], cs[6]), act(),
                                nn.Linear(cs[6], cs[5] * 2 * 2), act(), Reshape(cs[5], 2, 2))
      for l, size in zip((3, 2, 1, 0), (2, 4, 8, 16)):
        c, out = cs[l + 2], cs[l + 1]
        setattr(self, f"latent{l}_act", nn.Sequential(
            nn.Linear(z_dims[l], size * size * c), act(), Reshape(c, size, size)))
        layers = [convt(2 * c, c, False), act(), convt(c, out, True), act(),
                  convt(out, out, False), act()]
        if l == 0:
          layers += [convt(out, 3, False), nn.Tanh()]
        setattr(self, f"gen{l}", nn.Sequential(*layers))

    def forward(self, zs):
      h = self.gen4(zs[4])
      for l in (3, 2, 1, 0):
        h = getattr(self, f"gen{l}")(torch.cat([h, getattr(self, f"latent{l}_act")(zs[l])], 1))
      return h

  class Energy(nn.Module):
    """`energy_model` with `add_sn`: f(concat z), spectral norm on every Linear, the output too.

    forward: [z_l (B, z_l)] -> f (B,). Each call in train mode runs one power iteration.
    """

    def __init__(self, z_dims: Sequence[int], en_layers: int, en_ndf: int):
      super().__init__()
      layers, fan_in = collections.OrderedDict(), sum(z_dims)
      for i in range(1, en_layers + 1):
        layers[f"fc{i}"] = nn.utils.spectral_norm(nn.Linear(fan_in, en_ndf))
        layers[f"lrelu{i}"] = nn.LeakyReLU(0.2)
        fan_in = en_ndf
      layers["out"] = nn.utils.spectral_norm(nn.Linear(fan_in, 1))
      self.energy = nn.Sequential(layers)

    def forward(self, zs):
      return self.energy(torch.cat(list(zs), 1)).squeeze(1)

  return collections.namedtuple(
      "Modules", "Encoder GeneratorHS GeneratorFID Energy")(Encoder, GeneratorHS, GeneratorFID,
                                                            Energy)


@dataclasses.dataclass
class TorchReference:
  """The authors' three networks, their two optimisers and the model's hyperparameters."""
  name: str
  device: str
  netI: Any  # encoder, torch.nn.Module
  netG: Any  # generator
  netE: Any  # energy prior f; kept in train mode on purpose (REFERENCE §2)
  opt: Any  # Adam over netI + netG
  optE: Any  # Adam over netE
  z_dims: tuple[int, ...]
  gfactor: float
  n_steps: int
  step_size: float


def build(name: str, device: str = "cpu", seed: int = 0, n_steps: int | None = None,
          step_size: float | None = None) -> TorchReference:
  """Builds the authors' networks and optimisers for `name` in {"svhn", "svhn_fid"}.

  Args:
    name: "svhn" (the 4-layer HS model, §2.1) or "svhn_fid" (the 5-layer FID model, §2.2).
    device: torch device string, e.g. "cpu" or "cuda".
    seed: `torch.manual_seed` before the weights are drawn.
    n_steps: overrides the prior Langevin K (the golden file uses K = 3).
    step_size: overrides the prior Langevin s.

  Returns:
    A `TorchReference`; all networks in train mode, float32, on `device`.
  """
  torch = _torch()
  if name not in HYPERS:
    raise ValueError(f"unknown model {name!r}; expected one of {sorted(HYPERS)}")
  hp, mods = HYPERS[name], _modules()
  torch.manual_seed(seed)
  net_i = mods.Encoder(hp.z_dims, hp.cs)
  net_g = (mods.GeneratorHS if name == HS_NAME else mods.GeneratorFID)(hp.z_dims, hp.cs)
  net_e = mods.Energy(hp.z_dims, hp.en_layers, hp.en_ndf)
  for net in (net_i, net_g):  # their weights_init: xavier_normal_ on convs, Linear keeps default
    for mod in net.modules():
      if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
        torch.nn.init.xavier_normal_(mod.weight)
  net_i, net_g, net_e = (net.to(device).train() for net in (net_i, net_g, net_e))
  opt = torch.optim.Adam(list(net_i.parameters()) + list(net_g.parameters()), lr=hp.lr,
                         betas=hp.betas, weight_decay=hp.weight_decay)
  opt_e = torch.optim.Adam(net_e.parameters(), lr=hp.lr_e, betas=hp.betas)
  return TorchReference(
      name=name, device=device, netI=net_i, netG=net_g, netE=net_e, opt=opt, optE=opt_e,
      z_dims=hp.z_dims, gfactor=hp.gfactor,
      n_steps=hp.n_steps if n_steps is None else n_steps,
      step_size=hp.step_size if step_size is None else step_size)


def sync(device: str) -> None:
  """Waits for queued kernels on `device` (a no-op on CPU); call it before reading a clock."""
  torch = _torch()
  if str(device).startswith("cuda"):
    torch.cuda.synchronize(device)


def diag_normal_nll(z, mean, logvar):
  """Their `diag_normal_NLL` without the log 2 pi constant: (B, d) x3 -> (B,).

  The 1e-6 in the denominator is their only guard on the unconstrained logvar head.
  """
  return 0.5 * logvar.sum(1) + 0.5 * ((z - mean) ** 2 / (1e-6 + logvar.exp())).sum(1)


# draw(name, shape) -> tensor; names as in the golden file: eps{l}, langevin_init{l},
# langevin_noise{k}_{l}.
Draw = Callable[[str, tuple[int, ...]], Any]


def _random_draw(device: str) -> Draw:
  torch = _torch()
  return lambda name, shape: torch.randn(shape, device=device)


def _langevin(ref: TorchReference, batch: int, draw: Draw) -> list:
  """K prior Langevin steps from N(0, I); each step calls netE once (one power iteration)."""
  torch = _torch()
  s = ref.step_size
  zs = [draw(f"langevin_init{l}", (batch, d)) for l, d in enumerate(ref.z_dims)]
  for k in range(ref.n_steps):
    zs = [z.detach().requires_grad_(True) for z in zs]
    # The gradient of the batch sum: every chain sees only its own energy.
    grads = torch.autograd.grad(ref.netE(zs).sum(), zs)
    new = []
    for l, (z, g) in enumerate(zip(zs, grads)):
      z = z.detach() + 0.5 * s * s * (g - z.detach())
      new.append(z + s * draw(f"langevin_noise{k}_{l}", tuple(z.shape)))
    zs = new
  return [z.detach() for z in zs]


def _fit_step(ref: TorchReference, x, draw: Draw) -> dict[str, float]:
  """One iteration of their `fit`: (1) G+I update, (2) prior Langevin, (3) EBM update."""
  torch = _torch()
  batch = x.shape[0]

  # (1) Encoder + generator. z_pos is drawn before the update and reused by the EBM in (3).
  heads = ref.netI(x)
  zs, kl = [], 0.0
  for l, (mean, logvar) in enumerate(heads):
    z = mean + torch.exp(0.5 * logvar) * draw(f"eps{l}", tuple(mean.shape))
    zeros = torch.zeros_like(z)
    # Single-sample KL to N(0, I), as they write it (not the analytic KL).
    kl = kl + (diag_normal_nll(z, zeros, zeros) - diag_normal_nll(z, mean, logvar)).mean()
    zs.append(z)
  et = ref.netE(zs).mean()
  x_hat = ref.netG(zs)
  rec = torch.nn.functional.mse_loss(x_hat, x, reduction="sum") / batch
  loss = ref.gfactor * rec + kl - et
  ref.opt.zero_grad()
  loss.backward()  # also leaves grads on netE (through et); optE.zero_grad clears them below
  ref.opt.step()

  # (2) Negative samples with the EBM before its update.
  z_neg = _langevin(ref, batch, draw)

  # (3) EBM. Positive phase first: that order fixes the spectral-norm u each call sees.
  ref.optE.zero_grad()
  f_pos = ref.netE([z.detach() for z in zs]).mean()
  f_neg = ref.netE(z_neg).mean()
  e_loss = f_neg - f_pos
  e_loss.backward()
  ref.optE.step()
  return {"loss": loss.item(), "rec": rec.item(), "e_loss": e_loss.item()}


def iteration(ref: TorchReference, x) -> dict[str, float]:
  """One training iteration in the authors' order, with draws from `torch.randn`.

  Args:
    ref: from `build`.
    x: (B, 3, 32, 32) float32 tensor in [-1, 1] on `ref.device`.

  Returns:
    {"loss": Gfactor * rec + sum KL - et, "rec": sum squared error / B, "e_loss": EBM loss}, as
    Python floats (reading them waits for the device).
  """
  return _fit_step(ref, x, _random_draw(ref.device))


def iteration_from_draws(ref: TorchReference, x, eps: Sequence[Any], langevin_init: Sequence[Any],
                         langevin_noise: Sequence[Sequence[Any]]) -> dict[str, float]:
  """`iteration` with its random draws given (same code path), for checks against golden files.

  Args:
    ref: from `build`.
    x: (B, 3, 32, 32) in [-1, 1].
    eps: per layer l, (B, z_l): the reparameterisation noise.
    langevin_init: per layer l, (B, z_l): the chain's start.
    langevin_noise: [k][l], (B, z_l) for each of the K steps k.
  Tensors or numpy arrays; they are moved to `ref.device` as float32.

  Returns:
    As `iteration`.
  """
  torch = _torch()
  given: dict[str, Any] = {}
  for l, v in enumerate(eps):
    given[f"eps{l}"] = v
  for l, v in enumerate(langevin_init):
    given[f"langevin_init{l}"] = v
  for k, step in enumerate(langevin_noise):
    for l, v in enumerate(step):
      given[f"langevin_noise{k}_{l}"] = v
  if len(langevin_noise) != ref.n_steps:
    raise ValueError(f"{len(langevin_noise)} Langevin noise steps given for K = {ref.n_steps}")

  def draw(name: str, shape: tuple[int, ...]):
    value = torch.as_tensor(given[name], dtype=torch.float32, device=ref.device)
    if tuple(value.shape) != shape:
      raise ValueError(f"{name}: shape {tuple(value.shape)}, expected {shape}")
    return value

  return _fit_step(ref, torch.as_tensor(x, dtype=torch.float32, device=ref.device), draw)


def random_latents(ref: TorchReference, batch: int) -> list:
  """N(0, I) codes [(batch, z_l)] bottom to top, e.g. as input to `generator_forward`."""
  torch = _torch()
  return [torch.randn(batch, d, device=ref.device) for d in ref.z_dims]


def encoder_forward(ref: TorchReference, x):
  """Encoder forward alone, without autograd: x (B, 3, 32, 32) -> a 0-d tensor (no sync)."""
  torch = _torch()
  with torch.no_grad():
    heads = ref.netI(x)
  return heads[-1][0].sum()


def encoder_forward_backward(ref: TorchReference, x):
  """Encoder forward + backward of the sum of all heads into netI's grads: -> 0-d tensor."""
  ref.netI.zero_grad()
  loss = sum(mean.sum() + logvar.sum() for mean, logvar in ref.netI(x))
  loss.backward()
  return loss.detach()


def generator_forward(ref: TorchReference, zs: Sequence[Any]):
  """Generator forward alone, without autograd: [(B, z_l)] -> a 0-d tensor (no sync)."""
  torch = _torch()
  with torch.no_grad():
    x_hat = ref.netG(list(zs))
  return x_hat.sum()


def generator_forward_backward(ref: TorchReference, zs: Sequence[Any]):
  """Generator forward + backward of sum(x_hat^2) / B into netG's grads: -> 0-d tensor."""
  ref.netG.zero_grad()
  x_hat = ref.netG(list(zs))
  loss = (x_hat ** 2).sum() / x_hat.shape[0]
  loss.backward()
  return loss.detach()


def prior_langevin(ref: TorchReference, batch: int) -> list:
  """The K-step prior Langevin loop alone, from fresh N(0, I): -> [(batch, z_l)] bottom to top."""
  return _langevin(ref, batch, _random_draw(ref.device))


def load_golden_hs(ref: TorchReference, npz_path: str, stage: str = "init") -> None:
  """Copies the `<stage>/net{I,G,E}.*` arrays of the SVHN-HS golden file into `ref`'s networks.

  Every state_dict entry must be present (spectral-norm `weight_u` / `weight_v` included) and no
  file key of that stage may be left over. Call it on a fresh `build("svhn")`, before any step:
  the Adam state is not part of the file.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  torch = _torch()
  if ref.name != HS_NAME:
    raise ValueError(f"the golden file holds the {HS_NAME!r} model, not {ref.name!r}")
  if ref.opt.state or ref.optE.state:
    raise ValueError("load_golden_hs needs optimisers that have not stepped yet")
  with np.load(npz_path) as golden:
    file_keys = {k for k in golden.files if k.startswith(f"{stage}/")}
    used = set()
    with torch.no_grad():
      for net_name in ("netI", "netG", "netE"):
        for key, tensor in getattr(ref, net_name).state_dict().items():
          file_key = f"{stage}/{net_name}.{key}"
          if file_key not in file_keys:
            raise KeyError(f"{file_key} missing from {npz_path}")
          value = golden[file_key]
          if tuple(value.shape) != tuple(tensor.shape):
            raise ValueError(f"{file_key}: shape {value.shape}, expected {tuple(tensor.shape)}")
          # state_dict tensors share storage with the parameters and buffers.
          tensor.copy_(torch.from_numpy(value))
          used.add(file_key)
  if file_keys - used:
    raise KeyError(f"keys not matched by any module: {sorted(file_keys - used)}")


def state_arrays(ref: TorchReference) -> dict[str, Any]:
  """All three state_dicts as numpy arrays, keyed `net{I,G,E}.<path>` like the golden file."""
  out = {}
  for net_name in ("netI", "netG", "netE"):
    for key, tensor in getattr(ref, net_name).state_dict().items():
      out[f"{net_name}.{key}"] = tensor.detach().cpu().numpy()
  return out

