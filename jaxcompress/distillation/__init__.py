"""Knowledge distillation (Hinton et al. 2015; FitNets hints) and data-parallel training.

* :func:`kd_loss` - soft-target + hard-label loss; :func:`soft_cross_entropy` its KL term.
* :func:`hint_loss`, :func:`init_hint_projection`, :func:`feature_extractor` - feature (hint)
  distillation through a learned projection, reading a Flax model's intermediates.
* :func:`distill` - the jitted trainer (frozen teacher, any optax optimizer, pruning/QAT compose);
  :func:`distillation_loss` - the same loss as a ``loss_fn`` for :func:`jaxcompress.training.fit`.
* :func:`data_mesh`, :func:`shard_batch`, :func:`replicate`, :func:`process_slice`,
  :func:`make_train_step` - data parallelism on ``jax.sharding`` (1 device, N devices, N hosts).
"""

from jaxcompress.distillation._features import feature_extractor
from jaxcompress.distillation._losses import (
    hint_loss,
    init_hint_projection,
    kd_loss,
    soft_cross_entropy,
)
from jaxcompress.distillation._parallel import (
    data_mesh,
    make_train_step,
    process_slice,
    replicate,
    shard_batch,
)
from jaxcompress.distillation._trainer import distill, distillation_loss

__all__ = [
    "data_mesh",
    "distill",
    "distillation_loss",
    "feature_extractor",
    "hint_loss",
    "init_hint_projection",
    "kd_loss",
    "make_train_step",
    "process_slice",
    "replicate",
    "shard_batch",
    "soft_cross_entropy",
]
