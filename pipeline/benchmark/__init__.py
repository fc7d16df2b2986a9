"""Benchmarks: ``python -m pipeline.benchmark <table|rle|models|predict>``.

Speed targets are met here, as ratios measured within one run, never in timed unit tests.
"""
