"""The judge of llmgan: how hard generated responses are to tell from real ones (`llmgan evaluate`).

Public API (what other packages and the CLI use; everything else is internal):
  run_evaluation(prompts, real, generated, ...) -> EvalResult   metrics, per-sample table, plot data
  evaluate_pairs(prompts, real, generated, ...) -> dict          the metrics only
  evaluate_file(path, ...) -> EvalResult, read_pairs(path, ...)  file input
  compare(files, ...) -> DataFrame, compare_results(files, ...)  several systems
  write_outputs(result, dir), write_comparison(results, dir)     reports
  score_for_selection(prompts, real, generated, ...) -> dict     the scores `llmgan select` chooses by
  DETECTORS, register_detector, METRICS, register_metric         the two registries (one entry extends them)

Layout: embed.py (MiniLM + cache), textstats.py (pure measures), detectors.py (detector registry, folds,
bootstrap), metrics.py (metric registry with each metric's human-floor rule), judge.py (read -> check ->
metrics -> result), reading.py (input files), compare.py (--compare), report.py (Markdown, HTML, plots),
command.py (the CLI). This package imports only llmgan.data, llmgan.io and llmgan.errors from llmgan:
the judge never imports what it judges.
"""

from llmgan.evaluation.compare import compare, compare_results, comparison_table, detector_differences
from llmgan.evaluation.detectors import REGISTRY as DETECTORS
from llmgan.evaluation.detectors import Detector, DetectorInput
from llmgan.evaluation.detectors import register as register_detector
from llmgan.evaluation.judge import EvalResult, evaluate_file, evaluate_pairs, run_evaluation
from llmgan.evaluation.metrics import REGISTRY as METRICS
from llmgan.evaluation.metrics import Metric
from llmgan.evaluation.metrics import register as register_metric
from llmgan.evaluation.reading import read_pairs
from llmgan.evaluation.report import write_comparison, write_outputs
from llmgan.evaluation.selection_scores import score_for_selection

__all__ = ["DETECTORS", "METRICS", "Detector", "DetectorInput", "EvalResult", "Metric", "compare", "compare_results",
           "comparison_table", "detector_differences", "evaluate_file", "evaluate_pairs", "read_pairs",
           "register_detector", "register_metric", "run_evaluation", "score_for_selection", "write_comparison",
           "write_outputs"]
