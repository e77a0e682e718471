"""Evaluation: the MeLFusion and Art2Mus objective metrics with their conventions, and one report.

- `metrics`: pure maths on arrays (Fréchet distance, FAD∞, KL, IS, CLAP score, IMSM, IBSc, spectral KL)
  and update/compute metric objects that reduce across processes.
- `embedders`: VGGish, PANNs Cnn14, CLAP, CLIP, ImageBind (real checkpoints or tiny random versions).
- `evaluate(...)` runs folders of generated audio against references; `write_report(...)` writes
  report.json, report.md and PNG plots. The CLI is `melfusion evaluate`.
"""

from melfusion.evaluation.report import markdown_table, write_report
from melfusion.evaluation.runner import (
    METRICS,
    EvaluationOptions,
    EvaluationReport,
    RunResult,
    evaluate,
)

__all__ = [
    "METRICS",
    "EvaluationOptions",
    "EvaluationReport",
    "RunResult",
    "evaluate",
    "markdown_table",
    "write_report",
]
