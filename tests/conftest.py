"""Test-wide settings: no test may read ../shared, and caches go to a temporary folder."""

import os

import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # Data caches (MNIST-1D) go to one temporary folder per session, never the user's cache.
    cache = tmp_path_factory.getbasetemp() / "jaxcompress-cache"
    monkeypatch.setenv("JAXCOMPRESS_CACHE", str(cache))
    yield


def pytest_configure(config):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
