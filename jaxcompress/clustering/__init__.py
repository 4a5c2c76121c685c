"""jaxcompress.clustering."""
