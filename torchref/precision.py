"""train.tf32 for mamba_ssm's Triton kernels (`model.ssm.backend: cuda`), beside torch's own TF32
switches (torchref/train/loop.py configure_cuda); jaxbrr/precision.py is JAX's.

Triton's precision for a `tl.dot` of float32 operands that names none is read from TRITON_F32 when
a kernel compiles, and is part of the kernel's cache key; unset, it is TF32 on NVIDIA GPUs
(triton/language/core.py `dot`: knobs.language.fp32_default, else "tf32"). mamba_ssm's SSD kernels
name none, and torch's allow_tf32 switches do not reach Triton. A process keeps the kernels it
compiled (in memory, keyed without the variable): set it before the first one compiles.
Imports neither torch nor Triton: the test session (conftest.py) and the GPU check read it too.
"""

from __future__ import annotations

import os

TRITON_F32 = "TRITON_F32_DEFAULT"
FULL_FLOAT32 = "ieee"  # TRITON_F32's value for train.tf32 false, the tests and the precompiled kernels


def set_triton_f32(value: str | None) -> None:
    """TRITON_F32 for every kernel compiled from here on, process-wide; None unsets it (Triton's
    default: TF32)."""
    if value is None:
        os.environ.pop(TRITON_F32, None)
    else:
        os.environ[TRITON_F32] = value
