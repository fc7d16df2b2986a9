"""Edge-refiner checkpoints (pipeline.refine.store): a round trip rebuilds the same network,
the images it learnt from, and a missing or foreign file is one line that says what to run."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import RefineConfig, default
from pipeline.errors import PipelineError
from pipeline.refine.net import EdgeRefiner
from pipeline.refine.store import load_refiner, refiner_source, save_refiner

SEEN = ["a_01.jpg", "b_01.jpg"]


def test_a_saved_refiner_comes_back_with_its_settings(tmp_path):
    cfg = default(RefineConfig, width=4, tile=8, context=2)
    torch.manual_seed(0)
    model = EdgeRefiner(4)
    torch.nn.init.normal_(model.out.weight)
    path = save_refiner(tmp_path / "m" / "fold0" / "refiner.pt", model, cfg, [{"step": 1}],
                        SEEN, (16, 24))
    assert not list(path.parent.glob("*.tmp*"))  # written atomically
    back, back_cfg, seen = load_refiner(path, "cpu")
    assert seen == frozenset(SEEN)
    assert back_cfg == cfg and not back.training
    x, p = torch.rand(1, 3, 8, 8), torch.rand(1, 8, 8)
    torch.testing.assert_close(back(x, p), model.eval()(x, p))


def test_a_missing_refiner_names_the_command_that_makes_it(tmp_path):
    path = tmp_path / "ck" / "tiny" / "fold2" / "refiner.pt"
    with pytest.raises(PipelineError) as err:
        load_refiner(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert f"python -m pipeline.refine -m tiny --fold 2 --checkpoints {tmp_path / 'ck'}" in message
    assert "predict.refiner=false" in message


def test_a_file_of_another_kind_is_refused(tmp_path):
    model_file = tmp_path / "best.pt"
    torch.save({"kind": "model"}, model_file)
    with pytest.raises(PipelineError, match="not an edge-refiner checkpoint"):
        load_refiner(model_file)
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PipelineError, match="not a readable checkpoint"):
        load_refiner(tmp_path / "broken.pt")


def test_the_source_a_refiner_was_trained_from_is_read_back(tmp_path):
    path = save_refiner(tmp_path / "refiner.pt", EdgeRefiner(4), default(RefineConfig, width=4), [],
                        SEEN, (16, 24), source="0123abcd")
    assert refiner_source(path) == "0123abcd"
    older = save_refiner(tmp_path / "older.pt", EdgeRefiner(4), default(RefineConfig, width=4), [])
    assert refiner_source(older) is None  # written without one: never up to date
    assert refiner_source(tmp_path / "absent.pt") is None
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    assert refiner_source(tmp_path / "broken.pt") is None
    torch.save({"kind": "other", "source": "0123abcd"}, tmp_path / "other.pt")
    assert refiner_source(tmp_path / "other.pt") is None
