"""CelebA 64x64 (Table 2: MSE 0.004, FID 32.15; Table 4: FID vs Langevin K; Fig. 8).

Preprocessing from the authors' earlier dataset code (REFERENCE 4): the 148x148 box
(left 15, top 40) cropped from each 178x218 image, resized to 64, horizontal flips in training,
[-1, 1]. Networks: VLAE `LargeLayers` (4 layers x 10-d, widths 64/128/256/512/1024), as the paper
says it reuses the VLAE code; without batch norm (UNCONFIRMED). Langevin K = 60, s = 0.4
(Table 4's setting for 32.15; the text mentions 40). Other fields: the SVHN-HS recipe.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.name = "celeb_a"
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.data.image_size = 64
  config.data.channels = 3
  config.data.random_flip = True

  config.model.family = "vlae_large"
  config.model.z_dims = (10, 10, 10, 10)
  config.model.channels = (64, 128, 256, 512, 1024)

  config.prior.num_layers = 2
  config.prior.width = 100
  config.train.num_steps = 162_700          # 100 epochs of 1,627 batches
  config.eval.metrics = ("fid", "mse", "latent_attack", "traversals")  # needs eval.fid.inception_weights
  return config
