"""Quality evaluation: same-label retrieval metrics and the HTML report (``lookalike evaluate``)."""
from lookalike.evaluate.goes_with import run_benchmark as evaluate_goes_with
from lookalike.evaluate.report import EvaluationReport, evaluate, parse_ks

__all__ = ["EvaluationReport", "evaluate", "evaluate_goes_with", "parse_ks"]
