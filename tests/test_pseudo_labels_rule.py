"""The pseudo-label rule on hand-made probability maps: which pixels are uncertain (strictly
between low and high), the fraction relative to the mask, empty masks never kept, bad rules
refused."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.config import PseudoConfig
from pipeline.errors import PipelineError
from pipeline.pseudo_labels.rule import check_rule, keep, uncertainty


def maps() -> torch.Tensor:
    """Three 10 x 10 maps: a car of 20 sure pixels and 1 unsure one; the same car with the
    unsure pixels exactly on low and high (not uncertain) plus 2 unsure background pixels; no
    car at all but some doubt."""
    probs = torch.full((3, 10, 10), 0.01)
    probs[0, 2:6, 2:7] = 0.95  # 20 car pixels
    probs[0, 6, 2] = 0.6  # car (> 0.5) and uncertain
    probs[1, 2:6, 2:7] = 0.95
    probs[1, 0, 0], probs[1, 0, 1] = 0.1, 0.9  # on the bounds: not uncertain (strict)
    probs[1, 9, 0], probs[1, 9, 1] = 0.2, 0.3  # background, uncertain
    probs[2, 5, 5] = 0.4  # uncertain, but no car
    return probs


def test_uncertain_fraction_is_relative_to_the_mask():
    probs = maps()
    fraction, area = uncertainty(probs, probs > 0.5, low=0.1, high=0.9)
    assert area.tolist() == [21, 21, 0]  # [1]: 20 sure + the 0.9 pixel
    assert fraction[0].item() == pytest.approx(1 / 21)
    assert fraction[1].item() == pytest.approx(2 / 21)
    assert math.isinf(fraction[2].item())


@pytest.mark.parametrize("max_uncertain, kept", [
    (0.0, [False, False, False]),
    (0.05, [True, False, False]),  # 1/21 = 0.048 <= 0.05 < 2/21
    (2 / 21, [True, True, False]),  # the bound is inclusive
    (1e9, [True, True, False]),  # an empty mask is never kept
])
def test_keep_follows_the_rule(max_uncertain, kept):
    probs = maps()
    fraction, area = uncertainty(probs, probs > 0.5, low=0.1, high=0.9)
    assert keep(fraction, area, max_uncertain).tolist() == kept


def test_a_wider_band_counts_more_pixels():
    probs = maps()
    fraction, _ = uncertainty(probs, probs > 0.5, low=0.005, high=0.99)  # every pixel
    assert fraction[0].item() == pytest.approx(100 / 21)


@pytest.mark.parametrize("cfg, threshold, word", [
    (PseudoConfig(low=0.9, high=0.1), 0.5, "pseudo.low"),
    (PseudoConfig(low=0.6, high=0.9), 0.5, "predict.threshold"),
    (PseudoConfig(high=1.5), 0.5, "high <= 1"),
    (PseudoConfig(max_uncertain=-0.1), 0.5, "pseudo.max_uncertain"),
])
def test_bad_rules_are_one_line(cfg, threshold, word):
    with pytest.raises(PipelineError, match=word) as err:
        check_rule(cfg, threshold)
    assert "\n" not in str(err.value)
    check_rule(PseudoConfig(), 0.5)  # the defaults are fine
