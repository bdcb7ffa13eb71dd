"""Command-line plumbing shared by every `dermgen` subcommand (and nothing else imports the CLI).

- :func:`add_model_options` turns the fields of a pydantic config into argparse options (flag from the field
  name, type, help from ``Field(description=...)``, choices from ``Literal``, ``--x`` / ``--no-x`` for bools,
  repeatable options for lists) and :func:`model_from_args` builds the config back from the parsed
  arguments. Options the user did not give are left out, so every default lives once, in the model.
- :func:`run_command` is the one main/error wrapper: logging, then the command, with `DermgenError` ->
  its exit code (`dermgen.errors.EXIT_CODES`), Ctrl-C -> 130, anything else -> 1 with one line
  (the traceback with ``-v``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from dermgen.errors import EXIT_CODES, DermgenError, validated

log = logging.getLogger("dermgen")

EXIT_CODES_TEXT = "Exit codes (every subcommand and jobs/*.py):\n" + "\n".join(
    f"  {code:>3d} {what}" for code, what in EXIT_CODES
)


def setup_logging(verbose: bool = False) -> None:
    """INFO (DEBUG with -v) to stderr with timestamps; chatty client libraries at WARNING."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "filelock", "httpx", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


# -- special value parsers (kept explicit where a field's syntax is richer than its type) ------------------


def name_value(text: str) -> tuple[str, float | None]:
    """`NAME=VALUE` or `NAME=none` (a filter threshold override)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE or NAME=none, got {text!r}")
    if value.lower() in ("none", "off", "null"):
        return key, None
    try:
        return key, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"threshold {key!r}: expected a number or 'none', got {value!r}"
        ) from None


def csv_list(text: str) -> list[str]:
    """`a,b,c` -> ['a', 'b', 'c']."""
    return [t.strip() for t in text.split(",") if t.strip()]


def int_list(text: str) -> list[int]:
    """`0,1,2` -> [0, 1, 2]."""
    try:
        return [int(t) for t in csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


# -- options from a pydantic model ---------------------------------------------------------------------------


def _unwrap_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _scalar(annotation: Any) -> dict[str, Any]:
    """argparse `type`/`choices` for a scalar annotation."""
    if get_origin(annotation) is Literal:
        values = get_args(annotation)
        return {"type": type(values[0]), "choices": list(values)}
    if annotation in (int, float, str):
        return {"type": annotation}
    raise TypeError(f"no command-line form for {annotation!r}; pass the option explicitly")


def _default_text(field) -> str:
    default = field.get_default(call_default_factory=True)
    if default is None or default is PydanticUndefined or default == [] or default == {}:
        return ""
    if isinstance(default, list):
        default = ",".join(map(str, default))
    return f" (default: {default})".replace("%", "%%")


def add_model_options(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    *,
    exclude: Iterable[str] = (),
    positional: Sequence[str] = (),
    options: dict[str, dict[str, Any]] | None = None,
    exclusive: Sequence[Sequence[str]] = (),
) -> None:
    """Add one option per field of `model` to `parser`.

    `positional` fields become positional arguments. `options` maps a field to argparse keywords that replace
    the derived ones (``flags`` gives the option strings, e.g. ``["--learning-rate", "--lr"]``; ``type`` a
    parser for a richer syntax). Fields in one `exclusive` group are mutually exclusive. A field without a
    default is required. Every option's argparse default is "not given", so the model supplies the default.
    """
    options = options or {}
    skip = set(exclude)
    groups: dict[str, Any] = {}
    for names in exclusive:
        group = parser.add_mutually_exclusive_group()
        groups.update({n: group for n in names})
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        special = dict(options.get(name, {}))
        annotation = _unwrap_optional(field.annotation)
        required = field.is_required()
        help_text = (field.description or "").replace("%", "%%") + _default_text(field)
        kw: dict[str, Any] = {"help": help_text or None, "default": None}
        flag = "--" + (field.alias or name).replace("_", "-")
        if annotation is bool:
            on = field.get_default() is not True
            flag = flag if on else flag.replace("--", "--no-", 1)
            kw.update(action="store_true" if on else "store_false")
            desc = (field.description or "").replace("%", "%%")
            kw["help"] = desc if on else f"turn off (on by default): {desc}"
        elif get_origin(annotation) is list:
            (item,) = get_args(annotation)
            if "type" not in special:
                kw.update(_scalar(item))
                kw["action"] = "append"
                kw["help"] = (kw["help"] or "") + " (repeatable)"
        elif "type" not in special:
            kw.update(_scalar(annotation))
        flags = special.pop("flags", [flag])
        kw.update(special)
        if name in positional:
            kw.pop("default")
            parser.add_argument(name, **kw)
            continue
        kw["dest"] = name
        if required:
            kw["required"] = True
        if (
            "metavar" not in kw
            and "choices" not in kw
            and kw.get("action") not in ("store_true", "store_false")
        ):
            kw["metavar"] = name.upper()
        (groups.get(name) or parser).add_argument(*flags, **kw)


def model_from_args(model: type[BaseModel], args: argparse.Namespace, **values: Any):
    """The validated `model` from the parsed options (those given; the model has the defaults) + `values`.

    Validation problems raise one ConfigError naming each option, what it expects and the value given.
    """
    given = {
        name: getattr(args, name)
        for name in model.model_fields
        if getattr(args, name, None) is not None and name not in values
    }
    return validated(model, {**given, **values})


# -- the one main/error wrapper ------------------------------------------------------------------------------


def add_verbose(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """`-v/--verbose` on the top parser and on every subcommand, so it works before or after the command.

    A subcommand's option has no default: argparse would otherwise overwrite a `-v` given before it.
    """
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="debug logging and tracebacks of unexpected errors",
    )


def run_command(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, *, prepare: Callable[[], None] | None = None
) -> int:
    """Parse `argv`, set up logging and run `args.func(args)`; returns the exit code (EXIT_CODES)."""
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    setup_logging(verbose)
    try:
        if prepare is not None:
            prepare()
        return int(args.func(args) or 0)
    except DermgenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        hint = getattr(args, "interrupt_hint", "")
        print(f"interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback with -v
        if verbose:
            log.exception("unexpected error")
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"error: unexpected {type(exc).__name__}: {first} (run with -v for the traceback)",
            file=sys.stderr,
        )
        return 1
