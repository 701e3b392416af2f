"""Hyper-parameter `sweep`s with Optuna over the training road.

Imports `training` and the rooms below it; trials are tracked by the flows and the CLI.
"""
