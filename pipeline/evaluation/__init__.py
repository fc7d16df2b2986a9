"""Scoring predicted masks against the truth at full resolution (``score``), the two evaluation
modes with their fold-level resume (``oof``), and the report files (``report``)."""
