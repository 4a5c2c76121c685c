"""Child process of `test_kernels_security.py`: builds kernel containers from the cases on stdin,
attacks them, runs their kernel, and checks the answer.

Each case is JSON. ``{"kind", "source": "dense", "w": [[...]], "x": [[...]], "mutation"}`` builds a
valid container from the dense weight ``w`` (the container constructor is called directly on
fresh caller-owned copies of the fields), then tries `mutation` ("edit": overwrite the caller's
arrays with out-of-range garbage; "writeable": set ``flags.writeable = True`` on every array of
the container and on its bases, and write garbage through any that accepts; "none"), then runs the
kernel and requires ``x @ w``. ``{"kind", "source": "raw", "fields": {...}, ...}`` passes arbitrary
arrays to the constructor: it must refuse them with a project error, or build a container whose
kernel output equals ``x @ to_dense(container)``.

Exit status 0: every case was refused cleanly or answered correctly. 3: a wrong answer or a
non-project exception (printed). A crash (SIGSEGV, ...) shows as a negative status to the parent.
"""

from __future__ import annotations

import json
import sys

import numpy as np

import jaxcompress_kernels as jk
from jaxcompress_kernels import JaxCompressError


def _build_valid(kind: str, w: np.ndarray):
    k, n = w.shape
    if kind == "csr":
        c = jk.csr_from_dense(w)
    elif kind == "csr8":
        codes = np.clip(np.round(w * 10), -127, 127).astype(np.int8)
        c = jk.csr_from_quantized(codes, np.full(n, 0.1, np.float32))
    elif kind == "bsr":
        c = jk.bsr_from_dense(w, block=(1, 4))
    elif kind == "nm":
        w2 = w.copy()
        w2.reshape(k // 4, 4, n)[:, 2:, :] = 0  # 2:4 along K
        c = jk.nm_from_dense(w2, n=2)
    elif kind == "int8":
        c = jk.int8_weight(np.clip(np.round(w * 10), -127, 127).astype(np.int8))
    else:  # packed, 4-bit symmetric per channel
        codes = np.clip(np.round(w * 4), -8, 7).astype(np.int8)
        c = jk.pack_weight(codes, np.full(n, 0.25, np.float32), bits=4)
    return c


def _rebuild(c):
    """The same container built by calling its constructor on caller-owned writeable copies."""
    cls = type(c)
    kw = {}
    for f in c.__dataclass_fields__.values():
        if not f.init:
            continue
        v = getattr(c, f.name)
        kw[f.name] = np.array(v, copy=True) if isinstance(v, np.ndarray) else v
    return cls(**kw), kw


def _garbage(a: np.ndarray) -> None:
    if a.size == 0:
        return
    if a.dtype.kind in "iu":
        a[...] = np.iinfo(a.dtype).max
    elif a.dtype.kind == "f":
        a[...] = np.float32(1e30)


def _attack(c, kw, mutation: str) -> None:
    if mutation == "edit":
        for v in kw.values():
            if isinstance(v, np.ndarray):
                _garbage(v)
    elif mutation == "writeable":
        tops = []
        for name in c.__dataclass_fields__:
            v = getattr(c, name)
            tops.extend(v if isinstance(v, tuple) else [v])  # PackedWeight.lanes is a tuple
        for a in tops:
            chain = []
            while isinstance(a, np.ndarray):
                chain.append(a)
                a = a.base
            for arr in reversed(chain):  # bases first
                try:
                    arr.flags.writeable = True
                except ValueError:
                    continue
                _garbage(arr)


def _run(c, x: np.ndarray) -> np.ndarray:
    if isinstance(c, jk.CSRMatrix):
        return jk.spmm_csr(x, c)
    if isinstance(c, jk.BSRMatrix):
        return jk.spmm_bsr(x, c)
    if isinstance(c, jk.NMSparse):
        return jk.spmm_nm(x, c)
    if isinstance(c, jk.Int8Weight):
        xi = np.clip(np.round(x * 10), -128, 127).astype(np.int8)
        return jk.qmatmul_int8(xi, c, x_zero_point=3).astype(np.float64)
    return jk.qmatmul(x, c)


def _expected(c, dense: np.ndarray, x: np.ndarray) -> np.ndarray:
    if isinstance(c, jk.Int8Weight):
        xi = np.clip(np.round(x * 10), -128, 127).astype(np.int64) - 3
        return (xi @ dense.astype(np.int64)).astype(np.float64)
    return x.astype(np.float64) @ dense.astype(np.float64)


def _wide(dtype: str):
    return np.float64 if np.dtype(dtype).kind == "f" else np.int64


def _raw(kind: str, shape, fields: dict, extra: dict):
    arrays = {
        name: np.asarray(spec["data"], dtype=_wide(spec["dtype"]))
        .astype(spec["dtype"])  # integers wrap: -1 becomes 65535 in a uint16 array
        .reshape(spec["shape"])
        for name, spec in fields.items()
    }
    if kind == "csr":
        return jk.CSRMatrix(shape=tuple(shape), **arrays), arrays
    if kind == "bsr":
        return jk.BSRMatrix(shape=tuple(shape), block=tuple(extra["block"]), **arrays), arrays
    if kind == "nm":
        c = jk.NMSparse(shape=tuple(shape), n=extra["n"], m=4, bits=extra.get("bits"), **arrays)
        return c, arrays
    return jk.Int8Weight(shape=tuple(shape), **arrays), arrays


def main() -> int:
    cases = json.load(sys.stdin)
    bad = []
    for i, case in enumerate(cases):
        x = np.asarray(case["x"], np.float32)
        try:
            if case["source"] == "dense":
                w = np.asarray(case["w"], np.float32)
                c, kw = _rebuild(_build_valid(case["kind"], w))
            else:
                c, kw = _raw(case["kind"], case["shape"], case["fields"], case.get("extra", {}))
        except JaxCompressError:
            continue  # refused cleanly
        dense = jk.to_dense(c).astype(np.float64)
        if case["kind"] == "int8":
            dense = np.round(dense)
        _attack(c, kw, case["mutation"])
        try:
            y = _run(c, np.ascontiguousarray(x[:, : c.shape[0]]))
        except JaxCompressError as e:
            bad.append((i, f"kernel refused a container that exists: {e}"))
            continue
        want = _expected(c, dense, np.ascontiguousarray(x[:, : c.shape[0]]))
        if not np.allclose(y, want, rtol=1e-4, atol=1e-3 * (1 + np.abs(want).max(initial=0))):
            bad.append((i, f"wrong answer after {case['mutation']!r}: {y} != {want}"))
    for i, msg in bad:
        print(f"case {i}: {msg}", file=sys.stderr)
    return 3 if bad else 0


if __name__ == "__main__":
    try:
        status = main()
    except Exception as e:  # an exception escaping the probe is a failure too
        print(f"unexpected {type(e).__name__}: {e}", file=sys.stderr)
        status = 3
    sys.exit(status)
