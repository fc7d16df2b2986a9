"""The train stage: one run of one model on one fold (``trainer``), its epochs (``loop``), data
(``loaders``, ``shm``), time budget (``budget``), weight average (``ema``), resume state
(``state``), records (``record``, ``tracking``) and the phases of a recipe (``recipe``); its
command is ``python -m pipeline.train``."""
