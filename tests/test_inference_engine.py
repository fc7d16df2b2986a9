"""The inference engine: flip TTA mapped back, probability averaging over flips and models,
upsampling to full size, masks, loading an ensemble at each model's training size, the
batched prediction loop against a naive per-image loop, and the edge refiners applied to the
full-size probabilities with the full-size photos."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from pipeline import device, rle
from pipeline.config import Config, ModelConfig, PredictConfig, RefineConfig, default
from pipeline.data.io import read_image
from pipeline.data.layout import Layout
from pipeline.data.layout import submission_names as sample_names
from pipeline.data.transforms import normalize, normalize_batch
from pipeline.errors import PipelineError
from pipeline.inference import engine
from pipeline.inference.engine import (
    Ensemble,
    Member,
    iter_predictions,
    load_ensemble,
    predict_probs,
    prepare_engine,
    to_masks,
    tta_dims,
)
from pipeline.models import build_model
from pipeline.models.checkpoint import save_checkpoint
from pipeline.refine.apply import refine_probs
from pipeline.refine.geometry import edge_band
from pipeline.refine.net import EdgeRefiner
from pipeline.refine.store import save_refiner
from pipeline.runs import refiner_beside

FP32 = default(PredictConfig, precision="fp32", num_workers=0, batch_size=4)


def ensemble(members: list[Member], cfg: PredictConfig = FP32) -> Ensemble:
    """``members`` in an engine of ``cfg`` on the CPU."""
    return Ensemble(members, prepare_engine(cfg, "cpu"))


def load(checkpoints, cfg: PredictConfig = FP32) -> Ensemble:
    return load_ensemble(checkpoints, prepare_engine(cfg, "cpu"))


def rerun(ens: Ensemble, cfg: PredictConfig) -> Ensemble:
    """The same models in an engine of other settings."""
    return Ensemble(ens.members, prepare_engine(cfg, "cpu"), ens.key)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


class FixedLogits(nn.Module):
    """Ignores its input: returns the same position-dependent logits map for every image, so
    a flipped input's prediction is NOT the flipped prediction (flip-back is observable)."""

    def __init__(self, logits: np.ndarray):
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits, dtype=torch.float32)[None, None])

    def forward(self, x):
        return self.logits.expand(x.shape[0], 1, *self.logits.shape[-2:])


class RedChannel(nn.Module):
    """Logits = 4 x the normalised red channel: a per-pixel map, so it commutes with flips."""

    def forward(self, x):
        return 4 * x[:, :1]


def batch_of(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images))


def asymmetric_images(n=2, h=16, w=24, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    img[:, :, : w // 3, 0] = 255  # a bright left band and a dark top band: no symmetry
    img[:, : h // 4, :, 0] = 0
    return img


def test_tta_dims_identity_first_and_unknown_rejected():
    assert tta_dims([]) == [()]
    assert tta_dims(["hflip"]) == [(), (3,)]
    assert tta_dims(["hflip", "hflip"]) == [(), (3,)]
    for unknown in ("vflip", "rotate90"):  # a car is never upside down: no vertical flip
        with pytest.raises(PipelineError, match=unknown):
            tta_dims([unknown])


@pytest.mark.parametrize("tta", [[], ["hflip"]])
def test_flipped_predictions_are_flipped_back(tta):
    h, w = 8, 12
    logits = np.linspace(-3, 3, h * w).reshape(h, w) ** 3 / 9  # asymmetric in both axes
    ens = ensemble([Member(FixedLogits(logits), (h, w))], dataclasses.replace(FP32, tta=tta))
    images = {(h, w): batch_of(asymmetric_images(2, h, w))}
    got = predict_probs(ens, images, out_shape=(h, w))
    # Reference: each view's prediction (always `logits`) is flipped back by the same flip.
    views = [logits] + [{"hflip": logits[:, ::-1]}[t] for t in tta]
    expected = np.mean([sigmoid(v) for v in views], axis=0)
    assert got.shape == (2, h, w)
    np.testing.assert_allclose(got[0].numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(got[1].numpy(), expected, atol=1e-6)


def test_flip_tta_of_an_equivariant_model_changes_nothing():
    h, w = 16, 24
    images = asymmetric_images(2, h, w)
    members = [Member(RedChannel(), (h, w))]
    batch = {(h, w): batch_of(images)}
    plain = predict_probs(ensemble(members, dataclasses.replace(FP32, tta=[])), batch, (h, w))
    tta = predict_probs(ensemble(members, dataclasses.replace(FP32, tta=["hflip"])), batch,
                        (h, w))
    np.testing.assert_allclose(tta.numpy(), plain.numpy(), atol=1e-6)
    # Meaningful only because the prediction is not symmetric itself.
    assert (plain - plain.flip(-1)).abs().max() > 0.1
    # The engine normalises like training (pipeline.data.transforms.normalize).
    expected = sigmoid(4 * normalize(images[0])[0].numpy())
    np.testing.assert_allclose(plain[0].numpy(), expected, atol=1e-5)


def test_precision_is_resolved_once_for_the_run_and_checked_under_its_name(monkeypatch):
    h, w = 16, 24
    members = [Member(RedChannel(), (h, w))]
    batch = {(h, w): batch_of(asymmetric_images(2, h, w))}
    fp32 = predict_probs(ensemble(members), batch, out_shape=(h, w))
    bf16_ens = ensemble(members, dataclasses.replace(FP32, precision="bf16"))
    calls = []
    monkeypatch.setattr(engine, "resolve_precision", lambda *a, **k: calls.append(a))
    bf16 = torch.cat([predict_probs(bf16_ens, batch, (h, w)) for _ in range(3)])
    assert calls == []  # the batches use what the engine resolved, never resolve again
    monkeypatch.undo()
    assert bf16.dtype == torch.float32 and bf16_ens.engine.precision.name == "bf16"
    torch.testing.assert_close(bf16[:2], fp32, atol=2e-2, rtol=0)
    with pytest.raises(PipelineError, match="predict.precision=fp16 needs a CUDA GPU"):
        prepare_engine(dataclasses.replace(FP32, precision="fp16"), "cpu")
    with pytest.raises(PipelineError, match="predict.precision"):
        prepare_engine(dataclasses.replace(FP32, precision="fp8"), "cpu")


def test_output_is_full_size_and_bilinear():
    h, w = 32, 48
    logits = np.random.default_rng(1).normal(0, 2, (h, w))
    ens = ensemble([Member(FixedLogits(logits), (h, w))], dataclasses.replace(FP32, tta=[]))
    probs = predict_probs(ens, {(h, w): batch_of(asymmetric_images(1, h, w))})
    assert probs.shape == (1, 1280, 1918) and probs.dtype == torch.float32
    reference = cv2.resize(sigmoid(logits).astype(np.float32), (1918, 1280),
                           interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(probs[0].numpy(), reference, atol=1e-4)


def test_models_average_probabilities_across_input_sizes():
    a, b, c = 2.0, -1.0, 0.5
    members = [
        Member(FixedLogits(np.full((8, 12), a)), (8, 12)),
        Member(FixedLogits(np.full((8, 12), b)), (8, 12)),
        Member(FixedLogits(np.full((4, 6), c)), (4, 6)),  # another training size
    ]
    ens = ensemble(members)
    assert ens.sizes == [(8, 12), (4, 6)]
    images = {s: batch_of(asymmetric_images(3, *s)) for s in ens.sizes}
    probs = predict_probs(ens, images, out_shape=(16, 24))
    expected = (sigmoid(a) + sigmoid(b) + sigmoid(c)) / 3
    np.testing.assert_allclose(probs.numpy(), expected, atol=1e-6)
    assert abs(expected - sigmoid((a + b + c) / 3)) > 0.01  # not a mean of logits


def test_to_masks_can_keep_only_the_largest_region():
    probs = torch.zeros(2, 10, 12)
    probs[0, 1:6, 1:8] = 0.9  # the car
    probs[0, 8:10, 0:12] = 0.7  # a strip of background above the threshold
    probs[1, 2:4, 2:4] = 0.6
    plain = to_masks(probs, 0.5)
    assert plain[0].sum() == 35 + 24
    kept = to_masks(probs, 0.5, largest_component=True)
    assert kept[0].sum() == 35 and not kept[0, 8:].any()
    assert torch.equal(kept[1], plain[1])  # one region: unchanged


# --------------------------------------------------------------------------- with files


def tiny_checkpoint(path, height=32, width=48, seed=0, label="tiny"):
    """An untrained tiny U-Net saved with a training size other than the images' (64x96), so
    the workers' resize is exercised."""
    torch.manual_seed(seed)
    cfg = default(Config)
    cfg = dataclasses.replace(
        cfg,
        model=default(ModelConfig, arch="unet", base_width=4, depth=2, name=label),
        train=dataclasses.replace(cfg.train, height=height, width=width),
    )
    return save_checkpoint(path, build_model(cfg.model), cfg)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny" / "fold0" / "best.pt")


def test_load_ensemble_uses_each_training_size(tmp_path, ckpt):
    other = tiny_checkpoint(tmp_path / "b.pt", 16, 24, seed=1)
    ens = load([ckpt, other])
    assert [m.size for m in ens.members] == [(32, 48), (16, 24)]
    assert all(not m.model.training for m in ens.members)


@pytest.mark.parametrize(("backend", "mode"), [
    ("aot_eager", "default"),  # the graph capture alone: seconds
    # C++ kernels built: 15-30 s on 2 cores; the CUDA-graph mode compiles as default on a CPU
    pytest.param("inductor", "reduce-overhead", marks=pytest.mark.slow),
])
def test_a_compiled_ensemble_predicts_what_the_eager_one_does(ckpt, tmp_path, monkeypatch,
                                                               backend, mode):
    monkeypatch.setattr(device, "COMPILE_BACKEND", backend)
    tuned = []
    monkeypatch.setattr(engine, "enable_fast_kernels", tuned.append)
    cfg = dataclasses.replace(FP32, compile=True, compile_mode=mode, tta=["hflip"])
    # Two folds of one architecture and size with other weights, as a real ensemble: Dynamo
    # traces the first and reuses its graph for the second (the weights are the graph's inputs),
    # so the second must still predict with its own weights, not the first one's.
    other = tiny_checkpoint(tmp_path / "fold1" / "best.pt", seed=1)
    try:
        compiled = load([ckpt, other], cfg)
        eager = load([ckpt, other], dataclasses.replace(cfg, compile=False))
        assert tuned == [torch.device("cpu")] * 2  # cuDNN autotuning asked for (a no-op here)
        assert all(m.model._compiled_call_impl is not None for m in compiled.members)
        assert all(m.model._compiled_call_impl is None for m in eager.members)
        images = {(32, 48): batch_of(asymmetric_images(3, 32, 48))}
        for n in (3, 1):  # a smaller last batch is another shape: compiled again, same numbers
            batch = {size: x[:n] for size, x in images.items()}
            torch.testing.assert_close(predict_probs(compiled, batch, (64, 96)),
                                       predict_probs(eager, batch, (64, 96)))
        # each compiled member on its own predicts what its eager twin does, and the two differ
        x = normalize_batch(images[(32, 48)])
        with torch.no_grad():
            outs = [[m.model(x) for m in ens.members] for ens in (compiled, eager)]
        for got, want in zip(*outs):
            torch.testing.assert_close(got, want)
        assert not torch.allclose(outs[1][0], outs[1][1])
    finally:
        torch._dynamo.reset()


def test_iter_predictions_in_order_with_workers_equal_to_naive_loop(tiny_data, ckpt):
    from pipeline.benchmark.engine_speed import naive_predict
    from pipeline.dice import dice_per_image

    names = sample_names(tiny_data)[:6]
    paths = [Layout(tiny_data).test_dir / n for n in names]
    ens = load([ckpt])
    cfg = dataclasses.replace(FP32, num_workers=2, batch_size=4)
    preds = list(iter_predictions(rerun(ens, cfg), paths, out_shape=(64, 96)))
    assert [n for p in preds for n in p.names] == names
    assert [i for p in preds for i in p.indices] == list(range(6))
    probs = torch.cat([p.probs for p in preds])
    assert probs.shape == (6, 64, 96)
    # the same batches without workers give the same numbers
    serial = torch.cat([p.probs for p in iter_predictions(ens, paths, (64, 96))])
    torch.testing.assert_close(probs, serial)
    # an independent path (PIL decode and resize, one forward per flip, cv2 upsampling)
    model = ens.members[0].model.to(memory_format=torch.contiguous_format)
    naive = [rle.decode(naive_predict(model, p, (32, 48), cfg.tta, 0.5, (64, 96)), (64, 96))
             for p in paths]
    agreement = dice_per_image((probs > 0.5).numpy(), np.stack(naive))
    assert agreement.mean() > 0.95


# --------------------------------------------------------------------------- the edge refiner

REFINE = default(RefineConfig, tile=8, context=4, band_margin=2, width=4)


def nonzero_refiner(seed: int = 0) -> EdgeRefiner:
    """A refiner whose last layer is not zero, so it changes what it refines."""
    torch.manual_seed(seed)
    refiner = EdgeRefiner(REFINE.width)
    torch.nn.init.normal_(refiner.out.weight, std=0.5)
    return refiner.eval()


class SharpCar(nn.Module):
    """Logits +8 on the middle rectangle, -8 elsewhere: a confident mask with a sharp edge."""

    def forward(self, x):
        n, _, h, w = x.shape
        out = torch.full((n, 1, h, w), -8.0)
        out[:, :, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 8.0
        return out


def test_refined_probabilities_differ_only_inside_the_edge_band():
    photos = batch_of(asymmetric_images(2, 32, 48))  # the full-size photos
    images = {(16, 24): photos[:, ::2, ::2].contiguous()}  # what the model sees
    plain = predict_probs(ensemble([Member(SharpCar(), (16, 24))]), images, (32, 48))
    refined_ens = ensemble([Member(SharpCar(), (16, 24), "", nonzero_refiner(), REFINE)])
    refined = predict_probs(refined_ens, images, (32, 48), photos)
    band = edge_band(plain, REFINE.band_margin)
    changed = (refined - plain).abs() > 1e-6
    assert band.any() and not band.all()
    assert changed.any() and not (changed & ~band).any()
    with pytest.raises(ValueError, match="photos at the output size"):
        predict_probs(refined_ens, images, (32, 48))  # refiners need the photos


def test_several_members_refiners_are_averaged():
    photos = batch_of(asymmetric_images(2, 32, 48))
    images = {(32, 48): photos}
    r0, r1 = nonzero_refiner(0), nonzero_refiner(1)
    plain = predict_probs(ensemble([Member(SharpCar(), (32, 48))] * 2), images, (32, 48))
    ens = ensemble([Member(SharpCar(), (32, 48), "", r0, REFINE),
                    Member(SharpCar(), (32, 48), "", r1, REFINE)])
    expected = (refine_probs(r0, REFINE, photos, plain) + refine_probs(r1, REFINE, photos, plain)) / 2
    torch.testing.assert_close(predict_probs(ens, images, (32, 48), photos), expected)


def test_predict_refiner_refines_with_the_full_size_photos(tiny_data, tmp_path):
    ck = tiny_checkpoint(tmp_path / "tiny" / "fold0" / "best.pt")
    save_refiner(refiner_beside(ck), nonzero_refiner(), REFINE, [])
    paths = [Layout(tiny_data).test_dir / n for n in sample_names(tiny_data)[:3]]
    cfg = dataclasses.replace(FP32, refiner=True)
    ens = load([ck], cfg)
    assert ens.refined and ens.files == [str(ck), str(refiner_beside(ck))]
    (refined,) = iter_predictions(ens, paths, (64, 96))
    (plain,) = iter_predictions(load([ck]), paths, (64, 96))
    photos = torch.from_numpy(np.stack([read_image(p) for p in paths]))
    expected = refine_probs(ens.members[0].refiner, REFINE, photos, plain.probs)
    torch.testing.assert_close(refined.probs, expected)
    assert not torch.equal(refined.probs, plain.probs)


def test_a_missing_refiner_is_one_line_naming_the_file_and_the_command(ckpt):
    with pytest.raises(PipelineError) as err:
        load([ckpt], dataclasses.replace(FP32, refiner=True))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{refiner_beside(ckpt)}: ")
    assert "python -m pipeline.refine -m tiny --fold 0 --checkpoints" in message


# --------------------------------------------------------------------------- decoding on the device


@pytest.mark.parametrize("workers", [0, 2])
def test_decoding_on_the_device_predicts_what_the_workers_do(tiny_data, tmp_path, workers):
    paths = [Layout(tiny_data).test_dir / n for n in sample_names(tiny_data)[:5]]
    full = tiny_checkpoint(tmp_path / "full.pt", 64, 96)  # no resize: the very same pixels
    small = tiny_checkpoint(tmp_path / "small.pt", 32, 48, seed=1)  # resized on the device
    ens = load([full, small])
    cfg = dataclasses.replace(FP32, num_workers=workers, batch_size=2)
    on_device = dataclasses.replace(cfg, decode="device")
    for one in (Ensemble(ens.members[:1], ens.engine), ens):
        got = list(iter_predictions(rerun(one, on_device), paths, (64, 96)))
        ref = list(iter_predictions(rerun(one, cfg), paths, (64, 96)))
        assert [p.names for p in got] == [p.names for p in ref]
        got_probs, ref_probs = torch.cat([p.probs for p in got]), torch.cat([p.probs for p in ref])
        if len(one.members) == 1:
            assert torch.equal(got_probs, ref_probs)
        else:  # the 32x48 copies differ by rounding at a few pixels
            assert (got_probs - ref_probs).abs().max() < 0.02


def test_decoding_on_the_device_gives_refiners_the_photos(tiny_data, tmp_path):
    ck = tiny_checkpoint(tmp_path / "tiny" / "fold0" / "best.pt")
    save_refiner(refiner_beside(ck), nonzero_refiner(), REFINE, [])
    paths = [Layout(tiny_data).test_dir / n for n in sample_names(tiny_data)[:3]]
    cfg = dataclasses.replace(FP32, refiner=True)
    ens = load([ck], cfg)
    (workers,) = iter_predictions(ens, paths, (64, 96))
    (device_,) = iter_predictions(rerun(ens, dataclasses.replace(cfg, decode="device")), paths,
                                  (64, 96))
    assert (device_.probs - workers.probs).abs().max() < 0.02


def test_decoding_on_the_device_checks_each_file(tiny_data, tmp_path, ckpt):
    bad = tmp_path / "wrong_size.jpg"
    cv2.imwrite(str(bad), np.zeros((10, 20, 3), np.uint8))
    paths = [Layout(tiny_data).test_dir / n for n in sample_names(tiny_data)[:2]] + [bad]
    cfg = dataclasses.replace(FP32, decode="device", batch_size=2)
    preds = iter_predictions(load([ckpt], cfg), paths, (64, 96))
    assert len(next(preds).names) == 2  # the first batch is yielded
    with pytest.raises(PipelineError, match=r"wrong_size.jpg: is 20x10 pixels, expected 96x64"):
        next(preds)
