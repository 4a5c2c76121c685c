"""jaxcompress.pruning."""
