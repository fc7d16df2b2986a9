"""Models: every config builds and trains a step at an odd size; the U-Net's options do what
they say (no skip path, no batch norm, bilinear, kernel size); padding is exact; clear errors
for bad options."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from pipeline.config import FULL_HEIGHT, FULL_WIDTH, ModelConfig, default, load_config
from pipeline.errors import PipelineError
from pipeline.models import PadToMultiple, UNet, build_model, count_parameters
from pipeline.models.unet_parts import Up, crop_pads, pad_to_multiple

REPO = Path(__file__).resolve().parents[1]
MODEL_CONFIGS = sorted((REPO / "configs" / "models").glob("*.yaml"))
ODD = (70, 102)  # neither divisible by 16 nor by 32, like 1918
SMALL_ODD = (38, 54)  # the same, smaller: the full-width configs run forward and backward at it


def tiny_unet(**changes) -> ModelConfig:
    return dataclasses.replace(default(ModelConfig, arch="unet", base_width=4), **changes)


def test_the_issue_configs_exist():
    names = {p.stem for p in MODEL_CONFIGS}
    expected = {
        "unet",
        "unet_noskip",
        "unet_nobn",
        "unet_k5",
        "unet_bilinear",
        "unet_small",
        "smp_unet_resnet34",
        "smp_unet_resnet18",
        "smp_unetpp_resnet34",
        "smp_fpn_resnet34",
        "smp_deeplabv3p_resnet34",
        "smp_linknet_resnet34",
        "smp_unet_effb3",
        "smp_segformer_mitb2",
    }
    assert expected <= names


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=lambda p: p.stem)
def test_config_builds_and_trains_a_step_at_an_odd_size(path):
    raw = yaml.safe_load(path.read_text())
    assert set(raw) - {"extends"} == {"model"} and raw["model"].get("name"), \
        "a model file holds model: + name (and may extend another model file)"
    cfg = load_config([path]).model
    assert cfg.encoder_weights is None  # nothing may be downloaded
    torch.manual_seed(0)
    model = build_model(cfg).train()
    x = torch.randn(2, 3, *SMALL_ODD)  # batch 2: DeepLabV3+'s image pooling needs > 1 value
    y = model(x)
    assert y.shape == (2, cfg.classes, *SMALL_ODD)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    params = list(model.parameters())
    # every parameter is used (DistributedDataParallel fails on one that gets no gradient)
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert params[0].grad is not None and params[0].grad.abs().sum() > 0  # the first conv
    assert params[-1].grad is not None and params[-1].grad.abs().sum() > 0  # the head


def test_unet_yaml_is_the_papers_network():
    model = build_model(load_config([REPO / "configs/models/unet.yaml"]).model)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].in_channels == 3 and convs[0].out_channels == 64
    assert convs[0].kernel_size == (3, 3) and convs[0].padding == (1, 1)
    assert model.downs[-1].maxpool_conv[1].double_conv[-3].out_channels == 1024  # bottleneck
    assert isinstance(model.ups[0].up, nn.ConvTranspose2d)
    assert model.ups[0].conv.double_conv[0].in_channels == 1024  # 512 upsampled + 512 skip
    assert model.outc.conv.kernel_size == (1, 1)
    assert len(model.downs) == 4 and len(model.ups) == 4
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 4
    assert count_parameters(model) == _paper_unet_parameters() == 31_037_633


def _paper_unet_parameters(c_in: int = 3, width: int = 64, depth: int = 4, classes: int = 1):
    """Counted by hand: bias-free 3x3 convs + batch norm (weight, bias), 2x2 transposed convs
    and the 1x1 head with biases."""

    def double(a, b):
        return a * b * 9 + 2 * b + b * b * 9 + 2 * b

    total = double(c_in, width)
    for i in range(depth):
        c = width * 2**i
        total += double(c, 2 * c)  # down
        total += 2 * c * c * 4 + c + double(2 * c, c)  # up: transposed conv, then conv on concat
    return total + width * classes + classes


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (17, 33), (64, 96), ODD, (127, 129)])
def test_unet_output_has_the_input_size(size):
    model = build_model(tiny_unet()).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 1, *size)


@pytest.mark.parametrize("size", [(3, 5), (33, 47), (96, 128)])
def test_smp_output_has_the_input_size(size):
    model = build_model(default(ModelConfig, arch="Linknet", encoder="resnet18")).eval()
    assert isinstance(model, PadToMultiple) and model.multiple == 32
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 1, *size)


def test_deeplab_pads_to_its_output_stride_too():
    model = build_model(default(ModelConfig, arch="DeepLabV3Plus", encoder="resnet18", pad_multiple=8))
    assert model.multiple == 16  # lcm(8, output stride 16): SMP's shape check always passes
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 40, 50)).shape == (1, 1, 40, 50)


def test_multiclass_logits():
    for cfg in (tiny_unet(classes=3), default(ModelConfig, arch="FPN", encoder="resnet18", classes=3)):
        model = build_model(cfg).eval()
        with torch.no_grad():
            assert model(torch.randn(2, 3, *ODD)).shape == (2, 3, *ODD)


def test_one_input_channel():
    model = build_model(tiny_unet(in_channels=1)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 20, 30)).shape == (1, 1, 20, 30)


# ------------------------------------------------------------------------ padding


def test_pad_to_multiple_mirrors_and_crop_restores():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)
    padded, pads = pad_to_multiple(x, 8)
    assert padded.shape == (2, 3, 8, 8)
    assert pads == (0, 1, 1, 2)  # (left, right, top, bottom); the odd pixel goes right/bottom
    reference = np.pad(x.numpy(), ((0, 0), (0, 0), (1, 2), (0, 1)), mode="reflect")
    np.testing.assert_array_equal(padded.numpy(), reference)
    assert torch.equal(crop_pads(padded, pads), x)
    same, none = pad_to_multiple(x[..., :4, :4], 4)
    assert none == (0, 0, 0, 0) and same.shape == (2, 3, 4, 4)


def test_pad_too_small_to_mirror_replicates_the_edge():
    x = torch.randn(1, 1, 2, 3)
    padded, pads = pad_to_multiple(x, 16)
    assert padded.shape == (1, 1, 16, 16)
    assert torch.equal(padded[..., 0, 0], x[..., 0, 0])  # replicated corner
    assert torch.equal(crop_pads(padded, pads), x)


def test_pad_keeps_channels_last():
    x = torch.randn(2, 3, 30, 50).contiguous(memory_format=torch.channels_last)
    padded, _ = pad_to_multiple(x, 32)
    assert padded.is_contiguous(memory_format=torch.channels_last)


class _NeedsMultipleOf32(nn.Module):
    def forward(self, x):
        assert x.shape[-2] % 32 == 0 and x.shape[-1] % 32 == 0, x.shape
        return x * 2


class _PredictsAtQuarterSize(nn.Module):
    def forward(self, x):
        return nn.functional.avg_pool2d(x, 4)


def test_pad_to_multiple_wrapper_is_exact_on_the_original_pixels():
    x = torch.randn(2, 3, 45, 70)
    y = PadToMultiple(_NeedsMultipleOf32(), 32)(x)
    assert torch.equal(y, x * 2)
    assert PadToMultiple(_PredictsAtQuarterSize(), 32)(x).shape == x.shape


# ------------------------------------------------------------------------ ablations


def _with_bottleneck_of(model: UNet, source: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """model(x), with the bottleneck replaced by the one ``source`` produces."""
    with torch.no_grad():
        kept = model.forward_features(source)["bottleneck"]
        hook = model.downs[-1].register_forward_hook(lambda _m, _i, _o: kept)
        try:
            return model(x)
        finally:
            hook.remove()


@pytest.mark.parametrize("upsample", ["transpose", "bilinear"])
def test_without_skips_the_output_depends_on_the_bottleneck_alone(upsample):
    torch.manual_seed(0)
    a, b = torch.randn(2, 1, 3, 48, 64)
    for skip in (False, True):
        model = build_model(tiny_unet(skip=skip, upsample=upsample)).eval()
        with torch.no_grad():
            out_a = model(a)
        swapped = _with_bottleneck_of(model, a, b)  # b's encoder, a's bottleneck
        if skip:
            # the check can fail: with skips, b's fine detail reaches the output
            assert (swapped - out_a).abs().max() > 1e-3
        else:
            assert torch.equal(swapped, out_a)


def test_noskip_decoder_convs_have_no_concatenated_channels():
    skip, noskip = build_model(tiny_unet()), build_model(tiny_unet(skip=False))
    for up_s, up_n in zip(skip.ups, noskip.ups):
        first_s, first_n = up_s.conv.double_conv[0], up_n.conv.double_conv[0]
        assert first_s.in_channels == 2 * first_n.in_channels
        assert up_n.skip_channels == 0
    with pytest.raises(ValueError, match="without a skip"):
        noskip.ups[0](torch.randn(1, 64, 3, 4), torch.randn(1, 32, 6, 8))


def test_up_aligns_a_skip_of_odd_size():
    up = Up(16, 8, 8)
    assert up(torch.randn(1, 16, 5, 7), torch.randn(1, 8, 11, 15)).shape == (1, 8, 11, 15)


def test_batch_norm_off_removes_batch_norm_and_adds_biases():
    off = build_model(tiny_unet(batch_norm=False))
    on = build_model(tiny_unet(batch_norm=True))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in off.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in on.modules()) == 2 * (1 + 4 + 4)
    convs_off = [m for m in off.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    convs_on = [m for m in on.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert all(c.bias is not None for c in convs_off)
    assert all(c.bias is None for c in convs_on)


def test_bilinear_upsampling_has_no_transposed_convs():
    model = build_model(tiny_unet(upsample="bilinear"))
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in model.modules())
    assert sum(isinstance(m, nn.Upsample) for m in model.modules()) == 4


def test_kernel_size_ablation_keeps_the_size():
    model = build_model(tiny_unet(kernel_size=5)).eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs and all(c.kernel_size == (5, 5) and c.padding == (2, 2) for c in convs)
    with torch.no_grad():
        assert model(torch.randn(1, 3, *ODD)).shape == (1, 1, *ODD)


def test_depth_and_width_options():
    model = build_model(tiny_unet(depth=2, base_width=6))
    assert (
        len(model.downs) == 2 and model.downs[-1].maxpool_conv[1].double_conv[0].out_channels == 24
    )


# ------------------------------------------------------------------------ feature maps


def test_feature_maps_have_the_expected_shapes():
    model = build_model(tiny_unet(base_width=8)).eval()
    x = torch.randn(2, 3, *ODD)  # padded to 80 x 112 inside
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
    assert feats["first_double_conv"].shape == (2, 8, 80, 112)
    for i in range(1, 5):
        assert feats[f"down{i}"].shape == (2, 8 * 2**i, 80 // 2**i, 112 // 2**i)
        level = 4 - i  # up1 is the coarsest decoder output
        assert feats[f"up{i}"].shape == (2, 8 * 2**level, 80 // 2**level, 112 // 2**level)
    assert feats["bottleneck"].shape == (2, 128, 5, 7)
    assert feats["first_up"] is feats["up1"] and feats["first_up"].shape == (2, 64, 10, 14)
    assert torch.equal(feats["logits"], logits)
    assert not model._forward_hooks and not model.inc._forward_hooks  # hooks removed


# ------------------------------------------------------------------------ full size


def test_full_size_unet():
    model = build_model(tiny_unet(base_width=2)).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, FULL_HEIGHT, FULL_WIDTH))
    assert y.shape == (1, 1, FULL_HEIGHT, FULL_WIDTH)


@pytest.mark.slow
def test_full_size_smp_unet_resnet18():
    model = build_model(default(ModelConfig, arch="Unet", encoder="resnet18")).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, FULL_HEIGHT, FULL_WIDTH))
    assert y.shape == (1, 1, FULL_HEIGHT, FULL_WIDTH)
    assert torch.isfinite(y).all()


# ------------------------------------------------------------------------ errors


def _bn_momenta(model: nn.Module) -> set[float]:
    return {m.momentum for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def test_bn_momentum_sets_every_batch_norm():
    effb3 = default(ModelConfig, arch="Unet", encoder="efficientnet-b3")
    assert min(_bn_momenta(build_model(effb3))) == pytest.approx(0.01)  # TF 0.99 decay, shipped
    assert _bn_momenta(build_model(dataclasses.replace(effb3, bn_momentum=0.1))) == {0.1}
    small = default(ModelConfig, arch="unet", base_width=4, depth=2, bn_momentum=0.3)
    assert _bn_momenta(build_model(small)) == {0.3}
    assert _bn_momenta(build_model(dataclasses.replace(small, bn_momentum=None))) == {0.1}
    with pytest.raises(PipelineError, match="bn_momentum must be in"):
        build_model(dataclasses.replace(small, bn_momentum=1.5))


def test_unknown_arch_lists_the_valid_ones():
    with pytest.raises(PipelineError) as err:
        build_model(default(ModelConfig, arch="Unett"))
    message = str(err.value)
    assert "Unett" in message and "unet (hand-written)" in message
    assert "UnetPlusPlus" in message and "Segformer" in message and "did you mean Unet" in message
    assert "\n" not in message


def test_unknown_encoder_is_one_short_line():
    with pytest.raises(PipelineError) as err:
        build_model(default(ModelConfig, arch="Unet", encoder="resnet35"))
    message = str(err.value)
    assert "resnet35" in message and "resnet34" in message  # the close names
    assert "\n" not in message and len(message) < 400


@pytest.mark.parametrize(
    "change, word",
    [
        ({"kernel_size": 4}, "kernel_size"),
        ({"depth": 0}, "depth"),
        ({"upsample": "nearest"}, "upsample"),
        ({"classes": 0}, "classes"),
    ],
)
def test_bad_unet_options_are_rejected(change, word):
    with pytest.raises(PipelineError, match=word):
        build_model(tiny_unet(**change))


# --------------------------------------------------------------------------- pretrained encoders


def _encoder_file(tmp_path, encoder: str = "resnet18", name: str = "enc.pth") -> Path:
    """An encoder state_dict saved the way the README says (here from a random encoder)."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(123)
    path = tmp_path / name
    torch.save(smp.Unet(encoder, encoder_weights=None).encoder.state_dict(), path)
    return path


def test_a_local_encoder_file_loads_without_network(tmp_path, no_network):
    path = _encoder_file(tmp_path)
    torch.manual_seed(0)  # another random init: only the file can make the weights equal
    model = build_model(default(ModelConfig, arch="Unet", encoder="resnet18", encoder_weights=str(path)))
    saved = torch.load(path, weights_only=True)
    loaded = model.model.encoder.state_dict()
    assert set(loaded) == set(saved)
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert no_network == []


def test_named_weights_still_go_to_smp(no_network):
    # "imagenet" is SMP's to download: offline, that is one line, and the guard saw the attempt
    with pytest.raises(PipelineError) as err:
        build_model(default(ModelConfig, arch="Unet", encoder="resnet18", encoder_weights="imagenet"))
    assert "encoder_weights=imagenet" in str(err.value) and "\n" not in str(err.value)
    assert no_network, "SMP did not try to download imagenet weights"
    no_network.clear()


@pytest.mark.parametrize("case", ["missing", "other encoder", "not a state_dict", "junk"])
def test_a_wrong_encoder_file_is_one_line_naming_it(tmp_path, no_network, case):
    path = tmp_path / "enc.pth"
    if case == "other encoder":
        path = _encoder_file(tmp_path, "resnet34")  # resnet18 has fewer blocks
    elif case == "not a state_dict":
        torch.save({"epoch": 3}, path)
    elif case == "junk":
        path.write_bytes(b"not a torch file")
    cfg = default(ModelConfig, arch="Unet", encoder="resnet18", encoder_weights=str(path))
    with pytest.raises(PipelineError) as err:
        build_model(cfg)
    message = str(err.value)
    assert f"model.encoder_weights file {path}" in message
    assert "\n" not in message and len(message) < 400
    if case == "other encoder":
        assert "unexpected key(s) (e.g. layer" in message


def test_encoder_weights_names_and_paths_are_told_apart():
    from pipeline.models.factory import is_weights_file

    assert not any(map(is_weights_file, [None, "", "imagenet", "ssl", "imagenet+background"]))
    assert all(map(is_weights_file, ["r34.pth", "w/r34", "/abs/enc.pt", "e.safetensors"]))
