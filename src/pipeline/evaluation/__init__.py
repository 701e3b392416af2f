"""Judging forecasts: `metrics` and baselines, conformal `intervals`, `plots`, and `monitoring` of a champion.

Imports `config`, `features`, `data`, `model` and the foundation modules; nothing of MLflow or Prefect.
"""
