"""Name -> strategy class. Strategy modules register their classes on import."""

from __future__ import annotations

import difflib
from typing import Any

from .base import QueryStrategy

__all__ = ["available_strategies", "describe_strategies", "get_strategy", "register",
           "strategy_from_config"]

_REGISTRY: dict[str, type[QueryStrategy]] = {}
# the order the GUI lists them in (cheap and classic first); others follow in registration order
_ORDER = ("random", "entropy", "power_entropy", "mixed_entropy", "margin", "least_confidence",
          "bald", "variance", "tta", "ensemble", "coreset", "badge", "alges", "suggestive",
          "stratified", "task_similarity", "objects")


def register(cls: type[QueryStrategy]) -> type[QueryStrategy]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, QueryStrategy)):
        raise TypeError(f"Only QueryStrategy subclasses can be registered, got {cls!r}.")
    name = cls.name
    if not name or not isinstance(name, str):
        raise ValueError(f"{cls.__name__} needs a non-empty class attribute 'name'.")
    # re-importing a module (e.g. importlib.reload) re-registers a same-named class; a
    # different class under the same name is a mistake
    previous = _REGISTRY.get(name)
    if previous is not None and previous.__qualname__ != cls.__qualname__:
        raise ValueError(f"A strategy named {name!r} is already registered "
                         f"({previous.__qualname__}).")
    _REGISTRY[name] = cls
    return cls


def available_strategies() -> list[str]:
    """Registered strategy names: the built-in ones in a fixed order, then any others."""
    known = [n for n in _ORDER if n in _REGISTRY]
    return known + [n for n in _REGISTRY if n not in _ORDER]


def describe_strategies() -> dict[str, str]:
    """``{name: one-paragraph description}`` for the GUI."""
    return {name: _REGISTRY[name].description for name in available_strategies()}


def get_strategy(name: str, **options: Any) -> QueryStrategy:
    """A new strategy instance by registry name.

    Raises
    ------
    ValueError
        Unknown name (the message lists the valid names), unknown option (lists the valid
        options of that strategy), or a bad option value.
    """
    if name not in _REGISTRY:
        msg = (f"Unknown query strategy {name!r}; valid names are: "
               f"{', '.join(available_strategies())}.")
        if isinstance(name, str):
            close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
            if close:
                msg += f" Did you mean {close[0]!r}?"
        raise ValueError(msg)
    cls = _REGISTRY[name]
    valid = cls.option_names()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} for strategy {name!r}; valid options "
                         f"are: {', '.join(valid)}.")
    return cls(**options)


def strategy_from_config(config: Any) -> QueryStrategy:
    """The strategy described by a :class:`core.config.QueryConfig`.

    ``aggregation``, ``topk_fraction``, ``foreground_only`` and ``seed`` are passed as options,
    merged with ``config.options`` (which win).
    """
    opts = {"aggregation": config.aggregation, "topk_fraction": config.topk_fraction,
            "foreground_only": config.foreground_only, "seed": config.seed}
    opts.update(dict(config.options))
    return get_strategy(config.strategy, **opts)
