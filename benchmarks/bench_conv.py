"""Direct NHWC conv / pooling kernels vs NumPy im2col + BLAS, ONNX Runtime and PyTorch.

Batch 1, one thread everywhere (Numba pool, BLAS via threadpoolctl, ORT ``intra_op_num_threads=1``,
``torch.set_num_threads(1)``), edge-model layer shapes (LeNet-5, DS-CNN, MobileNetV1-0.25,
ResNet-8). Per layer each implementation runs in its own loop of calls (interleaved, PyTorch's
and NumPy's calls slowed the next call of the others up to 2x), in two passes, and the table
gives the faster of the two medians (p50) of the per-call times. Every implementation is checked against ours
(max relative error printed). Inputs are in cache (layers this small are called back to back in a
model).

- ours: the prepared weight's hot entry ``Conv2dWeight.call_unchecked(x, out)`` (validation
  once, at plan time), and the validated ``weight(x, out)`` for the per-call overhead.
- NumPy: im2col by ``sliding_window_view`` + one contiguous copy + ``matmul`` (BLAS) + bias +
  activation, into a preallocated output; depthwise as a sum over taps of strided views;
  max pooling as ``reshape(...).max`` for non-overlapping windows.
- ONNX Runtime: one-node sessions (``Conv`` with ``group`` for depthwise, ``MaxPool``) on NCHW
  input (its native layout; no transposes timed), input and output bound once with IOBinding.
- PyTorch: ``torch.nn.functional.conv2d`` / ``max_pool2d`` on NCHW tensors under
  ``inference_mode`` (when importable).

Run (under the shared lock; OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are dropped so OpenBLAS picks
its kernel for this CPU, and the BLAS that ran is printed):
    flock /tmp/jaxcompress-bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        /work/venv-conv/bin/python benchmarks/bench_conv.py
"""

from __future__ import annotations

import os

os.environ.pop("OPENBLAS_CORETYPE", None)
os.environ.pop("OPENBLAS_L2_SIZE", None)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import datetime  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402
import threadpoolctl  # noqa: E402

import jaxcompress_kernels as jk  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent

# name, (H, W, Cin), kind, (KH, KW, Cout), strides, pads, activation
LAYERS = [
    ("LeNet-5 conv1 28x28x1 -> 20@5x5", (28, 28, 1), "conv", (5, 5, 20), (1, 1), "valid", "relu"),
    ("LeNet-5 pool1 2x2/2 on 24x24x20", (24, 24, 20), "maxpool", (2, 2, 20), (2, 2), "valid", None),
    ("LeNet-5 conv2 12x12x20 -> 50@5x5", (12, 12, 20), "conv", (5, 5, 50), (1, 1), "valid", "relu"),
    ("LeNet-5 pool2 2x2/2 on 8x8x50", (8, 8, 50), "maxpool", (2, 2, 50), (2, 2), "valid", None),
    ("DS-CNN conv 49x10x1 -> 64@10x4 s2", (49, 10, 1), "conv", (10, 4, 64), (2, 2), "same", "relu"),
    ("DS-CNN dw 3x3 25x5x64", (25, 5, 64), "dw", (3, 3, 64), (1, 1), "same", "relu"),
    ("DS-CNN pw 1x1 25x5x64 -> 64", (25, 5, 64), "conv", (1, 1, 64), (1, 1), "valid", "relu"),
    (
        "MobileNetV1-0.25 96x96x3 -> 8@3x3 s2",
        (96, 96, 3),
        "conv",
        (3, 3, 8),
        (2, 2),
        "same",
        "relu6",
    ),
    ("MobileNetV1-0.25 dw 3x3 48x48x8", (48, 48, 8), "dw", (3, 3, 8), (1, 1), "same", "relu6"),
    ("MobileNetV1-0.25 dw 3x3 6x6x256", (6, 6, 256), "dw", (3, 3, 256), (1, 1), "same", "relu6"),
    ("ResNet-8 32x32x3 -> 16@3x3", (32, 32, 3), "conv", (3, 3, 16), (1, 1), "same", "relu"),
    ("ResNet-8 32x32x16 -> 16@3x3", (32, 32, 16), "conv", (3, 3, 16), (1, 1), "same", "relu"),
    ("ResNet-8 16x16x32 -> 32@3x3", (16, 16, 32), "conv", (3, 3, 32), (1, 1), "same", "relu"),
    ("CNN1D (1-D) 1x128x32 -> 64@1x5", (1, 128, 32), "conv", (1, 5, 64), (1, 1), "same", "relu"),
    (
        "CNN1D (1-D) maxpool 1x2/2 on 1x128x64",
        (1, 128, 64),
        "maxpool",
        (1, 2, 64),
        (1, 2),
        "valid",
        None,
    ),
]


def same_pads(n, k, s):
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return (total // 2, total - total // 2)


def layer_pads(hwc, kshape, strides, mode):
    if mode == "valid":
        return ((0, 0), (0, 0))
    return (
        same_pads(hwc[0], kshape[0], strides[0]),
        same_pads(hwc[1], kshape[1], strides[1]),
    )


def act_np(y, act):
    if act == "relu":
        np.maximum(y, 0, out=y)
    elif act == "relu6":
        np.clip(y, 0, 6, out=y)
    return y


# ----------------------------------------------------------------------------------------------
# implementations: each builder returns (callable, output getter) or None


def build_ours(x, kind, k, b, strides, pads, act):
    if kind == "conv":
        op = jk.prepare_conv2d(k, b, strides=strides, pads=pads, activation=act)
    elif kind == "dw":
        op = jk.prepare_depthwise_conv2d(k, b, strides=strides, pads=pads, activation=act)
    else:
        op = jk.prepare_max_pool2d(k.shape[:2], x.shape[3], strides=strides, pads=pads)
    out = np.empty(op.output_shape(x.shape), np.float32)
    return (lambda: op.call_unchecked(x, out)), (lambda: out), op


def build_numpy(x, kind, k, b, strides, pads, act, out_shape):
    out = np.empty(out_shape, np.float32)
    _, oh, ow, cout = out_shape
    if kind == "maxpool":
        kh, kw = k.shape[:2]
        if strides != (kh, kw) or pads != ((0, 0), (0, 0)):
            return None
        hh, ww = oh * kh, ow * kw

        def f():
            xr = x[:, :hh, :ww].reshape(1, oh, kh, ow, kw, x.shape[3])
            np.max(xr, axis=(2, 4), out=out)

        return f, (lambda: out)
    kh, kw = k.shape[:2]
    padw = ((0, 0), pads[0], pads[1], (0, 0))
    needs_pad = pads != ((0, 0), (0, 0))
    if kind == "conv":
        wm = np.ascontiguousarray(k.reshape(-1, cout))
        om = out.reshape(oh * ow, cout)

        def f():
            xp = np.pad(x, padw) if needs_pad else x
            v = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))
            v = v[:, :: strides[0], :: strides[1]][:, :oh, :ow]  # (1, OH, OW, C, KH, KW)
            cols = np.ascontiguousarray(v.transpose(0, 1, 2, 4, 5, 3)).reshape(oh * ow, -1)
            np.matmul(cols, wm, out=om)
            np.add(om, b, out=om)
            act_np(om, act)

        return f, (lambda: out)
    wd = k[:, :, 0, :]

    def f():
        xp = np.pad(x, padw) if needs_pad else x
        out[...] = b
        for i in range(kh):
            for j in range(kw):
                v = xp[:, i : i + (oh - 1) * strides[0] + 1 : strides[0]]
                v = v[:, :, j : j + (ow - 1) * strides[1] + 1 : strides[1]]
                out[...] += v * wd[i, j]
        act_np(out, act)

    return f, (lambda: out)


def _onnx_model(kind, x_shape, k, b, strides, pads, act, out_shape):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    _, h, w, c = x_shape
    nodes = []
    inits = []
    if kind == "maxpool":
        nodes.append(
            helper.make_node(
                "MaxPool",
                ["x"],
                ["y"],
                kernel_shape=list(k.shape[:2]),
                strides=list(strides),
                pads=[pads[0][0], pads[1][0], pads[0][1], pads[1][1]],
            )
        )
    else:
        if kind == "conv":
            wo = np.ascontiguousarray(k.transpose(3, 2, 0, 1))  # OIHW
            group = 1
        else:
            wo = np.ascontiguousarray(k.transpose(3, 2, 0, 1))  # (C, 1, KH, KW)
            group = c
        inits += [numpy_helper.from_array(wo, "w"), numpy_helper.from_array(b, "b")]
        yname = "y" if act is None else "z"
        nodes.append(
            helper.make_node(
                "Conv",
                ["x", "w", "b"],
                [yname],
                kernel_shape=list(k.shape[:2]),
                strides=list(strides),
                pads=[pads[0][0], pads[1][0], pads[0][1], pads[1][1]],
                group=group,
            )
        )
        if act == "relu":
            nodes.append(helper.make_node("Relu", ["z"], ["y"]))
        elif act == "relu6":
            lo = numpy_helper.from_array(np.float32(0.0).reshape(()), "lo")
            hi = numpy_helper.from_array(np.float32(6.0).reshape(()), "hi")
            inits += [lo, hi]
            nodes.append(helper.make_node("Clip", ["z", "lo", "hi"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
        [
            helper.make_tensor_value_info(
                "y", TensorProto.FLOAT, [1, out_shape[3], out_shape[1], out_shape[2]]
            )
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def build_ort(x, kind, k, b, strides, pads, act, out_shape):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(
        _onnx_model(kind, x.shape, k, b, strides, pads, act, out_shape),
        so,
        providers=["CPUExecutionProvider"],
    )
    xn = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    _, oh, ow, cout = out_shape
    yn = np.empty((1, cout, oh, ow), np.float32)
    io = sess.io_binding()
    io.bind_ortvalue_input("x", ort.OrtValue.ortvalue_from_numpy(xn))
    io.bind_ortvalue_output("y", ort.OrtValue.ortvalue_from_numpy(yn))

    def f():
        sess.run_with_iobinding(io)

    return f, (lambda: yn.transpose(0, 2, 3, 1))


def build_torch(x, kind, k, b, strides, pads, act, out_shape):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.set_num_threads(1)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    (pt, pb), (pl, pr) = pads
    sym = pt == pb and pl == pr
    res = {}
    if kind == "maxpool":
        if not sym:
            return None

        def f():
            with torch.inference_mode():
                res["y"] = F.max_pool2d(xt, k.shape[:2], strides, (pt, pl))

    else:
        wt = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))
        bt = torch.from_numpy(b)
        groups = 1 if kind == "conv" else x.shape[3]
        actf = {None: None, "relu": F.relu, "relu6": F.relu6}[act]

        def f():
            with torch.inference_mode():
                xi = xt if sym else F.pad(xt, (pl, pr, pt, pb))
                y = F.conv2d(xi, wt, bt, strides, (pt, pl) if sym else 0, 1, groups)
                res["y"] = actf(y) if actf is not None else y

    return f, (lambda: res["y"].numpy().transpose(0, 2, 3, 1))


# ----------------------------------------------------------------------------------------------


def time_round_robin(fns: dict, rounds: int) -> dict:
    for f in fns.values():
        for _ in range(20):
            f()
    ts = {n: np.empty(rounds) for n in fns}
    pc = time.perf_counter
    items = list(fns.items())
    for r in range(rounds):
        # rotate the order each round: an implementation timed right after PyTorch or ORT
        # otherwise always starts with caches and branch predictors they polluted
        s = r % len(items)
        for n, f in items[s:] + items[:s]:
            t0 = pc()
            f()
            ts[n][r] = pc() - t0
    return {n: float(np.median(t)) * 1e6 for n, t in ts.items()}


def rel_err(a, ref):
    return float(np.abs(np.asarray(a, np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


def versions():
    import onnxruntime

    v = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    try:
        import torch

        v["torch"] = torch.__version__
    except ImportError:
        v["torch"] = "not installed"
    return v


def cpu_name() -> str:
    from jaxcompress_kernels.machine import cpu_model

    return cpu_model()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2000, help="timed calls per implementation")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_conv.md"))
    args = ap.parse_args(argv)

    jk.set_num_threads(1)
    threadpoolctl.threadpool_limits(1)
    blas = [
        f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
        f"{i.get('num_threads')} thread)"
        for i in threadpoolctl.threadpool_info()
        if i.get("user_api") == "blas"
    ]
    print("BLAS:", "; ".join(blas))
    print("versions:", versions())
    t0 = time.perf_counter()
    print(f"warmup {jk.warmup():.1f} s")
    rng = np.random.default_rng(0)
    rows = []
    chain = {}
    for name, hwc, kind, kshape, strides, mode, act in LAYERS:
        x = rng.standard_normal((1, *hwc)).astype(np.float32)
        kh, kw, cout = kshape
        cin = hwc[2]
        if kind == "conv":
            k = (rng.standard_normal((kh, kw, cin, cout)) / np.sqrt(kh * kw * cin)).astype(
                np.float32
            )
        else:
            k = rng.standard_normal((kh, kw, 1, cout)).astype(np.float32) / 3
        b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        pads = layer_pads(hwc, kshape, strides, mode)
        f_ours, get_ours, op = build_ours(x, kind, k, b, strides, pads, act)
        out_shape = op.output_shape(x.shape)
        impls = {"ours": (f_ours, get_ours)}
        for iname, builder in (("numpy", build_numpy), ("ort", build_ort), ("torch", build_torch)):
            r = builder(x, kind, k, b, strides, pads, act, out_shape)
            if r is not None:
                impls[iname] = r
        out_v = np.empty(out_shape, np.float32)
        impls["ours validated"] = ((lambda op=op, x=x, o=out_v: op(x, o)), (lambda o=out_v: o))
        for f, _ in impls.values():
            f()
        ref = np.asarray(get_ours(), np.float64).copy()
        errs = {n: rel_err(g(), ref) for n, (f, g) in impls.items()}
        # each implementation in its own loop (its best case: interleaved, the other
        # libraries' calls slowed the next call, ORT's LeNet conv1 from 13.5 to 26.5 us after
        # PyTorch); two passes, the faster p50 of each kept
        us = {}
        for _ in range(2):
            for n, (f, _) in impls.items():
                t = time_round_robin({n: f}, args.rounds)[n]
                us[n] = min(us.get(n, t), t)
        macs = int(np.prod(out_shape)) * kh * kw * (cin if kind == "conv" else 1)
        rows.append((name, pads, macs, us, errs))
        chain[name] = (op, x, out_shape)
        line = "  ".join(f"{n} {t:7.2f}" for n, t in us.items())
        print(f"{name:42s} {line}  max rel err {max(errs.values()):.1e}", flush=True)

    # LeNet-5 feature extractor: conv1 + relu, pool, conv2 + relu, pool, all prepared
    names = [r[0] for r in rows[:4]]
    ops = [chain[n][0] for n in names]
    x0 = chain[names[0]][1]
    bufs = []
    shape = x0.shape
    for op in ops:
        shape = op.output_shape(shape)
        bufs.append(np.empty(shape, np.float32))

    def lenet_ours():
        h = x0
        for op, o in zip(ops, bufs, strict=True):
            op.call_unchecked(h, o)
            h = o

    lenet = time_round_robin({"ours": lenet_ours}, args.rounds)["ours"]
    print(f"LeNet-5 conv1+pool1+conv2+pool2 (ours, hot entries): {lenet:.2f} us")

    # per-call overhead of the hot entry: a 1x1 conv on a 1x1x1 input
    tiny = jk.prepare_conv2d(np.ones((1, 1, 1, 1), np.float32))
    xt = np.ones((1, 1, 1, 1), np.float32)
    ot = np.empty((1, 1, 1, 1), np.float32)
    ovh = time_round_robin(
        {"hot": lambda: tiny.call_unchecked(xt, ot), "validated": lambda: tiny(xt, ot)},
        args.rounds,
    )
    print(
        f"per-call overhead (1x1x1 conv): hot {ovh['hot']:.2f} us, validated {ovh['validated']:.2f} us"
    )
    elapsed = time.perf_counter() - t0

    cmd = "flock /tmp/jaxcompress-bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE " + (
        " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    )
    v = versions()
    lines = [
        "# bench_conv: direct NHWC conv / pooling, batch 1, 1 thread",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {elapsed:.0f} s",
        f"- machine: {cpu_name()}, {os.cpu_count()} cores, {platform.machine()}, Numba CPU "
        f"`{numba.config.CPU_NAME or 'host'}`; load average at the end "
        f"{' / '.join(f'{v:.1f}' for v in os.getloadavg())} (1 / 5 / 15 min)",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- BLAS (threadpoolctl): {'; '.join(blas)}",
        f"- command: `{cmd}`",
        f"- p50 of {args.rounds} back-to-back calls per implementation (own loop; the faster of "
        "two passes), microseconds; inputs in "
        "cache; every implementation checked against ours (max relative error column)",
        "- ours = `Conv2dWeight` / `DepthwiseConv2dWeight` / `Pool2d` `.call_unchecked(x, out)`; "
        "validated = `weight(x, out)`; NumPy = im2col + BLAS matmul (conv), taps of strided "
        "views (depthwise), reshape-max (pool); ORT = one-node session (+ Relu / Clip node), "
        "IOBinding, NCHW; torch = `F.conv2d` / `F.max_pool2d`, NCHW, `inference_mode`",
        "",
        "| layer | pads | MACs | ours | validated | NumPy | ORT | torch | ORT / ours | max rel err |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, pads, macs, us, errs in rows:

        def c(n, us=us):
            return f"{us[n]:.2f}" if n in us else "-"

        ratio = f"{us['ort'] / us['ours']:.2f}x" if "ort" in us else "-"
        lines.append(
            f"| {name} | {pads} | {macs} | **{us['ours']:.2f}** | {c('ours validated')} | "
            f"{c('numpy')} | {c('ort')} | {c('torch')} | {ratio} | {max(errs.values()):.1e} |"
        )
    lines += [
        "",
        f"LeNet-5 conv1 + relu, pool1, conv2 + relu, pool2 (four hot calls, preallocated "
        f"outputs): **{lenet:.2f} us** p50.",
        "",
        f"Per-call overhead (a 1x1 conv on a 1x1x1 input): hot entry {ovh['hot']:.2f} us, "
        f"validated call {ovh['validated']:.2f} us.",
        "",
    ]
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.name)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines))
    os.replace(tmp, path)
    print("wrote", path)


if __name__ == "__main__":
    main()
