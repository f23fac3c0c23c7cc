"""Evaluating napari-activeseg: datasets, baselines, simulated annotator, experiment runner.

Everything here runs without a GUI: it is what the ``activeseg benchmark`` command line and the
scripts under ``benchmarks/`` (run by hand) call. Submodules import their heavy dependencies
(scikit-learn, scikit-image, torch) inside the functions that need them, so importing this
package is cheap.

Submodules
----------
dataset
    ``load_dataset`` reads a folder with ``images/`` and ``masks/`` of matching file names;
    ``split_dataset`` gives the deterministic pool/test split; ``mean_dice`` scores predictions.
rf
    ``RandomForestSegmenter``, the ilastik-style random-forest pixel classifier baseline.
annotator
    ``SimulatedAnnotator``: corrects a pre-annotation to the ground truth and counts the effort.
runner
    ``run_benchmark`` (a generator) behind ``activeseg benchmark``: learning curves per strategy
    and seed on the real session, the ``rf`` and ``full`` baselines, resume.
report
    AULC, ``results.csv`` / ``results.json`` writers, the learning-curve plot, the summary table.
"""
