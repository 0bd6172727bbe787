#!/usr/bin/env python3
"""Vectors for qfuse's port of glibc's expf (`qsoftmax::glibc_expf`, the scalar tail of
ATen's softmax over a dim other than the last): the host C library's `expf` (through
ctypes) on a sample of the arguments softmax can take, every f32 bit pattern from -0 down
to -110 in steps of 16411, plus the argument where glibc's SSE2 and FMA variants differ
(-0x1.f8cbb2p5) and the edges of the range. Written as tests/data/qsoftmax/glibc_expf.bin:
little-endian u32 pairs (argument bits, result bits), checked by tests/qsoftmax.rs without
Python.

Run on glibc 2.28+ on an x86-64 CPU with FMA (the `__expf_fma` variant); these were made
with glibc 2.36 on an Intel Xeon with AVX-512 VNNI. The whole range (1,121,714,177
arguments) was compared with the port once on that machine: all equal.

    /work/venv/bin/python tools/gen_glibc_expf.py tests/data/qsoftmax/glibc_expf.bin
"""
import ctypes
import os
import struct
import sys

libm = ctypes.CDLL("libm.so.6")
libm.expf.restype = ctypes.c_float
libm.expf.argtypes = [ctypes.c_float]


def f32(bits):
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def bits_of(v):
    return struct.unpack("<I", struct.pack("<f", v))[0]


def main():
    out = sys.argv[1]
    end = bits_of(-110.0)
    args = list(range(0x8000_0000, end + 1, 16411))
    args += [0xC27C65D9, 0xC27C65D8, 0xC27C65DA, end, 0xC2CFF1B4, 0xC2CFF1B3, 0xC2B17217,
             0x8000_0001, 0xBF80_0000, 0xB380_0000]
    args = sorted(set(args))
    with open(out + ".tmp", "wb") as f:
        for a in args:
            f.write(struct.pack("<II", a, bits_of(libm.expf(f32(a)))))
    os.replace(out + ".tmp", out)
    print(f"{len(args)} arguments -> {out} (glibc {os.confstr('CS_GNU_LIBC_VERSION')})")


if __name__ == "__main__":
    main()
