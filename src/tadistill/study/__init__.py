"""A study: methods x students distilled from one teacher on one corpus, every cell judged
the same way (downstream tasks, agreement with the teacher, latency), resumable, locally or
on a cluster.

- `config`: the study file (dataclasses, `read_study_config`)
- `checks`: every problem of every cell before anything runs (`check_study`)
- `plan`: the cells and the steps of each, as `tadistill` commands (`make_plan`)
- `state`: per-unit state files, the `study.json` manifest, the progress view
- `launch`: running units on this machine or as submitit jobs

The program is `tadistill.recipes.study`.
"""
