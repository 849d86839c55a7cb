"""The mixed precision a run computes in: `auto` is bf16 where the device has bf16 matrix
kernels and fp32 ("no") elsewhere.

bf16 autocast is 2-4x faster than fp32 on a CPU whose oneDNN has bf16 kernels (AVX-512, native
with avx512_bf16 or AMX) and on CUDA GPUs from Ampere on. A CPU with AVX2 only has no oneDNN
bf16 matmul, and PyTorch's fallback is orders of magnitude slower than fp32: measured on a
2-core AVX2 EPYC, a 2048 x 2048 matmul ran at 0.27 GFLOP/s in bf16 against 78 in fp32, so a
bf16 run there would not finish. `auto` is the default for that reason; an explicit bf16 on
such a CPU is kept (the user asked for it) with a warning before any compute.
"""

from __future__ import annotations

import torch

CHOICES = ("auto", "no", "bf16", "fp16")


def fast_bf16(device: torch.device) -> bool:
    """Whether `device` has bf16 matrix kernels (oneDNN's on a CPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        if supported is not None:
            return bool(supported())
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    return False


def run_device() -> torch.device:
    """The device accelerate trains on: the accelerator when there is one, else the CPU."""
    return torch.accelerator.current_accelerator() if torch.accelerator.is_available() else torch.device("cpu")


def resolve_precision(choice: str, device: torch.device) -> str:
    """accelerate's mixed_precision ("no", "bf16" or "fp16") for a `train.mixed_precision` choice."""
    if choice == "auto":
        return "bf16" if fast_bf16(device) else "no"
    return choice


def slow_bf16_warning(precision: str, device: torch.device, key: str) -> str | None:
    """A warning for bf16 on a CPU without bf16 matrix kernels, naming the setting; None otherwise."""
    if precision != "bf16" or device.type != "cpu" or fast_bf16(device):
        return None
    capability = torch.backends.cpu.get_cpu_capability()
    return (f"warning: {key} bf16 on a CPU without bf16 matrix kernels ({capability}): its matmuls run "
            f"tens to hundreds of times slower than in fp32 here; use auto (fp32 on this CPU) or no")
