"""A trained model as a user gets it: its `model_format` on disk, `forecast`ing from it, the MLflow `pyfunc`.

The logged model carries this room and what it imports (`config`, `features`, `data`, `model.network`,
`evaluation.intervals`, the foundation) as its code: never `model.training`, `tracking`, `tuning` or `cli`.
"""
