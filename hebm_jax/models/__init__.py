"""Networks of the hierarchical joint-EBM-prior model (paper Sec. 3), in NHWC.

* `EnergyPrior` (`prior`): the MLP f_alpha on the concatenation [z_1, ..., z_L] (Eq. 3).
* Encoder/generator families (`registry.FAMILIES`, chosen by `config.model.family`): the
  authors' SVHN networks ('hs', 'fid'; `ladder`), the VLAE ladder networks ('vlae_small',
  'vlae_large'; `vlae`) and the pro-VLAE 3DShapes networks ('provlae'; `provlae`).
* `layers`: PyTorch-initialised building blocks shared by all of them.

Layer index 0 is the bottom (finest) latent, index L-1 the top one, as in the authors' code.
"""

from hebm_jax.models.layers import (ACTIVATIONS, OUTPUTS, STD_HEADS, GaussianHead, activation_fn,
                                    concat_latents, conv, conv_transpose, output_image,
                                    split_latents, torch_dense)
from hebm_jax.models.ladder import MERGE_MODES, HierarchicalEncoder, HierarchicalGenerator
from hebm_jax.models.prior import EnergyPrior
from hebm_jax.models.registry import (FAMILIES, Family, build_models, family_problems,
                                      generator_output, register_family)

__all__ = ["ACTIVATIONS", "OUTPUTS", "STD_HEADS", "FAMILIES", "MERGE_MODES", "EnergyPrior",
           "Family", "GaussianHead", "HierarchicalEncoder", "HierarchicalGenerator", "activation_fn",
           "build_models", "concat_latents", "conv", "conv_transpose", "family_problems",
           "generator_output", "output_image", "register_family", "split_latents", "torch_dense"]
