"""The benchmark stage: the model comparison table (``table``, a DVC stage) and the
micro-benchmarks, ``python -m pipeline.benchmark <table|rle|models|predict|gpu>``.

Speed targets are met here, as ratios measured within one run, never in timed unit tests.
"""
