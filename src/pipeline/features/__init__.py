"""From one series' rows to model inputs: `transforms`, train-only `scalers`, chronological splits and `windows`.

Imports `config` and the foundation modules; no file reading, no torch, no MLflow.
"""
