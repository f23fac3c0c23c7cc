"""The class list of a project as a person types it: ``background, nucleus:#ffd400, membrane``.

One parser for the dock, the CLI and scripts; colours fall back to the project's one palette
(:data:`~napari_activeseg.core.project.DEFAULT_COLORS`).
"""

from __future__ import annotations

__all__ = ["parse_class_spec"]


def parse_class_spec(text: str) -> tuple[list[str], list[str] | None]:
    """Class names, and colours when at least one foreground class was given one.

    Parameters
    ----------
    text : str
        Comma-separated ``name`` or ``name:#rrggbb`` items; the first is the background.

    Returns
    -------
    names : list of str
    colors : list of str or None
        None when no colour was given (the project then picks its default palette); else
        one per class, the palette filling the classes without one.

    Raises
    ------
    ValueError
        Fewer than two classes.
    """
    from .project import default_colors

    names, colors = [], []
    for item in (c.strip() for c in str(text).split(",")):
        if not item:
            continue
        name, _, color = item.partition(":")
        names.append(name.strip())
        colors.append(color.strip() or None)
    if len(names) < 2:
        raise ValueError("Give at least two class names, the first being the background "
                         "(e.g. 'background, nucleus' or 'background, nucleus:#ffd400').")
    if not any(colors[1:]):
        return names, None
    palette = default_colors(len(names))
    return names, [palette[0]] + [c or palette[i] for i, c in enumerate(colors[1:], start=1)]
