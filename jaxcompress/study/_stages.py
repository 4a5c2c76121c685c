"""The study runner: stages over a run folder, resumable, every output written atomically.

Run folder layout::

    run.json                 identity: recipe sha256, name, created (a folder holding another run
                             is refused, never overwritten)
    recipe.toml              the resolved recipe (defaults filled in)
    stages/<stage>.safetensors  the stage's params (arrays only), written atomically
    stages/<stage>.json      the stage marker (metrics, seconds, the state's schema and sha256),
                             written after the state
    artifacts/<stage>.jcx    exported artifacts (``model.jcx`` = the final model)
    report.md, report.json   the report (regenerated at the end of every run)
    plots/*.png              plots

A stage whose marker exists is not run again: an interrupted run resumes from the last finished
stage. The stages themselves are registered in ``_registry`` (each a small unit with declared
inputs and a `StageOutput`); `Study` is the run folder and the context they run in: data, keys,
models, evaluation, checkpoints. The report is built from the stages' outputs only.

Stage states are data only (docs/study.md, "Run folder format"): the arrays in a safetensors file
and a JSON schema in the marker naming, per leaf in tree order, its key path and kind (``array``,
``quantized`` with the `QuantizedArray` metadata, ``clustered`` with the `ClusteredArray` metadata).
The tree structure is never read from the folder: it is rebuilt from the recipe's model, and the
folder must match it leaf for leaf (paths, shapes, dtypes, validated compressed leaves). Loading a
folder therefore never executes code from it. Folders whose states are pickles (written by
jaxcompress before this format) are refused with a message saying how to rerun.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Any

import numpy as np

from jaxcompress._core import JaxCompressValueError, StageInterrupted
from jaxcompress.study import _plots, _report
from jaxcompress.study._compress import model_stage_chain
from jaxcompress.study._recipe import MODELS, Recipe, RecipeError, TrainConfig
from jaxcompress.study._registry import plan
from jaxcompress.study._types import StageOutput
from jaxcompress.study._util import atomic_write, log, now, to_json

__all__ = ["RunFolderError", "Study", "run_study", "encode_state", "decode_state"]

RUN_FORMAT = 1
STATE_FORMAT = "jaxcompress-stage-state"
STATE_VERSION = 1
_STATE_DTYPES = (
    "float32",
    "float64",
    "float16",
    "int8",
    "uint8",
    "int16",
    "int32",
    "int64",
    "bool",
)


class RunFolderError(JaxCompressValueError):
    """The output folder cannot hold this run (it holds another run, or unrelated files)."""


# -- small utilities ---------------------------------------------------------------------------
_CORRUPT = object()  # sentinel: a saved stage state failed its checksum


_json = to_json
_log = log
_now = now


def _to_numpy(tree: Any) -> Any:
    import jax

    return jax.tree.map(np.asarray, tree)


# -- stage states: data only -------------------------------------------------------------------
def encode_state(tree: Any) -> tuple[bytes, dict]:
    """A params pytree -> ``(safetensors bytes, schema)``; `decode_state` inverts it.

    The schema (JSON-able) lists, per leaf in tree order, ``{"path", "kind", ...}``: ``kind`` is
    ``"array"`` (tensor ``"<i>"``), ``"quantized"`` (tensors ``"<i>:qvalue"``, ``"<i>:scale"``,
    ``"<i>:zero_point"`` and the static fields bits, scheme, axis, group_size, shape, dtype) or
    ``"clustered"`` (``"<i>:indices"``, ``"<i>:codebook"``; n_clusters, axis, zero_index, shape,
    dtype). The tree structure itself is not stored.
    """
    import jax
    from safetensors.numpy import save as st_save

    from jaxcompress._core import key_path_str
    from jaxcompress.clustering import ClusteredArray
    from jaxcompress.quantization import QuantizedArray, is_compressed

    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_compressed)
    arrays: dict[str, np.ndarray] = {}
    leaves = []
    for i, (kp, leaf) in enumerate(flat):
        rec: dict[str, Any] = {"path": key_path_str(kp)}
        if isinstance(leaf, QuantizedArray):
            rec.update(
                kind="quantized",
                bits=int(leaf.bits),
                scheme=str(leaf.scheme),
                axis=None if leaf.axis is None else int(leaf.axis),
                group_size=None if leaf.group_size is None else int(leaf.group_size),
                shape=[int(d) for d in leaf.shape],
                dtype=str(leaf.dtype),
            )
            fields = {f: getattr(leaf, f) for f in ("qvalue", "scale", "zero_point")}
        elif isinstance(leaf, ClusteredArray):
            rec.update(
                kind="clustered",
                n_clusters=int(leaf.n_clusters),
                axis=None if leaf.axis is None else int(leaf.axis),
                zero_index=bool(leaf.zero_index),
                shape=[int(d) for d in leaf.shape],
                dtype=str(leaf.dtype),
            )
            fields = {f: getattr(leaf, f) for f in ("indices", "codebook")}
        else:
            rec["kind"] = "array"
            fields = {"": leaf}
        for f, v in fields.items():
            a = np.ascontiguousarray(np.asarray(v))
            if a.dtype.name not in _STATE_DTYPES:
                raise JaxCompressValueError(
                    f"stage state leaf {rec['path']!r} has dtype {a.dtype}, which run folders do "
                    f"not store (one of {_STATE_DTYPES})"
                )
            arrays[f"{i}:{f}" if f else str(i)] = a
        leaves.append(rec)
    schema = {"format": STATE_FORMAT, "format_version": STATE_VERSION, "leaves": leaves}
    return st_save(arrays), schema


def decode_state(data: bytes, schema: Any, template: Any, where: str = "state") -> Any:
    """Rebuilds a params pytree from `encode_state` output, on the structure of `template`.

    Nothing in `data` or `schema` is executed: the schema is plain JSON checked field by field, the
    arrays come from the safetensors parser, and every leaf must match `template`'s leaf at the same
    position (key path, shape, dtype; compressed leaves also pass their validator).

    Raises:
      RunFolderError: anything does not match (the message names the leaf and the rule).
    """
    import jax
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    from jaxcompress._core import key_path_str
    from jaxcompress.clustering import ClusteredArray, validate_clustered_array
    from jaxcompress.quantization import QuantizedArray, is_compressed, validate_quantized_array

    def bad(msg: str) -> RunFolderError:
        return RunFolderError(f"{where}: {msg}; delete the stage marker to run the stage again")

    if not (
        isinstance(schema, dict)
        and schema.get("format") == STATE_FORMAT
        and schema.get("format_version") == STATE_VERSION
        and isinstance(schema.get("leaves"), list)
    ):
        raise bad(f"not a {STATE_FORMAT} version {STATE_VERSION} schema")
    try:
        arrays = st_load(bytes(data))
    except (SafetensorError, ValueError, TypeError) as e:
        raise bad(f"the state file is not valid safetensors ({e})") from None
    flat, treedef = jax.tree_util.tree_flatten_with_path(template, is_leaf=is_compressed)
    recs = schema["leaves"]
    if len(recs) != len(flat):
        raise bad(f"{len(recs)} leaves stored, the recipe's model has {len(flat)}")
    used: set[str] = set()

    def tensor(name: str, dtype: str | None = None) -> np.ndarray:
        if name not in arrays:
            raise bad(f"tensor {name!r} is missing")
        a = arrays[name]
        if dtype is not None and a.dtype != np.dtype(dtype):
            raise bad(f"tensor {name!r} has dtype {a.dtype}, expected {dtype}")
        used.add(name)
        return a

    leaves = []
    for i, ((kp, ref), rec) in enumerate(zip(flat, recs, strict=True)):
        path = key_path_str(kp)
        if not isinstance(rec, dict) or rec.get("path") != path:
            raise bad(
                f"leaf {i} is {rec.get('path') if isinstance(rec, dict) else rec!r}, "
                f"the model's is {path!r}"
            )
        ref_shape = tuple(np.shape(ref))
        kind = rec.get("kind")
        if kind == "array":
            a = tensor(str(i), np.dtype(ref.dtype).name)
            if a.shape != ref_shape:
                raise bad(f"leaf {path!r} has shape {a.shape}, the model's is {ref_shape}")
            leaves.append(a)
            continue
        if kind not in ("quantized", "clustered"):
            raise bad(f"leaf {path!r} has unknown kind {kind!r}")
        shape = rec.get("shape")
        if not (isinstance(shape, list) and all(type(d) is int for d in shape)):
            raise bad(f"leaf {path!r} has a malformed shape")
        if tuple(shape) != ref_shape or rec.get("dtype") != np.dtype(ref.dtype).name:
            raise bad(f"leaf {path!r} does not match the model's {ref_shape} {ref.dtype}")
        axis = rec.get("axis")
        if axis is not None and type(axis) is not int:
            raise bad(f"leaf {path!r} has a malformed axis")
        try:
            if kind == "quantized":
                gs, bits = rec.get("group_size"), rec.get("bits")
                if type(bits) is not int or (gs is not None and type(gs) is not int):
                    raise bad(f"leaf {path!r} has malformed bits or group_size")
                if not isinstance(rec.get("scheme"), str):
                    raise bad(f"leaf {path!r} has a malformed scheme")
                leaf = QuantizedArray(
                    qvalue=tensor(f"{i}:qvalue"),
                    scale=tensor(f"{i}:scale"),
                    zero_point=tensor(f"{i}:zero_point"),
                    bits=bits,
                    scheme=rec["scheme"],
                    axis=axis,
                    group_size=gs,
                    shape=tuple(shape),
                    dtype=rec["dtype"],
                )
                validate_quantized_array(leaf)
            else:
                nc, zi = rec.get("n_clusters"), rec.get("zero_index")
                if type(nc) is not int or type(zi) is not bool:
                    raise bad(f"leaf {path!r} has malformed n_clusters or zero_index")
                leaf = ClusteredArray(
                    indices=tensor(f"{i}:indices"),
                    codebook=tensor(f"{i}:codebook"),
                    n_clusters=nc,
                    axis=axis,
                    zero_index=zi,
                    shape=tuple(shape),
                    dtype=rec["dtype"],
                )
                validate_clustered_array(leaf)
        except (ValueError, TypeError) as e:  # project errors subclass these
            if isinstance(e, RunFolderError):
                raise
            raise bad(f"leaf {path!r} is not a valid {kind} array ({e})") from None
        leaves.append(leaf)
    extra = set(arrays) - used
    if extra:
        raise bad(f"unexpected tensors {sorted(extra)[:5]}")
    return jax.tree_util.tree_unflatten(treedef, leaves)


# -- models and data ---------------------------------------------------------------------------
def build_model(spec: TrainConfig, x_shape: tuple, num_classes: int, seed: int):
    """``(apply_fn, params)`` for a ``[teacher]`` / ``[student]`` section's config."""
    from flax import nnx

    from jaxcompress import models

    rngs = nnx.Rngs(seed)
    name = spec.model
    if name == "mlp":
        model = models.MLP(
            in_features=int(np.prod(x_shape)),
            features=tuple(spec.hidden),
            num_classes=num_classes,
            dropout=spec.dropout,
            input_dropout=spec.input_dropout,
            rngs=rngs,
        )
    elif name == "cnn1d" and spec.channels:
        model = models.CNN1D(channels=spec.channels, num_classes=num_classes, rngs=rngs)
    else:
        ctor = {
            "cnn1d": models.CNN1D,
            "mlp1d": models.MLP1D,
            "transformer": models.TinyTransformer,
            "lenet300100": models.LeNet300100,
            "lenet5": models.LeNet5,
        }[name]
        model = ctor(num_classes=num_classes, rngs=rngs)
    return models.functional(model)


_EPOCH_KEYS = {
    "teacher": ("epochs",),
    "student": ("epochs",),
    "distill": ("epochs",),
    "prune": ("epochs",),
    "quantize": ("qat_epochs",),
    "cluster": ("finetune_epochs",),
}


def _adapt_models(sections: dict, dataset: str, old_dataset: str) -> list[str]:
    """Swap MNIST-1D models for their MNIST counterparts (and back) when --dataset changes.

    Moving from MNIST-1D (4,000 training examples) to MNIST (60,000) also divides every epoch
    count by 15 (at least 1), so the study takes about as many optimizer steps as the recipe's.
    """
    swap = {
        ("mnist1d", "cnn1d"): "lenet5",
        ("mnist1d", "transformer"): "lenet5",
        ("mnist1d", "mlp1d"): "lenet300100",
        ("mnist", "lenet5"): "cnn1d",
        ("mnist", "lenet300100"): "mlp1d",
    }
    notes = []
    for sec in ("teacher", "student"):
        if sec in sections and dataset not in MODELS[sections[sec]["model"]]:
            old = sections[sec]["model"]
            src = "mnist1d" if dataset != "mnist1d" else "mnist"
            new = swap.get((src, old))
            if new is None:
                continue
            sections[sec]["model"] = new
            notes.append(f"{sec}.model {old!r} -> {new!r} for dataset {dataset!r}")
            if sections[sec].get("channels"):
                sections[sec]["channels"] = 0  # a cnn1d width; the swapped model has its own
                notes.append(f"{sec}.channels reset (only cnn1d takes it)")
    if old_dataset == "mnist1d" and dataset != "mnist1d" and not sections["study"]["train_limit"]:
        for sec, keys in _EPOCH_KEYS.items():
            for k in keys:
                if sec in sections and sections[sec].get(k):
                    e = sections[sec][k]
                    sections[sec][k] = max(1, round(e / 15))
                    notes.append(f"{sec}.{k} {e} -> {sections[sec][k]} (15x more training data)")
    return notes


def override_dataset(recipe: Recipe, dataset: str | None, data_dir: str | None) -> tuple:
    """The recipe with ``--dataset`` / ``--data-dir`` applied (models adapted); and notes."""
    from jaxcompress.study._recipe import parse_recipe

    raw = recipe.to_dict()
    notes = []
    if dataset is not None and dataset != raw["study"]["dataset"]:
        old = raw["study"]["dataset"]
        raw["study"]["dataset"] = dataset
        notes = _adapt_models(raw, dataset, old)
        notes.insert(0, f"study.dataset -> {dataset!r} (command line)")
    if data_dir is not None:
        raw["study"]["data_dir"] = os.fspath(data_dir)
    if notes or data_dir is not None:
        r = parse_recipe(raw, source=recipe.source)
        return dataclasses.replace(r, text=recipe.text), notes
    return recipe, notes


# -- the study -------------------------------------------------------------------------------------
class Study:
    """One study run over a run folder (see the module docstring).

    Args:
      recipe: a validated :class:`~jaxcompress.study.Recipe`.
      out_dir: the run folder (created; refused if it holds another run or unrelated files).
      progress: progress bars on training loops.
      quiet: no stage log lines on stderr.
    """

    def __init__(
        self,
        recipe: Recipe,
        out_dir: str | os.PathLike,
        *,
        progress: bool = True,
        quiet: bool = False,
    ):
        self.recipe = recipe
        self.out = os.path.abspath(os.fspath(out_dir))
        self.progress = progress
        self.quiet = quiet
        self.created: str | None = None  # set by prepare()
        self.timings: dict[str, float] = {}
        self.resumed: list[str] = []
        self._ds = None
        self._states: dict[str, Any] = {}
        self._templates: dict[str, Any] = {}

    # -- folder -------------------------------------------------------------------------------
    def _p(self, *parts: str) -> str:
        return os.path.join(self.out, *parts)

    def path(self, *parts: str) -> str:
        """A path inside the run folder (``path()`` is the folder)."""
        return self._p(*parts)

    def identity(self) -> dict:
        return {
            "format": "jaxcompress-run",
            "format_version": RUN_FORMAT,
            "name": self.recipe.name,
            "recipe_sha256": _recipe_hash(self.recipe),
            "source": self.recipe.source,
        }

    def prepare(self) -> None:
        """Create the run folder, or check that an existing one holds this same run."""
        ident = self.identity()
        run_json = self._p("run.json")
        if os.path.isdir(self.out) and os.listdir(self.out):
            if not os.path.isfile(run_json):
                raise RunFolderError(
                    f"output folder {self.out!r} is not empty and holds no jaxcompress run; "
                    "refusing to write into it (choose another --out)"
                )
            try:
                with open(run_json, encoding="utf-8") as f:
                    old = json.load(f)
            except (OSError, ValueError) as e:
                raise RunFolderError(
                    f"output folder {self.out!r}: unreadable run.json ({e}); refusing to write"
                ) from None
            if old.get("recipe_sha256") != ident["recipe_sha256"]:
                raise RunFolderError(
                    f"output folder {self.out!r} holds another run (recipe "
                    f"{old.get('name')!r} from {old.get('source')!r}, sha256 "
                    f"{str(old.get('recipe_sha256'))[:12]}); it is never overwritten: choose "
                    "another --out or delete the folder"
                )
            self.created = old.get("created")
            return
        os.makedirs(self._p("stages"), exist_ok=True)
        self.created = _now()
        atomic_write(run_json, _json(dict(ident, created=self.created)))
        atomic_write(self._p("recipe.toml"), self.recipe.to_toml())
        if self.recipe.text:
            atomic_write(self._p("recipe.original.toml"), self.recipe.text)

    # -- stage machinery ----------------------------------------------------------------------
    def done(self, name: str) -> bool:
        return os.path.isfile(self._p("stages", f"{name}.json"))

    def stage(self, name: str, fn) -> StageOutput:
        """Run ``fn() -> StageOutput(state, metrics)`` unless the stage's marker exists (then the
        stored output is read back); returns the output."""
        marker = self._p("stages", f"{name}.json")
        blob = self._p("stages", f"{name}.safetensors")
        if os.path.isfile(marker):
            with open(marker, encoding="utf-8") as f:
                m = json.load(f)
            state = None
            if m.get("has_state"):
                state = self._load_state(name, m)
                if state is _CORRUPT:
                    self._say(f"stage {name}: saved state failed its checksum, running it again")
                    os.remove(marker)
                    return self.stage(name, fn)
                self._states[name] = state
            self.timings[name] = m["seconds"]
            self.resumed.append(name)
            self._say(f"stage {name}: already finished ({m['seconds']:.1f} s), resumed")
            return StageOutput(state, m["metrics"])
        try:  # from the log line on, Ctrl-C names this stage
            self._say(f"stage {name}: running")
            t0 = time.perf_counter()
            state, metrics = fn()
        except KeyboardInterrupt as e:  # Ctrl-C: the CLI names the stage (exit 130)
            raise e if isinstance(e, StageInterrupted) else StageInterrupted(name) from None
        seconds = time.perf_counter() - t0
        state_info = None
        if state is not None:
            payload, schema = encode_state(_to_numpy(state))
            state_info = dict(
                schema, file=os.path.basename(blob), sha256=hashlib.sha256(payload).hexdigest()
            )
            atomic_write(blob, payload)
        atomic_write(
            marker,
            _json(
                {
                    "stage": name,
                    "seconds": seconds,
                    "finished": _now(),
                    "has_state": state is not None,
                    "state": state_info,
                    "metrics": metrics,
                }
            ),
        )
        if state is not None:
            self._states[name] = state
        self.timings[name] = seconds
        self._say(f"stage {name}: done in {seconds:.1f} s")
        # the metrics as the marker holds them (JSON), so a fresh and a resumed run read the same
        return StageOutput(state, json.loads(_json(metrics)))

    checkpoint = stage  # the name stages use for their own sub-stages (`StageContext`)

    def _say(self, msg: str) -> None:
        if not self.quiet:
            _log(msg)

    say = _say

    # -- data ---------------------------------------------------------------------------------
    @property
    def data(self):
        if self._ds is None:
            from jaxcompress.data import load_dataset

            st = self.recipe.config("study")
            if st.dataset in ("mnist", "fashion_mnist") and not st.data_dir:
                raise RecipeError(
                    f"recipe {self.recipe.source}: study.data_dir: dataset {st.dataset!r} "
                    "needs the IDX folder (set study.data_dir or pass --data-dir DIR)"
                )
            ds = load_dataset(st.dataset, data_dir=st.data_dir)
            if st.train_limit or st.test_limit:
                ntr = st.train_limit or len(ds.x_train)
                nte = st.test_limit or len(ds.x_test)
                ds = dataclasses.replace(
                    ds,
                    x_train=ds.x_train[:ntr],
                    y_train=ds.y_train[:ntr],
                    x_test=ds.x_test[:nte],
                    y_test=ds.y_test[:nte],
                )
            self._ds = ds
        return self._ds

    def key(self, name: str):
        import jax

        seed = self.recipe.config("study").seed
        return jax.random.fold_in(jax.random.key(seed), sum(map(ord, name)))

    def model(self, sec: str):
        """``(apply_fn, initial params)`` of ``[teacher]`` or ``[student]``."""
        ds = self.data
        seed = self.recipe.config("study").seed + (1000 if sec == "teacher" else 0)
        return build_model(self.recipe.config(sec), ds.x_train.shape[1:], ds.num_classes, seed)

    def evaluate(self, apply_fn, tree) -> dict:
        from jaxcompress.quantization import dequantize_params
        from jaxcompress.training import evaluate

        ds = self.data
        acc = float(evaluate(apply_fn, dequantize_params(tree), ds.x_test, ds.y_test))
        n = len(ds.y_test)
        return {
            "accuracy": acc,
            "error_pct": 100 * (1 - acc),
            "errors": int(round((1 - acc) * n)),
            "n_test": n,
        }

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> dict:
        """Run (or resume) every stage of the recipe's plan and write the report; returns the
        report dict."""
        t_start = time.perf_counter()
        self.prepare()
        r = self.recipe
        self._say(f"study {r.name!r} -> {self.out}")
        outputs: dict[str, StageOutput] = {}
        for stage, sources in plan(r):
            inputs = {decl: outputs[src] for decl, src in sources.items()}
            if not stage.checkpoint:
                outputs[stage.name] = stage.run(self, r, inputs)
                continue
            if stage.announce and not self.done(stage.name):
                self._say(stage.announce)
            outputs[stage.name] = self.stage(
                stage.name, lambda stage=stage, inputs=inputs: stage.run(self, r, inputs)
            )
        total = time.perf_counter() - t_start
        run_info = _report.RunInfo(
            created=self.created,
            timings=dict(self.timings),
            resumed=list(self.resumed),
            total_seconds=total,
        )
        metrics = {name: out.metrics for name, out in outputs.items()}
        rep = _report.build_report(r, model_stage_chain(r), metrics, run_info)
        atomic_write(self._p("report.json"), _json(rep))
        try:
            rep["plots"] = _plots.make_plots(rep, self._p("plots"))
        except ImportError as e:  # matplotlib missing: the report still lands
            rep["plots"] = []
            rep["plots_error"] = f"plots skipped: {e}"
        atomic_write(self._p("report.json"), _json(rep))
        atomic_write(self._p("report.md"), _report.to_markdown(rep))
        self._say(f"report: {self._p('report.md')}")
        return rep

    def state(self, name: str):
        if name not in self._states:
            with open(self._p("stages", f"{name}.json"), encoding="utf-8") as f:
                marker = json.load(f)
            state = self._load_state(name, marker)
            if state is _CORRUPT:
                raise RunFolderError(
                    f"{self._p('stages', name + '.safetensors')} does not match the sha256 in its "
                    "stage marker; delete the marker to run the stage again"
                )
            self._states[name] = state
        return self._states[name]

    def _load_state(self, name: str, marker: dict):
        # Data only: the arrays come from the safetensors parser, the schema is JSON checked
        # field by field, and the tree structure comes from the recipe's model, never from the
        # folder (see `decode_state`). A state whose bytes do not match the marker's sha256
        # (truncated, edited) is reported as corrupt and recomputed.
        info = marker.get("state")
        if not isinstance(info, dict):
            legacy = os.path.exists(self._p("stages", f"{name}.pkl")) or "state_sha256" in marker
            what = "a pickle written by an earlier jaxcompress" if legacy else "missing"
            raise RunFolderError(
                f"run folder {self.out!r}: the saved state of stage {name!r} is {what}. Stage "
                "states are no longer unpickled (loading a pickle can run code from the folder). "
                "Rerun the study: choose a new --out folder, or delete this folder's stages/ "
                "directory to recompute every stage here"
            )
        blob = self._p("stages", f"{name}.safetensors")
        try:
            with open(blob, "rb") as f:
                payload = f.read()
        except OSError:
            return _CORRUPT
        if hashlib.sha256(payload).hexdigest() != info.get("sha256"):
            return _CORRUPT
        sec = "teacher" if name == "teacher" else "student"
        if sec not in self._templates:
            self._templates[sec] = self.model(sec)[1]
        return decode_state(payload, info, self._templates[sec], where=f"{blob}")


def _recipe_hash(recipe: Recipe) -> str:
    sec = recipe.to_dict()
    sec["study"] = dict(sec["study"], data_dir=None)  # moving the data does not change the run
    return hashlib.sha256(json.dumps(sec, sort_keys=True, default=str).encode()).hexdigest()


def run_study(
    recipe: Recipe | str | os.PathLike | None = None,
    out_dir=None,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    progress: bool = True,
    quiet: bool = False,
) -> dict:
    """Run a study from a recipe (a :class:`Recipe`, a TOML path, or ``None`` for the default).

    Args:
      recipe: the recipe; ``None`` is the embedded default study on MNIST-1D.
      out_dir: the run folder; default ``runs/<recipe name>`` (``-<dataset>`` when overridden).
      dataset, data_dir: override ``study.dataset`` / ``study.data_dir`` (models adapted when the
        recipe's do not fit the new dataset).

    Returns:
      The report dict (also written as ``report.json``).

    Raises:
      RecipeError: bad recipe; RunFolderError: the folder holds another run.
    """
    from jaxcompress.study._recipe import load_recipe

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    recipe, notes = override_dataset(recipe, dataset, data_dir)
    if out_dir is None:
        suffix = f"-{dataset}" if dataset else ""
        out_dir = os.path.join("runs", f"{recipe.name}{suffix}")
    for n in notes:
        if not quiet:
            _log(n)
    study = Study(recipe, out_dir, progress=progress, quiet=quiet)
    return study.run()
