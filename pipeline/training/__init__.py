"""Pieces of the training stage (``pipeline.train``): schedules, the epoch loops, distributed
helpers and experiment tracking, each small enough to read in one sitting."""
