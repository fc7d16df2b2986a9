"""Devices: which one to run on, which precision it computes fast, autocast, seeding, fast
kernels (cuDNN autotuning, torch.compile) and peak memory.

Training, prediction and every benchmark take their device and precision from here, so the
rule is written once:

    auto  ->  bf16       on a CUDA GPU of compute capability >= 8.0 (Ampere, Hopper, ...)
              fp16       with a gradient scaler on older CUDA GPUs (T4, V100, P100: Kaggle's)
              bf16       on a CPU with native bf16 (AVX512-BF16 or AMX)
              fp32       on any other CPU

``torch.cuda.is_bf16_supported()`` also counts *emulated* bf16 (its default
``including_emulation=True``), which is several times slower than fp16 on a T4, so the
capability is read directly. On a CPU without native bf16, autocast to bf16 was measured 12x
slower than fp32 (an SMP Unet-resnet18 training step on an AMD EPYC Zen 3); an explicit
``bf16`` there still runs, after one warning line.
"""

from __future__ import annotations

import contextlib
import platform
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.errors import PipelineError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NATIVE_BF16_CUDA = (8, 0)  # compute capability from which bf16 tensor cores exist


def pick_device(name: str | None = None) -> torch.device:
    """``name`` (cpu, cuda, cuda:1) if given, else the first CUDA GPU, else the CPU."""
    if not name or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PipelineError(f"--device {name}: not a device name (cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PipelineError(f"--device {name}: no CUDA device is visible; use --device cpu")
    return device


def device_name(device: torch.device) -> str:
    """``"NVIDIA H100 80GB HBM3"`` or ``"cpu (x86_64, 2 threads)"``: for reports."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (timings); nothing to wait for on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- precision


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None: fp32), whether fp16 needs a gradient scaler, and the one warning
    line for bf16 on hardware that only emulates it (printed once by whoever resolved it)."""

    dtype: torch.dtype | None = None
    scaler: bool = False
    warning: str = field(default="", compare=False)

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


FP32 = Precision()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles)."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def cuda_capability(device: torch.device) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 in hardware rather than emulating it."""
    if device.type == "cuda":
        return cuda_capability(device) >= NATIVE_BF16_CUDA
    return device.type == "cpu" and cpu_has_native_bf16()


def resolve_precision(name: str, device: torch.device, *, what: str = "precision") -> Precision:
    """The :class:`Precision` that ``name`` (auto, fp32, bf16, fp16) means on ``device``;
    ``what`` names the setting in messages (``train.precision``). Resolved once per run, by
    whoever builds the run's model (the training parts, the prediction ensemble)."""
    if name not in PRECISIONS:
        raise PipelineError(f"{what} must be one of {', '.join(PRECISIONS)}, got '{name}'")
    cuda = device.type == "cuda"
    if name == "auto":
        if native_bf16(device):
            return Precision(torch.bfloat16)
        return Precision(torch.float16, scaler=True) if cuda else Precision()
    if name == "fp32":
        return Precision()
    if name == "fp16":
        if not cuda:
            raise PipelineError(f"{what}=fp16 needs a CUDA GPU; use auto, fp32 or bf16 on a CPU")
        return Precision(torch.float16, scaler=True)
    return Precision(torch.bfloat16,
                     warning="" if native_bf16(device) else _emulation_warning(what, device))


def _emulation_warning(what: str, device: torch.device) -> str:
    if device.type == "cuda":
        major, minor = cuda_capability(device)
        return (f"warning: {what}=bf16 on {torch.cuda.get_device_name(device)} (compute "
                f"capability {major}.{minor}) is emulated, expect it several times slower "
                "than fp16; set it to auto to use fp16 with a gradient scaler")
    return (f"warning: {what}=bf16 on a CPU without AVX512-BF16 or AMX is emulated, expect "
            "it about 10x slower than fp32 (12x measured on an AMD EPYC Zen 3); set it to "
            "auto or fp32")


def autocast(precision: Precision, device: torch.device):
    """``torch.autocast`` for ``precision`` (a no-op context for fp32)."""
    if precision.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.dtype)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators: the same seed, the same run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- fast kernels

# torch.compile's backend. Inductor writes and builds C++/Triton kernels (about 20 s for a tiny
# U-Net on a 2-core CPU); the tests swap in "aot_eager", which traces the same graphs (forward
# and backward) without generating code.
COMPILE_BACKEND = "inductor"


def enable_fast_kernels(device: torch.device) -> None:
    """On a CUDA device, let cuDNN time its convolution algorithms on the first batch of each
    input shape and keep the fastest (``cudnn.benchmark``): training and prediction feed one
    fixed size, so the search is paid once. Nothing to choose on a CPU."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


# torch.compile's modes: "reduce-overhead" replays each input shape's kernels as one CUDA graph
# (fewer launches; a graph is recorded per shape), "max-autotune" times Triton kernel variants
# at compile time (minutes) and uses CUDA graphs too. On a CPU, every mode compiles as default.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_model(model: nn.Module, mode: str = "default",
                  what: str = "predict.compile_mode") -> nn.Module:
    """``model`` compiled in place (``nn.Module.compile``, as PyTorch advises rather than the
    ``torch.compile(model)`` wrapper) in ``mode`` (one of :data:`COMPILE_MODES`; ``what`` names
    the setting in the error): it keeps its class and its state_dict keys (no ``_orig_mod.``
    prefixes), so checkpoints, the weight average and DDP see the plain module. The first batch
    of each new input shape pays the compile time."""
    if mode not in COMPILE_MODES:
        raise PipelineError(f"{what}: '{mode}' is not one of {', '.join(COMPILE_MODES)}")
    # Modes are inductor's settings; another backend (the tests' aot_eager) takes none.
    model.compile(backend=COMPILE_BACKEND, **({"mode": mode} if COMPILE_BACKEND == "inductor" else {}))
    return model


# --------------------------------------------------------------------------- memory


def reset_peak_memory(device: torch.device) -> None:
    """Start a fresh peak for :func:`peak_memory_mib`, so that a process running several
    models reports each one's own peak."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: "5" resets the peak resident set size (VmHWM) to the current one
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory since :func:`reset_peak_memory`: the CUDA allocator's peak on a GPU, else
    the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource  # not on Windows: only reached where /proc is missing

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
