"""What torch.compile (Inductor, freezing) returns for a pt2e model quantized with
torchao's X86InductorQuantizer: the oracle qfuse's engine "inductor_x86" matches.

    from inductor_oracle import compiled_output
    y = compiled_output(converted_module, example_input)   # numpy array (float32)

Importing torchao's x86_inductor_quantizer module registers the oneDNN int8 lowerings
with Inductor; without it torch.compile silently runs the dequantized graph in float.
The numbers depend on the CPU (recorded vectors: AVX-512 VNNI; tests/data/pt2e/README.md).
"""
import logging
import warnings

import numpy as np
import torch
# registers the quantized conv/linear lowerings (onednn.qconv_pointwise, ...)
import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # noqa: F401
import torch._inductor.config as icfg


def compiled_output(converted_module, example_input, return_code=False):
    """Run `converted_module` (convert_pt2e's GraphModule, or an ExportedProgram of it)
    compiled by torch.compile with `torch._inductor.config.freezing = True` on
    `example_input` (a tensor or a tuple of tensors). Returns a float32 numpy array
    (the first output), or (array, generated code) with return_code=True."""
    from torch._inductor.utils import run_and_get_code

    m = converted_module.module() if isinstance(converted_module, torch.export.ExportedProgram) \
        else converted_module
    args = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    old = icfg.freezing
    icfg.freezing = True
    try:
        torch._dynamo.reset()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)
            try:
                y, code = run_and_get_code(torch.compile(m), *args)
            finally:
                logging.disable(logging.NOTSET)
    finally:
        icfg.freezing = old
        torch._dynamo.reset()
    if isinstance(y, (tuple, list)):
        y = y[0]
    y = y.detach().contiguous().numpy().astype(np.float32)
    return (y, "\n".join(code)) if return_code else y
