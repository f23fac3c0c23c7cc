"""One function per image, here or on a Dask cluster: :func:`map_images`.

With no scheduler, ``fn(item, **shared)`` runs here, item after item (today's path). Given a
scheduler address (``tcp://host:8786``) or a ``distributed.Client``, each item is one task:
what every task shares (the model, the settings) is scattered to the workers once, the items
are submitted a window at a time (so a large pool is never all in memory at once) with
``retries``, and the results are yielded as they arrive. A result is kept once per key (the
image id): a task that was run again after a worker died cannot give a second one. Closing
the generator cancels what is still pending. Models travel as :class:`PortableModel` (their
configuration and numpy weights, rebuilt on the worker), never as a pickled ``nn.Module``.

``distributed`` is optional (``pip install napari-activeseg[cluster]``).
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Generator, Hashable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["CONNECT_TIMEOUT_S", "INSTALL_HINT", "PortableModel", "check_scheduler", "map_images"]

INSTALL_HINT = "pip install napari-activeseg[cluster]"
CONNECT_TIMEOUT_S = 10.0
_ADDRESS = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")


class PortableModel:
    """A U-Net that is pickled as its configuration and numpy weights and rebuilt on arrival
    (once per worker thread, so threads never share a module's gradients). Here,
    :meth:`get` returns the model it wraps, untouched."""

    def __init__(self, model: nn.Module) -> None:
        self._model: nn.Module | None = model
        self._state: dict[str, Any] | None = None
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        if self._state is not None:
            return self._state
        model = self._model
        assert model is not None
        return {"config": model.config.to_dict(),
                "weights": {k: v.detach().cpu().numpy()
                            for k, v in model.state_dict().items()}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._model, self._state, self._local = None, state, threading.local()

    def get(self) -> nn.Module:
        """The model (rebuilt in eval mode from the weights after a trip)."""
        if self._model is not None:
            return self._model
        model = getattr(self._local, "model", None)
        if model is None:
            from .config import ModelConfig
            from .model import UNet

            assert self._state is not None
            model = UNet(ModelConfig.from_dict(self._state["config"]))
            model.load_state_dict({k: torch.from_numpy(np.array(v))
                                   for k, v in self._state["weights"].items()})
            model.eval()
            self._local.model = model
        return model


def check_scheduler(scheduler: Any) -> Any:
    """``scheduler`` if it is None, a ``distributed.Client`` or an address like
    ``tcp://host:8786``; a ValueError that says what to pass otherwise."""
    if scheduler is None or not isinstance(scheduler, str):
        if scheduler is not None and not hasattr(scheduler, "submit"):
            raise ValueError(f"scheduler must be an address such as 'tcp://host:8786' or a "
                             f"distributed.Client, got {scheduler!r}.")
        return scheduler
    address = scheduler.strip()
    if not _ADDRESS.match(address):
        raise ValueError(f"{scheduler!r} is not a Dask scheduler address; give it as "
                         "tcp://host:8786 (what `dask scheduler` prints).")
    return address


def _connect(scheduler: Any, timeout_s: float) -> tuple[Any, bool]:
    """The client for ``scheduler`` and whether it is ours to close."""
    try:
        from distributed import Client
    except ImportError as err:
        raise ImportError("Running on a Dask cluster needs the distributed package: "
                          f"{INSTALL_HINT}") from err
    scheduler = check_scheduler(scheduler)
    if not isinstance(scheduler, str):
        return scheduler, False
    try:
        return Client(scheduler, timeout=timeout_s, set_as_default=False), True
    except (OSError, TimeoutError) as err:
        raise ValueError(f"Could not reach the Dask scheduler at {scheduler} within "
                         f"{timeout_s:g} s ({err}); check the address and that the scheduler "
                         "runs (`dask scheduler`).") from err


def map_images(
    fn: Callable[..., Any],
    items: Iterable[Any],
    *,
    scheduler: Any = None,
    key: Callable[[Any], Hashable] = lambda item: item,
    shared: Mapping[str, Any] | None = None,
    retries: int = 2,
    window: int | None = None,
    timeout_s: float = CONNECT_TIMEOUT_S,
) -> Generator[tuple[Any, Any], None, None]:
    """``(item, fn(item, **shared))`` for every item whose ``key`` was not seen before.

    Parameters
    ----------
    fn : callable
        A module-level function (the workers import it by name).
    items : iterable
        Read lazily: at most ``window`` of them are in flight.
    scheduler : None, address or distributed.Client
        None: run here, in order. Otherwise each item is a task on that cluster, the results
        in the order they arrive.
    key : callable
        An item's identity (the image id): one result per key.
    shared : mapping
        Keyword arguments of every call, scattered to the workers once.
    retries : int
        Times a task that raised is run again (a task whose worker died is rescheduled by
        the scheduler on its own).
    window : int, optional
        Tasks in flight (default: twice the cluster's threads, at least 4).
    timeout_s : float
        For connecting to the scheduler.

    Raises
    ------
    ImportError
        ``distributed`` is not installed (the message says what to install).
    ValueError
        A malformed address, or a scheduler not reachable within ``timeout_s``.
    """
    shared = dict(shared or {})
    seen: set[Hashable] = set()
    if scheduler is None:
        for item in items:
            k = key(item)
            if k not in seen:
                seen.add(k)
                yield item, fn(item, **shared)
        return
    client, own = _connect(scheduler, timeout_s)  # a clear error without distributed
    from distributed import as_completed

    pending: dict[Any, Any] = {}  # future -> item
    try:
        remote = {name: client.scatter(value, broadcast=True, hash=False)
                  for name, value in shared.items()}
        if window is None:
            window = max(4, 2 * sum(client.nthreads().values()))
        source = iter(items)
        run = uuid.uuid4().hex[:8]
        name = getattr(fn, "__name__", "task")
        done = as_completed()

        def submit_next() -> bool:
            for item in source:
                k = key(item)
                if k in seen:
                    continue
                seen.add(k)
                future = client.submit(fn, item, **remote, key=f"{name}-{run}-{k}",
                                       pure=False, retries=retries)
                pending[future] = item
                done.add(future)
                return True
            return False

        while len(pending) < window and submit_next():
            pass
        for future in done:
            item = pending.pop(future, None)
            if item is None:  # the same future reported twice: its result is already out
                continue
            result = future.result()
            future.release()
            submit_next()
            yield item, result
    finally:
        if pending:
            client.cancel(list(pending))
        if own:
            client.close()
