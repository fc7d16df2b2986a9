"""The leaderboard stage: milestones and rank math (``board``) and their text, Markdown and JSON
(``render``); its command is ``python -m pipeline.leaderboard``."""
