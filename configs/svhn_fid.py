"""The authors' large SVHN-FID model (REFERENCE Sec. 2.2): 5 x 10-d layers, concat merge, 74M params.

Paper targets: Table 2 SVHN (MSE 0.008, FID 24.16) and the EBM-width ablation of Table 5
(`--config.prior.width`, nef = 0 being `--config.prior.type=gaussian`). Training Langevin K = 100,
s = 0.3 as `train_fid.py`; the authors' FID script samples with K = 60, s = 0.4.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.train_split = "extra"
  config.model.z_dims = (10, 10, 10, 10, 10)
  config.model.channels = (128, 256, 256, 512, 1024)
  config.model.top_width = 2048
  config.model.family = "fid"
  config.prior.num_layers = 2
  config.prior.width = 100
  config.objective.gfactor = 10.0
  config.sampler.n_steps = 100
  config.sampler.step_size = 0.3
  config.train.num_steps = 1_062_200  # 200 epochs
  config.eval.metrics = ("fid", "mse", "latent_attack", "traversals")  # needs eval.fid.inception_weights
  return config
