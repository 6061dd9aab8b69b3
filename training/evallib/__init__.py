"""The evaluation harness behind `python -m training.evaluate`, one concern per module:

  analyzer   the daemon's own pipeline on photo files, per-photo results cached
  datasets   readers of the labelled layouts, the shared-datasets suite
  sections   detection, age/gender, verification pairs, open-set identification
  averaging  multi-frame averaging on synthetic clips and real video
  plots      PNG plots (matplotlib imported only when drawing)
  report     the Markdown report

Metric maths (ROC, open-set rates, detection matching) lives in `edge.evaluation`, shared with `edge calibrate`.
"""
