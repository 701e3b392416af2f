"""The code of a logged model (MLflow's models-from-code): it names the pyfunc wrapper and holds no state.

`store.log_model` gives MLflow this file's path as `python_model`, so a logged model holds no
pickle: MLflow copies the file into the model and runs it when the model loads, and the wrapper's
`load_context` reads the model itself, as data, from its `forecaster` artifact (pipeline.serving.model_format).
MLflow runs it; nothing in the package imports it.
"""

from mlflow.models import set_model

from pipeline.serving.pyfunc import LSTMForecastPyfunc

set_model(LSTMForecastPyfunc())
