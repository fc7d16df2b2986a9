"""Checkpoints that carry their own config: the round trip gives identical outputs, the model
config and label are read from the file alone, and broken files are one clear line."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from pipeline.config import Config, ModelConfig, default
from pipeline.errors import PipelineError
from pipeline.models import build_model
from pipeline.models.checkpoint import (
    checkpoint_config,
    checkpoint_label,
    load_checkpoint,
    load_model,
    model_config_of,
    save_checkpoint,
    unwrap,
)

ODD = (70, 102)  # neither divisible by 16 nor by 32, like 1918


def tiny_unet(**changes) -> ModelConfig:
    return dataclasses.replace(default(ModelConfig, arch="unet", base_width=4), **changes)


@pytest.mark.parametrize(
    "model_cfg",
    [tiny_unet(), default(ModelConfig, arch="Unet", encoder="resnet18", classes=2)],
    ids=["unet", "smp"],
)
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, model_cfg):
    torch.manual_seed(0)
    cfg = dataclasses.replace(default(Config), model=model_cfg)
    model = build_model(model_cfg).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(2, 3, 32, 48)).mean().backward()  # moves weights and batch-norm stats
    optimizer.step()
    model.eval()
    x = torch.randn(2, 3, *ODD)
    with torch.no_grad():
        expected = model(x)
    path = save_checkpoint(tmp_path / "ckpt" / "model.pt", model, cfg, metrics={"dice": 0.5})
    assert not list(path.parent.glob(".*.tmp"))  # written atomically: no leftovers
    loaded, ckpt = load_model(path)  # rebuilt from the file alone
    assert not loaded.training and type(loaded) is type(model)
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
    assert ckpt["metrics"] == {"dice": 0.5}
    assert ckpt["model_config"]["arch"] == model_cfg.arch
    assert ckpt["config"]["train"]["epochs"] == cfg.train.epochs


def _save(path, model_cfg: ModelConfig, **train) -> tuple:
    cfg = default(Config, model=model_cfg)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))
    return save_checkpoint(path, build_model(model_cfg), cfg), cfg


def test_model_config_and_full_config_come_back_from_the_file(tmp_path):
    model_cfg = tiny_unet(depth=2, name="small", skip=False)
    path, cfg = _save(tmp_path / "a.pt", model_cfg, height=48, width=64)
    ckpt = load_checkpoint(path)
    assert model_config_of(ckpt, path) == model_cfg
    assert checkpoint_config(ckpt) == cfg and checkpoint_config(ckpt).train.height == 48
    assert ckpt["format"] == 1 and ckpt["epoch"] == -1 and "train_state" not in ckpt


def test_model_config_of_names_the_file_on_a_bad_key(tmp_path):
    path, _ = _save(tmp_path / "a.pt", tiny_unet(depth=2))
    ckpt = load_checkpoint(path)
    ckpt["model_config"]["widht"] = 3
    with pytest.raises(PipelineError) as err:
        model_config_of(ckpt, path)
    assert str(err.value).startswith(f"{path} model_config: unknown config key 'widht'")
    assert "\n" not in str(err.value)


def test_checkpoint_label_is_the_name_or_arch_and_encoder(tmp_path):
    named, _ = _save(tmp_path / "named.pt", tiny_unet(depth=2, name="tiny-a"))
    plain, _ = _save(tmp_path / "plain.pt", tiny_unet(depth=2, name=""))
    smp, _ = _save(tmp_path / "smp.pt", default(ModelConfig, arch="Linknet", encoder="resnet18",
                                                 name=""))
    assert checkpoint_label(named) == "tiny-a"
    assert checkpoint_label(plain) == "unet"
    assert checkpoint_label(smp) == "Linknet-resnet18"
    with pytest.raises(PipelineError, match="checkpoint not found"):
        checkpoint_label(tmp_path / "missing.pt")


def test_broken_files_are_one_line(tmp_path):
    with pytest.raises(PipelineError, match="nope.pt: checkpoint not found; train first"):
        load_checkpoint(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(PipelineError, match="junk.pt: not a readable checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": 1}, other)
    with pytest.raises(PipelineError, match="other.pt: not a carvana-pipeline checkpoint"):
        load_model(other)


class _Wrapper(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module


def test_saved_weights_are_unwrapped(tmp_path):
    model = build_model(tiny_unet(depth=2))
    assert unwrap(_Wrapper(_Wrapper(model))) is model
    path = save_checkpoint(tmp_path / "w.pt", _Wrapper(model), default(Config, model=tiny_unet(depth=2)),
                           epoch=3, train_state={"step": 7})
    ckpt = load_checkpoint(path)
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    assert ckpt["epoch"] == 3 and ckpt["train_state"] == {"step": 7}
    loaded, _ = load_model(path)
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


def test_compiled_models_are_unwrapped_and_saved_without_prefixes(tmp_path, fast_compile):
    model = build_model(tiny_unet(depth=2))
    wrapped = torch.compile(model, backend="aot_eager")
    assert any(k.startswith("_orig_mod.") for k in wrapped.state_dict())
    assert unwrap(wrapped) is model and unwrap(_Wrapper(wrapped)) is model
    cfg = default(Config, model=tiny_unet(depth=2))
    for compiled in (wrapped, _Wrapper(wrapped)):
        ckpt = load_checkpoint(save_checkpoint(tmp_path / "c.pt", compiled, cfg))
        assert list(ckpt["state_dict"]) == list(model.state_dict())
    loaded, _ = load_model(tmp_path / "c.pt")
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("weights", ["imagenet", "deleted file"])
def test_loading_a_checkpoint_never_downloads_or_reads_encoder_weights(
        tmp_path, no_network, weights):
    # The checkpoint's state_dict overwrites pretrained weights anyway: rebuilding the model
    # must work offline (imagenet) and after the weights file is gone.
    import segmentation_models_pytorch as smp

    built = default(ModelConfig, arch="Unet", encoder="resnet18")
    if weights == "deleted file":
        file = tmp_path / "enc.pth"
        torch.save(smp.Unet("resnet18", encoder_weights=None).encoder.state_dict(), file)
        built = dataclasses.replace(built, encoder_weights=str(file))
        model = build_model(built)
        file.unlink()
    else:
        model = build_model(built)  # as if trained from imagenet where there was internet
        built = dataclasses.replace(built, encoder_weights="imagenet")
    path = save_checkpoint(tmp_path / "ckpt.pt", model, default(Config, model=built))
    loaded, ckpt = load_model(path)
    assert model_config_of(ckpt, path).encoder_weights == built.encoder_weights  # kept as saved
    for (name, a), b in zip(loaded.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    assert no_network == []


def test_a_truncated_or_bit_flipped_checkpoint_is_one_line(tmp_path, tiny_trained):
    whole = tiny_trained.best.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(PipelineError, match="cut.pt: not a readable checkpoint") as exc:
        load_checkpoint(cut)
    assert "\n" not in str(exc.value)
    flipped = tmp_path / "flipped.pt"
    flipped.write_bytes(whole[:40] + bytes(b ^ 0xFF for b in whole[40:80]) + whole[80:])
    with pytest.raises(PipelineError, match="flipped.pt: not a readable checkpoint"):
        load_checkpoint(flipped)
