"""Offline quick start: scikit-learn's bundled 8x8 handwritten digits, upsampled to 16x16.

A 3-layer joint-EBM-prior model that trains on 2 CPU cores in a few minutes:
    python main.py --config=configs/digits.py --workdir=runs/digits

Chosen so that the hierarchy of the paper's Fig. 4-6 shows on this tiny dataset: VLAE's small
ladder networks (`vlae_small`, codes merged by gated addition, so the top code passes through the
most layers) with a 1-d bottom, a 1-d middle and an 8-d top layer. Trained, the top layer carries
the digit identity and the lower ones the style: in `images/hierarchical_*.png` varying z3
changes the digit while z1 and z2 change its shape, and a linear probe of the posterior means
(RESULTS.md) reads the digit best from z3. Equal 2-d layers (the SVHN-HS proportions) let
the bottom layer take the identity instead.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.seed = 0
  config.data.name = "digits"
  config.data.image_size = 16
  config.data.channels = 1

  config.model.family = "vlae_small"
  config.model.z_dims = (1, 1, 8)
  config.model.channels = (32, 64, 256)   # conv1, conv2, fc

  config.prior.num_layers = 2
  config.prior.width = 50

  config.sampler.n_steps = 30
  config.sampler.step_size = 0.4

  config.optim.lr_prior = 1e-4
  config.optim.lr_decay = 0.99

  config.train.batch_size = 100
  config.train.num_steps = 4000

  config.checkpoint.every_steps = 500
  config.checkpoint.max_to_keep = 3
  config.logging.log_every_steps = 100
  config.logging.image_every_steps = 2000
  config.logging.num_images = 64
  config.eval.every_steps = 2000
  config.eval.num_batches = 0
  config.eval.metrics = ("latent_classifier", "mse", "latent_attack", "traversals")  # Table 1, 2; Figs. 6, 7, 9
  return config
