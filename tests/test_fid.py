"""FID/KID: the Frechet distance and KID against closed forms, the statistics files, and the Flax
FID Inception against a PyTorch build of pytorch-fid's network (random weights; none can be
downloaded here)."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest

from hebm_jax.evaluation import fid
from hebm_jax.evaluation import inception

# pytorch-fid's FID Inception without its fc layer: sum of numel over `named_parameters()` of the
# torch build below (conv weights + BN weight/bias), checked against it in `test_matches_torch`.
FID_INCEPTION_PARAMS = 21_785_568


# ------------------------------------------------------------------------------------------------
# Frechet distance, statistics, KID.
# ------------------------------------------------------------------------------------------------


def test_frechet_distance_diagonal_closed_form():
  rng = np.random.default_rng(0)
  d = 16
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  s1, s2 = rng.uniform(0.1, 3.0, size=d), rng.uniform(0.1, 3.0, size=d)
  want = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
  got = fid.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
  np.testing.assert_allclose(got, want, rtol=1e-10)


def test_frechet_distance_identical_zero_and_symmetric():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(200, 12))
  b = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)) + 0.5
  mu1, s1 = fid.feature_statistics(a)
  mu2, s2 = fid.feature_statistics(b)
  assert abs(fid.frechet_distance(mu1, s1, mu1, s1)) < 1e-8
  d12 = fid.frechet_distance(mu1, s1, mu2, s2)
  d21 = fid.frechet_distance(mu2, s2, mu1, s1)
  assert d12 > 1.0
  np.testing.assert_allclose(d12, d21, rtol=1e-8)
  with pytest.raises(ValueError, match="differ in shape"):
    fid.frechet_distance(mu1, s1, mu2[:5], s2[:5, :5])


def test_feature_statistics_matches_numpy():
  feats = np.random.default_rng(2).normal(size=(50, 7)).astype(np.float32)
  mu, sigma = fid.feature_statistics(feats)
  assert mu.dtype == sigma.dtype == np.float64
  np.testing.assert_allclose(mu, np.mean(feats.astype(np.float64), axis=0), rtol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(feats.astype(np.float64), rowvar=False), rtol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(feats.astype(np.float64).T, ddof=1), rtol=1e-12)


def _direct_unbiased_mmd2(x, y):
  """Term-by-term unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3."""
  m, d = x.shape
  k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
  return (xx + yy) / (m * (m - 1)) - 2 * xy / (m * m)


def test_kid_against_direct_computation():
  rng = np.random.default_rng(3)
  x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 0.3
  # One subset of everything: a permutation of each set, which the estimate does not see.
  mean, std = fid.kernel_inception_distance(x, y, num_subsets=1, subset_size=100)
  np.testing.assert_allclose(mean, _direct_unbiased_mmd2(x, y), rtol=1e-12)
  assert std == 0.0
  # The subset size is clipped to the smaller set.
  mean, _ = fid.kernel_inception_distance(x, rng.normal(size=(9, 3)), num_subsets=3)
  assert np.isfinite(mean)


def test_kid_identical_near_zero_and_shift_positive():
  rng = np.random.default_rng(4)
  feats = rng.normal(size=(400, 32))
  same, _ = fid.kernel_inception_distance(feats, feats, num_subsets=20, subset_size=100)
  shifted, shifted_std = fid.kernel_inception_distance(feats, feats + 0.5, num_subsets=20,
                                                       subset_size=100)
  assert shifted > 5 * shifted_std > 0
  # Not exactly 0: subsets drawn from one set share rows, whose k(x, x) enter only the cross term.
  assert abs(same) < 0.05 * shifted
  # Deterministic in the seed.
  assert fid.kernel_inception_distance(feats, feats + 0.5, num_subsets=20,
                                       subset_size=100) == (shifted, shifted_std)


# ------------------------------------------------------------------------------------------------
# Statistics files and streaming.
# ------------------------------------------------------------------------------------------------


def _save(path, **overrides):
  rng = np.random.default_rng(5)
  mu, sigma = fid.feature_statistics(rng.normal(size=(20, 4)))
  kwargs = dict(dataset="svhn", split="extra", num_images=20, image_shape=(32, 32, 3),
                implementation=inception.IMPLEMENTATION)
  kwargs.update(overrides)
  fid.save_statistics(path, mu, sigma, **kwargs)
  return mu, sigma


def test_statistics_round_trip_and_mismatch(tmp_path):
  path = tmp_path / "svhn_extra.npz"
  mu, sigma = _save(path)
  stats = fid.load_statistics(path, dataset="svhn", split="extra", image_shape=(32, 32, 3))
  np.testing.assert_array_equal(stats.mu, mu)
  np.testing.assert_array_equal(stats.sigma, sigma)
  assert (stats.num_images, stats.implementation) == (20, inception.IMPLEMENTATION)
  with np.load(path) as f:  # pytorch-fid's reader needs just these two keys
    np.testing.assert_array_equal(f["mu"], mu)
  for kwargs, both in ((dict(dataset="cifar10"), ("'svhn'", "'cifar10'")),
                       (dict(split="test"), ("'extra'", "'test'")),
                       (dict(image_shape=(64, 64, 3)), ("(32, 32, 3)", "(64, 64, 3)"))):
    asked = dict(dataset="svhn", split="extra", image_shape=(32, 32, 3))
    asked.update(kwargs)
    with pytest.raises(ValueError) as err:
      fid.load_statistics(path, **asked)
    assert all(s in str(err.value) for s in both), str(err.value)
  with pytest.raises(FileNotFoundError, match="nowhere.npz"):
    fid.load_statistics(tmp_path / "nowhere.npz", dataset="svhn", split="extra",
                        image_shape=(32, 32, 3))
  np.savez(tmp_path / "bare.npz", mu=mu, sigma=sigma)
  with pytest.raises(ValueError, match="lacks"):
    fid.load_statistics(tmp_path / "bare.npz", dataset="svhn", split="extra",
                        image_shape=(32, 32, 3))


def test_streaming_features_stops_at_num():
  drawn = []

  def batches():
    for i in itertools.count():
      drawn.append(i)
      yield np.full((4, 2), i, np.float32)

  feats = fid.streaming_features(lambda b: b * 2.0, batches(), num=10)
  assert feats.shape == (10, 2) and feats.dtype == np.float32
  np.testing.assert_array_equal(feats[:, 0], [0] * 4 + [2] * 4 + [4] * 2)
  assert drawn == [0, 1, 2]  # no batch drawn beyond what 10 rows need
  with pytest.raises(ValueError, match="ran out after 8"):
    fid.streaming_features(lambda b: b, [np.zeros((4, 2))] * 2, num=10)


# ------------------------------------------------------------------------------------------------
# The network: structure, conversion, weights files (no torch needed).
# ------------------------------------------------------------------------------------------------


def test_inception_param_count_and_block_shapes():
  abstract = inception._abstract_variables()  # pylint: disable=protected-access
  assert inception.num_params(abstract) == FID_INCEPTION_PARAMS
  model = inception.FIDInceptionV3()
  out, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]),
      abstract, jax.ShapeDtypeStruct((2, 299, 299, 3), np.float32))
  assert out.shape == (2, 2048)
  shapes = {k: v["__call__"][0].shape for k, v in state["intermediates"].items()
            if k.startswith("Mixed")}
  assert shapes["Mixed_5b"] == (2, 35, 35, 256)
  assert shapes["Mixed_6a"] == (2, 17, 17, 768)
  assert shapes["Mixed_7a"] == (2, 8, 8, 1280)
  assert shapes["Mixed_7c"] == (2, 8, 8, 2048)


def _random_state_dict(seed=6):
  rng = np.random.default_rng(seed)
  return {k: rng.normal(size=s).astype(np.float32)
          for k, s in inception.expected_torch_shapes().items()}


def test_convert_layouts_and_errors():
  sd = _random_state_dict()
  sd_extra = dict(sd, **{"fc.weight": np.zeros((1008, 2048), np.float32),
                         "fc.bias": np.zeros((1008,), np.float32),
                         "Mixed_5b.branch1x1.bn.num_batches_tracked": np.zeros((), np.int64)})
  v = inception.convert_torch_state_dict(sd_extra)
  conv = v["params"]["Mixed_6b"]["branch7x7_2"]
  np.testing.assert_array_equal(conv["conv"]["kernel"],
                                sd["Mixed_6b.branch7x7_2.conv.weight"].transpose(2, 3, 1, 0))
  assert conv["conv"]["kernel"].shape == (1, 7, 128, 128)
  np.testing.assert_array_equal(conv["bn"]["scale"], sd["Mixed_6b.branch7x7_2.bn.weight"])
  np.testing.assert_array_equal(conv["bn"]["bias"], sd["Mixed_6b.branch7x7_2.bn.bias"])
  stats = v["batch_stats"]["Mixed_6b"]["branch7x7_2"]["bn"]
  np.testing.assert_array_equal(stats["mean"], sd["Mixed_6b.branch7x7_2.bn.running_mean"])
  np.testing.assert_array_equal(stats["var"], sd["Mixed_6b.branch7x7_2.bn.running_var"])

  bad = dict(sd)
  del bad["Mixed_7c.branch_pool.bn.running_var"]
  bad["AuxLogits.fc.weight"] = np.zeros((1008, 768), np.float32)
  bad["Conv2d_1a_3x3.conv.weight"] = np.zeros((32, 1, 3, 3), np.float32)
  with pytest.raises(ValueError) as err:
    inception.convert_torch_state_dict(bad)
  msg = str(err.value)
  for part in ("missing keys: Mixed_7c.branch_pool.bn.running_var",
               "unexpected keys: AuxLogits.fc.weight",
               "Conv2d_1a_3x3.conv.weight (32, 1, 3, 3) (expected (32, 3, 3, 3))"):
    assert part in msg, msg


def test_weights_files(tmp_path):
  with pytest.raises(FileNotFoundError) as err:
    inception.load_weights(tmp_path / "fid_inception.npz")
  msg = str(err.value)
  for part in ("pt_inception-2015-12-05-6726825d.pth",
               "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               "pt_inception-2015-12-05-6726825d.pth",
               "python -m hebm_jax.evaluation.inception --convert"):
    assert part in msg, msg

  variables = inception.convert_torch_state_dict(_random_state_dict())
  path = tmp_path / "fid_inception.npz"
  inception.save_converted(variables, path)
  loaded = inception.load_weights(path)
  jax.tree.map(np.testing.assert_array_equal, loaded, variables)

  np.savez(tmp_path / "other.npz", mu=np.zeros(3))
  with pytest.raises(ValueError, match="save_converted"):
    inception.load_weights(tmp_path / "other.npz")


def test_features_random_weights_and_grayscale():
  variables = inception.init_random(jax.random.key(0))
  assert inception.num_params(variables) == FID_INCEPTION_PARAMS
  features = inception.feature_fn(variables)
  gray = np.random.default_rng(7).uniform(-1, 1, size=(2, 32, 32, 1)).astype(np.float32)
  out = np.asarray(features(np.repeat(gray, 3, axis=-1)))
  assert out.shape == (2, 2048) and out.dtype == np.float32
  assert np.all(np.isfinite(out)) and np.all(out >= 0) and out.max() > 0
  # C = 1 is repeated to RGB before the (shared) compiled call.
  np.testing.assert_array_equal(np.asarray(features(gray)), out)


# ------------------------------------------------------------------------------------------------
# Against PyTorch: pytorch-fid's FID Inception rebuilt in torch (torchvision's module names and
# layer definitions, pytorch-fid's FIDInceptionA/C/E_1/E_2 patches), random weights.
# ------------------------------------------------------------------------------------------------


def _torch_fid_inception(torch):
  """pytorch-fid's `fid_inception_v3()` without torchvision or its weights."""
  nn, F = torch.nn, torch.nn.functional

  class BasicConv2d(nn.Module):

    def __init__(self, cin, cout, **kwargs):
      super().__init__()
      self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
      self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
      return F.relu(self.bn(self.conv(x)))

  def avg(x):  # pytorch-fid's patch: TF's average pool ignores the padding
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)

  class FIDInceptionA(nn.Module):

    def __init__(self, cin, pool_features):
      super().__init__()
      self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
      self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
      self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
      self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
      self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
      self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
      self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
      return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                        self.branch_pool(avg(x))], 1)

  class InceptionB(nn.Module):

    def __init__(self, cin):
      super().__init__()
      self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
      self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
      self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
      self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
      return torch.cat([self.branch3x3(x),
                        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                        F.max_pool2d(x, kernel_size=3, stride=2)], 1)

  class FIDInceptionC(nn.Module):

    def __init__(self, cin, c7):
      super().__init__()
      self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
      self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
      self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
      self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
      self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
      self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
      self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
      self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
      self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
      self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
      b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
      bd = x
      for i in range(1, 6):
        bd = getattr(self, f"branch7x7dbl_{i}")(bd)
      return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(avg(x))], 1)

  class InceptionD(nn.Module):

    def __init__(self, cin):
      super().__init__()
      self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
      self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
      self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
      self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
      self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
      self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
      b7 = x
      for i in range(1, 5):
        b7 = getattr(self, f"branch7x7x3_{i}")(b7)
      return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7,
                        F.max_pool2d(x, kernel_size=3, stride=2)], 1)

  class FIDInceptionE(nn.Module):

    def __init__(self, cin, max_pool):
      super().__init__()
      self.max_pool = max_pool  # True: FIDInceptionE_2 (Mixed_7c); False: FIDInceptionE_1
      self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
      self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
      self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
      self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
      self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
      self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
      self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
      self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
      self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
      b3 = self.branch3x3_1(x)
      b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
      bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
      bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
      pooled = (F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool
                else avg(x))
      return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)

  class FIDInception(nn.Module):

    def __init__(self):
      super().__init__()
      self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
      self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
      self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
      self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
      self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
      self.Mixed_5b = FIDInceptionA(192, 32)
      self.Mixed_5c = FIDInceptionA(256, 64)
      self.Mixed_5d = FIDInceptionA(288, 64)
      self.Mixed_6a = InceptionB(288)
      self.Mixed_6b = FIDInceptionC(768, 128)
      self.Mixed_6c = FIDInceptionC(768, 160)
      self.Mixed_6d = FIDInceptionC(768, 160)
      self.Mixed_6e = FIDInceptionC(768, 192)
      self.Mixed_7a = InceptionD(768)
      self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
      self.Mixed_7c = FIDInceptionE(2048, max_pool=True)
      self.fc = nn.Linear(2048, 1008)  # in the .pth, unused by the pool3 features

    def forward(self, x01):
      """pytorch-fid's InceptionV3(output_blocks=[3]).forward: x in [0, 1], (B, 3, H, W)."""
      x = F.interpolate(x01, size=(299, 299), mode="bilinear", align_corners=False)
      x = 2 * x - 1
      x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
      x = F.max_pool2d(x, kernel_size=3, stride=2)
      x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
      x = F.max_pool2d(x, kernel_size=3, stride=2)
      for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
        x = getattr(self, f"Mixed_{name}")(x)
      return F.adaptive_avg_pool2d(x, (1, 1))[:, :, 0, 0]

  model = FIDInception().eval()
  gen = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, nn.Conv2d):
        fan_in = module.weight[0].numel()
        module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2 / fan_in) ** 0.5)
      elif isinstance(module, nn.BatchNorm2d):
        c = module.num_features
        module.weight.copy_(torch.rand(c, generator=gen) + 0.5)
        module.bias.copy_(torch.rand(c, generator=gen) * 0.4 - 0.2)
        module.running_mean.copy_(torch.rand(c, generator=gen) * 0.4 - 0.2)
        module.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
  return model


def test_matches_torch(tmp_path):
  torch = pytest.importorskip("torch")
  model = _torch_fid_inception(torch)
  state_dict = model.state_dict()
  assert sum(p.numel() for n, p in model.named_parameters()
             if not n.startswith("fc.")) == FID_INCEPTION_PARAMS
  assert {k: tuple(v.shape) for k, v in state_dict.items()
          if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
          } == inception.expected_torch_shapes()

  # The .pth path (torch.load) and the --convert command give the same variables.
  pth = tmp_path / inception.FID_WEIGHTS_FILE
  torch.save(state_dict, pth)
  variables = inception.load_weights(pth)
  npz = tmp_path / "fid_inception.npz"
  assert inception.main(["--convert", str(pth), str(npz)]) == 0
  jax.tree.map(np.testing.assert_array_equal, inception.load_weights(npz), variables)

  features = inception.feature_fn(variables)
  rng = np.random.default_rng(8)
  # 299 x 299 (no resize) checks the network; 32 x 32 also checks the resize against torch's.
  for size in (299, 32):
    x = rng.uniform(-1, 1, size=(2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
      want = model(torch.from_numpy((x.transpose(0, 3, 1, 2) + 1) / 2)).numpy()
    got = np.asarray(features(x))
    assert got.shape == want.shape == (2, 2048)
    assert want.std() > 1e-2  # the random weights keep the features informative
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert err < 2e-5, (size, err)  # about 5e-7 on this CPU


def test_resize_matches_torch():
  """jax.image.resize(bilinear, antialias=False) == F.interpolate(bilinear, align_corners=False)."""
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(9)
  for size in (28, 32, 64, 512):  # up- and downsampling
    x = rng.uniform(size=(1, size, size, 3)).astype(np.float32)
    got = np.asarray(jax.image.resize(x, (1, 299, 299, 3), "bilinear", antialias=False))
    want = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)),
                                           size=(299, 299), mode="bilinear",
                                           align_corners=False).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_torchvision_state_dict_keys():
  """pytorch-fid patches torchvision's Inception3: its keys and shapes are the converter's."""
  torchvision = pytest.importorskip("torchvision")
  net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008,
                                        init_weights=False)
  shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()
            if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
  assert shapes == inception.expected_torch_shapes()
