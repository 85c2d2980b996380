"""benchmarks/torch_reference.py against the authors' golden iteration, plus a cheap FID-model run."""

import math
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import torch_reference  # noqa: E402  pylint: disable=g-import-not-at-top

GOLDEN = pathlib.Path("/work/shared/golden/svhn_hs_golden.npz")
GOLDEN_K = 3  # the golden file's Langevin steps (its `settings` string)
PARAM_RTOL = 1e-4  # Adam's first step with beta1 = 0 is about lr * sign(g): near-zero g can flip
LOSS_RTOL = 1e-5
SN_RTOL = 1e-5  # spectral-norm vectors are forward values


def rel_err(ours, golden) -> float:
  ours, golden = np.asarray(ours, np.float64), np.asarray(golden, np.float64)
  assert ours.shape == golden.shape, (ours.shape, golden.shape)
  return float(np.max(np.abs(ours - golden)) / max(np.max(np.abs(golden)), 1e-30))


@pytest.fixture(scope="module")
def golden():
  if not GOLDEN.exists():
    pytest.skip(f"{GOLDEN} not found")
  with np.load(GOLDEN) as data:
    return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def golden_run(golden):
  ref = torch_reference.build("svhn", n_steps=GOLDEN_K)
  torch_reference.load_golden_hs(ref, str(GOLDEN))
  layers = len(ref.z_dims)
  stats = torch_reference.iteration_from_draws(
      ref, golden["x_nchw"],
      eps=[golden[f"eps{l}"] for l in range(layers)],
      langevin_init=[golden[f"langevin_init{l}"] for l in range(layers)],
      langevin_noise=[[golden[f"langevin_noise{k}_{l}"] for l in range(layers)]
                      for k in range(GOLDEN_K)])
  return stats, torch_reference.state_arrays(ref)


def test_golden_file_matches_the_svhn_hyperparameters(golden):
  hp = torch_reference.HYPERS["svhn"]
  settings = str(golden["settings"])
  assert f"Gfactor={hp.gfactor}" in settings
  assert f"cs={list(hp.cs)}" in settings and f"dims={list(hp.z_dims)}" in settings
  assert f"K={GOLDEN_K} s={hp.step_size}" in settings


def test_losses_match_golden(golden, golden_run):
  stats, _ = golden_run
  assert rel_err(stats["loss"], golden["gi_loss"]) <= LOSS_RTOL
  assert rel_err(stats["rec"], golden["rec_loss"]) <= LOSS_RTOL
  # e_loss is the check that catches the EBM call order: f(z_pos) before f(z_neg), each call
  # moving u on; the other order gives about 0.0053 instead of 0.0090.
  assert rel_err(stats["e_loss"], golden["e_loss"]) <= LOSS_RTOL


def test_updated_parameters_match_golden(golden, golden_run):
  _, state = golden_run
  step1 = {k[len("step1/"):]: v for k, v in golden.items() if k.startswith("step1/")}
  assert set(step1) == set(state)
  for key, value in step1.items():
    tol = SN_RTOL if key.endswith(("weight_u", "weight_v")) else PARAM_RTOL
    assert rel_err(state[key], value) <= tol, key


@pytest.fixture(scope="module")
def fid_ref():
  return torch_reference.build("svhn_fid")  # 74M parameters: built once


def test_benchmark_entry_points_run():
  ref = torch_reference.build("svhn", n_steps=2)
  x = torch.rand(3, 3, 32, 32) * 2 - 1
  zs = torch_reference.random_latents(ref, 3)
  assert torch_reference.encoder_forward(ref, x).shape == ()
  assert torch_reference.encoder_forward_backward(ref, x).shape == ()
  assert ref.netI.ladder0_mean.weight.grad is not None
  assert torch_reference.generator_forward(ref, zs).shape == ()
  assert torch_reference.generator_forward_backward(ref, zs).shape == ()
  assert ref.netG.gen0[0].weight.grad is not None
  u_before = ref.netE.energy.fc1.weight_u.clone()
  out = torch_reference.prior_langevin(ref, 3)
  assert [tuple(z.shape) for z in out] == [(3, d) for d in ref.z_dims]
  assert not torch.equal(u_before, ref.netE.energy.fc1.weight_u)  # train-mode power iteration
  torch_reference.sync(ref.device)


def test_load_golden_rejects_other_models(fid_ref):
  with pytest.raises(ValueError):
    torch_reference.load_golden_hs(fid_ref, str(GOLDEN))


def test_fid_model_shapes_and_one_iteration(fid_ref):
  ref = fid_ref
  assert (ref.n_steps, ref.step_size, ref.gfactor) == (100, 0.3, 10.0)
  assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ref.netG.modules())
  assert ref.netE.training
  zs = torch_reference.random_latents(ref, 2)
  with torch.no_grad():
    x_hat = ref.netG(zs)
    heads = ref.netI(x_hat)
  assert tuple(x_hat.shape) == (2, 3, 32, 32)
  assert [tuple(m.shape) for m, _ in heads] == [(2, 10)] * 5
  x = torch.rand(2, 3, 32, 32) * 2 - 1
  stats = torch_reference.iteration(ref, x)
  assert set(stats) == {"loss", "rec", "e_loss"}
  assert all(isinstance(v, float) and math.isfinite(v) for v in stats.values()), stats
