"""The edge package imports without JAX, under a name that cannot collide with PyPI `kernels`."""

import subprocess
import sys
import textwrap


def test_kernels_import_without_jax():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["jax"] = None  # any `import jax` now raises ImportError
        sys.modules["jaxlib"] = None
        import pkgutil
        import jaxcompress_kernels
        for mod in pkgutil.iter_modules(jaxcompress_kernels.__path__):
            __import__("jaxcompress_kernels." + mod.name)
        try:
            import jax
        except ImportError:
            pass
        else:
            raise SystemExit("jax importable: the test is broken")
        assert not any(m == "jax" or m.startswith("jax.") for m in sys.modules if sys.modules[m])
        print("ok")
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok")


def test_import_name_is_not_kernels():
    import jaxcompress_kernels

    assert jaxcompress_kernels.__name__ == "jaxcompress_kernels"
    assert jaxcompress_kernels.__file__.replace("\\", "/").endswith("kernels/__init__.py")
