"""``python -m pipeline.benchmark gpu``: one command that measures a GPU for this pipeline.

Training: images/s and peak device memory of one training step (forward, backward, AdamW) per
model, size and precision (the one ``auto`` resolves to, fp32, and on CUDA bf16 and fp16),
measured by :func:`pipeline.benchmark.model_speed.benchmark_model` on random batches.

Prediction, at the largest size: the inference engine end to end, JPEG files to RLE strings
(workers decode, model + flip TTA, masks, RLE), for 1 model and an ensemble of randomly
initialised checkpoints; the same images again preloaded on the device (compute only), whose
time over the end-to-end time is the GPU busy fraction; NVML utilisation sampled meanwhile; the
naive loop of :mod:`pipeline.benchmark.engine_speed` on the same device; and the projected
minutes for Kaggle's 100,064 test images. The first model runs twice more: with the JPEGs
decoded on the device (``predict.decode: device``), and with the RLE encoding in the main
thread instead of overlapped with the next batch (``predict.overlap``, or the other way round
when the config turned it off). Decoding alone is timed both ways
(:mod:`pipeline.benchmark.decode_speed`). The same command runs on a CPU at a tiny size.
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pipeline.benchmark.decode_speed import decode_rates
from pipeline.benchmark.engine_speed import (
    TEST_IMAGES,
    cycle,
    ensemble_rles,
    full_size_images,
    make_checkpoint,
    naive_predict,
)
from pipeline.benchmark.model_speed import Workload, benchmark_model
from pipeline.cli import stage_config
from pipeline.config import FULL_SHAPE, Config, DemoConfig, PredictConfig, default
from pipeline.data.demo import generate_demo
from pipeline.device import (
    device_name,
    peak_memory_mib,
    pick_device,
    reset_peak_memory,
    resolve_precision,
    synchronize,
)
from pipeline.errors import PipelineError
from pipeline.inference.encode import iter_rles
from pipeline.inference.engine import Prediction, load_ensemble, predict_probs, prepare_engine
from pipeline.inference.loader import ImageDataset, make_loader
from pipeline.models.checkpoint import load_model

if TYPE_CHECKING:  # typing.Self is Python >= 3.11; annotations are never evaluated here
    from typing_extensions import Self

GPU_MODELS = ("configs/models/smp_unet_resnet34.yaml", "configs/models/unet.yaml")
GPU_SIZES = ((640, 960), FULL_SHAPE)


@dataclass(frozen=True)
class GpuPlan:
    """What is measured: training at each of ``sizes`` (batch ``batch_size``, 0: 8 images at
    640x960 and fewer as the pixels grow, 2 at full size), prediction of ``images`` images at the
    largest size by 1 model and by ``ensemble`` models, the naive loop on ``naive_images``."""

    sizes: tuple[tuple[int, int], ...] = GPU_SIZES
    images: int = 512
    ensemble: int = 5
    naive_images: int = 16
    steps: int = 10
    warmup: int = 3
    batch_size: int = 0

    @classmethod
    def quick(cls, **changes) -> GpuPlan:
        """Fewer steps and images: about a third of the time, noisier numbers."""
        return cls(**{"images": 128, "naive_images": 8, "steps": 3, "warmup": 2, **changes})

    def check(self) -> None:
        if min(self.images, self.ensemble, self.naive_images, self.steps) < 1 or not self.sizes:
            raise PipelineError("--images, --ensemble and the steps must be >= 1")

    def train_batch(self, height: int, width: int) -> int:
        if self.batch_size:
            return self.batch_size
        return max(1, min(8, round(8 * 640 * 960 / (height * width))))


def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s), for reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def train_precisions(device: torch.device) -> list[str]:
    """What ``auto`` resolves to, fp32, and on CUDA both half precisions."""
    names = [resolve_precision("auto", device).name, "fp32"]
    return list(dict.fromkeys(names + (["bf16", "fp16"] if device.type == "cuda" else [])))


def measure_training(configs: Sequence[Config], plan: GpuPlan, device: torch.device) -> list[dict]:
    rows = []
    for cfg in configs:
        for height, width in plan.sizes:
            batch = plan.train_batch(height, width)
            work = Workload(height, width, batch, plan.steps, plan.warmup)
            for name in train_precisions(device):
                precision = resolve_precision(name, device, what="training precision")
                row = benchmark_model(cfg.model, work, device, precision)
                rows.append({**row, "height": height, "width": width, "batch_size": batch,
                             "precision": name})
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return rows


# --------------------------------------------------------------------------- prediction


class _Utilisation:
    """Mean NVML GPU utilisation (%) sampled every 0.1 s inside the ``with`` block; ``mean`` is
    None on a CPU or without NVML (``pynvml``)."""

    def __init__(self, device: torch.device):
        self.device, self.samples, self._stop = device, [], threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _read(self) -> float | None:
        try:
            return float(torch.cuda.utilization(self.device))
        except Exception:  # noqa: BLE001 -- no pynvml, or NVML errors: no figure, no failure
            return None

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.samples.append(self._read())

    def __enter__(self) -> Self:
        if self.device.type == "cuda" and self._read() is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def mean(self) -> float | None:
        values = [s for s in self.samples if s is not None]
        return statistics.fmean(values) if values else None


def compute_rles(ensemble, batches: Sequence[dict], out_shape: tuple[int, int]) -> list[str]:
    """What the engine does per batch once the images are on the device: models, masks, RLE
    (encoded as the engine does, overlapped with ``predict.overlap``)."""
    preds = (Prediction([], [], predict_probs(ensemble, images, out_shape))
             for images in batches)
    return [r for batch in iter_rles(preds, ensemble.engine) for r in batch.rles]


def preload_batches(ensemble, paths: Sequence[Path], out_shape: tuple[int, int]) -> list[dict]:
    """The engine's batches of ``paths``, decoded, resized and moved to the device up front."""
    engine = ensemble.engine
    loader = make_loader(ImageDataset(paths, ensemble.sizes, out_shape), engine.cfg,
                         engine.device)
    return [{s: t.to(engine.device) for s, t in batch.images.items()} for batch in loader]


def _timed(fn, device: torch.device) -> tuple[list[str], float]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def _predict_row(ckpts: Sequence[Path], paths: Sequence[Path], cfg: PredictConfig,
                 device: torch.device, out_shape: tuple[int, int]) -> dict:
    """Engine end to end and compute only, on the same images, for one ensemble."""
    ensemble = load_ensemble(ckpts, prepare_engine(cfg, device))
    ensemble_rles(ensemble, paths[: cfg.batch_size], out_shape)  # warm-up
    reset_peak_memory(device)
    with _Utilisation(device) as util:
        rles, seconds = _timed(lambda: ensemble_rles(ensemble, paths, out_shape), device)
    peak = peak_memory_mib(device) if device.type == "cuda" else None
    batches = preload_batches(ensemble, paths, out_shape)
    compute_rles(ensemble, batches[:1], out_shape)  # warm-up
    same, compute_s = _timed(lambda: compute_rles(ensemble, batches, out_shape), device)
    assert len(rles) == len(same) == len(paths)
    rate = len(paths) / seconds
    return {"models": len(ckpts), "decode": cfg.decode, "overlap": cfg.overlap,
            "engine_img_per_s": rate,
            "compute_img_per_s": len(paths) / compute_s, "busy_fraction": compute_s / seconds,
            "nvml_utilisation": util.mean, "peak_mib": peak,
            "projected_minutes_test_set": TEST_IMAGES / rate / 60}


def naive_rate(ckpt: Path, paths: Sequence[Path], size: tuple[int, int], cfg: PredictConfig,
               device: torch.device, out_shape: tuple[int, int]) -> float:
    """Images/s of the naive loop (one image at a time, PIL, fp32, cv2 upsampling, numpy RLE)."""
    model, _ = load_model(ckpt, map_location=device)
    naive_predict(model, paths[0], size, cfg.tta, cfg.threshold, out_shape)  # warm-up
    _, seconds = _timed(lambda: [naive_predict(model, p, size, cfg.tta, cfg.threshold, out_shape)
                                 for p in paths], device)
    return len(paths) / seconds


def prediction_images(data_root: Path | None, work: Path, size: tuple[int, int]):
    """(JPEG files, their shape, where they come from): 1918x1280 files of ``data_root``, else
    16 demo cars rendered at ``size``."""
    if data_root is not None:
        return full_size_images(data_root, work, 64), FULL_SHAPE, str(data_root)
    demo = default(DemoConfig, train_cars=0, test_cars=1, seed=0, height=size[0], width=size[1])
    files = sorted((generate_demo(work / "demo", demo) / "test").glob("*.jpg"))
    return files, size, "synthetic (demo renders)"


def measure_prediction(configs: Sequence[Config], plan: GpuPlan, device: torch.device,
                       data_root: Path | None, work: Path) -> dict:
    size = max(plan.sizes, key=lambda s: s[0] * s[1])
    files, out_shape, source = prediction_images(data_root, work, size)
    paths = cycle(files, plan.images)
    pc = configs[0].predict
    result = {"decode": decode_rates(paths, size, out_shape, pc, device),
              "data": source, "distinct_files": len(files), "images": len(paths),
              "input_size": list(size), "output_size": list(out_shape), "tta": list(pc.tta),
              "precision": resolve_precision(pc.precision, device, what="predict.precision").name,
              "batch_size": pc.batch_size, "num_workers": pc.num_workers,
              "largest_component": pc.largest_component, "results": []}
    for cfg in configs:
        ckpts = [make_checkpoint(cfg, *size, work / f"{cfg.model.label}_{seed}.pt", seed)
                 for seed in range(plan.ensemble)]
        naive = naive_rate(ckpts[0], paths[: plan.naive_images], size, cfg.predict, device,
                           out_shape)
        overlap = cfg.predict.overlap
        runs = [(members, "workers", overlap) for members in dict.fromkeys((1, plan.ensemble))]
        if cfg is configs[0]:  # the first model once more: decoded on the device, and with
            # the RLE encoding in the main thread (or overlapped, if the config turned it off)
            runs += [(1, "device", overlap), (1, "workers", not overlap)]
        for members, decode, overlapped in runs:
            predict = dataclasses.replace(cfg.predict, decode=decode, overlap=overlapped)
            row = _predict_row(ckpts[:members], paths, predict, device, out_shape)
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the ensemble and its preloaded images are gone
            single = (members, decode, overlapped) == runs[0]
            result["results"].append({
                "model": cfg.model.label, **row,
                "naive_img_per_s": naive if single else None,
                "naive_images": min(plan.naive_images, len(paths)) if single else None,
                "speedup_vs_naive": row["engine_img_per_s"] / naive if single else None})
        for path in ckpts:
            path.unlink()
    return result


def run_gpu_benchmark(model_paths: Sequence[str | Path], plan: GpuPlan, *,
                      device: str | None = None, config: Sequence[Path] | None = None,
                      overrides: Sequence[str] = (), data_root: Path | None = None,
                      command: str = "") -> dict:
    """Training and prediction measurements of ``model_paths`` (model YAMLs, layered on the
    ``config`` files and ``overrides`` as every stage does) on one device."""
    plan.check()
    configs = [stage_config(config, str(p), list(overrides)) for p in model_paths]
    dev = pick_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its kernels
    result = {
        "device": str(dev), "device_name": device_name(dev), "cpu": cpu_model(),
        "torch": torch.__version__, "cuda": torch.version.cuda if dev.type == "cuda" else None,
        "auto_precision": resolve_precision("auto", dev).name,
        "cudnn_benchmark": dev.type == "cuda", "channels_last": dev.type == "cuda",
        "command": command, "plan": dataclasses.asdict(plan), "test_images": TEST_IMAGES,
    }
    result["training"] = measure_training(configs, plan, dev)
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        result["prediction"] = measure_prediction(configs, plan, dev, data_root, Path(tmp))
    return result
