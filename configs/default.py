"""Default hyperparameters: the authors' SVHN-HS recipe (REFERENCE Sec. 2, 2.1).

Per-experiment files import this and override fields. Every field can also be overridden on the
command line, e.g. `--config.train.num_steps=200 --config.sampler.n_steps=30`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 1234

  config.data = data = ml_collections.ConfigDict()
  data.name = "svhn_cropped"        # hebm_jax.input_pipeline: 'digits' (scikit-learn, offline),
                                    # 'mnist', 'fashion_mnist', 'svhn_cropped', 'cifar10',
                                    # 'celeb_a', 'shapes3d', 'mnist_anomaly'
  data.data_dir = ""                # tfds data_dir holding the prepared dataset; empty: tfds' default
  data.download = False             # prepare a missing dataset with tfds (network; one process only)
  data.train_split = "train"        # tfds split names, slicing allowed ('train[:50000]')
  data.eval_split = "test"
  data.image_size = 32
  data.channels = 3
  data.image_key = "image"
  data.label_key = "label"
  data.classes = ()                 # keep only these labels, e.g. (0, 1, 2); (): all
  data.held_out_digit = 1           # 'mnist_anomaly': the anomalous digit (MEG protocol)
  data.anomaly_protocol = "meg"     # 'meg': MEG's draws, whose test normals overlap training
                                    # (as the paper's baselines); 'disjoint': a clean 80/20 split
  data.random_flip = False          # horizontal flips of training batches
  data.worker_count = 2             # grain worker processes decoding batches; 0: in the main process
  data.prefetch = 2                 # batches prepared ahead of the step
  data.cache = False                # decode the whole split into memory once

  config.model = model = ml_collections.ConfigDict()
  model.family = "hs"               # hebm_jax.models.FAMILIES: 'hs', 'fid', 'vlae_small', 'vlae_large', 'provlae'
  model.z_dims = (2, 2, 2, 10)      # bottom -> top
  model.channels = (32, 64, 64, 256)  # widths; their meaning per family is in its module docstring
  model.top_width = 0               # 'hs'/'fid' generator top-MLP width; 0: channels[-1]
  model.batch_norm = False          # 'vlae_*'/'provlae' only (the VLAE code has it; REFERENCE 6.1)
  model.output = ""                 # generator output: '' (by likelihood: 'sigmoid' for
                                    # 'bernoulli', else 'tanh'), 'tanh' or 'sigmoid' (VLAE's)
  model.std_head = "logvar"         # 'vlae_*': 'logvar' (unconstrained, the reference's) or
                                    # 'sigmoid' (VLAE's std = sigmoid(fc) + 0.001)
  model.encoder_negative_slope = 0.01
  model.generator_negative_slope = 0.2

  config.prior = prior = ml_collections.ConfigDict()
  prior.type = "ebm"                # 'ebm' (joint EBM prior) or 'gaussian' (N(0, I): VLAE, nef = 0)
  prior.num_layers = 4
  prior.width = 50
  prior.activation = "leaky_relu"   # 'leaky_relu', 'gelu', 'swish' or 'elu'
  prior.negative_slope = 0.2
  prior.spectral_norm = True
  prior.output_scale = 1.0          # f = scale * MLP(z); with spectral norm, f is scale-Lipschitz

  config.sampler = sampler = ml_collections.ConfigDict()
  sampler.n_steps = 60              # K, short-run prior Langevin steps in training and sampling
  sampler.step_size = 0.4           # s

  config.objective = objective = ml_collections.ConfigDict()
  objective.gfactor = 3.0           # 1 / (2 sigma^2)
  objective.kl = "sample"           # 'sample' (reference) or 'analytic'
  objective.likelihood = "gaussian"  # 'gaussian' (sigma^2 = 1 / (2 gfactor)), 'bernoulli' (pro-VLAE)
                                    # or 'l1' (VLAE: gfactor * sum |x - g| on [0, 1], Laplace)
  objective.kl_warmup_steps = 0     # VLAE's KL warm-up: the prior term weighted 1 - exp(-step / T); 0: off

  config.optim = optim = ml_collections.ConfigDict()
  optim.lr_generator = 3e-4
  optim.lr_encoder = 3e-4
  optim.lr_prior = 2e-6
  optim.b1 = 0.0
  optim.b2 = 0.9
  optim.eps = 1e-8
  optim.weight_decay = 5e-4         # coupled L2 on encoder + generator (PyTorch Adam weight_decay)
  optim.lr_decay = 0.998            # per epoch, staircase
  optim.steps_per_epoch = 0         # 0: train-split size // batch size
  optim.grad_clip_norm = 0.0        # clip each optimiser's gradients to this global norm; 0: off

  config.train = train = ml_collections.ConfigDict()
  train.batch_size = 100            # global, over all devices and hosts
  train.num_steps = 531_100         # 100 epochs of SVHN 'extra' at batch 100
  train.max_abs_ebm_loss = 1e3      # divergence guard of the authors' grid search; 0 disables
  train.max_abs_energy = 1e4        # guard on |mean f(z+)|, |mean f(z-)| (runaway EBM); 0 disables
  train.max_norm = 1e7              # guard on gradient, parameter and update norms; 0 disables
  train.on_divergence = "stop"      # 'stop': raise, naming the steps (nothing diverged is saved);
                                    # 'skip': drop non-finite updates (counted), stop after
                                    # max_consecutive_skips in a row; 'restore': reload the last
                                    # good checkpoint with fresh randomness, at most max_restores
  train.max_consecutive_skips = 10
  train.max_restores = 3
  train.restore_lr_factor = 1.0     # 'restore': learning rates are multiplied by this at each one
  train.steps_per_dispatch = 1      # steps per device call (lax.scan over stacked batches); the
                                    # log/image/checkpoint/eval intervals must be multiples of it
  train.compute_dtype = "float32"   # 'bfloat16': encoder/generator arithmetic in bf16 (f32
                                    # parameters, optimiser, EBM and sampler); not exact, see BENCHMARKS.md
  train.xla_cpu_ynnpack = True      # False: XLA:CPU keeps convolutions on its Eigen kernels instead
                                    # of YNNPACK (faster for narrow networks; BENCHMARKS.md)
  train.compilation_cache = "workdir"  # JAX's persistent compilation cache, for train, eval and
                                    # sample runs: 'workdir' (<workdir>/compilation_cache), '' (JAX's
                                    # own setting, off by default) or a directory
  train.workdir_lock = "auto"       # one trainer per workdir (hebm_jax.workdir_lock): 'auto' (an
                                    # OS file lock on local/NFS paths, a lease on gs:// and other
                                    # URLs), 'file' or 'lease' (e.g. a FUSE-mounted bucket)
  train.lease_timeout_s = 300.0     # a lease not renewed for this long has expired (its holder is
                                    # gone): the next run takes over; renewed every timeout / 4

  config.checkpoint = ckpt = ml_collections.ConfigDict()
  ckpt.every_steps = 500
  ckpt.max_to_keep = 30

  config.logging = logging = ml_collections.ConfigDict()
  logging.log_every_steps = 100
  logging.image_every_steps = 5000
  logging.num_images = 100          # per grid (a square number makes a square grid)

  config.eval = ev = ml_collections.ConfigDict()
  ev.every_steps = 5000
  ev.batch_size = 100
  ev.num_batches = 10               # 0: the whole eval split (the MSE/KL eval during training)
  # --mode=eval (hebm_jax.evaluation): metrics by name, run on the newest checkpoint(s).
  ev.metrics = ("mse", "latent_attack", "traversals")  # these fit every dataset; each experiment
                                    # adds its tables: 'latent_classifier', 'anomaly', 'ood', 'mig'
                                    # (hebm_jax.evaluation.METRICS)
  ev.train_metrics = ()             # metrics the trainer also runs at each eval (scalars to its
                                    # TensorBoard), e.g. ('anomaly',): the same names and numbers
                                    # as --mode=eval (hebm_jax.evaluation.in_training); one process
  ev.checkpoint_step = 0            # 0: the newest checkpoint; else this step (must exist)
  ev.num_checkpoints = 1            # evaluate the newest N (up to checkpoint_step): mean +- std
  ev.follow = False                 # wait for a live run's checkpoints and evaluate each once
                                    # (hebm_jax.evaluation.follow); stops after train.num_steps
  ev.follow_poll_s = 30.0           # follow: seconds between looks for a new checkpoint
  ev.follow_timeout_s = 0.0         # follow: stop when no new checkpoint came for this long; 0: wait
  ev.score_samples = 1              # anomaly/ood: z ~ q(z|x) draws per image, log p(x, z) averaged
  ev.score = ml_collections.ConfigDict(dict(  # anomaly/ood score -log p_w(x, z) (evaluation.scores)
      recon_weight=-1.0,            # w of the reconstruction loss; -1: the training Gfactor with the
                                    # likelihood's constants (the paper's -log p(x, z)); 0: latent terms only
      z="sample",                   # 'sample' (z ~ q), 'mean' (q's mean) or 'refined' (q's samples
                                    # after refine_steps noise-free Langevin steps on log p_w(x, z))
      refine_steps=20, refine_step_size=0.1,
      energy=True,                  # False: the EBM's f(z) left out of the score (how much the
                                    # prior itself changes the ranking; no-op for a Gaussian prior)
      variants_table=False))        # 'anomaly' also scores w in {Gfactor, 1, 0} x z in {mean,
                                    # sample, refined}: 'anomaly_variants/w=..,z=../auprc'
  ev.classifier = ml_collections.ConfigDict(dict(
      hidden=256, epochs=50, batch_size=256, learning_rate=1e-3,
      input="mean",                 # the codes classified: 'mean' of q(z_l|x) (as VLAE), or one
                                    # 'sample' of it per image (the paper does not say which)
      num_train=0,                  # training codes used (0: the whole train split)
      train_split="",               # the classifier's training split; '': data.train_split
      validation_split=""))         # '': none (the last epoch is tested); else the epoch of best
                                    # accuracy on it is, e.g. 'train[50000:]' with 'train[:50000]'
  ev.ood = ml_collections.ConfigDict(dict(
      dataset="",                   # the OOD dataset (same channels), e.g. 'mnist'
      split="test", num_examples=0))  # 0: every example of both test sets
  ev.mse = ml_collections.ConfigDict(dict(num_images=0))  # test images reconstructed (0: all)
  ev.cache_dir = ""                  # FID reference statistics, feature classifier; '': ~/.cache/hebm_jax
  ev.fid = ml_collections.ConfigDict(dict(
      inception_weights="",         # pytorch-fid's pt_inception-2015-12-05-6726825d.pth or its .npz
      num_samples=50_000,           # prior samples (the training K and s)
      num_reference=50_000,         # random reference images (REFERENCE 3.1: 50,000 training images)
      reference_split="",           # '': data.train_split
      kid_subsets=100, kid_subset_size=1000))
  ev.classifier_fd = ml_collections.ConfigDict(dict(  # offline stand-in for FID on labelled data
      num_samples=10_000, num_reference=10_000, reference_split="",
      num_train=60_000, epochs=2))  # the feature classifier's training images and epochs
  ev.long_run = ml_collections.ConfigDict(dict(
      n_steps=2500, record_every=100,  # Fig. 8: 2,500 steps, an image every 100
      num_chains=64, num_shown=8,   # chains for the energy statistics; chains shown as images
      step_size=0.0))               # 0: sampler.step_size (the training s)
  ev.log_likelihood = ml_collections.ConfigDict(dict(
      ais_chains=1000, ais_temperatures=1000,  # AIS from N(0, I) to the EBM prior, for log Z
      ais_step_size=0.1, ais_mala_steps=1, ais_schedule="sigmoid",
      is_samples=100_000,           # plain importance sampling of log Z beside it (a check)
      iw_samples=100,               # K of the importance-weighted log p(x)
      num_images=0))                # test images (0: the whole split)
  ev.prior_kl = ml_collections.ConfigDict(dict(  # KL(p_alpha || N(0, I)), joint and per layer
      num_samples=4096,             # N(0, I) draws (and AIS chains); hebm_jax.evaluation.prior_kl
      inner_samples=32,             # draws of the other layers behind each layer's marginal
      method="auto",                # 'is', 'ais' or 'auto' (AIS when the IS ESS is < 10 % of N)
      ais_temperatures=100, ais_step_size=0.1))
  ev.mig = ml_collections.ConfigDict(dict(
      split="train", num_images=0,  # 0: every image (3DShapes: all 480,000, as pro-VLAE)
      num_samples=10_000,           # z samples of each entropy estimate
      active_threshold=1e-2))       # MIG-sup counts units with Var(mean) above this
  ev.attack = ml_collections.ConfigDict(dict(
      num_images=8,                 # test images attacked, each towards another class's image
      lam=1.0,                      # weight of ||d||_2 beside the layer's KL
      num_steps=500, learning_rate=1e-2))
  ev.traversal = ml_collections.ConfigDict(dict(
      range=2.0, num_values=7,      # each traversed unit takes linspace(-range, range, num_values)
      num_codes=2000,               # test codes drawn under the Langevin chains (Fig. 7)
      num_chains=30))               # prior chains drawn (config.sampler K and s)

  config.sample = sample = ml_collections.ConfigDict()  # --mode=sample (hebm_jax.generate)
  sample.checkpoint_step = 0        # 0: the newest checkpoint
  sample.num_samples = 100          # prior samples written (images and latents)
  sample.num_reconstructions = 32   # test images reconstructed (0: none, no data read)
  sample.n_steps = 0                # Langevin steps; 0: sampler.n_steps (the training K)
  sample.step_size = 0.0            # 0: sampler.step_size
  sample.method = "langevin"        # 'langevin' (the training sampler) or 'mala' (Metropolis-adjusted)
  sample.seed = 0                   # folded into the sampling key: other seeds, other samples
  return config
