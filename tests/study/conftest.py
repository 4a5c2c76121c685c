"""The tiny study shared by the study tests: one run per test session."""

import pytest

from jaxcompress.cli import main

TINY = """
[study]
name = "tiny"
dataset = "mnist1d"
train_limit = 400
test_limit = 200
seed = 3

[teacher]
model = "mlp"
hidden = [24]
epochs = 1

[student]
model = "mlp"
hidden = [16]
epochs = 2
lr = 3e-3

[distill]
epochs = 1
temperature = 2.0

[prune]
sparsity = 0.5
rounds = 1
epochs = 1

[quantize]
bits = 4

[edge]
devices = ["rpi4"]
iters = 5
warmup = 1
links_mbit = [10.0]
eval_limit = 50

[sweep]
key = "quantize.bits"
values = [2, 8]
"""


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    recipe = root / "tiny.toml"
    recipe.write_text(TINY)
    out = root / "run"
    code = main(["run", str(recipe), "--out", str(out), "--no-progress", "--quiet"])
    return recipe, out, code
