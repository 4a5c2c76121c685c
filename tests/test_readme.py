"""Every Python block in README.md runs as written.

The blocks run in README order in one fresh interpreter, each in its own namespace (a block must
define what it uses), all in one temporary working folder (files a block writes, such as an
artifact, are there for the blocks after it). ``JAXCOMPRESS_QUICK=1`` shortens the training loops
of the heavy blocks; the README works without it.
"""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

_RUNNER = textwrap.dedent(
    """
    import json, sys, time, traceback
    blocks = json.load(open(sys.argv[1]))
    for line, code in blocks:
        t0 = time.perf_counter()
        try:
            exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
        except BaseException:
            traceback.print_exc()
            print(f"README block at line {line} failed", file=sys.stderr)
            sys.exit(1)
        print(f"README block at line {line}: ok ({time.perf_counter() - t0:.1f} s)", flush=True)
    """
)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line of the opening fence, code)`` for every fenced ```python block."""
    out = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        out.append((text.count("\n", 0, m.start()) + 2, m.group(1)))
    return out


def test_python_blocks_are_found():
    blocks = python_blocks("x\n```python\na = 1\n```\n```bash\nls\n```\n```python\nb = 2\n```\n")
    assert blocks == [(3, "a = 1\n"), (9, "b = 2\n")]


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path):
    import json

    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 8
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    (tmp_path / "runner.py").write_text(_RUNNER)
    env = dict(os.environ, JAXCOMPRESS_QUICK="1")
    r = subprocess.run(
        [sys.executable, "runner.py", "blocks.json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-6000:]
    assert r.stdout.count(": ok") == len(blocks)
