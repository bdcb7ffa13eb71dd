"""Error types that the CLI turns into a one-line reason and a non-zero exit code.

The exit codes are listed once, in `EXIT_CODES`; `dermgen --help` and the README show that list.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "success"),
    (1, "unexpected error"),
    (2, "bad input (manifest, arguments, model, LoRA, data)"),
    (3, "output store problem"),
    (4, "output holds a run made from a different plan"),
    (5, "verify found problems"),
    (6, "the run failed (actors could not start, a shard kept failing)"),
    (130, "interrupted"),
)


class DermgenError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""

    exit_code = 1


class ConfigError(DermgenError):
    """Bad manifest, CLI argument or model/LoRA reference; raised before any GPU work."""

    exit_code = 2


class StoreError(DermgenError):
    """Output location missing, unreachable, not writable or inconsistent."""

    exit_code = 3


class PlanMismatchError(DermgenError):
    """An existing run at the output was made from a different plan."""

    exit_code = 4


class VerifyError(DermgenError):
    """`dermgen verify` found problems in a run."""

    exit_code = 5


class RunFailed(DermgenError):
    """A generation run could not finish: actors could not start, or a shard kept failing."""

    exit_code = 6


def missing_dependency(package: str, extra: str | None = None) -> ConfigError:
    """An error for an optional dependency that is not installed, with the install hint."""
    hint = f"pip install 'dermgen[{extra}]'" if extra else f"pip install {package}"
    return ConfigError(f"optional dependency {package!r} is not installed; install it with: {hint}")


def config_error(exc: ValidationError) -> ConfigError:
    """One ConfigError for a pydantic ValidationError: a line per problem naming the option, what was
    expected and the value given, e.g. ``--size: must be a multiple of 8 ... (got 100)``."""
    lines = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if not field:  # a rule across several options names them itself
            lines.append(msg)
            continue
        lines.append(f"--{field.replace('_', '-')}: {msg} (got {err.get('input')!r})")
    return ConfigError("\n".join(lines))


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], values: dict[str, Any]) -> M:
    """`model(**values)` with validation errors raised as one readable ConfigError."""
    try:
        return model(**values)
    except ValidationError as exc:
        raise config_error(exc) from None
