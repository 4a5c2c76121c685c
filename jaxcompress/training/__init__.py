"""jaxcompress.training."""
