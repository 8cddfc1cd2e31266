"""Session health: detectors for the failures that make a conversation collapse while
every single request looks fine, a per-session report, and Prometheus metrics.

Everything here is pure (values in, values out, no store): :func:`analyse` takes a
session's events and returns a :class:`HealthReport`; :class:`HealthMetrics` renders the
Prometheus text. Detector names: ``re_ask``, ``contradiction``, ``context_pressure``,
``summary_loss``, ``inconsistency``, ``length_inflation``, ``premature_commitment``.
"""

from chatstate.health.detectors import DETECTORS, WEIGHTS, DetectorName, Flag
from chatstate.health.report import HealthMetrics, HealthReport, TurnSignal, analyse

__all__ = [
    "DETECTORS",
    "WEIGHTS",
    "DetectorName",
    "Flag",
    "HealthMetrics",
    "HealthReport",
    "TurnSignal",
    "analyse",
]
