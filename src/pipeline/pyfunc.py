"""Where models logged before the rooms existed find their MLflow class: `pipeline.pyfunc.LSTMForecastPyfunc`.

Their MLmodel files and models-from-code scripts name this path; the class lives in `pipeline.serving.pyfunc`.
"""

from pipeline.serving.pyfunc import LSTMForecastPyfunc

__all__ = ["LSTMForecastPyfunc"]
