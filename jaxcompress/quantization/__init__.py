"""jaxcompress.quantization."""
