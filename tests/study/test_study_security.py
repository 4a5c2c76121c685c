"""Issue 16, item 1: a run folder is data only. Resuming a crafted folder never executes code from
it; old pickle folders are refused with a message saying how to rerun; the stage-state format
round-trips every leaf kind and refuses states that do not match the recipe's model."""

from __future__ import annotations

import hashlib
import json
import os
import pickle

import jax
import numpy as np
import pytest
from flax import nnx

from jaxcompress.clustering import ClusteredArray, cluster
from jaxcompress.models import MLP, functional
from jaxcompress.quantization import QuantizedArray, is_compressed, quantize_params
from jaxcompress.study import RunFolderError, load_recipe
from jaxcompress.study._stages import Study, decode_state, encode_state

RECIPE = """
[study]
name = "crafted"
dataset = "mnist1d"
train_limit = 64
test_limit = 32
seed = 1

[student]
model = "mlp"
hidden = [8]
epochs = 1
"""


class _Payload:
    """Unpickling this creates the marker file (what a malicious folder author would ship)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted_folder(tmp_path, marker_file):
    recipe_path = tmp_path / "r.toml"
    recipe_path.write_text(RECIPE)
    recipe = load_recipe(recipe_path)
    out = tmp_path / "run"
    study = Study(recipe, out, progress=False, quiet=True)
    study.prepare()  # a genuine run.json: the folder claims to hold this very recipe's run
    payload = pickle.dumps({"params": _Payload(str(marker_file))})
    (out / "stages" / "student.pkl").write_bytes(payload)
    (out / "stages" / "student.json").write_text(
        json.dumps(
            {
                "stage": "student",
                "seconds": 1.0,
                "has_state": True,
                "state_sha256": hashlib.sha256(payload).hexdigest(),  # checksum recomputed
                "metrics": {},
            }
        )
    )
    return recipe, out


def test_resuming_a_crafted_pickle_folder_never_runs_its_code(tmp_path):
    marker = tmp_path / "PWNED"
    recipe, out = _crafted_folder(tmp_path, marker)
    study = Study(recipe, out, progress=False, quiet=True)
    with pytest.raises(RunFolderError, match="pickle.*new --out folder.*stages/"):
        study.run()
    assert not marker.exists()
    with pytest.raises(RunFolderError, match="no longer unpickled"):
        Study(recipe, out, progress=False, quiet=True).state("student")
    assert not marker.exists()


def _trees():
    _, params = functional(MLP(12, (16,), 4, rngs=nnx.Rngs(0)))
    params = jax.tree.map(np.asarray, params)
    q = quantize_params(params, bits=4, axis=-1, group_size=4, where="kernel")
    c = cluster(params, bits=3, key=jax.random.key(0))
    return params, q, c


@pytest.mark.parametrize("which", [0, 1, 2])
def test_state_format_round_trips_every_leaf_kind(which):
    params = _trees()[0]
    tree = _trees()[which]
    data, schema = encode_state(tree)
    schema = json.loads(json.dumps(schema))  # it is plain JSON
    back = decode_state(data, schema, params)
    assert jax.tree.structure(back, is_leaf=is_compressed) == jax.tree.structure(
        tree, is_leaf=is_compressed
    )
    kinds = {r["kind"] for r in schema["leaves"]}
    assert kinds == [{"array"}, {"array", "quantized"}, {"array", "clustered"}][which]
    for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(back), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    leaf = [x for x in jax.tree.leaves(back, is_leaf=is_compressed) if is_compressed(x)]
    assert all(isinstance(x, (QuantizedArray, ClusteredArray)) for x in leaf)


def test_state_that_does_not_match_the_model_is_refused():
    params, q, _ = _trees()
    data, schema = encode_state(q)
    other = functional(MLP(12, (8,), 4, rngs=nnx.Rngs(0)))[1]
    with pytest.raises(RunFolderError, match="does not match|has shape"):
        decode_state(data, schema, other)
    bad = json.loads(json.dumps(schema))
    bad["leaves"][1]["kind"] = "pickle"
    with pytest.raises(RunFolderError, match="unknown kind"):
        decode_state(data, bad, params)
    bad = json.loads(json.dumps(schema))
    qrec = next(r for r in bad["leaves"] if r["kind"] == "quantized")
    qrec["bits"] = 9
    with pytest.raises(RunFolderError, match="not a valid quantized array"):
        decode_state(data, bad, params)
    with pytest.raises(RunFolderError, match="not valid safetensors"):
        decode_state(b"\x80\x04junk", schema, params)
    with pytest.raises(RunFolderError, match="schema"):
        decode_state(data, {"format": "pickle"}, params)


def test_a_run_folder_holds_no_pickle(tmp_path):
    # the study writes its states as safetensors + JSON; loading one back needs no pickle
    recipe_path = tmp_path / "r.toml"
    recipe_path.write_text(RECIPE)
    out = tmp_path / "run"
    study = Study(load_recipe(recipe_path), out, progress=False, quiet=True)
    study.prepare()
    _, params = study.model("student")
    study.stage("student", lambda: (params, {"accuracy": 0.5}))
    names = sorted(os.listdir(out / "stages"))
    assert names == ["student.json", "student.safetensors"]
    marker = json.loads((out / "stages" / "student.json").read_text())
    assert marker["state"]["format"] == "jaxcompress-stage-state"
    fresh = Study(load_recipe(recipe_path), out, progress=False, quiet=True)
    back = fresh.state("student")
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
