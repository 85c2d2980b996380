"""CelebA 128x128 (Fig. 10, qualitative only): `configs/celeba64.py` at 128x128.

The paper gives nothing about this model; the `vlae_large` networks keep their four stages, so
every feature map is twice as large (101M parameters, most in the top fully connected layers).
"""

from configs import celeba64


def get_config():
  config = celeba64.get_config()
  config.data.image_size = 128
  return config
