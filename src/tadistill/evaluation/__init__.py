"""What a student is judged on: downstream tasks and agreement with its teacher.

- `tasks`: the task registry (files, labels, metric of each task): GLUE and XNLI
- `layouts`: task data from the hub or from the original distributions' TSV files
- `metrics`: GLUE-leaderboard metrics (scikit-learn / scipy)
- `embeddings`: sentence embeddings and their agreement with the teacher's

The programs that fine-tune and sweep are `tadistill.recipes.finetune` and
`tadistill.recipes.sweep`. Kept import-light (no torch here) so that `tadistill --help`
stays fast.
"""
