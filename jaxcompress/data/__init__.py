"""jaxcompress.data."""
