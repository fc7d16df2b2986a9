"""The full-resolution edge refiner, trained and applied in one package: where it looks
(``geometry``), the network (``net``), its checkpoints (``store``), its training (``fit``: the
train stage's ``refine.train`` and ``python -m pipeline.refine``) and applying it to predicted
probabilities (``apply``: the inference engine's ``predict.refiner``)."""
