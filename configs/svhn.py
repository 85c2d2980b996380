"""The authors' SVHN-HS model (REFERENCE Sec. 2.1): 4 layers, dims 2/2/2/10, EBM 4 x 50 with SN.

Paper targets: the hierarchical samples of Fig. 4 and the SVHN row of Table 1. Trains on the
531,131-image 'extra' split as the authors do (`--config.data.train_split=train` for LEBM's
choice). Prepare tfds 'svhn_cropped' in array_record format on a machine with internet access
(see the README's "Data") and pass `--config.data.data_dir`.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.train_split = "extra"
  config.eval.metrics = ("latent_classifier", "mse", "latent_attack", "traversals")  # Table 1, 2; Figs. 6, 7, 9
  # On CPU, XLA's Eigen convolutions run this model's <= 64-channel layers about 1.25x faster
  # than YNNPACK (BENCHMARKS.md); the result differs only by float rounding.
  config.train.xla_cpu_ynnpack = False
  return config
