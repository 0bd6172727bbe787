#!/usr/bin/env python3
"""End-to-end check of the pt2e exporter for torchao's X86InductorQuantizer (engine
"inductor_x86"): small models quantized with X86InductorQuantizer (prepare_pt2e,
calibration, convert_pt2e), exported with `qfuse_export.export` (from the GraphModule
and from an ExportedProgram of it: the two files must be identical), run with
`qfuse run` on the CPU (`--cpu`) and the GPU, and compared bit for bit with the model
compiled by torch.compile (Inductor, freezing; tools/pt2e/inductor_oracle.py). Models
the exporter must refuse (float paths qfuse does not reproduce) must raise ExportError
naming a node. One line per case and device, then "N passed, M failed".

torchvision resnet18 / mobilenet_v2 (--torchvision): whether prepare_pt2e works and
what the exporter says.

Usage: python3 tools/pt2e/test_inductor_export.py [--qfuse PATH] [--only a,b] [--no-gpu]
           [--save DIR] [--torchvision]
--save DIR writes DIR/<case>/{model.safetensors,input.npy,output.npy,case.json}
(the vectors tests/pt2e_inductor.rs reads). Vectors depend on the CPU: AVX-512 VNNI here.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings

warnings.filterwarnings("ignore")
import logging

logging.disable(logging.WARNING)

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, convert_pt2e
from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qfuse_export  # noqa: E402
from qfuse_export import ExportError  # noqa: E402
from inductor_oracle import compiled_output  # noqa: E402


class Fn(nn.Module):
    def __init__(self, f, **mods):
        super().__init__()
        self.f = f
        for k, v in mods.items():
            setattr(self, k, v)

    def forward(self, x):
        return self.f(self, x)


def _branch_pool(s, h):
    """inception's block end: a conv of the pooled block input beside a conv of the input"""
    return torch.cat([s.c(F.avg_pool2d(h, 3, 1, 1)), s.d(h)], 1)


def _res(s, h, relu):
    """a residual block's end: s.b(h) + h [-> relu], then s.c and a max pool (so s.c's output is quantized)"""
    y = s.b(h) + h
    return F.max_pool2d(s.c(torch.relu(y) if relu else y), 1)


def _tail(s, h):
    """a resnet's end: relu(s.b(h) + h), global average, flatten, s.l"""
    return s.l(torch.flatten(F.adaptive_avg_pool2d(torch.relu(s.b(h) + h), (1, 1)), 1))


def _seeded(seed, build):
    """build() with torch's global generator seeded (the weights of a case that is regenerated)"""
    torch.manual_seed(seed)
    return build()


def conv(*a, **k):
    return nn.Conv2d(*a, **k)


def _se(c, sq, act, gate):
    """torchvision's squeeze-excitation block (mobilenet_v3: ReLU / Hardsigmoid; efficientnet: SiLU / Sigmoid)"""
    from torchvision.ops.misc import SqueezeExcitation
    return SqueezeExcitation(c, sq, activation=act, scale_activation=gate)


# name -> (builder, input shape, seed, reduce_range)
CASES = {
    # conv -> relu -> max pool (float, Inductor's C++) -> q: requant inductor_x86 + max_pool2d;
    # then conv -> q (oneDNN u8) -> max pool on u8
    "conv_relu_pool_conv": (lambda: Fn(lambda s, x: F.max_pool2d(s.b(F.max_pool2d(torch.relu(s.a(x)), 2)), 1),
                                       a=conv(3, 16, 3, padding=1), b=conv(16, 24, 3, padding=1)),
                            (2, 3, 16, 16), 1, False),
    "conv_pool_strided": (lambda: Fn(lambda s, x: F.max_pool2d(s.b(F.max_pool2d(s.a(x), 3, 2, 1)), 1),
                                     a=conv(8, 16, 3, stride=2, padding=1), b=conv(16, 16, 1)),
                          (1, 8, 20, 20), 2, False),
    "conv_hardtanh_pool": (lambda: Fn(lambda s, x: F.max_pool2d(s.b(F.max_pool2d(F.hardtanh(s.a(x), 0.0, 6.0), 2)), 1),
                                      a=conv(4, 16, 3, padding=1), b=conv(16, 8, 3, padding=1, groups=8 // 8)),
                           (1, 4, 12, 12), 3, False),
    "dw_chain": (lambda: Fn(lambda s, x: F.max_pool2d(s.c(F.max_pool2d(torch.relu(s.b(F.max_pool2d(s.a(x), 1))), 2)), 1),
                            a=conv(8, 32, 1), b=conv(32, 32, 3, padding=1, groups=32), c=conv(32, 16, 1)),
                 (2, 8, 10, 10), 4, False),
    "reduce_range": (lambda: Fn(lambda s, x: F.max_pool2d(s.b(F.max_pool2d(torch.relu(s.a(x)), 2)), 1),
                                a=conv(3, 16, 3, padding=1), b=conv(16, 24, 3, padding=1)),
                     (1, 3, 16, 16), 5, True),
    # exact ties in both epilogues: power-of-two scales after convert_pt2e (input 2^-5,
    # weights 2^-7 / 3*2^-9, outputs 2^-11 with odd zero points, biases k*2^-13, inputs
    # within zp +- 4), so acc * m often ends in .5: the zero point added after rounding
    # (inductor_x86) and before it (onednn) give different bytes at every such tie
    "ties": (lambda: Fn(lambda s, x: F.max_pool2d(s.b(F.max_pool2d(torch.relu(s.a(x)), 2)), 1),
                        a=conv(16, 32, 3, padding=1), b=conv(32, 16, 3, padding=1)),
             (1, 16, 12, 12), 9, False,
             dict(act=[(0, 2.0 ** -5, 100), (1, 2.0 ** -11, 3), (2, 2.0 ** -11, 121), (3, 2.0 ** -11, 121)],
                  wscale=[2.0 ** -7, 3 * 2.0 ** -9])),
    # a classifier head: the last linear writes f32 (host_float onednn_linear)
    "linear_f32_output": (lambda: Fn(lambda s, x: s.l(x), l=nn.Linear(32, 10)), (4, 32), 11, False),
    "conv_pool_flatten_linear": (lambda: Fn(lambda s, x: s.l(torch.flatten(F.max_pool2d(torch.relu(s.a(x)), 2), 1)),
                                            a=conv(3, 8, 3, padding=1), l=nn.Linear(8 * 4 * 4, 10)),
                                 (2, 3, 8, 8), 14, False),
    "linear_relu_linear": (lambda: Fn(lambda s, x: torch.relu(s.l2(torch.relu(s.l1(x)))),
                                      l1=nn.Linear(64, 48), l2=nn.Linear(48, 16)), (8, 64), 15, False),
    # residual adds: conv(dq(h)) + dq(h) [-> relu] -> q, oneDNN's conv with a sum post-op (a conv
    # reads the sum so that it is quantized; the last conv writes f32 into a max pool, as above)
    "conv_add_relu": (lambda: Fn(lambda s, x: _res(s, s.h(x), True),
                                 h=nn.Sequential(conv(4, 16, 3, padding=1), nn.ReLU()), b=conv(16, 16, 3, padding=1),
                                 c=conv(16, 8, 1)),
                      (2, 4, 10, 10), 21, False),
    "conv_add": (lambda: Fn(lambda s, x: _res(s, s.h(x), False),
                            h=nn.Sequential(conv(4, 24, 1), nn.ReLU()), b=conv(24, 24, 1), c=conv(24, 8, 1)),
                 (1, 4, 9, 9), 22, False),
    "conv_add_downsample": (lambda: Fn(lambda s, x: F.max_pool2d(s.c(torch.relu(s.b(torch.relu(s.a(x))) + s.d(x))), 1),
                                       a=conv(8, 16, 3, stride=2, padding=1), b=conv(16, 16, 3, padding=1),
                                       d=conv(8, 16, 1, stride=2), c=conv(16, 8, 1)),
                            (1, 8, 12, 12), 23, False),
    "conv_add_ties": (lambda: Fn(lambda s, x: _res(s, s.h(x), True),
                                 h=nn.Sequential(conv(16, 16, 3, padding=1), nn.ReLU()), b=conv(16, 16, 3, padding=1),
                                 c=conv(16, 16, 1)),
                      (1, 16, 8, 8), 24, False,
                      dict(act=[(0, 2.0 ** -5, 100), (1, 2.0 ** -11, 3), (2, 2.0 ** -11, 121), (3, 2.0 ** -11, 121),
                                (4, 2.0 ** -11, 121)],
                           wscale=[2.0 ** -7, 3 * 2.0 ** -9])),
    # two convs added: one carries the sum post-op, the other's output is quantized (the former
    # "add_float" refusal)
    "conv_plus_conv": (lambda: Fn(lambda s, x: F.max_pool2d(s.a(x) + s.b(x), 1), a=conv(3, 8, 3, padding=1),
                                  b=conv(3, 8, 3, padding=1)), (1, 3, 8, 8), 13, False),
    # a global average pool between dq and q (Inductor's C++), then the classifier
    "pool_7x7_linear": (lambda: Fn(lambda s, x: s.l(torch.flatten(F.adaptive_avg_pool2d(s.g(x), (1, 1)), 1)),
                                   g=nn.Sequential(conv(3, 32, 3, stride=2, padding=1), nn.ReLU()),
                                   l=nn.Linear(32, 10)),
                        (2, 3, 14, 14), 25, False),
    "pool_5x6": (lambda: Fn(lambda s, x: s.l(torch.flatten(F.adaptive_avg_pool2d(s.g(x), (1, 1)), 1)),
                            g=nn.Sequential(conv(3, 40, 3, padding=1), nn.ReLU()), l=nn.Linear(40, 10)),
                 (1, 3, 5, 6), 26, False),
    "pool_13x13": (lambda: Fn(lambda s, x: s.l(F.dropout(torch.flatten(F.adaptive_avg_pool2d(s.g(x), (1, 1)), 1),
                                                         0.2, False)),
                              g=nn.Sequential(conv(3, 24, 3, padding=1), nn.ReLU()), l=nn.Linear(24, 10)),
                   (1, 3, 13, 13), 27, False),
    # alexnet's head: a quantized max pool, adaptive_avg_pool2d to 3x3 of 4x4 (uneven windows of 2),
    # flatten, dropout, linear -> relu -> dropout -> linear
    "adaptive_head": (lambda: Fn(lambda s, x: s.l2(F.dropout(torch.relu(s.l1(F.dropout(torch.flatten(
                                     F.adaptive_avg_pool2d(F.max_pool2d(s.g(x), 2), (3, 3)), 1), 0.5, False))),
                                     0.5, False)),
                                 g=nn.Sequential(conv(3, 24, 3, padding=1), nn.ReLU()), l1=nn.Linear(24 * 9, 32),
                                 l2=nn.Linear(32, 10)),
                      (2, 3, 8, 8), 34, False),
    # an avg_pool2d (inception's 3x3, stride 1, padding 1, padding counted) of a quantized max pool
    "avg_pool_3x3": (lambda: Fn(lambda s, x: s.l(torch.flatten(F.avg_pool2d(F.max_pool2d(s.g(x), 2), 3, 1, 1), 1)),
                                g=nn.Sequential(conv(3, 20, 3, padding=1), nn.ReLU()), l=nn.Linear(20 * 16, 10)),
                     (1, 3, 8, 8), 35, False),
    # a resnet's end: relu(conv(dq(h)) + dq(h)) -> adaptive_avg_pool2d(1) -> flatten -> q -> linear:
    # the conv with a sum post-op writes f32 (relu), Inductor's C++ averages and quantizes
    "sum_pool_2x2": (lambda: Fn(lambda s, x: _tail(s, s.h(x)),
                                h=nn.Sequential(conv(8, 32, 3, stride=2, padding=1), nn.ReLU()),
                                b=conv(32, 32, 3, padding=1), l=nn.Linear(32, 10)),
                     (2, 8, 4, 4), 31, False),
    "sum_pool_7x7": (lambda: Fn(lambda s, x: _tail(s, s.h(x)),
                                h=nn.Sequential(conv(8, 64, 3, stride=2, padding=1), nn.ReLU()),
                                b=conv(64, 64, 3, padding=1), l=nn.Linear(64, 10)),
                     (1, 8, 14, 14), 32, False),
    "sum_pool_13x11": (lambda: Fn(lambda s, x: _tail(s, s.h(x)),
                                  h=nn.Sequential(conv(4, 20, 3, padding=1), nn.ReLU()),
                                  b=conv(20, 20, 1), l=nn.Linear(20, 10)),
                       (1, 4, 13, 11), 33, False),
    # conv -> hardswish -> q: oneDNN's hardswish post-op (qconv_pointwise(..., 'hardswish')),
    # also on a depthwise conv, as in mobilenet_v3
    "conv_hardswish": (lambda: Fn(lambda s, x: F.max_pool2d(s.c(F.hardswish(s.b(F.hardswish(s.a(x))))), 1),
                                  a=conv(3, 16, 3, padding=1), b=conv(16, 16, 3, padding=1, groups=16),
                                  c=conv(16, 8, 1)),
                       (2, 3, 12, 12), 21, False),
    # conv -> silu -> q: oneDNN's swish post-op (qconv_pointwise(..., 'swish')), as in efficientnet: the
    # stem (3x3, stride 2), a depthwise 5x5 and a depthwise 3x3 conv, silu_ (nn.SiLU(inplace=True)) and silu
    "conv_swish": (lambda: Fn(lambda s, x: F.max_pool2d(s.d(F.silu(s.c(s.b(s.a(x))))), 1),
                              a=nn.Sequential(conv(3, 16, 3, stride=2, padding=1), nn.SiLU(inplace=True)),
                              b=nn.Sequential(conv(16, 16, 5, padding=2, groups=16), nn.SiLU(inplace=True)),
                              c=conv(16, 16, 3, padding=1, groups=16), d=conv(16, 8, 1)),
                   (2, 3, 24, 24), 22, False),
    # mnasnet's end: relu(conv(dq(x))) -> mean([2, 3]) [-> dropout] -> q -> linear: X86InductorQuantizer
    # leaves the mean unannotated, so oneDNN writes the conv's f32 output (relu post-op) and Inductor's
    # C++ averages and quantizes it (conv2d "global_avg_pool" with one input)
    "conv_pool_2x2": (lambda: Fn(lambda s, x: s.l(F.dropout(torch.relu(s.a(x)).mean([2, 3]), 0.2, False)),
                                 a=conv(8, 48, 1), l=nn.Linear(48, 10)),
                      (2, 8, 2, 2), 41, False),
    "conv_pool_7x7": (lambda: Fn(lambda s, x: s.l(torch.relu(s.a(x)).mean([2, 3])),
                                 a=conv(8, 40, 3, stride=2, padding=1), l=nn.Linear(40, 10)),
                      (1, 8, 14, 14), 42, False),
    "conv_pool_13x11_norelu": (lambda: Fn(lambda s, x: s.l(torch.flatten(s.a(x).mean([-1, -2], keepdim=True), 1)),
                                          a=conv(4, 20, 1), l=nn.Linear(20, 10)),
                               (1, 4, 13, 11), 43, False),
    # squeezenet's end: relu(conv) -> adaptive_avg_pool2d(1) (quantized, shared qparams) -> dq -> flatten
    # as the graph output
    "pool_flatten_output": (lambda: Fn(lambda s, x: torch.flatten(s.p(s.g(x)), 1),
                                       g=nn.Sequential(conv(3, 10, 3), nn.ReLU(inplace=True)),
                                       p=nn.AdaptiveAvgPool2d(1)),
                            (2, 3, 5, 5), 44, False),
    # googlenet's end: a channel cat of relu(conv) branches (oneDNN's f32 outputs) -> global average
    # -> flatten -> dropout -> q -> linear: one averaged conv per branch, then a cat of the bytes
    "cat_pool_linear": (lambda: Fn(lambda s, x: (lambda h: s.l(F.dropout(torch.flatten(F.adaptive_avg_pool2d(
        torch.cat([torch.relu(s.a(h)), torch.relu(s.b(h)), torch.relu(s.c(h))], 1), 1), 1),
        0.2, False)))(torch.relu(s.h(x))), h=conv(3, 8, 3, padding=1), a=conv(8, 24, 1), b=conv(8, 40, 3, padding=1),
        c=conv(8, 20, 5, padding=2), l=nn.Linear(84, 10)), (2, 3, 7, 7), 45, False),
    "cat_pool_5x3": (lambda: Fn(lambda s, x: s.l(torch.flatten(F.adaptive_avg_pool2d(torch.cat(
        [torch.relu(s.a(x)), torch.relu(s.b(x))], 1), 1), 1)), a=conv(6, 20, 1), b=conv(6, 12, 3, padding=1),
        l=nn.Linear(32, 10)), (1, 6, 5, 3), 46, False),
    # a conv (and a relu(conv)) as the graph output: oneDNN writes f32 ("output": "float32")
    "conv_f32_output": (lambda: Fn(lambda s, x: s.a(x), a=conv(3, 8, 3)), (1, 3, 8, 8), 12, False),
    "conv_relu_f32_output": (lambda: Fn(lambda s, x: torch.relu(s.b(F.max_pool2d(torch.relu(s.a(x)), 2))),
                                        a=conv(3, 8, 3, padding=1), b=conv(8, 6, 3, padding=1)),
                             (2, 3, 8, 8), 13, False),
    # squeeze-excitation (mobilenet_v3: hardsigmoid gate; efficientnet / regnet_y: sigmoid): oneDNN
    # writes the block input and the second SE conv in f32, Inductor's C++ multiplies and quantizes
    # (conv "output": "float32" + inductor_gate_mul); the pool reads the input quantized
    "se_hardsigmoid": (lambda: Fn(lambda s, x: s.d(s.se(s.a(x))),
                                  a=nn.Sequential(conv(3, 19, 3, padding=1), nn.ReLU(inplace=True)),
                                  se=_se(19, 8, nn.ReLU, nn.Hardsigmoid), d=conv(19, 6, 1)),
                       (2, 3, 7, 6), 51, False),
    "se_sigmoid_swish": (lambda: Fn(lambda s, x: s.d(s.se(s.a(x))),
                                    a=nn.Sequential(conv(3, 40, 3, padding=1), nn.SiLU(inplace=True)),
                                    se=_se(40, 10, nn.SiLU, nn.Sigmoid), d=conv(40, 8, 1)),
                         (1, 3, 6, 5), 52, False),
    # mobilenet_v3's classifier: linear -> hardswish (not fused: oneDNN writes f32, Inductor's C++)
    "linear_hardswish": (lambda: Fn(lambda s, x: s.l2(F.dropout(F.hardswish(s.l1(x)), 0.2, False)),
                                    l1=nn.Linear(24, 37), l2=nn.Linear(37, 10)), (3, 24), 53, False),
    # inception's branch pools (the quantizer leaves the pool's input in float: Inductor averages
    # oneDNN's f32 outputs): one inductor_avg_pool2d per f32 part (a conv's f32 output, or an f32
    # max_pool2d of one) and a cat of the bytes
    "avg_pool_float_cat": (lambda: Fn(lambda s, x: _branch_pool(s, torch.cat([torch.relu(s.a(x)),
                                                                              torch.relu(s.b(x))], 1)),
                              a=conv(3, 8, 3, padding=1), b=conv(3, 5, 3, padding=1), c=conv(13, 8, 1),
                              d=conv(13, 8, 1)),
                           (1, 3, 8, 8), 36, False),
    # Mixed_5b: the branch pool of the f32 max_pool2d of relu(conv), which the other branch reads quantized
    "avg_pool_float_maxpool": (lambda: Fn(lambda s, x: _branch_pool(s, F.max_pool2d(torch.relu(s.a(x)), 3, 2)),
                                          a=conv(3, 19, 3, padding=1), c=conv(19, 8, 1), d=conv(19, 8, 1)),
                               (2, 3, 11, 11), 37, False),
    # Mixed_6b: a cat whose last part is the f32 max pool of a float cat (Mixed_6a's branch_pool)
    "avg_pool_cat_maxpool": (lambda: Fn(lambda s, x: _branch_pool(s, torch.cat([torch.relu(s.e(x)), F.max_pool2d(
        torch.cat([torch.relu(s.a(x)), torch.relu(s.b(x))], 1), 3, 2)], 1)),
        a=conv(3, 8, 3, padding=1), b=conv(3, 6, 3, padding=1), e=conv(3, 7, 3, stride=2),
        c=conv(21, 8, 1), d=conv(21, 8, 1)), (1, 3, 9, 9), 38, False),
    # inception's end: a global average of a cat with nested cats of relu(conv) outputs (Mixed_7c)
    "cat_pool_nested": (lambda: Fn(lambda s, x: s.l(torch.flatten(F.adaptive_avg_pool2d(torch.cat(
        [torch.relu(s.a(x)), torch.cat([torch.relu(s.b(x)), torch.relu(s.c(x))], 1)], 1), 1), 1)),
        a=conv(6, 8, 1), b=conv(6, 12, 3, padding=1), c=conv(6, 4, 1), l=nn.Linear(24, 10)), (1, 6, 5, 5), 48, False),
    # Inductor's sum conv (qconv2d_pointwise.binary_tensor 'sum', u8 output) with an input scale PyTorch eager's round trip f32(1/f32(1/s)) moves and exact
    # ties under one rule or the other (sum_conv_src_scale): which input scale oneDNN multiplies by and
    # whether the sum is a fused multiply-add; stride 1 and 2, both addend orders. The addend is d(x), a
    # 1x1 identity conv (its bytes are x's, strided), read by the add alone: Inductor writes the sum into
    # it in place (u8 output). Of two conv addends the quantizer fuses the first, so the reversed order
    # adds a max pool of 1 of d(x) (a quantized tensor that is not a conv's output)
    "sum_src_scale_s1": (lambda: _seeded(61, lambda: Fn(lambda s, x: F.max_pool2d(s.c(s.b(x) + s.d(x)), 1),
                                                        b=conv(16, 16, 3, padding=1), c=conv(16, 16, 1), d=conv(16, 16, 1))),
                         (1, 16, 8, 8), 61, False, dict(fn=lambda cm, g, shape: sum_conv_src_scale(cm, g, shape))),
    "sum_src_scale_s1_rev": (lambda: _seeded(62, lambda: Fn(lambda s, x: F.max_pool2d(s.c(F.max_pool2d(s.d(x), 1) + s.b(x)), 1),
                                                            b=conv(16, 16, 3, padding=1), c=conv(16, 16, 1), d=conv(16, 16, 1))),
                             (1, 16, 8, 8), 62, False, dict(fn=lambda cm, g, shape: sum_conv_src_scale(cm, g, shape))),
    "sum_src_scale_s2": (lambda: _seeded(63, lambda: Fn(lambda s, x: F.max_pool2d(s.c(s.b(x) + s.d(x)), 1),
                                                        b=conv(16, 16, 3, stride=2, padding=1), c=conv(16, 16, 1),
                                                        d=conv(16, 16, 1, stride=2))),
                         (1, 16, 12, 12), 63, False, dict(fn=lambda cm, g, shape: sum_conv_src_scale(cm, g, shape))),
    "sum_src_scale_s2_rev": (lambda: _seeded(64, lambda: Fn(lambda s, x: F.max_pool2d(s.c(F.max_pool2d(s.d(x), 1) + s.b(x)), 1),
                                                            b=conv(16, 16, 3, stride=2, padding=1), c=conv(16, 16, 1),
                                                        d=conv(16, 16, 1, stride=2))),
                             (1, 16, 12, 12), 64, False, dict(fn=lambda cm, g, shape: sum_conv_src_scale(cm, g, shape))),
    # the same with output scales that are not powers of two (where the multiplication by 1/so before or
    # after the sum matters) and the kernels resnets use (ONEDNN_VERBOSE=1, oneDNN 3.13.3, AVX-512 VNNI):
    # brgconv_1x1 for the 1x1 sum convs with 64 channels (a bottleneck's conv3 + relu, the stride-2
    # downsample), brg_conv_fwd for the 3x3 ones
    "sum_scale_3x3": (lambda: _seeded(66, lambda: Fn(lambda s, x: F.max_pool2d(s.c(s.b(x) + s.d(x)), 1),
                                                     b=conv(16, 16, 3, padding=1), c=conv(16, 16, 1), d=conv(16, 16, 1))),
                      (1, 16, 8, 8), 66, False, dict(fn=lambda cm, g, shape: sum_conv_src_scale(cm, g, shape, so=0.0173))),
    "sum_scale_3x3_s2_rev": (lambda: _seeded(67, lambda: Fn(lambda s, x: F.max_pool2d(s.c(F.max_pool2d(s.d(x), 1) + s.b(x)), 1),
                                                            b=conv(16, 16, 3, stride=2, padding=1), c=conv(16, 16, 1),
                                                            d=conv(16, 16, 1, stride=2))),
                             (1, 16, 12, 12), 67, False, dict(fn=lambda cm, g, shape: sum_conv_src_scale(cm, g, shape, so=0.0219))),
    "sum_scale_1x1_relu": (lambda: _seeded(68, lambda: Fn(lambda s, x: F.max_pool2d(s.c(torch.relu(s.b(x) + s.d(x))), 1),
                                                          b=conv(64, 64, 1), c=conv(64, 64, 1), d=conv(64, 64, 1))),
                           (1, 64, 8, 8), 68, False, dict(fn=lambda cm, g, shape: sum_conv_src_scale(cm, g, shape, so=0.0137))),
    "sum_scale_1x1_s2_relu": (lambda: _seeded(69, lambda: Fn(lambda s, x: F.max_pool2d(s.c(torch.relu(s.b(x) + s.d(x))), 1),
                                                             b=conv(64, 64, 1, stride=2), c=conv(64, 64, 1),
                                                             d=conv(64, 64, 1, stride=2))),
                              (1, 64, 8, 8), 69, False, dict(fn=lambda cm, g, shape: sum_conv_src_scale(cm, g, shape, so=0.0291))),
    # Inductor's f32 sum pattern (its u8 in-place sum is not allowed: the addend is the conv's own input,
    # or an op that is not an ancestor of the conv still reads it): oneDNN's conv with a sum post-op of
    # scale 1 writes f32 t = f32(v + d), d Inductor's dequantized addend, then Inductor's quantize with the
    # zero point after rounding (odd output zero points, so each pinned tie also separates that)
    "sum_f32_own_input": (lambda: _seeded(65, lambda: Fn(lambda s, x: F.max_pool2d(s.c(s.b(x) + x), 1),
                                                         b=conv(16, 16, 3, padding=1), c=conv(16, 16, 1))),
                          (1, 16, 8, 8), 65, False,
                          dict(fn=lambda cm, g, shape: sum_conv_src_scale(
                              cm, g, shape, so=0.0187, zo=7, rule=("onednn_no_fma", "scale", True)))),
    "sum_f32_own_input_1x1_relu": (lambda: _seeded(70, lambda: Fn(lambda s, x: F.max_pool2d(s.c(torch.relu(s.b(x) + x)), 1),
                                                                  b=conv(64, 64, 1), c=conv(64, 64, 1))),
                                   (1, 64, 8, 8), 70, False,
                                   dict(fn=lambda cm, g, shape: sum_conv_src_scale(
                                       cm, g, shape, so=0.0231, zo=11, rule=("onednn_no_fma", "scale", True)))),
    # the addend d(x) is also read after the sum (by e, not an ancestor of b): the f32 pattern again
    "sum_f32_addend_read_later": (lambda: _seeded(71, lambda: Fn(
        lambda s, x: (lambda u: torch.cat([F.max_pool2d(s.c(torch.relu(s.b(x) + u)), 1),
                                           F.max_pool2d(s.e(u), 1)], 1))(s.d(x)),
        b=conv(16, 16, 3, padding=1), c=conv(16, 16, 1), d=conv(16, 16, 1), e=conv(16, 8, 1))),
        (1, 16, 8, 8), 71, False),
    # the pooled tail with ties under qfuse's rule and an odd zero point after the average (a resnet's end:
    # torchvision's zero points there are 0, which cannot tell where the zero point is added)
    "sum_pool_ties": (lambda: _seeded(72, lambda: Fn(
        lambda s, x: s.l(torch.flatten(F.adaptive_avg_pool2d(torch.relu(s.b(x) + x), (1, 1)), 1)),
        b=conv(16, 16, 3, padding=1), l=nn.Linear(16, 16))),
        (1, 16, 5, 5), 72, False, dict(fn=lambda cm, g, shape: sum_pool_ties(cm, g, shape))),
    # an add of two float tensors (max pools of relu'd f32 conv outputs; X86InductorQuantizer leaves the
    # add's inputs unquantized): Inductor's C++ f32(a + b), then its quantize (inductor_add)
    "add_float_pools": (lambda: Fn(lambda s, x: s.c(F.max_pool2d(torch.relu(s.a(x)), 2) +
                                                    F.max_pool2d(torch.relu(s.b(x)), 2)),
                                   a=conv(3, 8, 3, padding=1), b=conv(3, 8, 3, padding=1), c=conv(8, 8, 1)),
                        (1, 3, 8, 8), 13, False),
    "add_float_convs": (lambda: Fn(lambda s, x: s.c(torch.relu(s.a(x)) + torch.relu(s.b(x))),
                                   a=conv(3, 8, 3, padding=1), b=conv(3, 8, 1), c=conv(8, 8, 1)),
                        (1, 3, 8, 8), 14, False),
}

# models the exporter must refuse (with the node it names)
REFUSED = {
    # two f32 conv outputs max-pooled and added in float before a quantize (Inductor's C++ on f32
    # tensors qfuse does not hold)

    # squeezenet's end with a functional relu: the quantizer quantizes nothing after the conv, so the
    # averaged f32 conv output is the graph output (qfuse has no float conv output)
    "conv_pool_f32_output": (lambda: Fn(lambda s, x: torch.flatten(F.adaptive_avg_pool2d(torch.relu(s.a(x)), 1), 1),
                                        a=conv(3, 10, 3)), (2, 3, 5, 5), 44, False),
    # googlenet's end with one branch max-pooled in float: the mean reads f32 values that are not a
    # conv's output (refused, naming the adaptive_avg_pool2d)
    "cat_pool_float_branch": (lambda: Fn(lambda s, x: s.l(torch.flatten(F.adaptive_avg_pool2d(torch.cat(
        [torch.relu(s.a(x)), F.max_pool2d(torch.relu(s.b(x)), 3, 1, 1)], 1), 1), 1)),
        a=conv(6, 8, 1), b=conv(6, 8, 3, padding=1), l=nn.Linear(16, 10)), (1, 6, 5, 5), 47, False),
}


def _attr(gm, target):
    obj = gm
    for p in target.split("."):
        obj = getattr(obj, p)
    return obj


def _set_bias(cm, conv, b):
    """the f32 bias of the conv node `conv` set to b"""
    with torch.no_grad():
        _attr(cm, conv.args[2].target).copy_(torch.from_numpy(b))
    cm.recompile()


def apply_override(cm, override, g, shape):
    """power-of-two qparams (tools/pt2e/gen_inductor.py's tie construction)"""
    if "fn" in override:  # a case's own construction (sum_conv_src_scale)
        return override["fn"](cm, g, shape)
    qd = torch.ops.quantized_decomposed
    qs = [n for n in cm.graph.nodes if n.op == "call_function" and n.target == qd.quantize_per_tensor.default]
    for idx, scale, zp in override["act"]:
        q = qs[idx]
        q.args = (q.args[0], float(scale), int(zp)) + tuple(q.args[3:])
        for u in list(q.users):
            if u.target == qd.dequantize_per_tensor.default:
                u.args = (u.args[0], float(scale), int(zp)) + tuple(u.args[3:])
    for n in cm.graph.nodes:
        if n.op == "call_function" and n.target == qd.dequantize_per_channel.default:
            old = _attr(cm, n.args[1].target)
            new = torch.tensor([override["wscale"][i % len(override["wscale"])] for i in range(old.numel())],
                               dtype=old.dtype)
            with torch.no_grad():
                old.copy_(new)
        if n.op == "call_function" and n.target in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default):
            b = _attr(cm, n.args[2].target)
            with torch.no_grad():
                b.copy_(torch.randint(-64, 65, b.shape, generator=g).float() * 2.0 ** -13)
    cm.recompile()
    si, zi = override["act"][0][1], override["act"][0][2]
    return (torch.randint(-4, 5, shape, generator=g).double() * si).float()


F32, F64 = np.float32, np.float64


def _rt(s):
    return F32(1.0 / F64(F32(1.0 / F64(s))))


def _fma(d, k, v):
    """f32(d * k + v) rounded once: d an integer below 2^9, k and v f32 (the product is exact in
    f64; the f64 sum is checked to be exact, so its rounding to f32 is the only one)"""
    p = d.astype(F64) * F64(k)
    s64 = p + v.astype(F64)
    assert np.all(s64 - p == v.astype(F64)), "f64 sum not exact"
    return s64.astype(F32)


# the candidate arithmetics of a oneDNN conv with a sum post-op (u8 output, zero point 0), as the value
# before rounding; `v` is the conv's f32 value (input scale, weight scale, bias), d = f32(a - za)
SUM_FORMS = {
    # oneDNN 3.13 (brgemm and jit int8 kernels): the sum post-op is vfmadd231ps with the sum scale
    # itself, then the multiplication by f32(1/so) (the dst scale after the post-ops)
    "onednn": lambda v, d, sa, so: (_fma(d, sa, v) * (F32(1) / F32(so))).astype(F32),
    "onednn_no_fma": lambda v, d, sa, so: ((v + (d * F32(sa)).astype(F32)).astype(F32) * (F32(1) / F32(so))).astype(F32),
    # in the output's units: v * (1/so), the addend times f32(sa/so) (fused, or two roundings: qfuse's rule
    # before 2026-12-02)
    "out_units_fma": lambda v, d, sa, so: _fma(d, F32(F32(sa) / F32(so)), (v * (F32(1) / F32(so))).astype(F32)),
    "out_units": lambda v, d, sa, so: ((v * (F32(1) / F32(so))).astype(F32)
                                       + (d * F32(F32(sa) / F32(so))).astype(F32)).astype(F32),
}


def _sum_rule(acc, si, ws, b, so, aq, sa, za, form="onednn"):
    """the value before rounding of a oneDNN sum conv (zero point 0, no relu) with input scale si"""
    v = (((acc.astype(F32) * F32(si)).astype(F32) * ws[:, None, None]).astype(F32) + b[:, None, None]).astype(F32)
    return SUM_FORMS[form](v, aq.astype(F32) - F32(za), F32(sa), so)


# (form, input scale) candidates: the scale itself ("scale") or PyTorch eager's round trip
SUM_CANDIDATES = [(f, sn) for f in SUM_FORMS for sn in ("scale", "round_trip")]
SUM_RULES = {}  # the candidate rules' bytes of the last sum_conv_src_scale case


def sum_conv_src_scale(cm, g, shape, so=None, zo=0, rule=("onednn", "scale", False)):
    """Inductor's sum conv (conv(x) + a, a the addend) with an input scale s that PyTorch eager's
    round trip f32(1/f32(1/s)) moves; output scale `so` (2^-6 unless given), zero point 0. Each
    output channel's bias puts one pixel on an exact .5 tie under oneDNN's rule (SUM_FORMS
    "onednn" with the scale itself) where one other candidate (channel o: the o-th of the others,
    cyclically) rounds the other way. The sum output is read by a 1x1 identity conv (weights 1,
    scale 1, bias 0, output scale `so`) so the model output is the sum conv's bytes times `so`.
    `zo` is the output zero point (odd for Inductor's f32 sum form: oneDNN writes f32, Inductor
    quantizes with the zero point added after rounding); `rule` = (form, input scale, zero point
    after rounding) is the rule the ties are pinned under."""
    qd = torch.ops.quantized_decomposed
    while True:
        si = F32(10 ** (-2.5 + torch.rand(1, generator=g).item()))
        if _rt(si) != si:
            break
    zi, so = 60, F32(2.0 ** -6 if so is None else so)
    nodes = list(cm.graph.nodes)
    add = next(n for n in nodes if n.target in (torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor))
    convs = [n for n in nodes if n.target == torch.ops.aten.conv2d.default]
    sc = next(a for a in add.args if a in convs)
    ad = next(a for a in add.args if a is not sc)
    # the addend: x itself (dq(q(x))) or d(x), a 1x1 identity conv of x (weights 1, scale 1, bias 0, its
    # output quantized as x: its bytes are x's, strided)
    chain = [ad]
    while chain[-1].target in (qd.dequantize_per_tensor.default, qd.quantize_per_tensor.default,
                               torch.ops.aten.max_pool2d.default):
        chain.append(chain[-1].args[0])
    d_conv = chain[-1] if chain[-1].target == torch.ops.aten.conv2d.default else None
    for q in [n for n in nodes if n.target == qd.quantize_per_tensor.default]:
        inp = q.args[0]
        x_side = inp.op == "placeholder" or inp in chain
        s, z = (float(si), zi) if x_side else (float(so), zo)
        q.args = (q.args[0], s, z) + tuple(q.args[3:])
        for u in list(q.users):
            if u.target == qd.dequantize_per_tensor.default:
                u.args = (u.args[0], s, z) + tuple(u.args[3:])
    # the reader (and d): identity
    def reads_sum(c):
        n = c.args[0]
        while n.op == "call_function" and n not in (add,) and n.args:
            n = n.args[0]
            if n is add:
                return True
        return False
    rd = next(c for c in convs if c is not sc and c is not d_conv and reads_sum(c))
    for idc in [rd] + ([d_conv] if d_conv is not None else []):
        wdq = idc.args[1]
        with torch.no_grad():
            wq = _attr(cm, wdq.args[0].target)
            wq.copy_(torch.eye(wq.shape[0], dtype=wq.dtype).reshape(wq.shape))
            _attr(cm, wdq.args[1].target).fill_(1.0)
            _attr(cm, idc.args[2].target).zero_()
    cm.recompile()
    # the input, its bytes, the addend's bytes
    k = torch.randint(-zi, 256 - zi, shape, generator=g).double()
    x = (k * float(si)).float()
    xq = qd.quantize_per_tensor.default(x, float(si), zi, 0, 255, torch.uint8)
    assert torch.equal(xq.double() - zi, k)
    st = list(d_conv.args[3])[0] if d_conv is not None and len(d_conv.args) > 3 else 1
    aq = xq[:, :, ::st, ::st]
    aq = aq[0].numpy().astype(np.int64)
    stride = list(sc.args[3]) if len(sc.args) > 3 else [1, 1]
    pad = list(sc.args[4]) if len(sc.args) > 4 else [0, 0]
    swdq = sc.args[1]
    swq = _attr(cm, swdq.args[0].target)
    ws = _attr(cm, swdq.args[1].target).numpy().astype(F32)
    acc = F.conv2d(k, swq.double(), stride=stride, padding=pad)[0].numpy()
    O = acc.shape[0]
    b = np.zeros(O, dtype=F32)
    scales = {"scale": si, "round_trip": _rt(si)}
    cands = [(f, sn, after) for f, sn in SUM_CANDIDATES for after in ((False, True) if zo else (False,))]
    others = [c for c in cands if c != rule]

    relu = any(u.target in (torch.ops.aten.relu.default, torch.ops.aten.relu_.default) for u in add.users)

    def to_byte(val, after):
        """the output byte of a value before rounding (relu applied): the zero point added before
        rounding (oneDNN's u8 output) or after (Inductor's quantize)"""
        if relu:
            val = np.maximum(val, F32(0))
        r = np.rint(val) + zo if after else np.rint((val + F32(zo)).astype(F32))
        return np.clip(r, 0, 255)
    inv = F64(F32(1) / F32(so))
    pins = 0
    for o in range(O):
        alt = others[o % len(others)]
        one = lambda f, sn, bo: _sum_rule(acc[o:o + 1], scales[sn], ws[o:o + 1], np.array([bo], F32), so,
                                          aq[o:o + 1], si, zi, f)[0]
        byte = lambda c, bo, j: to_byte(one(c[0], c[1], bo)[j], c[2])
        pA = ((acc[o].astype(F32) * F32(si)).astype(F32) * ws[o]).astype(F32)
        def tie(j, kk, bo):
            tA, tB = one(rule[0], rule[1], bo)[j], one(alt[0], alt[1], bo)[j]
            return tA == F32(kk + 0.5) and byte(rule, bo, j) != byte(alt, bo, j) and 0 < tB < 255 - zo

        # the biases that put the largest accumulators' pixels near kk + 0.5, and their neighbours
        tries = ((np.unravel_index(j, acc[o].shape), kk, dd) for j in np.argsort(-np.abs(acc[o]).ravel(), kind="stable")
                 for kk in range(20, 230, 7) for dd in range(-4, 5))
        vt = lambda j, kk: F32((kk + 0.5) / inv - F64(aq[o][j] - zi) * F64(si))  # v at the tie
        bias = lambda j, kk, dd: F32(F64(vt(j, kk)) - F64(pA[j]) + dd * F64(np.spacing(vt(j, kk))))
        bo = next((bo for j, kk, dd in tries for bo in [bias(j, kk, dd)] if abs(bo) <= 4 and tie(j, kk, bo)), None)
        if bo is not None:
            b[o], pins = bo, pins + 1
    _set_bias(cm, sc, b)
    SUM_RULES.clear()
    name = lambda c: f"{c[0]}/{c[1]}" + ("/zp_after_rounding" if c[2] else "")
    SUM_RULES.update({name(c): to_byte(_sum_rule(acc, scales[c[1]], ws, b, so, aq, si, zi, c[0]), c[2])
                      .astype(np.uint8) for c in cands})
    SUM_RULES["_info"] = dict(input_scale=float(si), round_trip_scale=float(_rt(si)), input_zero_point=zi,
                              output_scale=float(so), stride=stride, pinned_channels=int(pins),
                              **({} if rule == ("onednn", "scale", False) else dict(rule=name(rule))),
                              **(dict(output_zero_point=zo) if zo else {}))
    return x


def _seq_sum(vals, order="C"):
    """the f32 sum of vals from 0, element by element (row-major, or column-major with "F")"""
    acc = F32(0)
    for v in np.asarray(vals, F32).ravel(order=order):
        acc = F32(acc + v)
    return acc


# candidate arithmetics of Inductor's pooled resnet tail (relu(conv(dq(x)) + dq(a)) -> global average
# -> q): pixel values t (oneDNN's f32 sum), their f32 sum, the mean, the quantize
POOL_FORMS = {
    # qfuse's rule (EpilogueForm::OnednnSumPool): t = f32(v + f32(f32(a - za) * sa)), relu, the sum in
    # row-major order from 0, m = f32(S / f32(H*W)), rint(f32(m * f32(1/so))) + zo
    "inductor": dict(),
    "zp_before_rounding": dict(zp_before=True),
    "mean_by_product": dict(product=True),
    "column_major_sum": dict(order="F"),
    "fma_sum": dict(fma=True),
}


def _pool_byte(pA, b, aq, za, sa, so, zo, fma=False, product=False, order="C", zp_before=False):
    v = (pA + F32(b)).astype(F32)
    if fma:
        t = _fma(aq.astype(F32) - F32(za), F32(sa), v)
    else:
        t = (v + ((aq.astype(F32) - F32(za)) * F32(sa)).astype(F32)).astype(F32)
    t = np.maximum(t, F32(0))
    S = _seq_sum(t, order)
    hw = F32(t.size)
    m = F32(S * (F32(1) / hw)) if product else F32(S / hw)
    u = F32(m * (F32(1) / F32(so)))
    r = np.rint(F32(u + F32(zo))) if zp_before else np.rint(u) + zo
    return int(np.clip(r, 0, 255)), u


POOL_RULES = {}


def sum_pool_ties(cm, g, shape, so=0.0173, zo=9):
    """Inductor's pooled resnet tail, l(flatten(adaptive_avg_pool2d(relu(b(x) + x), 1))), with each
    channel's bias putting its quantized average on an exact .5 tie under qfuse's rule where one other
    candidate (POOL_FORMS, cyclically) gives another byte; the pool's quantize has scale `so` and an odd
    zero point `zo`, the linear l is the identity (weights 1, scale 1, bias 0), so the f32 model output
    is (byte - zo) * so."""
    qd = torch.ops.quantized_decomposed
    si, zi = F32(0.0213), 60
    nodes = list(cm.graph.nodes)
    add = next(n for n in nodes if n.target in (torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor))
    sc = next(a for a in add.args if a.target == torch.ops.aten.conv2d.default)
    lin = next(n for n in nodes if n.target == torch.ops.aten.linear.default)
    for q in [n for n in nodes if n.target == qd.quantize_per_tensor.default]:
        x_side = q.args[0].op == "placeholder"
        sq, zq = (float(si), zi) if x_side else (float(so), zo)
        q.args = (q.args[0], sq, zq) + tuple(q.args[3:])
        for u in list(q.users):
            if u.target == qd.dequantize_per_tensor.default:
                u.args = (u.args[0], sq, zq) + tuple(u.args[3:])
    with torch.no_grad():
        wdq = lin.args[1]
        wq = _attr(cm, wdq.args[0].target)
        wq.copy_(torch.eye(wq.shape[0], dtype=wq.dtype))
        _attr(cm, wdq.args[1].target).fill_(1.0)
        _attr(cm, lin.args[2].target).zero_()
    k = torch.randint(-zi, 256 - zi, shape, generator=g).double()
    x = (k * float(si)).float()
    aq = (k + zi)[0].numpy().astype(np.int64)
    swdq = sc.args[1]
    swq = _attr(cm, swdq.args[0].target)
    ws = _attr(cm, swdq.args[1].target).numpy().astype(F32)
    pad = list(sc.args[4]) if len(sc.args) > 4 else [0, 0]
    acc = F.conv2d(k, swq.double(), padding=pad)[0].numpy()
    O = acc.shape[0]
    b = np.zeros(O, F32)
    alts = [f for f in POOL_FORMS if f != "inductor"]
    pins = 0
    for o in range(O):
        pA = ((acc[o].astype(F32) * si).astype(F32) * ws[o]).astype(F32)
        d = ((aq[o].astype(F32) - F32(zi)) * si).astype(F32)
        alt = POOL_FORMS[alts[o % len(alts)]]
        def b_mean(kk):
            """the bias that puts the mean at (kk + 0.5) * so (Newton steps for the relu)"""
            target = F64(kk + 0.5) * F64(so)
            b0 = target - F64(np.mean(pA.astype(F64) + d.astype(F64)))
            for _ in range(6):
                t64 = np.maximum(pA.astype(F64) + b0 + d.astype(F64), 0)
                npos = int((t64 > 0).sum())
                if npos == 0:
                    break
                b0 += (target - t64.mean()) * t64.size / npos
            return b0

        def tie(kk, bo):
            byte, u = _pool_byte(pA, bo, aq[o], zi, si, so, zo)
            return u == F32(kk + 0.5) and _pool_byte(pA, bo, aq[o], zi, si, so, zo, **alt)[0] != byte

        tries = ((kk, F32(b0 + dd * F64(np.spacing(F32(b0))))) for kk in range(40, 200, 3) for b0 in [b_mean(kk)]
                 for dd in range(-60, 61))
        bo = next((bo for kk, bo in tries if tie(kk, bo)), None)
        if bo is not None:
            b[o], pins = bo, pins + 1
    _set_bias(cm, sc, b)
    POOL_RULES.clear()
    for name, kw in POOL_FORMS.items():
        POOL_RULES[name] = np.array([_pool_byte(((acc[o].astype(F32) * si).astype(F32) * ws[o]).astype(F32),
                                                b[o], aq[o], zi, si, so, zo, **kw)[0] for o in range(O)])
    POOL_RULES["_info"] = dict(input_scale=float(si), input_zero_point=zi, output_scale=float(so),
                               output_zero_point=zo, pinned_channels=int(pins))
    return x


def quantize(model, shape, seed, reduce_range, ncal=4, override=None):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = model.eval()
    calib = [torch.randn(shape, generator=g) for _ in range(ncal)]
    x = torch.randn(shape, generator=g)
    gm = torch.export.export(model, (calib[0],)).module()
    q = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(reduce_range=reduce_range))
    pm = prepare_pt2e(gm, q)
    for c in calib:
        pm(c)
    cm = convert_pt2e(pm)
    if override:
        x = apply_override(cm, override, g, shape)
    return cm, x


def distinct_relus(resnet):
    """The workaround for X86InductorQuantizer on torchvision's resnets: prepare_pt2e fails
    with "Input partition has more than one output node" (in _annotate_conv2d_binary_unary)
    because each BasicBlock calls its one `self.relu` module twice; a forward with two
    functional relus quantizes."""
    def fwd(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + idt)

    for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
        for blk in layer:
            blk.forward = fwd.__get__(blk)
    return resnet


def qfuse_run(qfuse, model_path, x_path, y_path, cpu):
    env = dict(os.environ)
    if not cpu:
        env.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp())
    cmd = [qfuse, "run", model_path, "--input", x_path, "--output", y_path] + (["--cpu"] if cpu else [])
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return None, (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:]
    return np.load(y_path), None


def compare(got, ref):
    if got.shape != ref.shape:
        return f"shape {got.shape} != {ref.shape}"
    bad = np.flatnonzero(got.view(np.uint32) != ref.view(np.uint32))
    if bad.size:
        i = bad[0]
        return f"{bad.size} of {ref.size} differ; first at {i}: {got.flat[i]!r} != {ref.flat[i]!r}"
    return None


def main():
    ap = argparse.ArgumentParser()
    tgt = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ap.add_argument("--qfuse", default=os.path.join(tgt, "release", "qfuse"))
    ap.add_argument("--only", default="")
    ap.add_argument("--no-gpu", action="store_true")
    ap.add_argument("--save", default="")
    ap.add_argument("--torchvision", action="store_true")
    a = ap.parse_args()
    only = set(a.only.split(",")) if a.only else None
    npass = nfail = 0
    work = tempfile.mkdtemp(prefix="qfuse_inductor_")
    devs = ["cpu"] + ([] if a.no_gpu else ["gpu"])
    for name, (build, shape, seed, rr, *ov) in CASES.items():
        if only and name not in only:
            continue
        try:
            cm, x = quantize(build(), shape, seed, rr, override=ov[0] if ov else None)
            ref = compiled_output(cm, x)
            mp = os.path.join(work, f"{name}.safetensors")
            h1 = qfuse_export.export(cm, x, mp)
            h2, _ = qfuse_export.build(torch.export.export(cm, (x,)), x)
            if json.dumps(h1, sort_keys=True) != json.dumps(h2, sort_keys=True):
                raise AssertionError("the GraphModule and ExportedProgram headers differ")
            eager = cm(x).detach().numpy()
        except Exception as e:  # noqa: BLE001
            print(f"FAIL {name}: export: {type(e).__name__}: {e}")
            nfail += 1
            SUM_RULES.clear()
            POOL_RULES.clear()
            continue
        rules, rules_key = None, "sum_conv_rules"
        if ov and "fn" in ov[0] and POOL_RULES:
            info = POOL_RULES.pop("_info")
            yb = ref[0].astype(np.float64) / np.float64(np.float32(info["output_scale"]))
            assert np.all(np.abs(yb - np.rint(yb)) < 1e-3), "the output is not the pool's bytes"
            yb = np.rint(yb) + info["output_zero_point"]
            rules_key = "pool_rules"
            rules = dict(info, rule="inductor",
                         mismatching_bytes={k: int((v != yb).sum()) for k, v in POOL_RULES.items()}, bytes=int(yb.size))
            POOL_RULES.clear()
            print(f"info {name}: {rules}")
        if ov and "fn" in ov[0] and SUM_RULES:
            # the sum conv's bytes: the 1x1 identity reader and the max pool of 1 keep them (times so)
            info = SUM_RULES.pop("_info")
            yb = ref[0].astype(np.float64) / np.float64(np.float32(info["output_scale"]))
            assert np.all(np.abs(yb - np.rint(yb)) < 1e-3), "the output is not the sum conv's bytes"
            yb = np.rint(yb) + info.get("output_zero_point", 0)
            rules = dict(info, mismatching_bytes={k: int((v != yb.astype(np.int64)).sum()) for k, v in SUM_RULES.items()},
                         bytes=int(yb.size))
            SUM_RULES.clear()
            print(f"info {name}: {rules}")
        xp = os.path.join(work, f"{name}_x.npy")
        np.save(xp, x.numpy())
        ops = sorted({(n["op"], n.get("requant", "")) for n in h1["nodes"]})
        for dev in devs:
            got, err = qfuse_run(a.qfuse, mp, xp, os.path.join(work, f"{name}_{dev}.npy"), dev == "cpu")
            msg = f"qfuse run: {err}" if err else compare(got, ref)
            if msg:
                print(f"FAIL {name} [{dev}]: {msg}")
                nfail += 1
            else:
                print(f"ok   {name} [{dev}]: {ref.size} outputs bit-exact with torch.compile "
                      f"(eager pt2e equal: {float(np.mean(eager == ref)):.4f}) ops {ops}")
                npass += 1
        if a.save:
            d = os.path.join(a.save, name)
            os.makedirs(d, exist_ok=True)
            import shutil
            shutil.copy(mp, os.path.join(d, "model.safetensors"))
            np.save(os.path.join(d, "input.npy"), x.numpy())
            np.save(os.path.join(d, "output.npy"), ref)
            with open(os.path.join(d, "case.json"), "w") as f:
                json.dump(dict(name=name, input_shape=list(shape), seed=seed, reduce_range=rr,
                               torch=torch.__version__, oracle="torch.compile (Inductor, freezing=True)",
                               cpu="x86-64 with AVX-512 VNNI", ops=[list(o) for o in ops],
                               **({rules_key: rules} if rules else {})), f, indent=1)
    for name, (build, shape, seed, rr) in REFUSED.items():
        if only and name not in only:
            continue
        try:
            cm, x = quantize(build(), shape, seed, rr)
            qfuse_export.build(cm, x)
            print(f"FAIL {name}: exported, but the exporter must refuse it")
            nfail += 1
        except ExportError as e:
            if "node " in str(e):
                print(f"ok   {name}: refused: {e}")
                npass += 1
            else:
                print(f"FAIL {name}: refused without naming a node: {e}")
                nfail += 1
    if a.torchvision:
        import torchvision
        for tv in ("resnet18", "resnet18_distinct_relus", "mobilenet_v2"):
            m = getattr(torchvision.models, tv.replace("_distinct_relus", ""))(weights=None).eval()
            if tv.endswith("_distinct_relus"):
                distinct_relus(m)
            try:
                cm, x = quantize(m, (1, 3, 224, 224), 0, False, ncal=1)
            except Exception as e:  # noqa: BLE001
                print(f"info {tv}: prepare/convert failed: {type(e).__name__}: {str(e)[:300]}")
                continue
            try:
                qfuse_export.build(cm, x)
                print(f"info {tv}: exported (not compared here)")
            except ExportError as e:
                print(f"info {tv}: quantized; exporter refuses: {str(e)[:400]}")
    print(f"{npass} passed, {nfail} failed")
    return 1 if nfail else 0


if __name__ == "__main__":
    sys.exit(main())
