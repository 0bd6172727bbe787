#!/usr/bin/env python3
"""Round-trip test data for qfuse: quantized PyTorch nets, their exports, inputs
and PyTorch's outputs; and a bit-exact comparison of outputs.

Usage:
  export_roundtrip.py export DIR [--cases a,b,...] [--show-ops]
      For each case: build the net (random weights, randomized BatchNorm
      statistics), quantize it (FX graph mode or eager mode) calibrating on
      random data, export DIR/NAME.safetensors with tools/qfuse_export.py, run
      the quantized PyTorch model on a random input and write
      DIR/NAME.input.npy (float32, with batch dim) and DIR/NAME.expected.npy
      (float32: the model's dequantized output). The case names go to
      DIR/cases.txt, one a line. --show-ops prints what convert_fx emitted.
  export_roundtrip.py compare EXPECTED.npy ACTUAL.npy
      Exit 0 if the arrays have the same shape, dtype and bits; else print
      where they differ and exit 1.
  export_roundtrip.py list
      Print the case names.

Cases: digits_trained (the committed models/digits.safetensors with
tests/data/digits), digits_fx, resnet_fx, resnet_eager, mobilenet_fx,
mlp_fx, mlp_eager, misc_fx (cat, avg_pool2d, hardswish, hardtanh, mean,
view), shapes_fx and shapes_eager (chunk, split, transpose, permute, cat on
W, H and C: gather),
flatten_mlp_fx (nn.Flatten on the float input), shufflenet_fx and
shufflenet_eager (torchvision's shufflenet_v2_x0_5, weights=None: channel
shuffle, chunk), shufflenet_tiny_fx (a 3-stage ShuffleNetV2 with few
channels, committed in tests/data/shapes), shapes_acts_fx (+ qnnpack: shape
ops around lut and mul nodes), meanhead_fx (a global mean over a 4x4 conv output), qnnpack variants
resnet_fx_qnnpack, mobilenet_fx_qnnpack, mlp_fx_qnnpack, meanhead_fx_qnnpack, and
x86-engine variants resnet_fx_x86, mobilenet_fx_x86, misc_fx_x86, mlp_fx_x86,
meanhead_fx_x86; squeeze-excitation (quantized mul / mul_relu with a
[N, C, 1, 1] gate) se_fx, se_fx_qnnpack, se_fx_x86, se_eager.
meanhead_fx_x86; acts_fx, acts_fx_qnnpack, acts_fx_x86, acts_eager (Hardsigmoid,
SiLU, LeakyReLU, ELU, Sigmoid, mul/add of a scalar, Dropout: `lut` nodes),
actfn_fx, actfn_fx_qnnpack (their functional forms).
preact_fx (+ _qnnpack, _x86) and preact_eager (+ _qnnpack, _x86): standalone
quantized BatchNorm2d / BNReLU2d (after a cat, after an add) and PReLU
(per-channel and single weight), exported as `channel_lut` nodes.
meanhead_fx_x86 (exported with the routing of the CPU that runs this script:
on a Linux CPU with AVX-512 VNNI their convs with groups <= 100 use oneDNN's
rule), and onednn-engine variants resnet_fx_onednn, mobilenet_fx_onednn,
mlp_fx_onednn.
Expected outputs are computed with torch.backends.quantized.engine set to the
case's engine (it also picks the kernels of add, pooling, etc.).
"""
import argparse
import os
import shutil
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.ao.quantization as tq
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import qfuse_export  # noqa: E402
import qfuse_model  # noqa: E402


# ------------------------------------------------------------------ nets

class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv3, self.bn3, self.relu3 = nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.pool(self.relu2(self.bn2(self.conv2(x))))
        x = self.relu3(self.bn3(self.conv3(x)))
        return self.fc(torch.flatten(self.gap(x), 1))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, eager):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.skip = nn.quantized.FloatFunctional() if eager else None

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.skip is not None:
            return self.skip.add_relu(out, identity)
        return self.relu2(out + identity)

    def fuse(self):
        tq.fuse_modules(self, [["conv1", "bn1", "relu1"], ["conv2", "bn2"]], inplace=True)
        if self.downsample is not None:
            tq.fuse_modules(self.downsample, [["0", "1"]], inplace=True)


class ResNetish(nn.Module):
    def __init__(self, eager=False, widths=(16, 32, 64), ncls=10):
        super().__init__()
        self.eager = eager
        self.quant = tq.QuantStub() if eager else None
        self.dequant = tq.DeQuantStub() if eager else None
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(BasicBlock(cin, w, 1 if i == 0 else 2, eager))
            blocks.append(BasicBlock(w, w, 1, eager))
            cin = w
        self.layers = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, ncls)

    def forward(self, x):
        if self.quant is not None:
            x = self.quant(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layers(x)
        x = torch.flatten(self.avgpool(x), 1)
        x = self.fc(x)
        if self.dequant is not None:
            x = self.dequant(x)
        return x

    def fuse(self):
        tq.fuse_modules(self, [["conv1", "bn1", "relu"]], inplace=True)
        for b in self.layers:
            b.fuse()


def _cbr6(cin, cout, k, s, groups=1):
    return [nn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()]


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hid = cin * expand
        layers = []
        if expand != 1:
            layers += _cbr6(cin, hid, 1, 1)
        layers += _cbr6(hid, hid, 3, stride, groups=hid)
        layers += [nn.Conv2d(hid, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        if self.use_res:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2ish(nn.Module):
    # (expand, cout, repeats, stride)
    CFG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 2)]

    def __init__(self, ncls=10):
        super().__init__()
        layers = _cbr6(3, 32, 3, 2)
        cin = 32
        for t, c, n, s in self.CFG:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers += _cbr6(cin, 128, 1, 1)
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(128, ncls)

    def forward(self, x):
        x = self.features(x)
        x = x.mean((2, 3))
        return self.classifier(self.dropout(x))


class MLP(nn.Module):
    def __init__(self, dims=(64, 128, 96, 48, 10), eager=False):
        super().__init__()
        mods = []
        if eager:
            mods.append(tq.QuantStub())
        for i in range(len(dims) - 1):
            mods.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                mods.append(nn.ReLU())
        if eager:
            mods.append(tq.DeQuantStub())
        self.net = nn.Sequential(*mods)

    def forward(self, x):
        return self.net(x)

    def fuse(self):
        names = [str(i) for i, m in enumerate(self.net)]
        pairs = [[names[i], names[i + 1]] for i, m in enumerate(self.net)
                 if isinstance(m, nn.Linear) and i + 1 < len(self.net) and isinstance(self.net[i + 1], nn.ReLU)]
        tq.fuse_modules(self.net, pairs, inplace=True)


class Misc(nn.Module):
    """Covers the less common ops: cat, avg_pool2d, hardswish, hardtanh, relu, mean keepdim, view."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 5, padding=2, stride=1, dilation=1)
        self.c = nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=4)
        self.bn = nn.BatchNorm2d(16)
        self.hs = nn.Hardswish()
        self.ap = nn.AvgPool2d(3, 2, 1, count_include_pad=False, ceil_mode=True)
        self.ht = nn.Hardtanh(-0.5, 1.5)
        self.d = nn.Conv2d(16, 24, 1)
        self.fc = nn.Linear(24, 7)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], 1)
        y = self.hs(self.bn(self.c(y)))
        y = self.ap(y)
        y = F.relu(y)
        y = F.avg_pool2d(y, 2, 1)
        y = self.ht(self.d(y))
        y = torch.mean(y, dim=[2, 3], keepdim=True)
        y = y.view(y.size(0), -1)
        return self.fc(y)


class Acts(nn.Module):
    """PyTorch's quantized unary ops, each exported as a `lut`: Hardsigmoid,
    SiLU (left in float by convert_fx between dequantize and quantize),
    LeakyReLU, ELU, Sigmoid, x * c and x + c (quantized mul/add of a scalar;
    eager: FloatFunctional mul_scalar/add_scalar), and Dropout (removed)."""

    def __init__(self, eager=False):
        super().__init__()
        self.eager = eager
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.hsig = nn.Hardsigmoid()
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.silu = nn.SiLU()
        self.c = nn.Conv2d(8, 8, 1)
        self.lrelu = nn.LeakyReLU(0.1)
        self.elu = nn.ELU(0.8)
        self.sig = nn.Sigmoid()
        self.drop = nn.Dropout(0.2)
        if eager:
            self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
            self.dq_silu, self.q_silu = tq.DeQuantStub(), tq.QuantStub()
            self.mul_c, self.add_c = torch.ao.nn.quantized.FloatFunctional(), torch.ao.nn.quantized.FloatFunctional()

    def forward(self, x):
        if self.eager:
            x = self.quant(x)
        y = self.hsig(self.a(x))
        y = self.b(y)
        if self.eager:  # eager mode has no quantized SiLU: it runs in float
            y = self.q_silu(self.silu(self.dq_silu(y)))
        else:
            y = self.silu(y)
        y = self.elu(self.lrelu(self.c(y)))
        if self.eager:
            y = self.add_c.add_scalar(self.mul_c.mul_scalar(y, 1.5), 0.25)
        else:
            y = y * 1.5 + 0.25
        y = self.drop(self.sig(y))
        # every activation is an output (a pool and a linear would hide a wrong byte)
        y = torch.flatten(y, 1)
        if self.eager:
            return self.dequant(y)
        return y

    def fuse(self):
        pass


class ActsFn(nn.Module):
    """The functional forms: F.leaky_relu / F.elu (convert_fx: quantized.leaky_relu /
    elu), torch.sigmoid, F.hardsigmoid, x * c, x + c, F.silu (float, then quantized
    for the next conv) and F.dropout(training=False)."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 6, 1)

    def forward(self, x):
        y = self.c(x)
        y = F.elu(F.leaky_relu(y, 0.2), 0.5)
        y = F.hardsigmoid(torch.sigmoid(y) * 2.0) + 0.5
        y = F.dropout(self.c2(F.silu(y)), 0.3, training=False)
        return torch.flatten(y, 1)


class MeanHead(nn.Module):
    """Global mean over a 4x4 conv output (channels-last in PyTorch): under
    fbgemm/x86 ATen takes its f32 mean there, which differs from the integer
    mean on exact ties (even H*W)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, 2, 1)
        self.c2 = nn.Conv2d(16, 40, 3, 2, 1)
        self.fc = nn.Linear(40, 5)

    def forward(self, x):
        y = F.relu(self.c1(x))
        y = F.relu(self.c2(y))
        return self.fc(y.mean([2, 3]))


class SqueezeExcite(nn.Module):
    """Squeeze-excitation gating as in mobilenet_v3 / efficientnet: a conv output
    [N, C, H, W] times a per-channel gate [N, C, 1, 1] (quantized.mul with
    broadcasting), and a mul + relu with the broadcast operand first
    (quantized.mul_relu(gate, x)). The gate is a hardtanh(0, 1) (qfuse has no
    hardsigmoid). eager: FloatFunctional.mul (+ nn.ReLU) and Quant/DeQuantStub."""

    def __init__(self, eager=False):
        super().__init__()
        self.quant = tq.QuantStub() if eager else None
        self.dequant = tq.DeQuantStub() if eager else None
        self.c1, self.bn1, self.relu1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.relu2 = nn.Conv2d(16, 8, 1), nn.ReLU()
        self.fc2, self.gate = nn.Conv2d(8, 16, 1), nn.Hardtanh(0.0, 1.0)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.m1 = nn.quantized.FloatFunctional() if eager else None
        self.m2 = nn.quantized.FloatFunctional() if eager else None

    def forward(self, x):
        if self.quant is not None:
            x = self.quant(x)
        y = self.relu1(self.bn1(self.c1(x)))
        w = self.gate(self.fc2(self.relu2(self.fc1(self.pool(y)))))
        if self.m1 is not None:
            y = self.m1.mul(y, w)
            z = self.relu3(self.m2.mul(w, self.c2(y)))  # FloatFunctional has no mul_relu
        else:
            y = y * w
            z = self.relu3(torch.mul(w, self.c2(y)))
        # the product itself is the output (a pooled head would average the check away)
        if self.dequant is not None:
            z = self.dequant(z)
        return z

    def fuse(self):
        tq.fuse_modules(self, [["c1", "bn1", "relu1"], ["fc1", "relu2"]], inplace=True)


class ShapeToy(nn.Module):
    """The data-movement ops: chunk, split, transpose, permute, slicing, cat
    along W, H and channels, .contiguous(); H != W so that swapped axes show."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(4, 6, 1)
        self.c = nn.Conv2d(4, 8, 3, padding=1)
        self.d = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(18, 5)

    def forward(self, x):
        y = F.relu(self.a(x))                          # [N, 8, 10, 12]
        y1, y2 = y.chunk(2, dim=1)
        z = self.b(y2)                                 # [N, 6, 10, 12]
        p = F.relu(self.c(y1.permute(0, 1, 3, 2)))     # [N, 8, 12, 10]
        u = p.transpose(2, 3).contiguous()             # [N, 8, 10, 12]
        w = torch.cat([y, u], dim=3)                   # [N, 8, 10, 24]
        w = F.relu(self.d(w))
        s1, s2 = torch.split(w, [3, 5], dim=1)
        r = torch.cat([s2, s1], dim=1)                 # channels reordered
        h = torch.cat([r, w], dim=2)                   # [N, 8, 20, 24]
        g = F.relu(self.d(h))
        zz = torch.cat([z, y2], dim=1)                 # [N, 10, 10, 12]
        zz = torch.cat([zz[:, :, 1:9:2], zz[:, :, -4:, :]], dim=2)  # slices of H: [N, 10, 8, 12]
        return self.fc(torch.cat([g.mean((2, 3)), zz.mean((2, 3))], dim=1))


class ShapeToyEager(nn.Module):
    """ShapeToy in eager mode (QuantStub/DeQuantStub): its shape ops run on quantized tensors."""

    def __init__(self):
        super().__init__()
        self.quant, self.body, self.dequant = tq.QuantStub(), ShapeToy(), tq.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.body(self.quant(x)))

    def fuse(self):
        pass


class ShapesActs(nn.Module):
    """Shape ops (gather) meeting table ops (lut) and mul: SiLU in float
    between dequantize and quantize on a transposed chunk, Sigmoid on a
    quint8 chunk, a Hardsigmoid gate from a slice times the conv output, a
    leaky_relu on a channel slice, cat along W."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 1)
        self.c = nn.Conv2d(8, 6, 3, padding=1)
        self.act, self.sig, self.hs = nn.SiLU(), nn.Sigmoid(), nn.Hardsigmoid()

    def forward(self, x):
        y = self.a(x)                                  # [N, 8, 9, 7]
        y1, y2 = y.chunk(2, dim=1)
        z = self.act(y1.transpose(2, 3))               # dequantize -> silu -> quantize of a view
        z = self.b(z.transpose(2, 3).contiguous())
        w = self.c(torch.cat([z, self.sig(y2)], dim=1))
        w = w * self.hs(w[:, :, :1, :1])               # [N, 6, 9, 7] x [N, 6, 1, 1]
        return torch.cat([w[:, :3], F.leaky_relu(w[:, 3:], 0.1)], dim=3)


class FlattenMLP(nn.Module):
    """An MLP whose first op is nn.Flatten on the float input."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)


class Upsampler(nn.Module):
    """A decoder-style net: conv, then ConvTranspose2d layers (stride 2 with padding and
    output_padding, grouped with dilation, stride 1 without bias), and a conv head. Exported as
    gather (zero-point fill) + conv2d per ConvTranspose2d."""

    def __init__(self, eager=False):
        super().__init__()
        self.eager = eager
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.up1 = nn.ConvTranspose2d(6, 5, 3, stride=2, padding=1, output_padding=1)
        self.up2 = nn.ConvTranspose2d(5, 10, (3, 2), stride=(2, 1), padding=(1, 0), groups=5, dilation=(1, 2))
        self.up3 = nn.ConvTranspose2d(10, 4, 3, padding=1, bias=False)
        self.head = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        if self.eager:
            x = self.quant(x)
        y = self.head(self.up3(self.up2(self.up1(self.a(x)))))
        return self.dequant(y) if self.eager else y

    def fuse(self):
        # eager mode refuses per-channel weight observers on ConvTranspose2d (FX's default
        # mapping already gives them per-tensor weights)
        for m in (self.up1, self.up2, self.up3):
            m.qconfig = tq.QConfig(activation=self.qconfig.activation, weight=tq.default_weight_observer)


class UpsampleNet(nn.Module):
    """A small FPN-style net: nn.Upsample(scale_factor=2, nearest) of a conv output added to a
    skip conv, F.interpolate to a size that is not a multiple (nearest), and upsamplings of 1x1
    maps: one held channels-last (a pooled conv output), one with NCHW strides (the pooled
    quantized input), which PyTorch writes in NHWC order into an NCHW output (reproduced)."""

    def __init__(self, eager=False):
        super().__init__()
        self.quant, self.dequant = (tq.QuantStub(), tq.DeQuantStub()) if eager else (None, None)
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.skip = nn.quantized.FloatFunctional() if eager else None
        self.b = nn.Conv2d(8, 6, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.c = nn.Conv2d(6, 6, 1)

    def forward(self, x):
        if self.quant is not None:
            x = self.quant(x)
        y = self.a(x)                                          # [N, 8, 10, 12]
        z = self.up(self.down(y))                              # [N, 8, 10, 12]
        y = self.skip.add(y, z) if self.skip is not None else y + z
        w = self.b(F.interpolate(y, size=(13, 17), mode="nearest"))
        g = F.interpolate(self.gap(w), scale_factor=3.0, mode="nearest")   # 1x1 (channels-last) -> 3x3
        gx = F.interpolate(self.gap(x), size=(3, 3), mode="nearest")      # 1x1 (NCHW: scrambled)
        out = torch.cat([self.c(F.interpolate(w, size=(3, 3), mode="nearest")), g, gx], dim=1)
        return self.dequant(out) if self.dequant is not None else out

    def fuse(self):
        pass


class BilinearNet(nn.Module):
    """Bilinear upsampling (resize mode torch_bilinear): nn.Upsample(scale_factor=1.5) of a
    13-channel conv output (channels-last: ATen's NHWC kernel, 8-lane vector body and a
    5-channel tail), F.interpolate of the contiguous quantized input to a size with
    align_corners=True (the NCHW kernel), a downscale-and-upscale of an 8-channel map (body
    only) with per-axis scale factors, and bilinear of 1x1 maps, channels-last and NCHW (a
    gather)."""

    def __init__(self, eager=False):
        super().__init__()
        self.quant, self.dequant = (tq.QuantStub(), tq.DeQuantStub()) if eager else (None, None)
        self.cat1 = nn.quantized.FloatFunctional() if eager else None
        self.cat2 = nn.quantized.FloatFunctional() if eager else None
        self.a = nn.Conv2d(3, 13, 3, padding=1)
        self.up = nn.Upsample(scale_factor=1.5, mode="bilinear", align_corners=False)
        self.c = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(17, 8, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        if self.quant is not None:
            x = self.quant(x)
        cat = (lambda t, d: self.cat1.cat(t, dim=d)) if self.cat1 is not None else torch.cat
        cat2 = (lambda t, d: self.cat2.cat(t, dim=d)) if self.cat2 is not None else torch.cat
        y = self.a(x)                                                          # [N, 13, 10, 12]
        # [N, 13, 15, 18]; FX runs nn.Upsample(bilinear) in float (between dequantize and
        # quantize), F.interpolate on the quantized tensor; eager runs the module quantized
        u = self.up(y) if self.quant is not None else F.interpolate(y, scale_factor=1.5, mode="bilinear")
        v = F.interpolate(x, size=(15, 18), mode="bilinear", align_corners=True)  # NCHW input
        w = self.b(cat([u, self.c(v)], 1))                                     # [N, 8, 15, 18]
        z = F.interpolate(w, scale_factor=(0.7, 2.5), mode="bilinear")         # [N, 8, 10, 45]
        g = F.interpolate(self.gap(w), size=(10, 45), mode="bilinear")         # 1x1 channels-last
        gx = F.interpolate(self.gap(x), size=(10, 45), mode="bilinear", align_corners=True)  # 1x1 NCHW
        out = cat2([z, g, gx], 1)
        return self.dequant(out) if self.dequant is not None else out

    def fuse(self):
        pass


class BilinearModuleNet(nn.Module):
    """nn.Upsample(mode='bilinear') modules under FX, which runs them in float (dequantize ->
    float upsample_bilinear2d -> quantize; resize mode torch_bilinear_float): a 13-channel
    conv output (channels-last, small output: ATen's channels-last kernel, 8-lane body and a
    5-channel tail), a 16-channel conv output to a large size (channels-last, C > 3: the
    channels-last kernel), and the 3-channel NCHW quantized input (after a quantized ReLU,
    which keeps it NCHW; the float input itself would not be dequantized) to a large size
    with align_corners=True (OH + OW > 128, C <= 3: the generic kernel)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 13, 3, padding=1)
        self.up = nn.Upsample(scale_factor=1.5, mode="bilinear", align_corners=False)
        self.b = nn.Conv2d(13, 16, 3, padding=1)
        self.up_big = nn.Upsample(size=(70, 66), mode="bilinear", align_corners=False)
        self.up_in = nn.Upsample(size=(70, 66), mode="bilinear", align_corners=True)
        self.relu = nn.ReLU()

    def forward(self, x):
        u = self.up(self.a(x))                         # [N, 13, 15, 18]
        w = self.up_big(self.b(u))                     # [N, 16, 70, 66]
        return torch.cat([w, self.up_in(self.relu(x))], 1)  # [N, 19, 70, 66]

    def fuse(self):
        pass


def _shufflenet():
    import torchvision
    return torchvision.models.shufflenet_v2_x0_5(weights=None)


def _shufflenet_tiny():
    from torchvision.models.shufflenetv2 import ShuffleNetV2
    return ShuffleNetV2([2, 1, 1], [8, 16, 24, 32, 48], num_classes=10)


def _shufflenet_eager():
    from torchvision.models.quantization import shufflenet_v2_x0_5
    m = shufflenet_v2_x0_5(weights=None, quantize=False)
    m.fuse = lambda: m.fuse_model(is_qat=False)
    return m


class PreAct(nn.Module):
    """Per-channel elementwise ops, each exported as a `channel_lut`: densenet121's
    pre-activation cat -> BatchNorm2d -> ReLU (convert_fx cannot fold it into a
    conv: quantized BNReLU2d), a standalone BatchNorm2d after an add, PReLU with
    per-channel and with a single weight. 70 channels: ATen's batch norm runs 64 of
    them on its (AVX-512) vector path and 6 on its scalar path. Eager mode
    (eager=True): QuantStub/DeQuantStub, FloatFunctional cat and add, bn1 + relu1
    fused by fuse_modules into BNReLU2d (quantized: nniq.BNReLU2d), bn2 left
    alone (nnq.BatchNorm2d), PReLU -> nnq.PReLU (with a per-tensor weight
    observer: see fuse)."""

    def __init__(self, eager=False):
        super().__init__()
        self.eager = eager
        if eager:
            self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
            self.cat = torch.ao.nn.quantized.FloatFunctional()
            self.add = torch.ao.nn.quantized.FloatFunctional()
        self.a = nn.Conv2d(3, 30, 3, padding=1)
        self.b = nn.Conv2d(30, 40, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(70)
        self.relu1 = nn.ReLU()
        self.c = nn.Conv2d(70, 24, 1)
        self.d = nn.Conv2d(70, 24, 1)
        self.bn2 = nn.BatchNorm2d(24)
        self.prelu = nn.PReLU(24)
        self.prelu1 = nn.PReLU()
        with torch.no_grad():
            self.prelu.weight.copy_(torch.linspace(-0.6, 0.9, 24))
            self.prelu1.weight.fill_(0.3)

    def forward(self, x):
        if self.eager:
            x = self.quant(x)
        a = self.a(x)
        b = self.b(a)
        ab = self.cat.cat([a, b], 1) if self.eager else torch.cat([a, b], 1)
        y = self.relu1(self.bn1(ab))
        s = self.add.add(self.c(y), self.d(y)) if self.eager else self.c(y) + self.d(y)
        z = self.bn2(s)
        y = torch.flatten(self.prelu1(self.prelu(z)), 1)
        return self.dequant(y) if self.eager else y

    def fuse(self):
        if self.eager:
            tq.fuse_modules(self, [["bn1", "relu1"]], inplace=True)
            # PyTorch 2.15's eager convert quantizes PReLU's weight with the
            # qconfig's weight observer; fbgemm's and x86's per-channel one fails
            # on the 1-D weight (IndexError in PerChannelMinMaxObserver), so the
            # PReLUs get a per-tensor weight observer (qnnpack's default).
            for m in (self.prelu, self.prelu1):
                m.qconfig = self.qconfig._replace(weight=tq.default_weight_observer)


class SoftmaxNet(nn.Module):
    """Quantized softmax (nn.Softmax; FX: nnq.Softmax with fixed qparams (1/256, 0); eager:
    nnq.Softmax through a custom mapping, with observed qparams): a classifier head
    (softmax over the 37 logits of a linear, the last dim) and softmax over W of a
    channels-last conv output. `seg` adds a segmentation head, softmax over the 21 channels
    of a conv output (dim 1, channels-last): qnnpack's integer kernel, or (fbgemm, x86)
    ATen's float path over a dim other than the last, whose result depends on the thread
    count (recorded by the exporter; run these cases with OMP_NUM_THREADS=5 too)."""

    def __init__(self, eager=False, seg=False):
        super().__init__()
        self.eager, self.seg = eager, seg
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.cat = nn.quantized.FloatFunctional()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 37)
        self.sm = nn.Softmax(dim=1)
        self.sm_w = nn.Softmax(dim=3)  # (dim=-1 on a channels-last tensor crashes qnnpack: PyTorch bug)
        self.head = nn.Conv2d(8, 21, 1)
        self.sm_c = nn.Softmax(dim=1)

    def forward(self, x):
        if self.eager:
            x = self.quant(x)
        a = self.relu(self.conv(x))
        cls = self.sm(self.fc(torch.flatten(self.pool(a), 1)))
        w = torch.flatten(self.sm_w(a), 1)
        outs = [cls, w]
        if self.seg:
            outs.append(torch.flatten(self.sm_c(self.head(a)), 1))
        if self.eager:
            return self.dequant(self.cat.cat(outs, 1))
        return torch.cat(outs, 1)

    def fuse(self):
        tq.fuse_modules(self, [["conv", "relu"]], inplace=True)


# ------------------------------------------------------------------ cases

def _randomize_bn(model, g):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.3, 0.3, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.3, 0.3, generator=g)


def _fx(model, sample, engine, calib, calib_batch=8):
    prepared = prepare_fx(model, get_default_qconfig_mapping(engine), (sample(2),))
    with torch.no_grad():
        for _ in range(calib):
            prepared(sample(calib_batch))
    return convert_fx(prepared)


def _eager(model, sample, engine, calib, calib_batch=8):
    model.qconfig = tq.get_default_qconfig(engine)
    model.fuse()
    allow = None
    if any(type(m) is nn.Softmax for m in model.modules()):
        # eager prepare observes nn.Softmax only when asked to
        from torch.ao.quantization.quantization_mappings import get_default_qconfig_propagation_list
        allow = get_default_qconfig_propagation_list() | {nn.Softmax}
    tq.prepare(model, allow_list=allow, inplace=True)
    with torch.no_grad():
        for _ in range(calib):
            model(sample(calib_batch))
    mapping = None
    if any(type(m) is nn.Softmax for m in model.modules()):
        # eager convert has no default mapping for nn.Softmax
        import torch.ao.nn.quantized as nnq
        from torch.ao.quantization.quantization_mappings import get_default_static_quant_module_mappings
        mapping = {**get_default_static_quant_module_mappings(), nn.Softmax: nnq.Softmax}
    tq.convert(model, mapping=mapping, inplace=True)
    return model


# name -> (builder, input shape per sample, input kind, mode, engine, batch)
CASES = {
    "digits_trained": None,
    "digits_fx": (DigitsCNN, (1, 8, 8), "unit", "fx", "fbgemm", 5),
    "resnet_fx": (lambda: ResNetish(eager=False), (3, 48, 40), "normal", "fx", "fbgemm", 2),
    "resnet_eager": (lambda: ResNetish(eager=True), (3, 48, 40), "normal", "eager", "fbgemm", 2),
    "mobilenet_fx": (MobileNetV2ish, (3, 64, 64), "normal", "fx", "fbgemm", 2),
    "mlp_fx": (MLP, (64,), "normal", "fx", "fbgemm", 7),
    "mlp_eager": (lambda: MLP(eager=True), (64,), "normal", "eager", "fbgemm", 7),
    "misc_fx": (Misc, (3, 17, 15), "normal", "fx", "fbgemm", 3),
    "resnet_fx_qnnpack": (lambda: ResNetish(eager=False), (3, 48, 40), "normal", "fx", "qnnpack", 2),
    "mobilenet_fx_qnnpack": (MobileNetV2ish, (3, 64, 64), "normal", "fx", "qnnpack", 2),
    "mlp_fx_qnnpack": (MLP, (64,), "normal", "fx", "qnnpack", 7),
    "meanhead_fx": (MeanHead, (3, 16, 16), "normal", "fx", "fbgemm", 8),
    "meanhead_fx_qnnpack": (MeanHead, (3, 16, 16), "normal", "fx", "qnnpack", 8),
    # x86: PyTorch's default engine on x86 CPUs (fbgemm's arithmetic, convs by
    # oneDNN on AVX-512 VNNI CPUs; see the README)
    "resnet_fx_x86": (lambda: ResNetish(eager=False), (3, 48, 40), "normal", "fx", "x86", 2),
    "mobilenet_fx_x86": (MobileNetV2ish, (3, 64, 64), "normal", "fx", "x86", 2),
    "misc_fx_x86": (Misc, (3, 17, 15), "normal", "fx", "x86", 3),
    "mlp_fx_x86": (MLP, (64,), "normal", "fx", "x86", 7),
    "meanhead_fx_x86": (MeanHead, (3, 16, 16), "normal", "fx", "x86", 8),
    # squeeze-excitation: quantized.mul / mul_relu with [N, C, H, W] x [N, C, 1, 1]
    "se_fx": (SqueezeExcite, (3, 12, 10), "normal", "fx", "fbgemm", 3),
    "se_fx_qnnpack": (SqueezeExcite, (3, 12, 10), "normal", "fx", "qnnpack", 3),
    "se_fx_x86": (SqueezeExcite, (3, 12, 10), "normal", "fx", "x86", 3),
    "se_eager": (lambda: SqueezeExcite(eager=True), (3, 12, 10), "normal", "eager", "fbgemm", 3),
    "acts_fx": (Acts, (3, 13, 11), "normal", "fx", "fbgemm", 3),
    "acts_fx_qnnpack": (Acts, (3, 13, 11), "normal", "fx", "qnnpack", 3),
    "acts_fx_x86": (Acts, (3, 13, 11), "normal", "fx", "x86", 3),
    "acts_eager": (lambda: Acts(eager=True), (3, 13, 11), "normal", "eager", "fbgemm", 3),
    "actfn_fx": (ActsFn, (3, 9, 7), "normal", "fx", "fbgemm", 2),
    "actfn_fx_qnnpack": (ActsFn, (3, 9, 7), "normal", "fx", "qnnpack", 2),
    # onednn: every conv and linear by oneDNN
    "resnet_fx_onednn": (lambda: ResNetish(eager=False), (3, 48, 40), "normal", "fx", "onednn", 2),
    "mobilenet_fx_onednn": (MobileNetV2ish, (3, 64, 64), "normal", "fx", "onednn", 2),
    "mlp_fx_onednn": (MLP, (64,), "normal", "fx", "onednn", 7),
    # data movement: gather (chunk, split, transpose, permute, cat on W/H, channel shuffle)
    "shapes_fx": (ShapeToy, (3, 10, 12), "normal", "fx", "fbgemm", 3),
    "shapes_eager": (ShapeToyEager, (3, 10, 12), "normal", "eager", "fbgemm", 3),
    "flatten_mlp_fx": (FlattenMLP, (3, 4, 4), "normal", "fx", "fbgemm", 5),
    "shufflenet_fx": (_shufflenet, (3, 64, 64), "normal", "fx", "fbgemm", 2),
    "shufflenet_tiny_fx": (_shufflenet_tiny, (3, 48, 48), "normal", "fx", "fbgemm", 2),
    "shufflenet_eager": (_shufflenet_eager, (3, 64, 64), "normal", "eager", "fbgemm", 2),
    # gather with lut / mul around it
    "shapes_acts_fx": (ShapesActs, (3, 9, 7), "normal", "fx", "fbgemm", 2),
    "shapes_acts_fx_qnnpack": (ShapesActs, (3, 9, 7), "normal", "fx", "qnnpack", 2),
    # ConvTranspose2d: gather (zero-point fill) + conv2d
    "upsampler_fx": (Upsampler, (3, 7, 6), "normal", "fx", "fbgemm", 2),
    "upsampler_fx_qnnpack": (Upsampler, (3, 7, 6), "normal", "fx", "qnnpack", 2),
    "upsampler_fx_x86": (Upsampler, (3, 7, 6), "normal", "fx", "x86", 2),
    "upsampler_eager": (lambda: Upsampler(eager=True), (3, 7, 6), "normal", "eager", "fbgemm", 2),
    "upsampler_eager_qnnpack": (lambda: Upsampler(eager=True), (3, 7, 6), "normal", "eager", "qnnpack", 2),
    # nearest upsampling (gather)
    "upsample_fx": (UpsampleNet, (3, 10, 12), "normal", "fx", "fbgemm", 3),
    "upsample_fx_qnnpack": (UpsampleNet, (3, 10, 12), "normal", "fx", "qnnpack", 3),
    "upsample_fx_x86": (UpsampleNet, (3, 10, 12), "normal", "fx", "x86", 3),
    "upsample_eager": (lambda: UpsampleNet(eager=True), (3, 10, 12), "normal", "eager", "fbgemm", 3),
    # bilinear upsampling (resize mode torch_bilinear)
    "bilinear_fx": (BilinearNet, (3, 10, 12), "normal", "fx", "fbgemm", 2),
    "bilinear_fx_qnnpack": (BilinearNet, (3, 10, 12), "normal", "fx", "qnnpack", 2),
    "bilinear_fx_x86": (BilinearNet, (3, 10, 12), "normal", "fx", "x86", 2),
    "bilinear_eager": (lambda: BilinearNet(eager=True), (3, 10, 12), "normal", "eager", "fbgemm", 2),
    # nn.Upsample(bilinear) modules that FX runs in float (resize mode torch_bilinear_float)
    "bilinear_module_fx": (BilinearModuleNet, (3, 10, 12), "normal", "fx", "fbgemm", 2),
    "bilinear_module_fx_x86": (BilinearModuleNet, (3, 10, 12), "normal", "fx", "x86", 2),
    "bilinear_module_fx_qnnpack": (BilinearModuleNet, (3, 10, 12), "normal", "fx", "qnnpack", 2),
    # channel_lut: quantized BatchNorm2d, BNReLU2d, PReLU
    "preact_fx": (PreAct, (3, 9, 7), "normal", "fx", "fbgemm", 3),
    "preact_fx_qnnpack": (PreAct, (3, 9, 7), "normal", "fx", "qnnpack", 3),
    "preact_fx_x86": (PreAct, (3, 9, 7), "normal", "fx", "x86", 3),
    # eager mode: standalone quantized BNReLU2d (after a FloatFunctional cat),
    # BatchNorm2d (after a FloatFunctional add), PReLU
    "preact_eager": (lambda: PreAct(eager=True), (3, 9, 7), "normal", "eager", "fbgemm", 3),
    "preact_eager_qnnpack": (lambda: PreAct(eager=True), (3, 9, 7), "normal", "eager", "qnnpack", 3),
    "preact_eager_x86": (lambda: PreAct(eager=True), (3, 9, 7), "normal", "eager", "x86", 3),
    "softmax_fx": (SoftmaxNet, (3, 6, 20), "normal", "fx", "fbgemm", 3),
    "softmax_fx_x86": (SoftmaxNet, (3, 6, 20), "normal", "fx", "x86", 3),
    "softmax_fx_qnnpack": (lambda: SoftmaxNet(seg=True), (3, 6, 20), "normal", "fx", "qnnpack", 3),
    "softmax_eager": (lambda: SoftmaxNet(eager=True), (3, 6, 20), "normal", "eager", "fbgemm", 3),
    "softmax_eager_qnnpack": (lambda: SoftmaxNet(eager=True), (3, 6, 20), "normal", "eager", "qnnpack", 3),
    "softmax_seg_fx": (lambda: SoftmaxNet(seg=True), (3, 6, 20), "normal", "fx", "fbgemm", 3),
    "softmax_seg_fx_x86": (lambda: SoftmaxNet(seg=True), (3, 9, 13), "normal", "fx", "x86", 3),
    "softmax_seg_eager": (lambda: SoftmaxNet(eager=True, seg=True), (3, 6, 20), "normal", "eager", "fbgemm", 3),
}


# ------------------------------------------------------------------ torchvision matrix
# FX mode on torchvision.models, eager mode on torchvision.models.quantization,
# each under the engines x86, fbgemm and qnnpack. Random weights (weights=None),
# randomized BatchNorm, small inputs. Case names: tv_fx_<model>_<engine>,
# tv_eager_<model>_<engine>. The old cases (38) are the `--quick` set.
TV_ENGINES = ("x86", "fbgemm", "qnnpack")
TV_FX_MODELS = [
    "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2",
    "mobilenet_v3_small", "mobilenet_v3_large", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
    "googlenet", "inception_v3", "squeezenet1_1", "mnasnet0_5", "regnet_x_400mf",
    "regnet_y_400mf", "efficientnet_b0", "densenet121", "alexnet", "vgg11_bn",
]
TV_EAGER_MODELS = [
    "googlenet", "inception_v3", "mobilenet_v2", "mobilenet_v3_large", "resnet18", "resnet50",
    "resnext101_32x8d", "resnext101_64x4d", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5", "shufflenet_v2_x2_0",
]
# Input size per sample (H = W). 64x64 gives even-sized final maps (2x2: exact
# ties of the integer mean) for shufflenet (x.mean([2, 3])), mnasnet (mean),
# resnet/resnext/regnet/efficientnet/mobilenet (adaptive_avg_pool2d over 2x2).
TV_SIZE = {"inception_v3": 80}
TV_KW = {"googlenet": {"aux_logits": False, "init_weights": True},
         "inception_v3": {"aux_logits": False, "init_weights": True}}


def _tv_fx(name):
    def build():
        import torchvision
        return getattr(torchvision.models, name)(weights=None, **TV_KW.get(name, {}))
    return build


def _tv_eager(name):
    def build():
        import torchvision.models.quantization as tvq
        kw = dict(TV_KW.get(name, {}))
        kw.pop("init_weights", None)
        m = getattr(tvq, name)(weights=None, quantize=False, **kw)
        m.fuse = lambda: m.fuse_model(is_qat=False)
        return m
    return build


TV_CASES = {}
for _m in TV_FX_MODELS:
    for _e in TV_ENGINES:
        _h = TV_SIZE.get(_m, 64)
        TV_CASES[f"tv_fx_{_m}_{_e}"] = (_tv_fx(_m), (3, _h, _h), "normal", "fx", _e, 2)
for _m in TV_EAGER_MODELS:
    for _e in TV_ENGINES:
        _h = TV_SIZE.get(_m, 64)
        TV_CASES[f"tv_eager_{_m}_{_e}"] = (_tv_eager(_m), (3, _h, _h), "normal", "eager", _e, 2)
QUICK_CASES = list(CASES)
CASES.update(TV_CASES)


# Cases where PyTorch's own int8 output is wrong, so its bytes are not the goal.
# PyTorch 2.15's QNNPACK hardtanh/relu6 (x86) reads a channels-last input (every
# quantized conv output is channels-last) as if it were contiguous NCHW: output
# element [n, c, h, w] is the clamp of the input's memory at that NCHW offset,
# i.e. the activations come out scrambled. qfuse computes relu6 elementwise.
# For every qnnpack case the expected output is therefore computed with each
# relu6/hardtanh fed a contiguous copy of its input (QNNPACK's clamp is right on
# contiguous input); where that differs from PyTorch's plain output, the case
# carries a note (NOTES) saying so and how many outputs PyTorch gets wrong.
NOTES = {}


def _clamp_fixed(q):
    """A copy of the quantized model whose relu6/hardtanh get contiguous inputs
    (None if it has none)."""
    import copy
    import torch.ao.nn.quantized as nnq
    q2 = copy.deepcopy(q)
    n = 0
    if isinstance(q2, torch.fx.GraphModule):
        fns = {F.relu6, F.hardtanh, torch.nn.functional.hardtanh_, torch.clamp}
        for node in list(q2.graph.nodes):
            if node.op == "call_function" and node.target in fns and node.args:
                with q2.graph.inserting_before(node):
                    c = q2.graph.call_method("contiguous", (node.args[0],))
                node.args = (c,) + tuple(node.args[1:])
                n += 1
        q2.recompile()
    for m in q2.modules():
        if isinstance(m, (nn.ReLU6, nn.Hardtanh, nnq.ReLU6)):
            m.register_forward_pre_hook(lambda mod, args: (args[0].contiguous(),) + tuple(args[1:]))
            n += 1
    return q2 if n else None


def make_case(name, out_dir, seed=0, show_ops=False):
    if name == "digits_trained":
        shutil.copyfile(os.path.join(ROOT, "models", "digits.safetensors"), os.path.join(out_dir, name + ".safetensors"))
        d = os.path.join(ROOT, "tests", "data", "digits")
        shutil.copyfile(os.path.join(d, "test_images.npy"), os.path.join(out_dir, name + ".input.npy"))
        shutil.copyfile(os.path.join(d, "int8_logits.npy"), os.path.join(out_dir, name + ".expected.npy"))
        return None
    builder, shape, kind, mode, engine, batch = CASES[name]
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    torch.backends.quantized.engine = engine

    def sample(n):
        if kind == "unit":
            return torch.rand(n, *shape, generator=g)
        return torch.randn(n, *shape, generator=g) * 1.5 + 0.2

    model = builder().eval()
    _randomize_bn(model, g)
    # the torchvision matrix calibrates on 2 batches of 4 (HistogramObserver is slow on big nets)
    calib = dict(calib=2, calib_batch=4) if name in TV_CASES else dict(calib=4)
    q = (_fx if mode == "fx" else _eager)(model, sample, engine, **calib)
    x = sample(batch)
    with torch.no_grad():
        y = q(x)
        q2 = _clamp_fixed(q) if engine == "qnnpack" else None
        if q2 is not None:
            y2 = q2(x)
            bad = int((y2.numpy().view(np.uint32) != y.numpy().view(np.uint32)).sum())
            if bad:
                NOTES[name] = (f"PyTorch bug: qnnpack relu6/hardtanh scrambles channels-last input; PyTorch's "
                               f"output differs in {bad} of {y.numel()} values; compared with PyTorch run with "
                               f"contiguous relu6/hardtanh inputs")
                y = y2
    if show_ops:
        print(f"--- {name} ({mode}, {engine}): convert_fx/convert graph")
        seen = []
        for s in qfuse_export.ops_used(q):
            if s not in seen:
                seen.append(s)
        for s in seen:
            print("   ", s)
    path = os.path.join(out_dir, name + ".safetensors")
    header = qfuse_export.export(q, x, path, engine=engine)
    np.save(os.path.join(out_dir, name + ".input.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(out_dir, name + ".expected.npy"), y.numpy().astype(np.float32))
    return header


# Export errors that name an op other helpers are adding: the case is
# "pending" (not a failure of what exists). Matched on the exporter's message.
PENDING_OPS = [
    (("BatchNorm", "batch_norm", "BNReLU", "bn_relu"), "quantized BatchNorm2d(+ReLU)"),
    (("PReLU", "prelu"), "PReLU"),
    (("ConvTranspose", "conv_transpose"), "ConvTranspose2d"),
]


def _pending(msg):
    for keys, op in PENDING_OPS:
        if any(k in msg for k in keys):
            return op
    return None


def _select(spec):
    """Comma-separated names or fnmatch patterns (tv_fx_*_qnnpack, tv_eager_resnet*)."""
    import fnmatch
    out = []
    for pat in spec.split(","):
        pat = pat.strip()
        if not pat:
            continue
        hits = [n for n in CASES if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            sys.exit(f"unknown case {pat!r}; `export_roundtrip.py list` prints the names")
        out += [n for n in hits if n not in out]
    return out


def cmd_export(a):
    """Exports every selected case; never stops at one. DIR/status.tsv gets one
    line per case: NAME<TAB>ok|pending|failed<TAB>note. DIR/cases.txt lists the
    exported (ok) ones."""
    os.makedirs(a.dir, exist_ok=True)
    if a.cases:
        names = _select(a.cases)
    elif a.quick:
        names = list(QUICK_CASES)
    else:
        names = list(CASES)
    status, ok = [], []
    for n in names:
        note = ""
        try:
            make_case(n, a.dir, seed=a.seed, show_ops=a.show_ops)
            m = qfuse_model.load(os.path.join(a.dir, n + ".safetensors"))
        except qfuse_export.ExportError as e:
            msg = " ".join(str(e).split())
            op = _pending(msg)
            st = ("pending", f"needs {op}: {msg}") if op else ("failed", f"export: {msg}")
            print(f"{n}: {st[0]}: {st[1]}")
            status.append((n,) + st)
            continue
        except Exception as e:  # noqa: BLE001 - a PyTorch-side error is this case's failure
            msg = " ".join(f"{type(e).__name__}: {e}".split())[:600]
            print(f"{n}: failed: {msg}")
            status.append((n, "failed", msg))
            continue
        ops = {}
        for node in m.order:
            ops[node["op"]] = ops.get(node["op"], 0) + 1
        note = NOTES.get(n, "")
        print(f"{n}: {len(m.order)} nodes, engine {m.engine}, ops {ops}" + (f" [{note}]" if note else ""))
        status.append((n, "ok", note))
        ok.append(n)
    with open(os.path.join(a.dir, "cases.txt"), "w") as f:
        f.write("".join(n + "\n" for n in ok))
    with open(os.path.join(a.dir, "status.tsv"), "w") as f:
        f.write("".join(f"{n}\t{st}\t{note}\n" for n, st, note in status))
    return 0


def cmd_compare(a):
    e, r = np.load(a.expected), np.load(a.actual)
    if e.shape != r.shape or e.dtype != r.dtype:
        print(f"MISMATCH shape/dtype: expected {e.dtype}{list(e.shape)}, got {r.dtype}{list(r.shape)}")
        return 1
    eb = np.ascontiguousarray(e).view(np.uint8).reshape(e.size, -1) if e.size else e
    rb = np.ascontiguousarray(r).view(np.uint8).reshape(r.size, -1) if r.size else r
    if np.array_equal(e, r) and np.array_equal(eb, rb):
        print(f"OK bit-exact: {e.dtype}{list(e.shape)}")
        return 0
    diff = ~np.all(eb == rb, axis=1).reshape(e.shape)
    idx = np.argwhere(diff)
    print(f"MISMATCH: {int(diff.sum())} of {e.size} values differ; max |diff| "
          f"{float(np.nanmax(np.abs(e.astype(np.float64) - r.astype(np.float64)))):.6g}")
    for i in idx[:10]:
        t = tuple(int(v) for v in i)
        print(f"  at {list(t)}: expected {e[t]!r}, got {r[t]!r}")
    return 1


def main(argv=None):
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="build, quantize and export the cases into DIR")
    e.add_argument("dir")
    e.add_argument("--cases", help="comma-separated names or fnmatch patterns (tv_fx_*_qnnpack)")
    e.add_argument("--quick", action="store_true", help="only the old small cases (no torchvision matrix)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--show-ops", action="store_true", help="print the ops convert_fx / convert emitted")
    c = sub.add_parser("compare", help="bit-exact comparison of two .npy files")
    c.add_argument("expected")
    c.add_argument("actual")
    sub.add_parser("list", help="print the case names")
    a = ap.parse_args(argv)
    if a.cmd == "export":
        return cmd_export(a)
    if a.cmd == "compare":
        return cmd_compare(a)
    print("\n".join(CASES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
