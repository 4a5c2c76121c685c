"""Edge runtime vs LiteRT (XNNPACK) vs ONNX Runtime: whole models at batch 1, one thread (issue 13).

Models: LeNet-300-100 and LeNet-5 (trained briefly on real MNIST read from ``--data-dir``) and the
four MLPerf Tiny reference models of ``jaxcompress.models`` (DS-CNN, MobileNetV1 0.25 VWW, ResNet-8,
FC AutoEncoder) with *random* weights (He/Glorot init as in their Keras files, batch-norm
statistics drawn at random so folding is not an identity; latency does not depend on the values).

Variants, each applied to every ``kernel`` leaf: dense fp32; pruned 90% unstructured
(``pruning.magnitude_masks`` + ``apply_masks``, no fine-tuning); 2:4 (``pruning.nm_masks``, kernels
whose input-channel axis is divisible by 4); int8 weight-only (``quantize_params(bits=8)``); int4
per output channel; int4 groups of 32 along K (per channel where K % 32 != 0); 16 clusters
(``clustering.cluster(bits=4)``); pruned 90% + int8.

Implementations, on the same weights:

- ours: ``jaxcompress.export.save`` -> ``jaxcompress_kernels.runtime.load(num_threads=1)`` -> ``run``.
- ORT: the project's ONNX export of that artifact (``jaxcompress.export.to_onnx``, pinned session
  options ``ORT_OPTIONS``, ``intra_op_num_threads=1``, ``inter_op_num_threads=1``).
- LiteRT fp32: a tf.keras model mirroring the architecture with the same float weights copied in
  (the dequantized / clustered / pruned values for compressed variants), converted with
  ``tf.lite.TFLiteConverter`` and run by ``ai_edge_litert`` with ``num_threads=1`` and its default
  delegate (XNNPACK, ``OpResolverType.AUTO``).
- LiteRT dyn-int8 (int8 variants only): the same Keras model converted with
  ``optimizations=[tf.lite.Optimize.DEFAULT]`` and no representative data, i.e. LiteRT's
  dynamic-range (weight-only int8) quantization.

Full-integer rows (``--variants int8_full``; issue 14): the model with batch norm folded into the
preceding conv / dense kernel (what LiteRT's converter does; our integer export has no batch-norm
rule) goes through ``quantization.ptq(..., activation_bits=8)`` (int8 symmetric per-channel
weights, 8-bit affine activation ranges observed on calibration batches: MNIST training images
for the LeNets, random normal inputs otherwise) and ``export.save(..., integer=True)``. Timed in the
same round robin: our full-integer runtime, our float runtime on the same (dequantized) weights,
and LiteRT's full-integer conversion of those weights (``optimizations=[Optimize.DEFAULT]``, the
same calibration samples as ``representative_dataset``, ``supported_ops=[TFLITE_BUILTINS_INT8]``,
``inference_input_type = inference_output_type = tf.float32``: float in and out, the same
contract as our integer graphs, whose quantize / dequantize nodes are timed too). Our output is
checked bit for bit against the JAX integer reference (``quantization.integer_reference``); for the
trained LeNets the test-set accuracy of the float model, our integer runtime and LiteRT's integer
model are reported.

Timing: ``--rounds`` rounds; in each round every implementation of a cell runs a block of calls
(the order rotates per round), each call timed alone; p50 and p90 over all calls of all rounds,
after 10 warm-up calls. Also per model: ``runtime.load`` time (median of 5), graph nodes, and the
``dispatch_overhead`` (per-node step dispatch, from a chain of cheap nodes). Every implementation's output is compared with ours (max |diff| /
max |ours|) and ours with JAX (dequantized weights).

Usage (from the repository root, under the benchmark lock; the LiteRT anchors are installed by
hand, never by the project's extras):
    pip install tensorflow==2.21.0 tf-keras==2.21.0 ai-edge-litert==2.3.0
    TF_USE_LEGACY_KERAS=1 flock /tmp/jaxcompress-bench.lock python benchmarks/bench_runtime.py \
        [--models lenet300,lenet5,ds_cnn,mobilenet_v1_025,resnet8,fc_autoencoder] \
        [--variants dense,pruned90,nm24,int8,int4,int4g32,cluster16,pruned90_int8,int8_full] \
        [--rounds 3] [--quick] [--data-dir ../shared/data/mnist] [--out FILE]
Without tensorflow / ai_edge_litert the script runs without the LiteRT columns and says so.
Writes benchmarks/results/bench_runtime.md (``bench_runtime_quick.md`` with --quick).
"""

from __future__ import annotations

import os

# One thread everywhere; set before NumPy / TensorFlow start their pools. Machine-specific OpenBLAS
# overrides are dropped so OpenBLAS picks its kernel for this CPU (the table names it).
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_DROPPED_ENV = {
    k: os.environ.pop(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ
}

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from importlib.metadata import PackageNotFoundError, version  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from jaxcompress import clustering, models, pruning, quantization  # noqa: E402
from jaxcompress.export import onnx_session, reference_output, save, to_onnx  # noqa: E402
from jaxcompress_kernels import runtime  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------------------------
# models and variants

MODELS = {
    # key: (display name, constructor, input shape, trained on MNIST?)
    "lenet300": ("LeNet-300-100", models.LeNet300100, (28, 28, 1), True),
    "lenet5": ("LeNet-5", models.LeNet5, (28, 28, 1), True),
    "ds_cnn": ("DS-CNN (KWS)", models.DSCNN, (49, 10, 1), False),
    "mobilenet_v1_025": ("MobileNetV1 0.25 (VWW)", models.MobileNetV1VWW, (96, 96, 3), False),
    "resnet8": ("ResNet-8 (CIFAR-10)", models.ResNet8, (32, 32, 3), False),
    "fc_autoencoder": ("FC AutoEncoder (AD)", models.FCAutoEncoder, (640,), False),
}


def _nm_where(path, leaf):
    return path.endswith("kernel") and leaf.ndim >= 2 and leaf.shape[-2] % 4 == 0


def _pruned(p):
    return pruning.apply_masks(p, pruning.magnitude_masks(p, 0.9, where=r"kernel"))


VARIANTS: dict[str, tuple[str, Callable]] = {
    "dense": ("dense fp32", lambda p: p),
    "pruned90": ("pruned 90%", _pruned),
    "nm24": ("2:4", lambda p: pruning.apply_masks(p, pruning.nm_masks(p, 2, 4, where=_nm_where))),
    "int8": ("int8 weight-only", lambda p: quantization.quantize_params(p, bits=8, where="kernel")),
    "int4": ("int4 per-channel", lambda p: quantization.quantize_params(p, bits=4, where="kernel")),
    "int4g32": (
        "int4 g32",
        lambda p: quantization.quantize_params(
            p, bits=4, group_size=32, where="kernel", group_fallback="per_channel"
        ),
    ),
    "cluster16": ("16 clusters (4-bit)", lambda p: clustering.cluster(p, bits=4, where="kernel")),
    "pruned90_int8": (
        "pruned 90% + int8",
        lambda p: quantization.quantize_params(_pruned(p), bits=8, where="kernel"),
    ),
}
INT8_VARIANTS = {"int8", "pruned90_int8"}
FULL_INT = "int8_full"  # the full-integer rows (own cell function: needs calibration data)
ALL_VARIANTS = [*VARIANTS, FULL_INT]


def _randomize_batch_stats(model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.BatchNorm):
            n = node.mean.shape[0]
            node.mean.set_value(np.asarray(rng.normal(0, 0.2, n), np.float32))
            node.var.set_value(np.asarray(rng.uniform(0.5, 1.5, n), np.float32))
            node.scale.set_value(np.asarray(rng.uniform(0.7, 1.3, n), np.float32))
            node.bias.set_value(np.asarray(rng.normal(0, 0.1, n), np.float32))


def _train(apply_fn, params, ds, *, epochs, n):
    from jaxcompress.training import fit

    data = (ds.x_train[:n], ds.y_train[:n]) if n else ds
    return fit(
        apply_fn,
        params,
        data,
        optimizer=optax.adam(1e-3),
        epochs=epochs,
        batch_size=100,
        key=jax.random.key(0),
        progress=False,
    ).params


def _accuracy(model, params, x, y) -> float:
    pred = np.concatenate(
        [reference_output(model, params, x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)]
    )
    return float(np.mean(pred == y))


def dense_module(model, params):
    """The nnx module with `params` dequantized (float values of every compressed leaf)."""
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    return nnx.merge(graphdef, quantization.dequantize_params(params), rest, copy=True)


# ----------------------------------------------------------------------------------------------
# the tf.keras mirrors (same layers, same weights) for LiteRT


class KerasMirror:
    """Builds a tf.keras model layer for layer from one of our nnx modules, weights copied in."""

    def __init__(self, tf):
        self.tf = tf
        self.L = tf.keras.layers

    @staticmethod
    def _v(var) -> np.ndarray:
        return np.asarray(var[...], np.float32)

    def conv(self, x, conv: nnx.Conv):
        w, b = self._v(conv.kernel), self._v(conv.bias)
        pad = conv.padding.lower() if isinstance(conv.padding, str) else None
        if pad not in ("same", "valid"):
            raise ValueError(f"mirror: conv padding {conv.padding!r} has no Keras equivalent")
        strides = conv.strides if conv.strides is not None else 1
        if (
            conv.feature_group_count > 1
        ):  # depthwise, multiplier 1: (kh, kw, 1, C) -> (kh, kw, C, 1)
            layer = self.L.DepthwiseConv2D(w.shape[:2], strides=strides, padding=pad)
            y = layer(x)
            layer.set_weights([np.transpose(w, (0, 1, 3, 2)), b])
        else:
            layer = self.L.Conv2D(w.shape[-1], w.shape[:2], strides=strides, padding=pad)
            y = layer(x)
            layer.set_weights([w, b])
        return y

    def bn(self, x, bn: nnx.BatchNorm):
        if not isinstance(bn, nnx.BatchNorm):  # folded into the conv / dense before
            return x
        layer = self.L.BatchNormalization(epsilon=bn.epsilon)
        y = layer(x, training=False)
        layer.set_weights([self._v(bn.scale), self._v(bn.bias), self._v(bn.mean), self._v(bn.var)])
        return y

    def dense(self, x, lin: nnx.Linear, relu=False):
        w = self._v(lin.kernel)
        layer = self.L.Dense(w.shape[1], activation="relu" if relu else None)
        y = layer(x)
        layer.set_weights([w, self._v(lin.bias)])
        return y

    def conv_bn(self, x, cb):
        y = self.bn(self.conv(x, cb.conv), cb.bn)
        return self.L.ReLU()(y) if cb.relu else y

    def build(self, key: str, m, input_shape):
        L = self.L
        inp = L.Input(shape=input_shape, batch_size=1)
        x = inp
        if key == "lenet300":
            x = L.Flatten()(x)
            for lin in m.hidden:
                x = self.dense(x, lin, relu=True)
            x = self.dense(x, m.out)
        elif key == "lenet5":
            x = L.MaxPooling2D(2)(self.conv(x, m.conv1))
            x = L.MaxPooling2D(2)(self.conv(x, m.conv2))
            x = self.dense(L.Flatten()(x), m.fc1, relu=True)
            x = self.dense(x, m.fc2)
        elif key in ("ds_cnn", "mobilenet_v1_025"):
            x = self.conv_bn(x, m.conv1)
            for dw, pw in m.blocks:
                x = self.conv_bn(self.conv_bn(x, dw), pw)
            pool = m.pool if key == "ds_cnn" else tuple(x.shape[1:3])
            x = L.Flatten()(L.AveragePooling2D(pool_size=pool)(x))
            x = self.dense(x, m.out)
        elif key == "resnet8":
            x = self.conv_bn(x, m.conv1)
            for st in m.stacks:
                y = self.conv_bn(self.conv_bn(x, st.a), st.b)
                s = x if st.shortcut is None else self.conv(x, st.shortcut)
                x = L.ReLU()(L.Add()([s, y]))
            x = L.Flatten()(L.AveragePooling2D(pool_size=tuple(x.shape[1:3]))(x))
            x = self.dense(x, m.out)
        elif key == "fc_autoencoder":
            for lin, bn in zip(m.dense, m.bn, strict=True):
                x = L.ReLU()(self.bn(self.dense(x, lin), bn))
            x = self.dense(x, m.out)
        else:
            raise ValueError(f"no Keras mirror for {key!r}")
        return self.tf.keras.Model(inp, x)

    def tflite(self, keras_model, *, dynamic_int8: bool = False, representative=None) -> bytes:
        """fp32; dynamic-range int8 (`dynamic_int8`); or full-integer int8 (`representative`:
        calibration samples ``(n, ...)``, fed one at a time; int8-only builtins, float32 input
        and output so the model is called exactly as the float one and as ours)."""
        tf = self.tf
        conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
        if dynamic_int8 or representative is not None:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if representative is not None:
            samples = np.asarray(representative, np.float32)

            def gen():
                for i in range(samples.shape[0]):
                    yield [samples[i : i + 1]]

            conv.representative_dataset = gen
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.float32
            conv.inference_output_type = tf.float32
        return conv.convert()


def litert_runner(interpreter_cls, data: bytes, x: np.ndarray):
    it = interpreter_cls(model_content=data, num_threads=1)
    it.allocate_tensors()
    i = it.get_input_details()[0]["index"]
    o = it.get_output_details()[0]["index"]

    def run():
        it.set_tensor(i, x)
        it.invoke()
        return it.get_tensor(o)

    try:
        n_ops = len(it._get_ops_details())
    except Exception:  # noqa: BLE001 - a private helper; the count is informative only
        n_ops = None
    return run, n_ops


# ----------------------------------------------------------------------------------------------
# timing


def round_robin(impls: dict[str, Callable], *, rounds: int, budget_s: float) -> dict:
    """``{name: (p50_us, p90_us, calls)}``: interleaved blocks of calls, order rotated per round."""
    names = list(impls)
    for f in impls.values():
        for _ in range(10):
            f()
    reps = {}
    for k, f in impls.items():  # calls per block: about `budget_s` per implementation
        t0 = time.perf_counter()
        for _ in range(5):
            f()
        per = (time.perf_counter() - t0) / 5
        reps[k] = int(min(max(budget_s / max(per, 1e-7), 20), 2000))
    samples = {k: [] for k in names}
    clock = time.perf_counter
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for k in order:
            f, ts = impls[k], samples[k]
            for _ in range(reps[k]):
                t0 = clock()
                f()
                ts.append(clock() - t0)
    out = {}
    for k, ts in samples.items():
        a = np.asarray(ts) * 1e6
        out[k] = (float(np.median(a)), float(np.percentile(a, 90)), len(a))
    return out


def dispatch_overhead(folder, *, nodes: int = 200, reps: int = 2000) -> dict:
    """Per-node dispatch overhead of our runtime's step loop, in microseconds per node.

    A chain of `nodes` ``neg`` nodes on a (1, 4) float32 value is written as an artifact and
    loaded (the plan binds each to ``np.negative(x, out=arena view)``); the same ufunc calls on
    the same views, run in a plain Python loop, are the kernel time. Overhead per node =
    (p50 of ``rt.run`` - p50 of the bare loop) / nodes: the step closure, its timer and the loop.
    Also reported: the fixed per-run cost (input check, copy-in, outputs) from a 1-node chain.
    """
    from jaxcompress_kernels.format.container import write_artifact

    def chain(n):
        ns = []
        prev = "input"
        for i in range(n):
            ns.append({"op": "neg", "in": [prev], "out": f"v{i}"})
            prev = f"v{i}"
        path = Path(folder) / f"chain{n}.jcx"
        x = np.ones((1, 4), np.float32)
        graph = {
            "inputs": ["input"],
            "outputs": [prev],
            "nodes": ns,
            "batch": "symbolic",
            "input_shapes": [[4]],
            "input_dtypes": ["float32"],
        }
        manifest = {
            "graph": graph,
            "tensors": {},
            "sample": {"input": "s:in", "output": "s:out"},
        }
        write_artifact(path, manifest, {"s:in": x, "s:out": x * (-1) ** n})
        return runtime.load(path, num_threads=1), x

    def p50(f):
        for _ in range(50):
            f()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts)) * 1e6

    rt, x = chain(nodes)
    bufs = [np.ones((1, 4), np.float32) for _ in range(2)]
    neg = np.negative

    def bare():
        a, b = bufs
        for _ in range(nodes // 2):
            neg(a, out=b)
            neg(b, out=a)

    t_rt = p50(lambda: rt.run(x))
    t_bare = p50(bare)
    rt1, _ = chain(1)
    t1 = p50(lambda: rt1.run(x))
    return {
        "nodes": nodes,
        "run_us": t_rt,
        "bare_ufunc_loop_us": t_bare,
        "us_per_node": (t_rt - t_bare) / nodes,
        "one_node_run_us": t1,
    }


def _rel(ref, y) -> float:
    ref, y = np.asarray(ref, np.float64), np.asarray(y, np.float64)
    if ref.shape != y.shape:
        return float("nan")
    scale = float(np.max(np.abs(ref))) or 1.0
    return float(np.max(np.abs(ref - y))) / scale


# ----------------------------------------------------------------------------------------------
# one cell


def run_cell(key, vkey, model, params, x, folder, args, lite) -> dict:
    vname, fn = VARIANTS[vkey]
    comp = fn(params)
    row = {"model": key, "variant": vkey, "variant_name": vname, "rel": {}}
    impls: dict[str, Callable] = {}
    path = Path(folder) / f"{key}-{vkey}.jcx"
    y_ref = reference_output(model, comp, x)
    y_ours = y_dyn = None
    try:
        save(path, model, comp, x)
    except Exception as e:  # noqa: BLE001 - reported in the table
        row["export_error"] = f"{type(e).__name__}: {e}"
    else:
        loads = []
        for _ in range(5):
            t0 = time.perf_counter()
            rt = runtime.load(path, num_threads=1)
            loads.append(time.perf_counter() - t0)
        row["load_ms"] = 1e3 * float(np.median(loads))
        row["nodes"] = len(rt.nodes)
        row["kernels"] = sorted({p.split("(")[0] for p in rt.plan.values()})
        y_ours = np.asarray(rt.run(x))
        row["rel"]["ours_vs_jax"] = _rel(y_ref, y_ours)
        impls["ours"] = lambda: rt.run(x)
        row["steps"] = len(rt.plan.steps)
        if vkey in INT8_VARIANTS:  # our dynamic-range int8 mode: LiteRT dyn-int8's counterpart
            rt_dyn = runtime.load(path, num_threads=1, activations="dynamic_int8")
            y_dyn = np.asarray(rt_dyn.run(x))
            row["rel"]["ours_dyn_vs_jax"] = _rel(y_ref, y_dyn)
            row["kernels_dyn"] = sorted({p.split("(")[0] for p in rt_dyn.plan.values()})
            row["steps_dyn"] = len(rt_dyn.plan.steps)
            impls["ours_dyn"] = lambda: rt_dyn.run(x)
        sess = onnx_session(to_onnx(path, batch_size=1), num_threads=1)
        row["rel"]["ort_vs_ours"] = _rel(y_ours, sess.run(None, {"input": x})[0])
        impls["ort"] = lambda: sess.run(None, {"input": x})
    base = y_ours if y_ours is not None else y_ref
    if lite is not None:
        mirror, interpreter_cls = lite
        km = mirror.build(key, dense_module(model, comp), x.shape[1:])
        row["keras_params"] = int(km.count_params())
        run, n_ops = litert_runner(interpreter_cls, mirror.tflite(km), x)
        row["litert_ops"] = n_ops
        row["rel"]["litert_vs_ours" if y_ours is not None else "litert_vs_jax"] = _rel(base, run())
        impls["litert"] = run
        if vkey in INT8_VARIANTS:
            run8, _ = litert_runner(interpreter_cls, mirror.tflite(km, dynamic_int8=True), x)
            y8 = run8()
            row["rel"]["litert_dyn_vs_ours" if y_ours is not None else "litert_dyn_vs_jax"] = _rel(
                base, y8
            )
            impls["litert_dyn"] = run8
            if y_dyn is not None:
                row["rel"]["litert_dyn_vs_ours_dyn"] = _rel(y_dyn, y8)
    row["times"] = round_robin(impls, rounds=args.rounds, budget_s=args.budget)
    return row


class _Identity(nnx.Module):
    """Stands in for a batch norm folded into the preceding kernel."""

    def __call__(self, x, use_running_average=None):
        del use_running_average
        return x


def _fold_into(lin, bn) -> None:
    s = np.asarray(bn.scale[...], np.float64) / np.sqrt(
        np.asarray(bn.var[...], np.float64) + bn.epsilon
    )
    k = np.asarray(lin.kernel[...], np.float64) * s
    b = (np.asarray(lin.bias[...], np.float64) - np.asarray(bn.mean[...], np.float64)) * s
    lin.kernel.set_value(np.asarray(k, np.float32))
    lin.bias.set_value(np.asarray(b + np.asarray(bn.bias[...], np.float64), np.float32))


def fold_batch_norm(module):
    """A copy of `module` with every inference batch norm folded into the conv / dense before it
    (``W' = W * g / sqrt(var + eps)``, ``b' = (b - mean) g / sqrt(var + eps) + beta``) and
    replaced by an identity: the float function is unchanged up to rounding."""
    m = nnx.clone(module)
    for _, node in list(nnx.iter_graph(m)):
        if isinstance(getattr(node, "bn", None), nnx.BatchNorm) and hasattr(node, "conv"):
            _fold_into(node.conv, node.bn)
            node.bn = _Identity()
        elif isinstance(node, models.FCAutoEncoder):
            for lin, bn in zip(node.dense, node.bn, strict=True):
                _fold_into(lin, bn)
            node.bn = nnx.List([_Identity() for _ in node.bn])
    return m


def _calibration(key, ds, shape, n=256):
    """Calibration samples: MNIST training images for the LeNets, random normal otherwise."""
    if MODELS[key][3]:
        return np.ascontiguousarray(ds.x_train[:n], np.float32)
    return np.random.default_rng(1).standard_normal((n, *shape)).astype(np.float32)


def _batched_accuracy(fn, x, y, bs=1000) -> float:
    pred = np.concatenate([np.asarray(fn(x[i : i + bs])).argmax(-1) for i in range(0, len(x), bs)])
    return float(np.mean(pred == y))


def run_int_cell(key, model, params, x, folder, args, lite, ds) -> dict:
    """The full-integer row of one model (see the module docstring)."""
    from jaxcompress.quantization import integer_reference

    row = {"model": key, "variant": FULL_INT, "variant_name": "full-integer int8", "rel": {}}
    folded = fold_batch_norm(dense_module(model, params))
    apply_fn, fparams = models.functional(folded)
    cal = _calibration(key, ds, x.shape[1:])
    batches = np.array_split(cal, 4)
    r = quantization.ptq(apply_fn, fparams, batches, activation_bits=8)
    impls: dict[str, Callable] = {}
    p_int = Path(folder) / f"{key}-{FULL_INT}.jcx"
    try:
        save(p_int, r.apply_fn, r.params, x, integer=True, calibration_batches=batches)
    except Exception as e:  # noqa: BLE001 - reported in the table
        row["export_error"] = f"{type(e).__name__}: {e}"
        return row
    rt = runtime.load(p_int, num_threads=1)
    row["nodes"] = len(rt.nodes)
    row["steps"] = len(rt.plan.steps)
    steps = rt.plan.steps  # by step label: fused nodes say "fused into step N"
    row["kernels"] = sorted(
        {
            steps[n.step][1].split("(")[0]
            for n in rt.plan.nodes
            if n.op[0] == "q" and n.step is not None
        }
    )
    row["float_nodes"] = list(rt.plan.float_nodes)
    y_int = np.asarray(rt.run(x))
    ref = integer_reference(p_int)
    row["exact"] = bool(np.array_equal(y_int, np.asarray(ref(x))))
    row["rel"]["int_vs_fakequant"] = _rel(np.asarray(r.apply_fn(r.params, x)), y_int)
    impls["ours_int"] = lambda: rt.run(x)
    # our float runtime on the same (dequantized) weights
    deq = dense_module(folded, r.params)
    p_f = Path(folder) / f"{key}-{FULL_INT}-f32.jcx"
    save(p_f, *models.functional(deq), x)
    rt_f = runtime.load(p_f, num_threads=1)
    row["rel"]["int_vs_ours_f32"] = _rel(np.asarray(rt_f.run(x)), y_int)
    impls["ours_f32"] = lambda: rt_f.run(x)
    run8 = None
    if lite is not None:
        mirror, interpreter_cls = lite
        km = mirror.build(key, deq, x.shape[1:])
        run8, n_ops = litert_runner(interpreter_cls, mirror.tflite(km, representative=cal), x)
        row["litert_ops"] = n_ops
        row["rel"]["litert_int_vs_ours_int"] = _rel(y_int, run8())
        impls["litert_int"] = run8
    if MODELS[key][3] and ds is not None:  # trained LeNets: test-set accuracy
        xt, yt = np.asarray(ds.x_test, np.float32), np.asarray(ds.y_test)
        row["acc"] = {
            "float": _batched_accuracy(lambda b: rt_f.run(b), xt, yt),
            "ours_int": _batched_accuracy(lambda b: rt.run(b), xt, yt),
        }
        if run8 is not None:
            it = interpreter_cls(model_content=mirror.tflite(km, representative=cal), num_threads=1)
            it.allocate_tensors()
            i_in, i_out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
            hits = 0
            for i in range(len(xt)):
                it.set_tensor(i_in, xt[i : i + 1])
                it.invoke()
                hits += int(it.get_tensor(i_out).argmax() == yt[i])
            row["acc"]["litert_int"] = hits / len(xt)
    row["times"] = round_robin(impls, rounds=args.rounds, budget_s=args.budget)
    return row


def _fmt_t(row, k) -> str:
    t = row["times"].get(k)
    return f"{t[0]:.0f} / {t[1]:.0f}" if t else "—"


def _print_row(row) -> None:
    ts = " ".join(f"{k} {v[0]:.1f}us" for k, v in row.get("times", {}).items())
    rel = " ".join(f"{k} {v:.1e}" for k, v in row["rel"].items())
    err = f"  EXPORT FAILS: {row['export_error']}" if "export_error" in row else ""
    print(f"{row['model']:17s} {row['variant_name']:22s} {ts}  | {rel}{err}", flush=True)


# ----------------------------------------------------------------------------------------------
# machine and results


def _cpu() -> tuple[str, str]:
    from jaxcompress_kernels.machine import cpu_flags, cpu_model

    have = cpu_flags()
    keep = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl")
    keep += ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8")
    return cpu_model(), " ".join(f for f in keep if f in have)


def _ver(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _blas() -> str:
    try:
        import threadpoolctl
    except ImportError:
        return "unknown (threadpoolctl missing)"
    out = []
    for info in threadpoolctl.threadpool_info():
        if info.get("user_api") == "blas":
            out.append(
                f"{info.get('internal_api')} {info.get('version')} (kernel "
                f"{info.get('architecture')}, {info.get('num_threads')} thread(s))"
            )
    return "; ".join(out) or "none found"


def _ratios(t) -> dict:
    """Named p50 ratios of one row: exact_lite = ours exact / LiteRT fp32, dyn_litedyn = ours
    dyn-int8 / LiteRT dyn-int8, best_best = min(ours) / min(LiteRT), exact_ort = ours exact /
    ORT."""
    p = {k: v[0] for k, v in t.items()}
    out = {}
    if "ours" in p and "litert" in p:
        out["exact_lite"] = p["ours"] / p["litert"]
    if "ours_dyn" in p and "litert_dyn" in p:
        out["dyn_litedyn"] = p["ours_dyn"] / p["litert_dyn"]
    ours = [p[k] for k in ("ours", "ours_dyn") if k in p]
    lite = [p[k] for k in ("litert", "litert_dyn") if k in p]
    if ours and lite:
        out["best_best"] = min(ours) / min(lite)
    if "ours" in p and "ort" in p:
        out["exact_ort"] = p["ours"] / p["ort"]
    return out


def _targets(rows) -> list[str]:
    """The issue's done-when criteria, read off this run's rows."""
    rs = [(MODELS[r["model"]][0], r["variant_name"], r["times"], _ratios(r["times"])) for r in rows]
    worst = [(q["best_best"], m, v) for m, v, _, q in rs if "best_best" in q]
    over = [f"{m} {v} ({x:.2f}x)" for x, m, v in sorted(worst, reverse=True) if x > 1.5]
    ort = [(q["exact_ort"], m, v) for m, v, _, q in rs if "exact_ort" in q]
    slow_ort = [f"{m} {v} ({x:.2f}x)" for x, m, v in ort if x >= 1.0]
    lines = ["", "## Against the issue's targets (this run)", ""]
    if worst:
        lines.append(
            f"- ours best / LiteRT best <= 1.5x on every row with a counterpart: "
            f"{'met' if not over else 'not met: ' + ', '.join(over)} (range "
            f"{min(worst)[0]:.2f}x-{max(worst)[0]:.2f}x)."
        )
    if ort:
        lines.append(
            "- ours exact faster than ONNX Runtime on every row: "
            + ("met" if not slow_ort else "not met: " + ", ".join(slow_ort))
            + f" ({min(ort)[0]:.2f}x-{max(ort)[0]:.2f}x)."
        )
    dense = {m: t["ours"][0] for m, v, t, _ in rs if v == "dense fp32" and "ours" in t}
    if "LeNet-5" in dense:
        parts = []
        for m, v, t, _ in rs:
            if m != "LeNet-5" or v == "dense fp32":
                continue
            best = min(t[k][0] for k in ("ours", "ours_dyn") if k in t)
            mode = "dyn-int8" if "ours_dyn" in t and t["ours_dyn"][0] < t["ours"][0] else "exact"
            parts.append(f"{v} {best:.0f} us ({mode}) {'<' if best < dense[m] else '>='} dense")
        lines.append(
            f"- LeNet-5, every compressed variant faster than dense ({dense['LeNet-5']:.0f} us; "
            "the faster of our two modes): " + "; ".join(parts) + "."
        )
    return lines


def write(rows, summaries, args, lite_note, elapsed) -> Path:
    from jaxcompress_kernels.fileio import atomic_write

    out = (
        Path(args.out)
        if args.out
        else ROOT
        / "benchmarks"
        / "results"
        / ("bench_runtime_quick.md" if args.quick else "bench_runtime.md")
    )
    cpu, flags = _cpu()
    cmd = " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        "# Edge runtime vs LiteRT (XNNPACK) vs ONNX Runtime, batch 1, one thread",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}; total {elapsed:.0f} s",
        "- command: `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE TF_USE_LEGACY_KERAS=1 flock "
        f"/tmp/jaxcompress-bench.lock python benchmarks/bench_runtime.py {cmd}`".rstrip(" `")
        + "`",
        f"- machine: {cpu}, {os.cpu_count()} logical CPUs; flags: {flags}",
        f"- versions: Python {platform.python_version()}, numpy {_ver('numpy')}, numba "
        f"{_ver('numba')}, onnxruntime {_ver('onnxruntime')}, onnx {_ver('onnx')}, tensorflow "
        f"{_ver('tensorflow')}, tf-keras {_ver('tf-keras')}, ai-edge-litert "
        f"{_ver('ai-edge-litert')}, jax {_ver('jax')}, flax {_ver('flax')}",
        f"- NumPy BLAS (threadpoolctl): {_blas()}; dropped env: "
        f"{', '.join(_DROPPED_ENV) or 'none set'}; OMP/OPENBLAS/MKL_NUM_THREADS=1",
        f"- LiteRT: {lite_note}",
        f"- load average (1 min) at start / end: {args.load0:.2f} / {os.getloadavg()[0]:.2f} "
        "(the machine is shared: other processes outside the benchmark lock widen the p90s)",
        f"- timing: {args.rounds} round(s), blocks of ~{args.budget:.2f} s per implementation per "
        "round, interleaved and rotated; p50 / p90 over every call, in microseconds.",
        "",
        "## Models",
        "",
        "| model | input | weights | params (ours / Keras mirror) | MACs | export | graph nodes "
        "(ours) | steps after fusion (ours) | LiteRT ops | runtime.load (ms) |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for s in summaries:
        lines.append(
            f"| {s['name']} | {s['input']} | {s['weights']} | {s['params']:,} / "
            + (f"{s['keras_params']:,}" if "keras_params" in s else "—")
            + " | "
            + f"{s['macs'] / 1e6:.2f} M | {s['export']} | {s.get('nodes', '—')} | "
            f"{s.get('steps', '—')} | "
            f"{s.get('litert_ops') or '—'} | "
            + (f"{s['load_ms']:.1f}" if "load_ms" in s else "—")
            + " |"
        )
    lines += [
        "",
        "## Latency (us, p50 / p90)",
        "",
        "`ours exact`: the default runtime (float activations; compressed weights decoded inside "
        "the kernels: weight-only, equal to JAX to float rounding). `ours dyn-int8`: "
        '`runtime.load(path, activations="dynamic_int8")` (int8 variants only): inputs of '
        "layers with int8 weights quantized per call, int8 x int8 -> int32 GEMMs; the "
        "counterpart of LiteRT dyn-int8. Ratio columns: p50 / p50, numerator / denominator as "
        "named.",
        "",
        "| model | variant | ours exact | ours dyn-int8 | LiteRT fp32 | LiteRT dyn-int8 | ORT | "
        "ours exact / LiteRT fp32 | ours dyn-int8 / LiteRT dyn-int8 | ours best / LiteRT best | "
        "ours exact / ORT | max rel diff | our kernels |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    int_rows = [r for r in rows if r["variant"] == FULL_INT]
    rows = [r for r in rows if r["variant"] != FULL_INT]
    for r in rows:
        t = r["times"]
        rat = _ratios(t)

        def fr(k, rat=rat):
            return f"{rat[k]:.2f}x" if k in rat else "—"

        rel = ", ".join(f"{k} {v:.1e}" for k, v in r["rel"].items())
        ours = _fmt_t(r, "ours") if "ours" in t else "export fails"
        kern = ", ".join(r.get("kernels", [])) or "—"
        if r.get("kernels_dyn"):
            kern += "; dyn-int8: " + ", ".join(r["kernels_dyn"])
        lines.append(
            f"| {MODELS[r['model']][0]} | {r['variant_name']} | {ours} | "
            f"{_fmt_t(r, 'ours_dyn')} | {_fmt_t(r, 'litert')} | {_fmt_t(r, 'litert_dyn')} | "
            f"{_fmt_t(r, 'ort')} | {fr('exact_lite')} | {fr('dyn_litedyn')} | {fr('best_best')} | "
            f"{fr('exact_ort')} | {rel} | {kern} |"
        )
    lines += _targets(rows)
    if int_rows:
        lines += _int_table(int_rows)
    errors = sorted(
        {(MODELS[r["model"]][0], r["export_error"]) for r in rows + int_rows if "export_error" in r}
    )
    lines += ["", "## Notes", ""]
    for name, err in errors:
        lines.append(f"- {name}: our export fails today: `{err}`")
    lines += [
        "- Weights: LeNets trained briefly on real MNIST (Adam 1e-3, batch 100; epochs in the "
        "table above, accuracy from JAX on the test set); the MLPerf Tiny models have random "
        "weights (the datasets are not available offline) with random batch-norm statistics: "
        "their latency is what matters here, not their outputs.",
        "- Compression is post-training without fine-tuning, on every `kernel` leaf (2:4 only "
        "where the input-channel axis is divisible by 4, so never on depthwise or 1-channel "
        "kernels). Our export folds batch norm into float kernels only; after compressed "
        "kernels the runtime's plan fuses it into the step (per-channel affine epilogue). "
        "LiteRT's converter folds it in every variant.",
        "- ours best / LiteRT best divides the faster of our two modes by the faster of LiteRT "
        "fp32 and LiteRT dyn-int8 on that row (the issue's criterion). LiteRT fp32 runs the "
        "dequantized float weights: it gains nothing from pruning, clustering or 4-bit storage. "
        "LiteRT dyn-int8 (the converter's dynamic-range quantization) and ours dyn-int8 both "
        "quantize activations per call (asymmetric 8-bit, per batch row / per image) and "
        "approximate the float model; ours exact and LiteRT fp32 do not.",
        "- max rel diff: max |a - b| / max |b|; `ours_vs_jax` against the JAX model with the "
        "same dequantized weights, the others against our runtime (against JAX where our export "
        "fails). LiteRT dyn-int8 quantizes activations on the fly, so its difference is large "
        "by design; `ours_dyn_vs_jax` is our dyn-int8 mode against the JAX model and "
        "`litert_dyn_vs_ours_dyn` LiteRT dyn-int8 against it (two implementations of the same "
        "approximation; they round differently).",
        f"- dispatch overhead (`dispatch_overhead`): a chain of {args.dispatch['nodes']} `neg` "
        f"nodes runs in {args.dispatch['run_us']:.1f} us p50, the same ufunc calls in a bare "
        f"Python loop in {args.dispatch['bare_ufunc_loop_us']:.1f} us: "
        f"**{args.dispatch['us_per_node']:.2f} us per node** of step dispatch; a one-node graph "
        f"runs in {args.dispatch['one_node_run_us']:.1f} us (input check, copy-in, output copy).",
        "- runtime.load: median of 5 loads of the artifact (verification, decoding, kernel "
        "containers), reported for the dense fp32 artifact.",
    ]
    atomic_write(str(out), ("\n".join(lines) + "\n").encode())
    return out


def _int_table(rows) -> list[str]:
    lines = [
        "",
        "## Full-integer int8 (us, p50 / p90)",
        "",
        "| model | ours int8 | ours fp32 (same weights) | LiteRT full-int8 | int8 / ours fp32 | "
        "int8 / LiteRT int8 | bit-exact vs JAX integer ref | max rel diff | test accuracy "
        "(float / ours int8 / LiteRT int8) | our kernels |",
        "|---|---:|---:|---:|---:|---:|---|---|---|---|",
    ]
    for r in rows:
        name = MODELS[r["model"]][0]
        if "export_error" in r:
            lines.append(f"| {name} | export fails | — | — | — | — | — | — | — | — |")
            continue
        t = r["times"]
        p = {k: t[k][0] for k in t}
        vs_f = f"{p['ours_int'] / p['ours_f32']:.2f}x"
        vs_l = f"{p['ours_int'] / p['litert_int']:.2f}x" if "litert_int" in p else "—"
        rel = ", ".join(f"{k} {v:.1e}" for k, v in r["rel"].items())
        acc = r.get("acc")
        acc_s = (
            " / ".join(
                f"{100 * acc[k]:.2f}%" if k in acc else "—"
                for k in ("float", "ours_int", "litert_int")
            )
            if acc
            else "— (random weights)"
        )
        lines.append(
            f"| {name} | {_fmt_t(r, 'ours_int')} | {_fmt_t(r, 'ours_f32')} | "
            f"{_fmt_t(r, 'litert_int')} | {vs_f} | {vs_l} | {'yes' if r['exact'] else 'NO'} | "
            f"{rel} | {acc_s} | {', '.join(r['kernels'])} |"
        )
    return lines


# ----------------------------------------------------------------------------------------------


def _load_lite():
    try:
        import tensorflow as tf
        from ai_edge_litert.interpreter import Interpreter
    except Exception as e:  # noqa: BLE001 - any failure to import the anchors means "no LiteRT"
        return None, f"not measured: tensorflow / ai_edge_litert not importable ({e})"
    tf.get_logger().setLevel("ERROR")
    note = (
        f"ai-edge-litert {_ver('ai-edge-litert')}, default delegate (XNNPACK, OpResolverType.AUTO), "
        f"num_threads=1; .tflite from tf.lite.TFLiteConverter (tensorflow {tf.__version__}, "
        f"TF_USE_LEGACY_KERAS={os.environ.get('TF_USE_LEGACY_KERAS')})"
    )
    return (KerasMirror(tf), Interpreter), note


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument(
        "--variants",
        default=",".join(ALL_VARIANTS),
        help=f"comma-separated; {FULL_INT} = the full-integer rows (alone: only those)",
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="short training and timing (smoke run)")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    keys = [k for k in args.models.split(",") if k]
    vkeys = [v for v in args.variants.split(",") if v]
    bad = [k for k in keys if k not in MODELS] + [v for v in vkeys if v not in ALL_VARIANTS]
    if bad:
        ap.error(f"unknown model/variant {bad}; models: {list(MODELS)}, variants: {ALL_VARIANTS}")
    if args.rounds < 1:
        ap.error(f"--rounds={args.rounds} must be >= 1")
    if args.quick:
        args.rounds = 1
    args.budget = 0.05 if args.quick else 0.3
    epochs = {"lenet300": 1, "lenet5": 1} if args.quick else {"lenet300": 3, "lenet5": 1}
    train_n = 5000 if args.quick else None

    args.load0 = os.getloadavg()[0]
    lite, lite_note = _load_lite()
    print(f"LiteRT: {lite_note}", flush=True)
    ds = None
    if any(MODELS[k][3] for k in keys):
        from jaxcompress.data import load_dataset

        data_dir = Path(args.data_dir)
        if not data_dir.is_absolute():
            data_dir = (Path.cwd() / data_dir).resolve()
        ds = load_dataset("mnist", data_dir=str(data_dir))

    t_start = time.perf_counter()
    rows, summaries = [], []
    with tempfile.TemporaryDirectory() as folder:
        for key in keys:
            name, ctor, shape, trained = MODELS[key]
            model = ctor(rngs=nnx.Rngs(0))
            _randomize_batch_stats(model, 1)
            apply_fn, params = models.functional(model)
            summary = {
                "name": name,
                "input": "x".join(map(str, shape)),
                "params": models.count_params(model)[1],
                "macs": models.count_macs(model, shape),
            }
            if trained:
                t0 = time.perf_counter()
                params = _train(apply_fn, params, ds, epochs=epochs[key], n=train_n)
                acc = _accuracy(model, params, ds.x_test, ds.y_test)
                summary["weights"] = f"MNIST, {epochs[key]} epoch(s), test acc {100 * acc:.2f}%"
                print(f"{name}: trained in {time.perf_counter() - t0:.0f} s, acc {acc:.4f}")
                x = np.ascontiguousarray(ds.x_test[:1], np.float32)
            else:
                summary["weights"] = "random"
                x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
            for vkey in vkeys:
                if vkey == FULL_INT:
                    row = run_int_cell(key, model, params, x, folder, args, lite, ds)
                else:
                    row = run_cell(key, vkey, model, params, x, folder, args, lite)
                _print_row(row)
                rows.append(row)
                if vkey == vkeys[0] or "nodes" not in summary:
                    summary["export"] = "fails" if "export_error" in row else "ok"
                    for src, dst in (
                        ("nodes", "nodes"),
                        ("litert_ops", "litert_ops"),
                        ("load_ms", "load_ms"),
                        ("steps", "steps"),
                        ("keras_params", "keras_params"),
                    ):
                        if src in row:
                            summary[dst] = row[src]
            summaries.append(summary)
        args.dispatch = dispatch_overhead(folder)
        print(f"dispatch overhead: {args.dispatch}", flush=True)
    out = write(rows, summaries, args, lite_note, time.perf_counter() - t_start)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
