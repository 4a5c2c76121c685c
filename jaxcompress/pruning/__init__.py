"""Pruning and threshold clipping: masks, granularities, distributions, schedules, optax transforms.

One-shot, over any params pytree (linen dict or ``nnx.State``)::

    masks = magnitude_masks(params, 0.9, scope="global")    # exact round(0.9 * N) zeros
    params = apply_masks(params, masks)
    params = threshold_clip(params, quality=1.0)             # Han et al.: |w| < q * std(layer)

During training, with the masks in the optimizer state::

    opt = optax.chain(optax.adam(1e-3),
                      magnitude_pruning(polynomial(0.9, begin_step=0, end_step=2000)))

Masks are bool pytrees with the structure of params (``True`` = keep; unselected leaves all True).
See ``docs/pruning.md``.
"""

from jaxcompress.pruning._distributions import (
    ERK,
    Distribution,
    Explicit,
    Uniform,
    erk,
    explicit,
    uniform,
)
from jaxcompress.pruning._iterative import IterativePruningResult, iterative_pruning
from jaxcompress.pruning._masks import (
    LeafSparsity,
    SparsityReport,
    apply_masks,
    block_masks,
    channel_masks,
    magnitude_masks,
    nm_masks,
    per_layer_threshold_masks,
    sparsity,
    sparsity_report,
    threshold_clip,
    threshold_masks,
)
from jaxcompress.pruning._one_shot import (
    OneShotPruneResult,
    sparsegpt,
    sparsegpt_params,
    wanda_masks,
)
from jaxcompress.pruning._schedules import (
    ConstantSchedule,
    OneShotSchedule,
    PolynomialSchedule,
    Schedule,
    constant,
    one_shot,
    polynomial,
)
from jaxcompress.pruning._transform import (
    FixedMasksState,
    MagnitudePruningState,
    NMPruningState,
    fixed_masks,
    magnitude_pruning,
    nm_pruning,
)

__all__ = [
    "ConstantSchedule",
    "Distribution",
    "ERK",
    "Explicit",
    "FixedMasksState",
    "IterativePruningResult",
    "LeafSparsity",
    "MagnitudePruningState",
    "NMPruningState",
    "OneShotPruneResult",
    "OneShotSchedule",
    "PolynomialSchedule",
    "Schedule",
    "SparsityReport",
    "Uniform",
    "apply_masks",
    "block_masks",
    "channel_masks",
    "constant",
    "erk",
    "explicit",
    "fixed_masks",
    "iterative_pruning",
    "magnitude_masks",
    "magnitude_pruning",
    "nm_masks",
    "nm_pruning",
    "one_shot",
    "polynomial",
    "sparsegpt",
    "sparsegpt_params",
    "sparsity",
    "sparsity_report",
    "threshold_clip",
    "threshold_masks",
    "per_layer_threshold_masks",
    "uniform",
    "wanda_masks",
]
