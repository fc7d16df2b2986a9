"""The full-resolution edge refiner: where it looks (``geometry``), the network (``net``), its
checkpoints (``store``) and applying it to predicted probabilities (``apply``). Training it is
:mod:`pipeline.training.refiner`; ``python -m pipeline.refine`` adds one to a trained run."""
