"""The authors' SVHN-HS model (REFERENCE Sec. 2.1): 4 layers, dims 2/2/2/10, EBM 4 x 50 with SN.

Trains on the tfds `svhn_cropped` dataset (prepare it with tfds on a networked machine and pass
`--config.data.data_dir`). The reference trains on the 531k-image 'extra' split.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.train_split = "extra"
  return config
