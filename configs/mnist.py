"""MNIST, all digits, 3 layers (paper Fig. 5, Table 1 MNIST row: 32.60 / 58.32 / 67.64 %).

The paper reuses the VLAE networks and training for its MNIST models (REFERENCE 4, 6.1), so this
config is VLAE's MNIST recipe (ermongroup/Variational-Ladder-Autoencoder, `vladder.py` and
`vladder_small.py`), read from their code:

* `vlae_small` networks, 3 layers x 2-d, with batch norm (offset only), LeakyReLU 0.1 in the
  encoder and ReLU in the generator's fc layers, a sigmoid image output and VLAE's
  `sigmoid(fc) + 0.001` standard-deviation heads;
* the L1 reconstruction loss on [0, 1] images scaled by `loss_ratio` = 8 (`objective.likelihood =
  'l1'`, `gfactor = 8`), the closed-form KL, and the KL warm-up 1 - exp(-iteration / 2000);
* Adam 2e-4 with TF's defaults (0.9, 0.999), no weight decay (VLAE's L2 regularisers are created
  but never added to its loss) and no learning-rate decay.

Departures: the widths are (24, 48, 352), 3.2M parameters as the paper gives for its
(Fashion-)MNIST model, instead of VLAE's (64, 128, 1024) (about 9x the compute); PyTorch-style
initialisation instead of N(0, 0.02); BN momentum 0.99 instead of 0.999; VLAE's lrelu-0.1
transposed convolution and layer-0 code injection use the generator's ReLU here.

On top of it the joint EBM prior of the paper: a 4 x 50 LeakyReLU-0.2 MLP with spectral norm,
Langevin K = 60, s = 0.4 (the SVHN-HS recipe's, UNCONFIRMED for MNIST), EBM learning rate 2e-5.
The issue-25 grid (RESULTS.md, 2026-12-05) kept every one of these: without spectral norm the
EBM ran away (f and the posterior's KL growing without bound) within 10,000-20,000 steps at
Gfactor 8 and 2, K 60 and s 0.4 (s 0.8 after 12,000; K 200 was still stable at 20,000, one
seed), and no setting's validation gain on z3 was larger than the spread between two seeds of
one setting (up to 24 points), so nothing justified a change. Over eight seeds at 12,000 steps this recipe's z3 gain
over its own VLAE is -0.5 +- 4.5 points (95 % interval [-4.2, 3.2]; the paper's is +15.6): its
prior stays within 0.11 nats of N(0, I). `prior.output_scale` = 4 (f 4-Lipschitz) moves it
0.5-3 nats away and stays stable, yet over the same eight seeds z3 changes by -1.9 points
([-7.2, 3.5]) and z1 by +3.5 ([2.5, 4.4]); on validation z3 it is 1.5 points below this default,
so the scale stays 1. The paper's own VLAE row is matched on z1 and z3 by the
authors' SVHN recipe instead (RESULTS.md has the overrides).

    python main.py --config=configs/mnist.py --workdir=runs/mnist --config.data.data_dir=DIR
The VLAE baseline of Table 1 is the same model with the Gaussian prior:
    python main.py --config=configs/mnist.py --workdir=runs/vlae_mnist --config.prior.type=gaussian
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.name = "mnist"
  config.data.image_size = 28
  config.data.channels = 1
  config.data.cache = True   # 47 MB decoded once (2 s): ~10 % more steps/s on 2 cores than streaming

  config.model.family = "vlae_small"
  config.model.z_dims = (2, 2, 2)
  config.model.channels = (24, 48, 352)   # conv1, conv2, fc: 3.2M parameters (paper: 3.2M)
  config.model.batch_norm = True
  config.model.std_head = "sigmoid"
  config.model.output = "sigmoid"
  config.model.encoder_negative_slope = 0.1
  config.model.generator_negative_slope = 0.0

  config.objective.likelihood = "l1"
  config.objective.gfactor = 8.0             # VLAE's loss_ratio
  config.objective.kl = "analytic"
  config.objective.kl_warmup_steps = 2000

  config.optim.lr_generator = 2e-4
  config.optim.lr_encoder = 2e-4
  config.optim.lr_prior = 2e-5
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.weight_decay = 0.0
  config.optim.lr_decay = 1.0

  config.train.num_steps = 60_000          # 100 epochs of 600 batches
  config.checkpoint.every_steps = 1000
  config.checkpoint.max_to_keep = 10
  config.logging.image_every_steps = 2000
  config.eval.every_steps = 2000
  config.eval.metrics = ("latent_classifier", "mse", "latent_attack", "traversals")  # Table 1, 2; Figs. 6, 7, 9
  # Table 1's classifier: trained on 50,000 training codes, its epoch chosen on the other 10,000,
  # tested once on the test split.
  config.eval.classifier.train_split = "train[:50000]"
  config.eval.classifier.validation_split = "train[50000:]"
  return config
