#!/usr/bin/env python3
"""Compatibility shim: the model-file reader/validator is qfuse_export.model in
python/ (`pip install ./python` installs it with the `qfuse-model` command).

    python3 tools/qfuse_model.py MODEL.safetensors [MODEL2 ...] [--quiet]

`import qfuse_model` (tools/ on sys.path) gives that module. Needs numpy and
safetensors only (no torch).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qfuse_export  # noqa: E402  (the shim next to this file: python/qfuse_export)
from qfuse_export import model as _model  # noqa: E402

if __name__ == "__main__":
    sys.exit(_model.main())
sys.modules[__name__] = _model
