"""Error types that the CLI turns into a one-line reason and a non-zero exit code."""


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


def missing_dependency(package: str, extra: str | None = None) -> ConfigError:
    """An error for an optional dependency that is not installed, with the install hint."""
    hint = f"pip install 'dermgen[{extra}]'" if extra else f"pip install {package}"
    return ConfigError(f"optional dependency {package!r} is not installed; install it with: {hint}")
