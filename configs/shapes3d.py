"""3DShapes, 3 layers x 3-d (supp. Table 2: MIG 0.554, MIG-sup 0.672; supp. Fig. 1 traversals).

"The same inference and generator model and the same latent dim as" pro-VLAE (REFERENCE 6.2):
the `provlae` networks with ELU and batch norm, a Bernoulli likelihood on the pixel intensities
(sigmoid cross-entropy; Gfactor 1 makes the loss the negative ELBO). UNCONFIRMED and taken from
the SVHN-HS recipe: the EBM (4 x 50, spectral norm), its learning rate, Langevin K and s, Adam.
tfds 'shapes3d' has one split of 480,000 images; the last 10,000 are the evaluation split
(the MIG estimator of the evaluation issue uses all 480,000 anyway).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.name = "shapes3d"
  config.data.train_split = "train[:470000]"
  config.data.eval_split = "train[470000:]"
  config.data.image_size = 64
  config.data.channels = 3

  config.model.family = "provlae"
  config.model.z_dims = (3, 3, 3)
  config.model.channels = (32, 256)
  config.model.batch_norm = True

  config.objective.likelihood = "bernoulli"
  config.objective.gfactor = 1.0
  config.train.num_steps = 70_500           # 15 epochs, pro-VLAE's per-stage budget
  config.eval.metrics = ("mig", "mse", "latent_attack", "traversals")  # Supp. Table 2
  return config
