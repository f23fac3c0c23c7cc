"""Getting results out of a project: labels, predictions, the model, provenance.

Everything here reads the project and never changes it, so it works on a project opened
read-only -- e.g. from the command line while napari has the project open read-write. Functions
take an open :class:`~.project.Project` or a project folder (opened read-only and closed again).

- :func:`export_labels` (:mod:`.labels`) -- submitted class maps (and partial reviewed masks) as
  TIFF;
- :func:`export_predictions_iter` / :func:`export_predictions` (:mod:`.predictions`) -- the
  model's labels, probabilities and uncertainty maps of every image of the pool;
- :func:`export_model` (:mod:`.model`) -- TorchScript (+ ONNX when the ``onnx`` package is
  installed), the safetensors weights and a ``preprocessing.json`` that says how to feed the
  model (:func:`preprocessing_spec`);
- :func:`export_bioimageio` (:mod:`.bioimageio`) -- the model as a bioimage.io model package
  (rdf.yaml, weights, test tensors, cover, README; the ``[bioimageio]`` extra), which
  :func:`open_package` (:mod:`.bioimageio_run`) reads back;
- :func:`predict_folder_iter` / :func:`predict_folder` (:mod:`.folder`) -- apply a project's
  model, or a bioimage.io package, to a new folder of images;
- :func:`export_provenance` (:mod:`.provenance`) -- query history, rounds and submissions as
  CSV/JSON.
- :func:`measure_project_iter` / :func:`measure_project` (:mod:`.measurements`) -- one row per
  object of the labels and/or the predictions (``objects.csv``) and per image (``images.csv``).

What they share sits in :mod:`.common` (the project opened, the output folder, the model's
polarity decided) and, for the two prediction exports, :mod:`.records` (:class:`ExportProgress`,
:class:`ExportResult`) and :mod:`.predicting` (checks, one image predicted and written).

Long jobs are generators of :class:`ExportProgress` records (the GUI runs them in a thread
worker, the CLI prints a progress line); the plain functions run them to the end. Every file is
written atomically (temporary file, fsync, rename), so an interrupted export leaves whole files.
The TIFFs are what Fiji and napari open as they are (see :mod:`.predicting` for their types).
"""

from __future__ import annotations

from .bioimageio import export_bioimageio
from .bioimageio_run import open_package
from .folder import predict_folder, predict_folder_iter
from .labels import export_labels
from .measurements import MeasureResult, measure_project, measure_project_iter
from .model import CONFIG_NAME as CONFIG_NAME
from .model import ONNX_NAME as ONNX_NAME
from .model import PREPROCESSING_FORMAT as PREPROCESSING_FORMAT
from .model import PREPROCESSING_NAME as PREPROCESSING_NAME
from .model import TORCHSCRIPT_NAME as TORCHSCRIPT_NAME
from .model import WEIGHTS_NAME as WEIGHTS_NAME
from .model import PaddedSoftmax as PaddedSoftmax
from .model import export_model, preprocessing_spec
from .predictions import export_predictions, export_predictions_iter
from .provenance import export_provenance
from .records import ExportProgress, ExportResult

__all__ = [
    "ExportProgress",
    "ExportResult",
    "MeasureResult",
    "export_bioimageio",
    "export_labels",
    "export_model",
    "export_predictions",
    "export_predictions_iter",
    "export_provenance",
    "measure_project",
    "measure_project_iter",
    "open_package",
    "predict_folder",
    "predict_folder_iter",
    "preprocessing_spec",
]
