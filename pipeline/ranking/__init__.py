"""Leaderboard placing: milestones and rank math (``board``), and its reports (``report``)."""
