"""jaxcompress.export."""
