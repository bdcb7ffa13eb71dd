"""Sampler names as the study (and the A1111 web UI) write them, mapped to diffusers schedulers."""

from __future__ import annotations

from typing import Any

# name -> (diffusers scheduler class name, extra config)
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "PLMS": ("PNDMScheduler", {"skip_prk_steps": True}),
    "DDIM": ("DDIMScheduler", {}),
    "DPM++ 2M Karras": (
        "DPMSolverMultistepScheduler",
        {"use_karras_sigmas": True, "algorithm_type": "dpmsolver++", "solver_order": 2},
    ),
}

SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)


def check_sampler(name: str) -> str:
    """Return `name` if it is a known sampler, else raise ValueError listing the valid names."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {', '.join(repr(n) for n in SAMPLERS)}")
    return name


def make_scheduler(name: str, base_config: dict[str, Any]):
    """A fresh diffusers scheduler for `name`, built from the model's own scheduler config."""
    import diffusers

    check_sampler(name)
    cls_name, extra = SAMPLERS[name]
    cls = getattr(diffusers, cls_name)
    config = {k: v for k, v in dict(base_config).items() if not k.startswith("_")}
    config.update(extra)
    return cls.from_config(config)


def scheduler_description(scheduler) -> dict[str, Any]:
    """Class name and config of a scheduler, for provenance."""
    cfg = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    return {"class": type(scheduler).__name__, "config": _jsonable(cfg)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
