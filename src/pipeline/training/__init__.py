"""The road from a panel to a model, one function per Prefect task (`steps`), and walk-forward `backtest`s.

Imports every room below it; nothing of MLflow or Prefect (the flows wire these steps as tasks).
"""
