"""Golden test against the authors' PyTorch SVHN-HS model, and the checkpoint converter.

`../shared/golden/svhn_hs_golden.npz` (or `$HEBM_GOLDEN_DIR/svhn_hs_golden.npz`) holds the weights,
random draws and outputs of one training iteration of the authors' code (its README describes the
arrays). Converted with `hebm_jax.convert`, our modules, objectives, sampler and train step must
reproduce every number: forward values to a relative error of 1e-5, gradients to 1e-4, and the
parameters after one optimiser step to the criterion of `_assert_adam_step_matches`.

Relative error of a tensor: max |ours - golden| / max |golden| (the max norm of the difference
relative to the max norm of the reference), so that tiny entries are not held to a relative bound
that float32 cannot meet.
"""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import svhn, svhn_fid
from hebm_jax import checkpointing, convert, models, objectives, sampler, train, xla_options

REPO = pathlib.Path(__file__).resolve().parents[1]
GOLDEN_DIR = pathlib.Path(os.environ.get("HEBM_GOLDEN_DIR",
                                         REPO / ".." / "shared" / "golden")).resolve()
GOLDEN = GOLDEN_DIR / "svhn_hs_golden.npz"
if not GOLDEN.exists():
  pytest.skip(f"golden vectors {GOLDEN} not found (set HEBM_GOLDEN_DIR to the directory holding "
              "svhn_hs_golden.npz)", allow_module_level=True)

NUM_LAYERS = 4
LANGEVIN_STEPS = 3
FORWARD_RTOL = 1e-5
GRAD_RTOL = 1e-4


def rel_err(ours, golden) -> float:
  ours, golden = np.asarray(ours, np.float64), np.asarray(golden, np.float64)
  assert ours.shape == golden.shape, (ours.shape, golden.shape)
  return float(np.max(np.abs(ours - golden)) / max(np.max(np.abs(golden)), 1e-30))


def _assert_adam_step_matches(name, ours, golden, init, grad, lr, decay):
  """The parameters after one Adam step (beta1 = 0) agree with the reference's.

  The first step moves each weight by -lr * d / (|d| + 1e-8) with d = grad + decay * weight: about
  lr * sign(d). Where d nearly cancels (the gradient against the decay term, or a gradient at the
  float32 noise level; |d| down to 1e-9 here), float32 rounding of d decides the step, so such an
  entry can legitimately land anywhere within lr of the start. The check is therefore:
    * the whole tensor: ||ours - golden||_2 / ||golden||_2 <= 1e-4;
    * entries with a well-conditioned step, |d| > 1e-5 max|grad| (above the gradient
      discrepancies seen: below 3e-6 max|grad|, 9e-6 for one two-element bias) or d = 0 exactly
      (no step in the reference):
      |ours - golden| <= 1% of lr + 4 float32 ulps of the weight, so a wrong step direction or
      size is caught anywhere, even at the EBM's lr of 2e-6;
    * the other entries (at most 1% of a tensor; 0.08% overall here): within the largest possible
      difference of two steps, 2 lr.
  """
  ours, golden, init, grad = (np.asarray(a, np.float64) for a in (ours, golden, init, grad))
  assert ours.shape == golden.shape, (name, ours.shape, golden.shape)
  diff = np.abs(ours - golden)
  norm_err = np.linalg.norm(diff) / np.linalg.norm(golden)
  assert norm_err <= 1e-4, (name, norm_err)
  d = grad + decay * init
  ill = (np.abs(d) <= 1e-5 * np.max(np.abs(grad))) & (d != 0)
  atol = 0.01 * lr + 4 * np.finfo(np.float32).eps * np.abs(golden)
  bad = ~ill & (diff > atol)
  assert not bad.any(), (name, int(bad.sum()), float(diff[bad].max()))
  assert np.mean(ill) <= 1e-2, (name, int(ill.sum()))
  assert np.all(diff[ill] <= 2 * lr * 1.001 + 1e-7), (name, float(diff[ill].max()))
  return norm_err


# ------------------------------------------------------------------------------------------------
# Fixtures: the golden arrays, the converted model, and each phase of the iteration.
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def golden():
  with np.load(GOLDEN) as data:
    return {k: data[k] for k in data.files}


def _stage(golden, stage):
  """{'netI': {...}, 'netG': {...}, 'netE': {...}} of one stage ('init/', 'step1/', 'grad/')."""
  out = {}
  for key, value in golden.items():
    if key.startswith(stage):
      net, _, rest = key[len(stage):].partition(".")
      out.setdefault(net, {})[rest] = value
  return out


@pytest.fixture(scope="module")
def config():
  config = svhn.get_config()
  config.sampler.n_steps = LANGEVIN_STEPS
  return config


@pytest.fixture(scope="module")
def model(config):
  return train.create_model(config, config.optim.steps_per_epoch or 1)


@pytest.fixture(scope="module")
def init(config):
  """The converted 'init/' weights: (params, sn_state)."""
  params, sn_state = convert.torch_to_params(convert.load_npz_checkpoint(str(GOLDEN), "init/"),
                                             config)
  return jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, sn_state)


def _concat(golden, name):
  return jnp.asarray(np.concatenate([golden[f"{name}{l}"] for l in range(NUM_LAYERS)], -1))


@pytest.fixture(scope="module")
def draws(golden):
  noise = jnp.stack([_concat(golden, f"langevin_noise{k}_") for k in range(LANGEVIN_STEPS)])
  return train.StepDraws(eps=_concat(golden, "eps"), langevin_init=_concat(golden, "langevin_init"),
                         langevin_noise=noise)


@pytest.fixture(scope="module")
def images(golden):
  return jnp.asarray(golden["x_nchw"].transpose(0, 2, 3, 1))


@pytest.fixture(scope="module")
def gi_phase(model, init, images, draws):
  """Steps 1-6 of the golden README with our library functions, and the G+I gradients."""
  params, sn_state = init

  def loss_fn(gi_params):
    means, logvars = model.encoder.apply({"params": gi_params["encoder"]}, images)
    eps = models.split_latents(draws.eps, model.z_dims)
    zs = [objectives.reparameterize(m, lv, e) for m, lv, e in zip(means, logvars, eps)]
    f, sn_after = sampler.energy(model.prior, params["prior"], sn_state, models.concat_latents(zs))
    x_hat = model.generator.apply({"params": gi_params["generator"]}, zs)
    rec = objectives.reconstruction_loss(x_hat, images)
    kls = objectives.kl_terms(zs, means, logvars, model.kl_estimator)
    loss = objectives.generator_encoder_loss(rec, kls, f, model.gfactor)
    return loss, dict(means=means, logvars=logvars, zs=zs, f=f, sn_state=sn_after, x_hat=x_hat,
                      rec=rec, kls=kls)

  gi_params = {"encoder": params["encoder"], "generator": params["generator"]}
  (loss, out), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(gi_params)
  return dict(out, loss=loss, grads=grads)


@pytest.fixture(scope="module")
def prior_phase(model, init, draws, gi_phase):
  """Steps 8-9: Langevin from the state after f(z+), then the EBM loss and its gradients."""
  params, _ = init

  @jax.jit
  def run(prior_params, sn_state, z_pos):
    z_neg, sn_state = sampler.sample_prior(model.prior, prior_params, sn_state,
                                           draws.langevin_init, None, model.n_steps,
                                           model.step_size, noise=draws.langevin_noise)

    def loss_fn(p):
      f_pos, st = sampler.energy(model.prior, p, sn_state, z_pos)
      f_neg, st = sampler.energy(model.prior, p, st, z_neg)
      return objectives.ebm_loss(f_neg, f_pos), st

    (e_loss, sn_final), grads = jax.value_and_grad(loss_fn, has_aux=True)(prior_params)
    return z_neg, e_loss, grads, sn_final

  z_pos = jax.lax.stop_gradient(models.concat_latents(gi_phase["zs"]))
  z_neg, e_loss, grads, sn_final = run(params["prior"], gi_phase["sn_state"], z_pos)
  return dict(z_neg=z_neg, e_loss=e_loss, grads=grads, sn_state=sn_final)


@pytest.fixture(scope="module", params=[None, xla_options.YNNPACK_OFF], ids=["xla", "no_ynnpack"])
def stepped(request, model, init, images, draws):
  """The converted init state after one `train.train_step_from_draws` with the golden draws,
  compiled with XLA's defaults and with the CPU option `configs/svhn.py` selects."""
  params, sn_state = init
  state = train.state_from_params(model, params, sn_state)
  options = request.param if jax.default_backend() == "cpu" else None
  step = jax.jit(lambda s, x, d: train.train_step_from_draws(model, s, x, d),
                 compiler_options=options)
  return step(state, images, draws)


# ------------------------------------------------------------------------------------------------
# Forward values.
# ------------------------------------------------------------------------------------------------


def test_encoder_means_and_log_variances(golden, gi_phase):
  for l in range(NUM_LAYERS):
    assert rel_err(gi_phase["means"][l], golden[f"enc_mean{l}"]) <= FORWARD_RTOL, l
    assert rel_err(gi_phase["logvars"][l], golden[f"enc_logvar{l}"]) <= FORWARD_RTOL, l


def test_reparameterised_latents(golden, gi_phase):
  for l in range(NUM_LAYERS):
    assert rel_err(gi_phase["zs"][l], golden[f"z{l}"]) <= FORWARD_RTOL, l


def test_energy_on_posterior_samples(golden, gi_phase):
  assert rel_err(gi_phase["f"], golden["f_zq"]) <= FORWARD_RTOL
  assert rel_err(jnp.mean(gi_phase["f"]), golden["et"]) <= FORWARD_RTOL


def test_reconstruction(golden, gi_phase):
  assert rel_err(gi_phase["x_hat"], golden["x_hat_nchw"].transpose(0, 2, 3, 1)) <= FORWARD_RTOL


def test_losses(golden, gi_phase):
  assert rel_err(gi_phase["kls"], golden["kl"]) <= FORWARD_RTOL
  assert rel_err(gi_phase["rec"], golden["rec_loss"]) <= FORWARD_RTOL
  assert rel_err(gi_phase["loss"], golden["gi_loss"]) <= FORWARD_RTOL


def test_generator_and_encoder_gradients(golden, config, init, gi_phase):
  grads = convert.params_to_torch({**gi_phase["grads"], "prior": init[0]["prior"]}, init[1], config)
  expected = _stage(golden, "grad/")
  for net in ("netI", "netG"):
    assert set(grads[net]) == set(expected[net])
    for key, value in expected[net].items():
      assert rel_err(grads[net][key], value) <= GRAD_RTOL, f"{net}.{key}"


def test_prior_langevin_carries_the_spectral_norm_state(golden, model, prior_phase):
  outs = models.split_latents(prior_phase["z_neg"], model.z_dims)
  for l in range(NUM_LAYERS):
    assert rel_err(outs[l], golden[f"langevin_out{l}"]) <= FORWARD_RTOL, l


def test_ebm_loss_and_gradients(golden, config, init, prior_phase):
  assert rel_err(prior_phase["e_loss"], golden["e_loss"]) <= FORWARD_RTOL
  params = {**init[0], "prior": prior_phase["grads"]}
  grads = convert.params_to_torch(params, init[1], config)["netE"]
  expected = _stage(golden, "grad/")["netE"]
  assert set(expected) == {k for k in grads if not k.endswith(("_u", "_v"))}
  for key, value in expected.items():
    assert rel_err(grads[key], value) <= GRAD_RTOL, key


def test_spectral_norm_state_after_all_six_calls(golden, config, init, prior_phase):
  ours = convert.params_to_torch(init[0], prior_phase["sn_state"], config)["netE"]
  for key, value in _stage(golden, "step1/")["netE"].items():
    if key.endswith("weight_u"):
      assert rel_err(ours[key], value) <= FORWARD_RTOL, key


# ------------------------------------------------------------------------------------------------
# The headline test: one train step from the converted init state lands on the golden step 1.
# ------------------------------------------------------------------------------------------------


def test_one_train_step_reproduces_the_reference(golden, config, stepped):
  state, metrics = stepped
  assert int(state.step) == 1
  assert rel_err(metrics["loss"], golden["gi_loss"]) <= FORWARD_RTOL
  assert rel_err(metrics["rec_loss"], golden["rec_loss"]) <= FORWARD_RTOL
  assert rel_err(metrics["f_posterior"], golden["et"]) <= FORWARD_RTOL
  assert rel_err(metrics["ebm_loss"], golden["e_loss"]) <= FORWARD_RTOL

  ours = convert.params_to_torch(state.params, state.sn_state, config)
  expected, before, grads = (_stage(golden, s) for s in ("step1/", "init/", "grad/"))
  o = config.optim
  checked = 0
  for net in ("netI", "netG", "netE"):
    lr, decay = (o.lr_prior, 0.0) if net == "netE" else (o.lr_generator, o.weight_decay)
    assert o.lr_encoder == o.lr_generator
    for key, value in expected[net].items():
      if key.endswith("weight_v"):
        continue  # not state: recomputed from u before every train-mode call (convert docstring)
      if key.endswith("weight_u"):
        assert rel_err(ours[net][key], value) <= FORWARD_RTOL, key
      else:
        _assert_adam_step_matches(f"{net}.{key}", ours[net][key], value, before[net][key],
                                  grads[net][key], lr, decay)
      checked += 1
  assert checked == len([k for k in golden if k.startswith("step1/") and "weight_v" not in k])


# ------------------------------------------------------------------------------------------------
# The converter: round trips, files, command line, errors.
# ------------------------------------------------------------------------------------------------


def test_hs_round_trip_is_exact(golden, config):
  state_dicts = _stage(golden, "init/")
  params, sn_state = convert.torch_to_params(state_dicts, config)
  back = convert.params_to_torch(params, sn_state, config)
  assert set(back) == set(state_dicts)
  for net, sd in state_dicts.items():
    assert set(back[net]) == set(sd), net
    for key, value in sd.items():
      if key.endswith("weight_v"):
        # Recomputed as normalize(W^T u); the stored v came from the previous u.
        assert back[net][key].shape == value.shape
        assert abs(np.linalg.norm(back[net][key]) - 1) < 1e-5
      else:
        np.testing.assert_array_equal(back[net][key], value, err_msg=f"{net}.{key}")


def _authors_fid_shapes(cs=(3, 128, 256, 256, 512, 1024, 2048), z=(10,) * 5, en_layers=2,
                        en_ndf=100):
  """State-dict shapes of `train_fid.py`'s netI, netG and netE, written out from its modules."""
  netI, netG, netE = {}, {}, {}
  sizes = (16, 8, 4, 2)
  prev = 3
  for l in range(4):
    c = cs[l + 1]
    for trunk in (f"ladder{l}", f"inference{l}"):
      netI[f"{trunk}.0.convT.weight"] = (c, prev, 4, 4)
      netI[f"{trunk}.1.convT.weight"] = (c, c, 3, 3)
    for head in ("mean", "logvar"):
      netI[f"ladder{l}_{head}.weight"] = (z[l], c * sizes[l] ** 2)
      netI[f"ladder{l}_{head}.bias"] = (z[l],)
    prev = c
  netI.update({"ladder4.1.lin.weight": (cs[5], cs[4] * 4), "ladder4.1.lin.bias": (cs[5],),
               "ladder4.2.lin.weight": (cs[5], cs[5]), "ladder4.2.lin.bias": (cs[5],)})
  for head in ("mean", "logvar"):
    netI[f"ladder4_{head}.weight"] = (z[4], cs[5])
    netI[f"ladder4_{head}.bias"] = (z[4],)
  netG.update({"gen4.0.weight": (cs[6], z[4]), "gen4.0.bias": (cs[6],),
               "gen4.2.weight": (cs[6], cs[6]), "gen4.2.bias": (cs[6],),
               "gen4.4.weight": (cs[5] * 4, cs[6]), "gen4.4.bias": (cs[5] * 4,)})
  for l, s in zip((3, 2, 1, 0), (2, 4, 8, 16)):
    c, out = cs[l + 2], cs[l + 1]
    netG[f"latent{l}_act.0.weight"] = (s * s * c, z[l])
    netG[f"latent{l}_act.0.bias"] = (s * s * c,)
    netG[f"gen{l}.0.weight"] = (2 * c, c, 3, 3)  # ConvTranspose2d: (in, out, kh, kw)
    netG[f"gen{l}.2.weight"] = (c, out, 4, 4)
    netG[f"gen{l}.4.weight"] = (out, out, 3, 3)
  netG["gen0.6.weight"] = (cs[1], 3, 3, 3)
  fan_in = sum(z)
  for name in [f"fc{i + 1}" for i in range(en_layers)] + ["out"]:
    width = 1 if name == "out" else en_ndf
    netE.update({f"energy.{name}.weight_orig": (width, fan_in), f"energy.{name}.bias": (width,),
                 f"energy.{name}.weight_u": (width,), f"energy.{name}.weight_v": (fan_in,)})
    fan_in = width
  return {"netI": netI, "netG": netG, "netE": netE}


def test_fid_mapping_matches_the_authors_modules_and_round_trips():
  config = svhn_fid.get_config()
  shapes = _authors_fid_shapes()
  # Names and shapes only (no arrays): the mapping covers exactly the authors' state dicts.
  assert convert.torch_state_dict_shapes(config) == shapes
  want = {f"{net}.{k}": v for net, sd in shapes.items() for k, v in sd.items()}
  n_params = sum(int(np.prod(v)) for k, v in want.items() if not k.endswith(("_u", "_v")))
  assert 74.0e6 < n_params < 74.8e6  # REFERENCE 2.2: about 74.4M

  # One synthetic materialisation, torch -> ours -> torch.
  rng = np.random.default_rng(0)
  state_dicts = {net: {k: rng.standard_normal(v, dtype=np.float32) for k, v in sd.items()}
                 for net, sd in shapes.items()}
  params, sn_state = convert.torch_to_params(state_dicts, config)
  want_params, want_sn = convert.abstract_variables(config)
  assert jax.tree.map(np.shape, (params, sn_state)) == jax.tree.map(lambda a: a.shape,
                                                                    (want_params, want_sn))
  back = convert.params_to_torch(params, sn_state, config)
  for net, sd in state_dicts.items():
    for key, value in sd.items():
      if not key.endswith("weight_v"):
        np.testing.assert_array_equal(back[net][key], value, err_msg=f"{net}.{key}")


def test_gaussian_prior_config_needs_no_energy_network(golden, config):
  gaussian = svhn.get_config()
  gaussian.prior.type = "gaussian"
  state_dicts = _stage(golden, "init/")
  with pytest.raises(convert.ConversionError, match="netE.energy"):
    convert.torch_to_params(state_dicts, gaussian)
  del state_dicts["netE"]
  params, sn_state = convert.torch_to_params(state_dicts, gaussian)
  assert params["prior"] == {} and sn_state == {}
  back = convert.params_to_torch(params, sn_state, gaussian)
  assert set(back) == {"netI", "netG"}


def test_npz_loader_selects_the_stage_prefix(golden):
  init = convert.load_npz_checkpoint(str(GOLDEN), "init/")
  step1 = convert.load_npz_checkpoint(str(GOLDEN), "step1/")
  assert set(init) == {"netI", "netG", "netE"}
  np.testing.assert_array_equal(step1["netE"]["energy.out.bias"],
                                golden["step1/netE.energy.out.bias"])
  assert "energy.fc1.weight_orig" in init["netE"]
  with pytest.raises(convert.ConversionError, match="has no arrays"):
    convert.load_npz_checkpoint(str(GOLDEN), "nothing/")


@pytest.fixture
def init_npz(golden, tmp_path):
  path = tmp_path / "authors_init.npz"
  np.savez(path, **{k[len("init/"):]: v for k, v in golden.items() if k.startswith("init/")})
  return path


def test_command_line_writes_a_restorable_checkpoint(config, model, init, init_npz, tmp_path):
  workdir = tmp_path / "run"
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, "-m", "hebm_jax.convert", f"--checkpoint={init_npz}",
       "--config=configs/svhn.py", f"--workdir={workdir}", "--step=7"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]

  svhn_config = svhn.get_config()  # what the command line used (n_steps does not matter here)
  target = jax.eval_shape(lambda k: train.create_train_state(model, k, (32, 32, 3)),
                          jax.random.PRNGKey(0))
  manager = checkpointing.make_manager(str(workdir), svhn_config.checkpoint.max_to_keep)
  restored, step = checkpointing.restore(manager, target, svhn_config)
  manager.close()
  assert step == 7 and int(restored.step) == 7
  restored_leaves = jax.tree.leaves((restored.params, restored.sn_state))
  for got, want in zip(restored_leaves, jax.tree.leaves(init), strict=True):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  # Fresh Adam moments, but learning-rate schedules that continue from step 7.
  counts = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(restored.opt_state_gi)
            if "count" in jax.tree_util.keystr(path)]
  assert sorted(int(c) for c in counts) == [0, 7, 7]

  # A second conversion into the same workdir is refused and leaves it alone.
  before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
  with pytest.raises(FileExistsError, match="already holds checkpoints"):
    convert.convert_checkpoint(str(init_npz), svhn_config, str(workdir), step=8)
  assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before


def test_missing_key_is_named(golden, config):
  state_dicts = _stage(golden, "init/")
  del state_dicts["netI"]["ladder1.1.convT.weight"]
  with pytest.raises(convert.ConversionError,
                     match=r"Missing keys: netI\.ladder1\.1\.convT\.weight "
                           r"\(shape \(64, 64, 3, 3\)\)\."):
    convert.torch_to_params(state_dicts, config)


def test_scaled_prior_is_refused(golden, config):
  scaled = config.copy_and_resolve_references()
  scaled.prior.output_scale = 4.0
  with pytest.raises(convert.ConversionError, match=r"config\.prior\.output_scale=4\.0"):
    convert.torch_to_params(_stage(golden, "init/"), scaled)


def test_wrong_shape_is_named(golden, config):
  state_dicts = _stage(golden, "init/")
  state_dicts["netG"]["latent0_act.0.weight"] = np.zeros((4096, 2), np.float32)
  with pytest.raises(convert.ConversionError,
                     match=r"Wrong shapes: netG\.latent0_act\.0\.weight has shape \(4096, 2\), the "
                           r"model needs \(8192, 2\)\."):
    convert.torch_to_params(state_dicts, config)


def test_unexpected_key_is_named(golden, config):
  state_dicts = _stage(golden, "init/")
  state_dicts["netE"]["energy.fc5.weight_orig"] = np.zeros((50, 50), np.float32)
  with pytest.raises(convert.ConversionError,
                     match=r"Unexpected keys: netE\.energy\.fc5\.weight_orig\.$"):
    convert.torch_to_params(state_dicts, config)
  # An HS checkpoint with the FID config: every kind of problem is listed.
  with pytest.raises(convert.ConversionError) as info:
    convert.torch_to_params(_stage(golden, "init/"), svhn_fid.get_config())
  message = str(info.value)
  assert "Missing keys: netI.ladder3.0.convT.weight (shape (512, 256, 4, 4));" in message
  assert "Wrong shapes: netI.ladder0.0.convT.weight has shape (32, 3, 4, 4), the model needs " \
         "(128, 3, 4, 4);" in message
  assert "Unexpected keys: netG.gen3.0.bias; " in message and "and 13 more." in message


def test_pth_without_torch_explains_what_to_do(tmp_path, monkeypatch):
  path = tmp_path / "ckpt.pth"
  path.write_bytes(b"not read")
  monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
  with pytest.raises(ImportError, match=r"needs torch.*pip install torch.*\.npz"):
    convert.load_checkpoint(str(path))


# ------------------------------------------------------------------------------------------------
# With torch installed (optional): real .pth files and the FID-family generator's numerics.
# ------------------------------------------------------------------------------------------------


def test_pth_in_the_authors_format_loads(golden, config, tmp_path):
  torch = pytest.importorskip("torch")
  state_dicts = _stage(golden, "init/")
  params = [torch.nn.Parameter(torch.zeros(3))]
  opt = torch.optim.Adam(params, lr=3e-4, betas=(0.0, 0.9), weight_decay=5e-4)
  params[0].grad = torch.ones(3)
  opt.step()
  save = {"epoch": 3, "opt": opt.state_dict(), "optE": opt.state_dict()}
  save.update({net: {k: torch.from_numpy(v) for k, v in sd.items()}
               for net, sd in state_dicts.items()})
  path = tmp_path / "1500.pth"
  torch.save(save, path)
  loaded = convert.load_checkpoint(str(path))
  assert set(loaded) == {"netI", "netG", "netE"}
  for net, sd in state_dicts.items():
    for key, value in sd.items():
      np.testing.assert_array_equal(loaded[net][key], value)
  convert.torch_to_params(loaded, config)

  # Pickled objects beyond tensors and containers are refused unless explicitly trusted.
  import argparse  # pylint: disable=g-import-not-at-top
  save["args"] = argparse.Namespace(lr=3e-4)
  torch.save(save, path)
  with pytest.raises(convert.ConversionError, match="allow_pickle"):
    convert.load_checkpoint(str(path))
  assert set(convert.load_checkpoint(str(path), allow_pickle=True)) == {"netI", "netG", "netE"}


def _authors_fid_family(torch, z, cs, en_layers, en_ndf):
  """The authors' 5-layer FID networks (train_fid.py's module layout) with free widths."""
  from benchmarks import torch_reference  # pylint: disable=g-import-not-at-top
  mods = torch_reference._modules()  # pylint: disable=protected-access
  torch.manual_seed(0)
  nets = (mods.Encoder(z, cs), mods.GeneratorFID(z, cs), mods.Energy(z, en_layers, en_ndf))
  for net in nets[:2]:  # like their weights_init: xavier_normal_ on every conv
    for mod in net.modules():
      if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
        torch.nn.init.xavier_normal_(mod.weight)
  return tuple(net.train() for net in nets)


def test_fid_family_matches_a_torch_model_of_the_authors_layout():
  torch = pytest.importorskip("torch")
  z, cs = (2, 3, 4, 5, 6), (3, 8, 16, 12, 24, 20, 40)
  config = svhn_fid.get_config()
  config.model.z_dims, config.model.channels, config.model.top_width = z, cs[1:6], cs[6]
  config.prior.num_layers, config.prior.width = 2, 7
  net_i, net_g, net_e = _authors_fid_family(torch, z, cs, 2, 7)
  state_dicts = {name: {k: v.detach().numpy() for k, v in net.state_dict().items()}
                 for name, net in (("netI", net_i), ("netG", net_g), ("netE", net_e))}
  params, sn_state = convert.torch_to_params(state_dicts, config)
  encoder, generator, prior = models.build_models(config)

  rng = np.random.default_rng(1)
  x = rng.uniform(-1, 1, (3, 3, 32, 32)).astype(np.float32)
  zs = [rng.standard_normal((3, d)).astype(np.float32) for d in z]
  with torch.no_grad():
    t_heads = net_i(torch.from_numpy(x))
    t_x = net_g([torch.from_numpy(v) for v in zs]).numpy()
  t_f = net_e([torch.from_numpy(v) for v in zs]).detach().numpy()  # train mode: updates u

  means, logvars = encoder.apply({"params": params["encoder"]}, x.transpose(0, 2, 3, 1))
  for l, (m, lv) in enumerate(t_heads):
    assert rel_err(means[l], m.numpy()) <= FORWARD_RTOL, l
    assert rel_err(logvars[l], lv.numpy()) <= FORWARD_RTOL, l
  x_hat = generator.apply({"params": params["generator"]}, zs)
  assert rel_err(x_hat, t_x.transpose(0, 2, 3, 1)) <= FORWARD_RTOL
  f, sn_after = sampler.energy(prior, params["prior"], sn_state, np.concatenate(zs, -1))
  assert rel_err(f, t_f) <= FORWARD_RTOL
  back = convert.params_to_torch(params, sn_after, config)["netE"]
  for key, value in net_e.state_dict().items():
    if key.endswith("weight_u"):
      assert rel_err(back[key], value.numpy()) <= FORWARD_RTOL, key
