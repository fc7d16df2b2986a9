"""Benchmarks: ``python -m pipeline.benchmark <rle|models|predict|run|table>``.

Speed targets are met here, as ratios measured within one run, never in timed unit tests.
"""
