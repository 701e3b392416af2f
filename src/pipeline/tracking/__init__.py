"""MLflow: the tracking `store` and run logging, the model `registry`, `promotion` (the gate), `history`,
`reproduce`, a `training_run`'s record and `run_report`, the `server` on PostgreSQL, `forecast_files`, and the
`code_closure` a logged model carries (the serving room's imports).

The only room that imports MLflow (besides the logged model in `serving`); imports every room below it.
"""
