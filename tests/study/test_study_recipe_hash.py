"""The recipe hash is a run folder's identity: runs resume by it, so it must never drift.

``pinned_recipes/`` holds copies of the shipped recipes as they were when these hashes were
pinned (a recipe's own values may change later; the hash *function* must not). A change that
alters any hash below makes every existing run folder refuse to resume.
"""

from pathlib import Path

import pytest

from jaxcompress.study import load_recipe, shipped_recipe_path, shipped_recipes
from jaxcompress.study._stages import Study, override_dataset

PINNED = Path(__file__).parent / "pinned_recipes"

# recipe -> (run folder identity: the resolved recipe without study.data_dir, Recipe.sha256)
HASHES = {
    "deep_compression_lenet300100": (
        "2693699713a5393cdc3302fb5a4e33de5c22ebf2bb91bc63c54bb544414a265d",
        "2693699713a5393cdc3302fb5a4e33de5c22ebf2bb91bc63c54bb544414a265d",
    ),
    "default": (
        "9f0fb1bbf44c922aa2b054d1b31f8bb7b0c908b1e02bf19ada359b698756e283",
        "9f0fb1bbf44c922aa2b054d1b31f8bb7b0c908b1e02bf19ada359b698756e283",
    ),
    "edge_int4_2of4_rpi4": (
        "3e2298c5ad1aaa970cf7dfb0b837fa17040bee7cc75e81d4fa71493550ecf7fb",
        "3e2298c5ad1aaa970cf7dfb0b837fa17040bee7cc75e81d4fa71493550ecf7fb",
    ),
    "han2015_lenet300100": (
        "66249cea63ebd85369d08ca74af8e1aee0c9a61fb611f9f3b63dfdc3086b7ebb",
        "66249cea63ebd85369d08ca74af8e1aee0c9a61fb611f9f3b63dfdc3086b7ebb",
    ),
    "han2015_lenet5": (
        "4b408cdccef4154fc616f055b7920421c63df79af23b8f3600c9d8a18bb115f7",
        "4b408cdccef4154fc616f055b7920421c63df79af23b8f3600c9d8a18bb115f7",
    ),
    "hinton2015_distillation": (
        "891f7dcc0b81476be9d2946295de185671f072431685d57804bf756470271008",
        "891f7dcc0b81476be9d2946295de185671f072431685d57804bf756470271008",
    ),
}


def _run_hash(recipe, tmp_path) -> str:
    return Study(recipe, tmp_path / "unused", quiet=True).identity()["recipe_sha256"]


@pytest.mark.parametrize("name", sorted(HASHES))
def test_recipe_hash_pinned(name, tmp_path):
    r = load_recipe(PINNED / f"{name}.toml")
    run_hash, recipe_hash = HASHES[name]
    assert _run_hash(r, tmp_path) == run_hash
    assert r.sha256 == recipe_hash


def test_every_shipped_recipe_has_a_pinned_copy():
    assert sorted(HASHES) == sorted(shipped_recipes())
    assert sorted(p.stem for p in PINNED.glob("*.toml")) == sorted(HASHES)


def test_shipped_recipe_unchanged_keeps_its_pinned_hash(tmp_path):
    # a shipped recipe whose text still equals its pinned copy hashes the same (load path and
    # resources path agree)
    for name in HASHES:
        shipped = Path(shipped_recipe_path(name))
        if shipped.read_bytes() == (PINNED / f"{name}.toml").read_bytes():
            assert _run_hash(load_recipe(shipped), tmp_path) == HASHES[name][0], name


def test_dataset_override_hash_pinned(tmp_path):
    # `jaxcompress run --dataset mnist --data-dir DIR`: the data folder is not part of the run's
    # identity, the adapted models and epochs are
    r, _ = override_dataset(load_recipe(PINNED / "default.toml"), "mnist", "/data/mnist")
    assert _run_hash(r, tmp_path) == (
        "7cb49fae53dedd1d311652c2b3cc44e8c37347aadfcf9ba4991b73b9ec7e624a"
    )
    r2, _ = override_dataset(load_recipe(PINNED / "default.toml"), "mnist", "/elsewhere")
    assert _run_hash(r2, tmp_path) == _run_hash(r, tmp_path)
    assert r.sha256 == "2877c444082f06b6da9def44a0577dc319a5a977d9fe61f377962bf2ca250d4b"
