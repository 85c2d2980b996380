"""CIFAR-10 (Table 6: FID 63.42).

The paper gives no CIFAR-10 architecture or hyperparameters; REFERENCE 4 names the authors'
SVHN-FID networks as the plausible default, used here with their recipe (5 x 10-d, concat merge,
EBM 2 x 100 with spectral norm, Gfactor 10, K = 100, s = 0.3 in training), on the 50,000
training images for 200 epochs.
"""

from configs import svhn_fid


def get_config():
  config = svhn_fid.get_config()
  config.data.name = "cifar10"
  config.data.train_split = "train"
  config.train.num_steps = 100_000          # 200 epochs of 500 batches
  return config
