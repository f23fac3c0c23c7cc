"""napari dock widgets: each owns a core object and delegates to it (no logic lives here only).

Importing this package loads Qt (through qtpy) but not torch: the core is imported inside the
widget's methods.
"""

from ._main import ActiveSegWidget

__all__ = ["ActiveSegWidget"]
