"""jaxcompress.edge."""
