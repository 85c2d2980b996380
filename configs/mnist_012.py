"""The toy of Fig. 6 and 7: MNIST digits 0, 1 and 2 only, 2 layers of 2-d latents.

Fig. 6 traverses the units of z1 (bottom: shape) and z2 (top: class); Fig. 7 shows prior Langevin
chains against posterior codes of z2. Networks and recipe as `configs/mnist.py`, two layers.
"""

from configs import mnist


def get_config():
  config = mnist.get_config()
  config.data.classes = (0, 1, 2)
  config.model.z_dims = (2, 2)
  config.train.num_steps = 18_000           # 100 epochs of the ~180 batches of digits 0-2
  return config
