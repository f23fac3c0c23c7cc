"""napari dock widgets: each owns a core object and delegates to it (no logic lives here only)."""
