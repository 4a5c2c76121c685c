"""Package structure: every module imports on its own, there are no import cycles, and no module
reaches into another package's private modules."""

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# (folder, import name): the edge side lives in kernels/ but imports as jaxcompress_kernels
PACKAGES = (("jaxcompress", "jaxcompress"), ("kernels", "jaxcompress_kernels"))


def _modules() -> dict[str, Path]:
    out = {}
    for folder, name in PACKAGES:
        base = ROOT / folder
        for f in sorted(base.rglob("*.py")):
            parts = [name, *f.relative_to(base).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


MODULES = _modules()


def _absolute(module: str | None, level: int, importer: str, is_package: bool) -> str | None:
    """The absolute name of ``from <level dots><module> import ...`` written in `importer`."""
    if level == 0:
        return module
    parts = importer.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([module] if module else [])) or None


def _imports(path: Path, *, lazy: bool, name: str | None = None) -> set[str]:
    """The package modules `path` (module `name`) imports: at import time (``lazy=False``:
    module-level statements, including those under ``if`` / ``try``), or anywhere
    (``lazy=True``: inside functions and methods too)."""
    name = name or next(m for m, p in MODULES.items() if p == path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if lazy:
        nodes = list(ast.walk(tree))
    else:
        nodes = []
        stack = list(tree.body)
        while stack:
            n = stack.pop()
            nodes.append(n)
            if isinstance(n, (ast.If, ast.Try, ast.With)):
                stack.extend(ast.iter_child_nodes(n))
            if isinstance(n, ast.ExceptHandler):
                stack.extend(n.body)
    out = set()
    for n in nodes:
        if isinstance(n, ast.ImportFrom):
            mod = _absolute(n.module, n.level, name, path.name == "__init__.py")
            if mod is None:
                continue
            for a in n.names:
                sub = f"{mod}.{a.name}"
                out.add(sub if sub in MODULES else mod)
        elif isinstance(n, ast.Import):
            out.update(a.name for a in n.names)
    return {m for m in out if m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_cycle_finder_finds_cycles():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(g) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _package(mod: str) -> str:
    """``jaxcompress.<sub>`` for the JAX side; the edge side is one package."""
    if mod.startswith("jaxcompress_kernels"):
        return "jaxcompress_kernels"
    return ".".join(mod.split(".")[:2])


def test_no_import_time_cycles():
    graph = {m: _imports(p, lazy=False) - {m} for m, p in MODULES.items()}
    assert _cycles(graph) == []


def test_import_finder_sees_function_level_and_relative_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "import jaxcompress.study._util\n"
        "def f():\n"
        "    from jaxcompress.study import _report\n"
        "    from ._plots import make_plots\n"
    )
    eager = _imports(f, lazy=False, name="jaxcompress.study._x")
    lazy = _imports(f, lazy=True, name="jaxcompress.study._x")
    assert eager == {"jaxcompress.study._util"}
    assert lazy == {
        "jaxcompress.study._util",
        "jaxcompress.study._report",
        "jaxcompress.study._plots",
    }


def test_no_module_cycles_counting_function_level_imports():
    # module by module, imports inside functions included: `a` importing `b` lazily while `b`
    # imports `a` is still a cycle (the two cannot be understood, tested or moved apart)
    graph = {m: _imports(p, lazy=True) - {m} for m, p in MODULES.items()}
    cycles = _cycles(graph)
    detail = [{m: sorted(graph[m] & set(c)) for m in c} for c in cycles]
    assert cycles == [], detail


def test_no_cycles_between_subpackages():
    # counting imports inside functions too: a lazy import hides a cycle, it does not remove it
    graph: dict[str, set[str]] = {}
    for m, p in MODULES.items():
        deps = {_package(d) for d in _imports(p, lazy=True)}
        graph.setdefault(_package(m), set()).update(deps - {_package(m)})
    assert _cycles(graph) == []


def test_no_private_cross_package_imports():
    bad = []
    for m, p in MODULES.items():
        own = _package(m)
        for dep in _imports(p, lazy=True):
            private = [part for part in dep.split(".")[1:] if part.startswith("_")]
            if _package(dep) == own or not private:
                continue
            if dep.split(".")[1] == "_core" and len(dep.split(".")) == 2:
                continue  # jaxcompress._core is the shared infrastructure package
            bad.append(f"{m} -> {dep}")
    assert bad == []


_ISOLATED = textwrap.dedent(
    """
    import os, sys, traceback
    # third-party packages first, once; each package module is then imported by a fresh child
    # process (fork) in which no jaxcompress module has been imported yet
    import numpy, numba, jax, jax.numpy, optax, flax.nnx, safetensors  # noqa: F401
    failed = []
    for mod in sys.argv[1:]:
        pid = os.fork()
        if pid == 0:
            try:
                __import__(mod)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            failed.append(mod)
    print("FAILED", failed)
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork for one process per module")
def test_every_module_imports_in_isolation():
    assert len(MODULES) > 50
    r = subprocess.run(
        [sys.executable, "-c", _ISOLATED, *sorted(MODULES)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stdout.strip().splitlines()[-1] == "FAILED []", r.stderr[-4000:]
