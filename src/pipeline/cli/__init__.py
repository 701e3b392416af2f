"""The `pipeline` command (`main`); `python -m pipeline.cli` runs it too.

The top room, above the flows it runs: imports any room, and Prefect through the flows.
"""
