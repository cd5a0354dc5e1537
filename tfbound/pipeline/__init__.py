"""``tfbound.estimate``: the staged pipeline from a configuration to a report.

``stages`` builds the models, loads the splits and runs the batched passes; ``capacity`` reads the
modules into the typed inputs of the capacity bounds; ``run`` orders the stages and assembles the
report; ``memory`` makes the same inputs from modules and arrays in memory (``tfbound.api``), and
both routes run ``run.estimate_prepared``. Every term is made in ``tfbound.bounds``.
"""

from tfbound.features import ProgressFn
from tfbound.pipeline.run import budget_of, estimate

__all__ = ["ProgressFn", "budget_of", "estimate"]
