"""jaxcompress.distillation."""
