"""pipeline.device: device choice, the precision each device computes natively (with the
hardware probes faked, so no GPU is needed), autocast, cuDNN autotuning and compiling, and peak
memory since a reset."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline import device
from pipeline.config import ModelConfig, default
from pipeline.device import (
    Precision,
    autocast,
    compile_model,
    cpu_has_native_bf16,
    device_name,
    enable_fast_kernels,
    native_bf16,
    peak_memory_mib,
    pick_device,
    reset_peak_memory,
    resolve_precision,
)
from pipeline.errors import PipelineError
from pipeline.models import build_model

CPU = torch.device("cpu")
GPU = torch.device("cuda", 0)  # a device object only: every CUDA query it needs is faked


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


@pytest.fixture
def cpu_bf16(monkeypatch):
    """``cpu_bf16(True)``: pretend this CPU has (or lacks) native bf16."""
    def fake(native: bool) -> None:
        monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)
    return fake


@pytest.fixture
def gpu(monkeypatch):
    """``gpu((7, 5), "Tesla T4")``: pretend GPU is a CUDA device of that compute capability."""
    def fake(capability: tuple[int, int], name: str) -> None:
        monkeypatch.setattr(device, "cuda_capability", lambda d: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: name)
    return fake


# --------------------------------------------------------------------------- probes


def test_cpu_probe_reads_avx512_bf16_and_amx(monkeypatch):
    for avx, amx in [(False, False), (True, False), (False, True)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx: v,
                            raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v,
                            raising=False)
        assert cpu_has_native_bf16() is (avx or amx)


@pytest.mark.parametrize("capability, native", [((7, 5), False), ((8, 0), True),
                                                ((9, 0), True), ((6, 0), False)])
def test_native_bf16_on_cuda_from_the_capability(gpu, capability, native):
    gpu(capability, "some GPU")
    assert native_bf16(GPU) is native


def test_native_bf16_on_cpu_follows_the_probe(cpu_bf16):
    cpu_bf16(True)
    assert native_bf16(CPU)
    cpu_bf16(False)
    assert not native_bf16(CPU)
    assert not native_bf16(torch.device("meta"))  # neither a CPU nor a CUDA GPU


# --------------------------------------------------------------------------- resolve_precision


def _resolve(name: str, dev: torch.device) -> tuple[Precision, list[str]]:
    precision = resolve_precision(name, dev, what="train.precision")
    return precision, [precision.warning] if precision.warning else []


def test_auto_on_a_cpu_is_bf16_only_where_native(cpu_bf16):
    cpu_bf16(True)
    precision, warnings = _resolve("auto", CPU)
    assert precision == Precision(torch.bfloat16) and precision.name == "bf16"
    assert not precision.scaler and warnings == []
    cpu_bf16(False)
    precision, warnings = _resolve("auto", CPU)
    assert precision == Precision() and precision.name == "fp32" and precision.dtype is None
    assert warnings == []


def test_auto_on_cuda_is_bf16_from_ampere_else_fp16_with_a_scaler(gpu):
    gpu((8, 0), "NVIDIA A100")
    precision, warnings = _resolve("auto", GPU)
    assert precision == Precision(torch.bfloat16) and not precision.scaler and warnings == []
    gpu((7, 5), "Tesla T4")
    precision, warnings = _resolve("auto", GPU)
    assert precision == Precision(torch.float16, scaler=True) and precision.name == "fp16"
    assert warnings == []


@pytest.mark.parametrize("native", [True, False])
def test_fp32_is_fp32_everywhere(cpu_bf16, gpu, native):
    cpu_bf16(native)
    gpu((8, 0) if native else (7, 5), "some GPU")
    for dev in (CPU, GPU):
        precision, warnings = _resolve("fp32", dev)
        assert precision == Precision() and not precision.scaler and warnings == []


def test_fp16_on_cuda_has_a_scaler_and_on_a_cpu_is_one_error_line(gpu, cpu_bf16):
    gpu((7, 5), "Tesla T4")
    assert _resolve("fp16", GPU)[0] == Precision(torch.float16, scaler=True)
    cpu_bf16(True)
    with pytest.raises(PipelineError) as exc:
        resolve_precision("fp16", CPU, what="train.precision")
    message = _one_line(exc)
    assert message.startswith("train.precision=fp16") and "CUDA" in message


def test_unknown_precision_is_one_error_line():
    with pytest.raises(PipelineError) as exc:
        resolve_precision("fp8", CPU, what="predict.precision")
    message = _one_line(exc)
    assert "predict.precision must be one of auto, fp32, bf16, fp16" in message
    assert "'fp8'" in message


def test_explicit_bf16_where_native_is_quiet(cpu_bf16, gpu):
    cpu_bf16(True)
    gpu((8, 0), "NVIDIA A100")
    for dev in (CPU, GPU):
        precision, warnings = _resolve("bf16", dev)
        assert precision == Precision(torch.bfloat16) and warnings == []


def test_explicit_bf16_on_an_emulating_cpu_carries_one_warning_and_prints_nothing(
        cpu_bf16, capsys):
    cpu_bf16(False)
    precision, warnings = _resolve("bf16", CPU)
    assert precision == Precision(torch.bfloat16)
    assert len(warnings) == 1 and warnings[0].startswith("warning: train.precision=bf16")
    assert "emulated" in warnings[0] and "10x slower than fp32" in warnings[0]
    assert capsys.readouterr().err == ""  # whoever resolved it for the run prints it, once


def test_explicit_bf16_on_an_emulating_gpu_warns_naming_the_gpu(gpu):
    gpu((7, 5), "Tesla T4")
    precision, warnings = _resolve("bf16", GPU)
    assert precision == Precision(torch.bfloat16) and not precision.scaler
    assert len(warnings) == 1
    line = warnings[0]
    assert "Tesla T4" in line and "7.5" in line
    assert "several times slower than fp16" in line and "\n" not in line


# --------------------------------------------------------------------------- autocast


def test_autocast_is_a_no_op_for_fp32():
    a, b = torch.ones(4, 4), torch.ones(4, 4)
    with autocast(Precision(), CPU) as ctx:
        assert ctx is None and not torch.is_autocast_enabled("cpu")
        assert (a @ b).dtype == torch.float32
    assert isinstance(autocast(Precision(), CPU), contextlib.nullcontext)
    with autocast(Precision(torch.bfloat16), CPU):  # the contrast: bf16 really casts
        assert torch.is_autocast_enabled("cpu")
        assert (a @ b).dtype == torch.bfloat16


# --------------------------------------------------------------------------- devices


def test_pick_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device() == pick_device("auto") == pick_device("cpu") == CPU
    for name in ("cuda", "cuda:1"):
        with pytest.raises(PipelineError) as exc:
            pick_device(name)
        assert _one_line(exc) == f"--device {name}: no CUDA device is visible; use --device cpu"
    with pytest.raises(PipelineError) as exc:
        pick_device("banana")
    assert _one_line(exc).startswith("--device banana: not a device name")


def test_device_name(gpu):
    assert device_name(CPU).startswith("cpu (") and "threads" in device_name(CPU)
    gpu((7, 5), "Tesla T4")
    assert device_name(GPU) == "Tesla T4"


# --------------------------------------------------------------------------- fast kernels


@pytest.fixture
def cudnn_benchmark():
    """Put cuDNN's autotuning flag back as it was, whatever the test set it to."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    yield
    torch.backends.cudnn.benchmark = before


def test_fast_kernels_autotune_cudnn_on_a_gpu_only(cudnn_benchmark):
    enable_fast_kernels(CPU)
    assert torch.backends.cudnn.benchmark is False
    enable_fast_kernels(GPU)  # a device object: setting the flag needs no GPU
    assert torch.backends.cudnn.benchmark is True


def test_compile_in_place_keeps_the_module_its_weights_and_its_outputs(fast_compile):
    torch.manual_seed(0)
    eager = build_model(default(ModelConfig, arch="unet", base_width=4, depth=2)).eval()
    model = copy.deepcopy(eager)
    x = torch.randn(2, 3, 32, 48)
    assert compile_model(model) is model and model._compiled_call_impl is not None
    assert type(model) is type(eager) and list(model.state_dict()) == list(eager.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(x), eager(x))


@pytest.mark.parametrize("mode", ["default", "reduce-overhead", "max-autotune"])
def test_compile_passes_its_mode_to_inductor(mode, monkeypatch):
    calls = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, **kw: calls.append(kw))
    compile_model(nn.Linear(2, 2), mode)
    assert calls == [{"backend": "inductor", "mode": mode}]


def test_an_unknown_compile_mode_fails_in_one_line_before_compiling(monkeypatch):
    monkeypatch.setattr(nn.Module, "compile", lambda self, **kw: pytest.fail("compiled"))
    with pytest.raises(PipelineError, match="predict.compile_mode: 'cudagraphs' is not one of "
                                           "default, reduce-overhead"):
        compile_model(nn.Linear(2, 2), "cudagraphs")


# --------------------------------------------------------------------------- memory


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_peak_memory_is_measured_from_the_last_reset():
    cpu = torch.device("cpu")
    block = torch.ones(128 * 2**20 // 4)  # 128 MiB, touched: the lifetime peak is above it
    del block
    reset_peak_memory(cpu)
    # right after a reset the peak is the current resident size, not the lifetime peak
    assert abs(peak_memory_mib(cpu) - _rss_mib()) < 16
    block = torch.ones(32 * 2**20 // 4)
    assert peak_memory_mib(cpu) >= _rss_mib() - 1  # and it follows what is resident
    del block
