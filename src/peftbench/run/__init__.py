"""Running a plan: the pipeline stages, the trainer, strategies, checkpoints, the run record."""
