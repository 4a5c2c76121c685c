"""Alias of ``jaxcompress bench`` (the one artifact-benchmark command, in `jaxcompress.cli`).

Kept so ``python -m jaxcompress.edge._cli ARTIFACT ...`` keeps working; it takes the same
options and defaults as ``jaxcompress bench`` and calls the same code (`jaxcompress.edge.benchmark`
underneath).
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv=None) -> int:
    """``jaxcompress bench`` with `argv` (default ``sys.argv[1:]``); returns the exit code."""
    from jaxcompress.cli import main as cli_main

    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
