"""The active-learning loop: train -> predict -> score -> suggest -> submit.

:class:`ActiveLearningSession` owns a :class:`~.project.Project`, the current model and the
query strategy. The napari widgets and the CLI drive the loop only through it:

- :meth:`~ActiveLearningSession.train` and :meth:`~ActiveLearningSession.score_pool` are
  generators of small progress records (the GUI runs them in thread workers, the CLI in a
  progress bar); :meth:`~ActiveLearningSession.request_stop` ends either within one step;
- :meth:`~ActiveLearningSession.suggest`, :meth:`~ActiveLearningSession.submit`,
  :meth:`~ActiveLearningSession.skip` and :meth:`~ActiveLearningSession.predict` are quick calls.

Everything that must survive a crash (labels, models, rounds, scores, query history, settings)
goes to the project at once; the session itself holds only caches (prepared images,
predictions, candidates), which are rebuilt on demand.

Threading: one long job (training or scoring) at a time, in any thread; quick calls may run
concurrently from the GUI thread. The model is swapped in one assignment at the end of a
round, so a prediction never sees half-updated weights.

:class:`ContinuousTrainer` (``_continuous``, above the facade) trains in rounds by itself and
publishes a round's model only when it is at least as good on the held-back images.

The package: ``_session`` (the facade) delegates to ``_training`` (rounds and the current
model), ``_scoring`` (pool scores, candidates, suggestions), ``_annotations`` (views,
reviews, drafts, submissions), ``_settings`` (what is saved in the project),
``_autotrain`` (when training runs by itself) and ``_cache`` (prepared images and
predictions); ``_pool`` says which images are in the pool and labelled, ``_records`` holds
the dataclasses handed out.
"""

from ._continuous import ContinuousStatus, ContinuousTrainer, RoundRecord
from ._records import ImageView, RegionView, RoundSummary, ScoreProgress, Suggestion
from ._session import ActiveLearningSession

__all__ = ["ActiveLearningSession", "ContinuousStatus", "ContinuousTrainer", "ImageView",
           "RegionView", "RoundRecord", "RoundSummary", "ScoreProgress", "Suggestion"]
