"""Decoding on the device (``predict.decode: device``): JPEG bytes and header sizes read in the
workers, a batched torchvision decode equal to OpenCV's, OpenCV's area resize as two matrix
products, and one-line errors for files that are not JPEGs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from pipeline.data.io import read_image
from pipeline.data.transforms import resize_image
from pipeline.errors import PipelineError
from pipeline.inference.decode import (
    area_weights,
    check_decoder,
    decode_batch,
    read_jpeg,
    resize_batch,
)

CPU = torch.device("cpu")


def write_jpeg(path, height=40, width=60, seed=0):
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (5, 5), 0)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def test_read_jpeg_gives_the_bytes_and_the_header_size(tmp_path):
    path = write_jpeg(tmp_path / "a.jpg", 40, 60)
    data, shape = read_jpeg(path)
    assert shape == (40, 60)
    assert data.dtype == torch.uint8 and bytes(data.numpy()) == path.read_bytes()


def test_batched_decode_equals_opencv_on_the_cpu(tmp_path):
    paths = [write_jpeg(tmp_path / f"{i}.jpg", seed=i) for i in range(3)]
    out = decode_batch([read_jpeg(p)[0] for p in paths], CPU)
    assert out.shape == (3, 40, 60, 3) and out.dtype == torch.uint8
    for p, got in zip(paths, out):
        np.testing.assert_array_equal(got.numpy(), read_image(p))  # RGB, same libjpeg-turbo


def test_real_photo_decodes_and_shrinks_like_the_workers(real_root):
    path = min((real_root / "train").glob("*.jpg"))
    full = decode_batch([read_jpeg(path)[0]], CPU)
    reference = read_image(path)
    np.testing.assert_array_equal(full[0].numpy(), reference)
    for size in [(192, 288), (384, 576), (640, 959)]:
        got = resize_batch(full, *size)[0].numpy().astype(int)
        diff = np.abs(got - resize_image(reference, *size).astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, size  # float rounding only


@pytest.mark.parametrize("n_in,n_out", [(8, 4), (1918, 288), (1280, 192), (7, 3), (5, 5)])
def test_area_weights_are_overlaps_summing_to_one(n_in, n_out):
    w = area_weights(n_in, n_out)
    assert w.shape == (n_out, n_in) and (w >= 0).all()
    torch.testing.assert_close(w.sum(1), torch.ones(n_out, dtype=torch.float64))
    torch.testing.assert_close(w.sum(0), torch.full((n_in,), n_out / n_in, dtype=torch.float64))


def test_area_weights_of_an_integer_scale_are_block_means():
    expected = torch.tensor([[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(area_weights(4, 2), expected)


# shrinking: the same area weights, rounding apart; growing: OpenCV's bilinear is fixed point
@pytest.mark.parametrize("size,off", [((20, 30), 0.02), ((13, 17), 0.02), ((40, 60), 0),
                                      ((80, 90), 0.3)])
def test_resize_batch_matches_opencv(tmp_path, size, off):
    image = read_image(write_jpeg(tmp_path / "a.jpg", 40, 60))
    got = resize_batch(torch.from_numpy(image)[None], *size)[0].numpy().astype(int)
    diff = np.abs(got - resize_image(image, *size).astype(int))
    assert got.shape == (*size, 3) and diff.max() <= 1 and (diff > 0).mean() <= off


def test_not_a_jpeg_missing_or_truncated_is_one_line(tmp_path):
    png = tmp_path / "a.png"
    cv2.imwrite(str(png), np.zeros((4, 4, 3), np.uint8))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(write_jpeg(tmp_path / "c.jpg").read_bytes()[:-200])
    for path, what in [(png, "not a JPEG file"), (tmp_path / "none.jpg", "image not found"),
                       (cut, "truncated")]:
        with pytest.raises(PipelineError, match=what) as err:
            read_jpeg(path)
        assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_a_corrupt_jpeg_in_a_batch_names_the_batch(tmp_path):
    good = read_jpeg(write_jpeg(tmp_path / "a.jpg"))[0]
    bad = torch.cat([good[:2], torch.zeros(50, dtype=torch.uint8)])
    with pytest.raises(PipelineError, match="cannot decode a JPEG of this batch .a.jpg, b.jpg"):
        decode_batch([good, bad], CPU, ["a.jpg", "b.jpg"])


def test_unknown_decoder_is_one_line():
    assert check_decoder("device") == "device"
    with pytest.raises(PipelineError, match="predict.decode: 'gpu' is not one of workers, device"):
        check_decoder("gpu")


# --------------------------------------------------------------------------- the stream race


def test_a_cuda_decode_waits_for_the_current_stream_first(tmp_path, monkeypatch):
    """nvJPEG writes its outputs from a private stream that does not wait for the caller's: the
    batched decode must synchronise the current stream before it (pytorch/vision #9606), or
    kernels still queued there (the previous batch's forward) may read memory it overwrites.
    The CUDA calls are faked, so the order is checked on any machine."""
    from pipeline.inference import decode as decode_mod

    calls = []

    class Stream:
        def synchronize(self):
            calls.append("synchronize")

    def fake_decode(data, mode, device):
        calls.append(f"decode_jpeg on {device}")
        return [torch.zeros(3, 4, 6, dtype=torch.uint8) for _ in data]

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    monkeypatch.setattr(decode_mod, "decode_jpeg", fake_decode)
    jpeg = read_jpeg(write_jpeg(tmp_path / "a.jpg"))[0]
    out = decode_batch([jpeg, jpeg], torch.device("cuda", 0))
    assert calls == ["synchronize", "decode_jpeg on cuda:0"]
    assert out.shape == (2, 4, 6, 3)
    calls.clear()
    decode_batch([jpeg], CPU)  # nothing queued elsewhere on a CPU: no synchronisation
    assert calls == ["decode_jpeg on cpu"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_decoding_on_the_gpu_with_overlap_writes_the_same_rles(tiny_data, tmp_path):
    """The submission's three ways on the same photos of a GPU: decoded on the device with the
    RLE encoding overlapped (the default), on the device without the overlap, and in the
    workers. Before the decode waited for the stream, the first could differ."""
    import dataclasses

    from pipeline.config import Config, ModelConfig, PredictConfig, default
    from pipeline.data.layout import Layout, submission_names
    from pipeline.inference.encode import iter_rles
    from pipeline.inference.engine import iter_predictions, load_ensemble, prepare_engine
    from pipeline.models import build_model
    from pipeline.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg = default(Config, model=default(ModelConfig, base_width=8, depth=2, name="tiny"))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, height=64, width=96))
    ckpt = save_checkpoint(tmp_path / "best.pt", build_model(cfg.model), cfg)
    names = submission_names(tiny_data)
    paths = [Layout(tiny_data).test_dir / n for n in names] * 4  # many batches in flight
    predict = default(PredictConfig, batch_size=4, num_workers=2, precision="fp32",
                      largest_component=True, threshold=0.5)

    def rles(**changes):
        engine = prepare_engine(dataclasses.replace(predict, **changes), "cuda")
        ensemble = load_ensemble([ckpt], engine)
        preds = iter_predictions(ensemble, paths, (64, 96))
        return [r for batch in iter_rles(preds, engine) for r in batch.rles]

    workers = rles(decode="workers", overlap=False)
    assert rles(decode="device", overlap=False) == workers
    assert rles(decode="device", overlap=True) == workers
