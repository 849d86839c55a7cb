"""Downstream evaluation: fine-tune on GLUE and XNLI with the papers' protocol.

- `tasks`: the task registry (files, labels, metric of each task)
- `layouts`: task data from the hub or from the original distributions' TSV files
- `metrics`: GLUE-leaderboard metrics (scikit-learn / scipy)
- `train`: one fine-tuning run on accelerate
- `sweep`: the learning-rate x seed sweep with its results table

Kept import-light (no torch here) so that `tadistill --help` stays fast.
"""
