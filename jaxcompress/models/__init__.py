"""jaxcompress.models."""
