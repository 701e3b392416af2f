"""LSTM forecasting pipeline: the rooms, from the bottom up; a room imports only the rooms below it.

Foundation modules (`errors`, `dates`, `runtime`) import no other module of the package. Then:
`config` < `features` < `data` < `model` < `evaluation` < `serving` < `training` < `tuning` <
`tracking` < the Prefect flows (`flows/`, outside this package) < `cli`, which runs the flows. Only `tracking` imports
MLflow (and `serving`, which is the logged MLflow model); only `flows` and `cli` import Prefect.
`tests/unit/test_layering.py` holds the tree to these rules.
"""
