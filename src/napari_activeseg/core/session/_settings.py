"""The session's settings kept in the project: the three configurations, the query strategy
and the side of suggested boxes, with the defaults used when none is saved."""

from __future__ import annotations

from typing import Any

from ..config import DEFAULT_STRATEGY, InferenceConfig, ModelConfig, TrainConfig
from ..project import Project
from ..strategies.regions import auto_region_size

# the ModelConfig fields that make a different network: changing one starts a fresh model
ARCHITECTURE_FIELDS = ("in_channels", "n_classes", "depth", "width", "polarity", "norm",
                       "boundary_classes", "distance_head")


def saved_config(project: Project, cls, key: str):
    """The configuration saved under ``key`` (a ``cls`` instance), or None."""
    data = project.get_setting(key)
    return cls.from_dict(data) if data else None


def default_model_config(project: Project) -> ModelConfig:
    """A model for the project's channels and classes, with the polarity rule decided once
    from a sample of its images and kept as the concrete rule ("invert"/"none"), so that
    every image of the project is prepared alike."""
    if not project.images():
        raise ValueError("The project has no image; add images before starting a session.")
    from ..preprocess import decide_project_polarity

    return ModelConfig(in_channels=project.channels, n_classes=project.n_classes,
                       polarity=decide_project_polarity(project),
                       boundary_classes=boundary_classes(project),
                       distance_head=project.instance_formulation == "distance_head")


def boundary_classes(project: Project) -> tuple[int, ...]:
    """The classes that get a boundary output: the object classes, with the "boundary" and
    "distance_head" formulations (:mod:`core.instances`); none with "distance" or no object
    class."""
    return project.object_classes \
        if project.instance_formulation in ("boundary", "distance_head") else ()


def with_object_classes(project: Project, config: ModelConfig) -> ModelConfig:
    """``config`` with the boundary (and distance) outputs the project's class modes and
    formulation ask for."""
    wanted = boundary_classes(project)
    head = project.instance_formulation == "distance_head"
    if config.boundary_classes == wanted and config.distance_head == head:
        return config
    return config.replace(boundary_classes=wanted, distance_head=head)


def for_device(config):
    """A default configuration sized for the device ``"auto"`` resolves to here
    (:func:`~..device.device_plan`): the U-Net width of a :class:`ModelConfig`, the batch of a
    :class:`TrainConfig`, the tile batch of an :class:`InferenceConfig`. On a CPU the plan is
    the configurations' own defaults, so nothing changes."""
    from ..device import device_plan

    plan = device_plan(getattr(config, "device", "auto"))
    if isinstance(config, ModelConfig):
        return config.replace(width=plan.width)
    if isinstance(config, TrainConfig):
        return config.replace(batch_size=plan.batch_size)
    return config.replace(batch_size=plan.tile_batch)


def decided(project: Project, config: ModelConfig) -> ModelConfig:
    """``config`` with a polarity of "pool" replaced by the project's decided rule."""
    if config.polarity != "pool":
        return config
    return config.replace(polarity=default_model_config(project).polarity)


def architecture_changed(old: ModelConfig, new: ModelConfig) -> bool:
    return any(getattr(new, f) != getattr(old, f) for f in ARCHITECTURE_FIELDS)


def strategy_spec(project: Project, name: str | None,
                  options: dict[str, Any] | None) -> dict[str, Any]:
    """``{"name", "options"}`` of the strategy to start with: the given one, else the saved one
    (its saved options only when the name is the saved one's), else the default."""
    saved = project.get_setting("strategy") or {}
    name = name or saved.get("name") or DEFAULT_STRATEGY
    if options is None:
        options = saved.get("options", {}) if name == saved.get("name") else {}
    return {"name": name, "options": dict(options)}


def save_settings(project: Project, model_config: ModelConfig, train_config: TrainConfig,
                  inference_config: InferenceConfig, strategy: dict[str, Any]) -> None:
    project.set_setting("model_config", model_config.to_dict())
    project.set_setting("train_config", train_config.to_dict())
    project.set_setting("inference_config", inference_config.to_dict())
    project.set_setting("strategy", strategy)


def region_size(project: Project) -> int:
    """The project's ``region_size`` setting, else decided from the pool's image shapes
    (:func:`~.strategies.regions.auto_region_size`) and saved unless read-only."""
    size = project.get_setting("region_size")
    if size is None:
        shapes = [r.shape for r in project.images()]
        if not shapes:
            raise ValueError("The project has no image to size the boxes from.")
        size = auto_region_size(shapes)
        if not project.read_only:
            project.set_setting("region_size", int(size))
    return int(size)
