#!/usr/bin/env python3
"""Compatibility shim: the exporter is the package `qfuse_export` in python/
(`pip install ./python`; API and supported ops: python/qfuse_export/exporter.py).

In a checkout, `import qfuse_export` with tools/ on sys.path (as the scripts
here do), `from tools.qfuse_export import export` and `tools/qfuse_export.py
--demo OUT` load python/qfuse_export (else an installed qfuse_export): this
module replaces itself with that package.
"""
import importlib
import os
import sys

_TOOLS = os.path.dirname(os.path.abspath(__file__))
_PYTHON = os.path.join(os.path.dirname(_TOOLS), "python")
if os.path.isfile(os.path.join(_PYTHON, "qfuse_export", "__init__.py")) and _PYTHON not in sys.path:
    sys.path.insert(0, _PYTHON)


def _load():
    saved, shim = sys.path[:], sys.modules.pop("qfuse_export", None)
    # tools/ holds this file under the package's name: leave it out while importing the package
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _TOOLS]
    try:
        return importlib.import_module("qfuse_export")
    except ImportError:
        if shim is not None:
            sys.modules["qfuse_export"] = shim
        raise
    finally:
        sys.path[:] = saved


_pkg = _load()
if __name__ == "__main__":
    sys.exit(_pkg.cli())
sys.modules[__name__] = _pkg
