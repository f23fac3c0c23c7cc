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
    ``run_benchmark`` (a generator) behind ``activeseg benchmark``: the protocol, the plan of
    runs, the loop over them.
config
    ``BenchmarkConfig`` (the settings and their validation), ``parse_seeds``, ``parse_list``.
experiment
    ``Experiment``: the dataset, resolved configs, splits and draws shared by every run; test
    Dice and the effort columns of a round.
loop
    ``StrategyRun``: one query strategy on one seed, round after round, on the real session.
baselines
    The ``rf`` (random forest) and ``full`` (whole pool, the ceiling) baselines.
resume
    Each run's state file, the pinned settings of the output folder, the shared round-0 model.
progress
    ``BenchmarkProgress`` records, the work accounting behind their ETA, the progress bar.
results
    Gathers every run's rows and writes ``results.json``, ``results.csv``, the plot.
report
    AULC, the ``results.csv`` writer, the learning-curve plot, the summary table (on plain
    rows, so a finished ``results.json`` can be re-analysed without training).
"""
