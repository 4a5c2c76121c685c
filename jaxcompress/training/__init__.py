"""A jitted, seeded train/eval loop with optax, reused by every study and benchmark."""

from jaxcompress.training._loop import FitResult, cross_entropy, evaluate, fit, predict

__all__ = ["FitResult", "cross_entropy", "evaluate", "fit", "predict"]
