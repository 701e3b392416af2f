"""The network (`network`: the LSTM and its batched inference) the `training` loop (losses,
early stopping) and its `progress` for people (a bar, plain lines or nothing).

Imports `config`, `features` and the foundation modules; torch lives here and in `runtime`.
"""
