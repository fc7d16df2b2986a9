"""The evaluate stage: per-image Dice at full resolution (``score``), the two evaluation modes
with their fold-level resume (``oof``), bootstrap intervals and paired differences over cars
(``stats``) and the report files (``report``); its command is ``python -m pipeline.evaluate``."""
