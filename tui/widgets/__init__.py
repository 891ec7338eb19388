"""The app's widgets, one small module each; none of them knows where events come from."""

from __future__ import annotations

from .answers import TopAnswers
from .curve import CurvePlot
from .decisions import DecisionLog
from .gauge import PCorrectGauge
from .legend import Legend
from .status import StatusLine
from .trace import TINTS, Tint, TraceView, tint_for

__all__ = ["TINTS", "CurvePlot", "DecisionLog", "Legend", "PCorrectGauge", "StatusLine", "Tint", "TopAnswers",
           "TraceView", "tint_for"]
