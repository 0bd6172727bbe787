"""qfuse_export: export PyTorch-quantized int8 networks to qfuse model files.

    from qfuse_export import export
    export(quantized_model, example_input, "model.safetensors")

`export`, `build`, `ExportError`, `ops_used`, `torch_table`, ... come from
`qfuse_export.exporter` (its docstring describes the API and the supported
PyTorch ops; it needs torch). `qfuse_export.model` reads and validates model
files (docs/MODEL_FORMAT.md) with numpy and safetensors only: importing this
package does not import torch until an exporter name is used.

Command line: `qfuse-export` (or `python -m qfuse_export`) and `qfuse-model FILE`.
"""
import importlib

__version__ = "0.1.0"

__all__ = [
    "export", "build", "ExportError", "ops_used", "demo", "torch_table", "float_fn_table",
    "layer_rule", "cpu_has_avx512_vnni", "SUPPORTED", "FORMAT_VERSION", "main", "cli", "model",
    "exporter", "__version__",
]


def __getattr__(name):
    # The exporter (and torch) load on first use: `qfuse_export.model` works without torch.
    if name in ("model", "exporter"):
        return importlib.import_module(f"{__name__}.{name}")
    if name.startswith("__"):
        raise AttributeError(name)
    exporter = importlib.import_module(f"{__name__}.exporter")
    try:
        return getattr(exporter, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__():
    return sorted(set(globals()) | set(__all__))


def cli(argv=None):
    """The `qfuse-export` command: exporter.main; --help works without torch."""
    import sys

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        exporter = importlib.import_module(f"{__name__}.exporter")
    except ImportError:
        if any(a in ("-h", "--help") for a in args):
            import ast
            import os

            path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exporter.py")
            with open(path, encoding="utf-8") as f:
                print(ast.get_docstring(ast.parse(f.read())))
            return 0
        raise
    return exporter.main(args)


def model_cli(argv=None):
    """The `qfuse-model` command (validate model files): model.main."""
    return importlib.import_module(f"{__name__}.model").main(argv)
