"""The settings: the YAML config's typed model (`settings`) and its generated reference (`reference`).

Imports only the foundation modules (`errors`, `dates`, `runtime`).
"""
