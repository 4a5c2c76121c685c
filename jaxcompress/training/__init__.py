"""A jitted, seeded train/eval loop with optax, reused by every study and benchmark."""

from jaxcompress.training._loop import FitResult, as_xy, cross_entropy, evaluate, fit, predict

__all__ = ["FitResult", "as_xy", "cross_entropy", "evaluate", "fit", "predict"]
