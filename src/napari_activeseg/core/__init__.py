"""Qt-free core of napari-activeseg: data, model, training, inference, uncertainty.

Nothing under this package imports qtpy, napari or magicgui (checked by import-linter).
"""
