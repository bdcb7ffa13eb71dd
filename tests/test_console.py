"""Options derived from a pydantic model (`dermgen.console`): flags, types, choices, defaults from the model."""

from __future__ import annotations

import argparse
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from dermgen.console import add_model_options, add_verbose, model_from_args, run_command
from dermgen.errors import ConfigError, StoreError


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="input folder")
    rate: float = Field(0.5, gt=0, description="a rate in %")
    steps: int | None = Field(None, gt=0, description="steps")
    epochs: int | None = Field(None, gt=0, description="epochs")
    mode: Literal["fast", "slow"] = Field("fast", description="how")
    tags: list[str] = Field(default_factory=list, description="a tag")
    cache: bool = Field(True, description="keep a cache")
    dry: bool = Field(False, description="write nothing")


def _parser(**kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="job")
    add_model_options(p, Job, **kw)
    return p


def test_defaults_come_from_the_model_only():
    args = _parser().parse_args(["--source", "in"])
    assert (args.rate, args.mode, args.cache, args.dry, args.tags) == (None, None, None, None, None)
    job = model_from_args(Job, args)
    assert job == Job(source="in")


def test_every_kind_of_field_reaches_the_model():
    argv = ["--source", "in", "--rate", "2", "--steps", "3", "--mode", "slow", "--tags", "a", "--tags", "b",
            "--no-cache", "--dry"]  # fmt: skip
    job = model_from_args(Job, _parser().parse_args(argv))
    assert (job.rate, job.steps, job.mode, job.tags, job.cache, job.dry) == (
        2.0,
        3,
        "slow",
        ["a", "b"],
        False,
        True,
    )


def test_parse_errors_exit_2(capsys):
    for argv in (["--rate", "1"], ["--source", "x", "--mode", "medium"], ["--source", "x", "--rate", "fast"]):
        with pytest.raises(SystemExit) as exc:
            _parser().parse_args(argv)
        assert exc.value.code == 2
        assert "error:" in capsys.readouterr().err


def test_validation_error_names_option_rule_and_value():
    with pytest.raises(ConfigError) as exc:
        model_from_args(Job, _parser().parse_args(["--source", "x", "--rate", "-1"]))
    assert str(exc.value) == "--rate: Input should be greater than 0 (got -1.0)"


def test_help_shows_model_default_and_description(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "a rate in % (default: 0.5)" in out
    assert "--no-cache turn off (on by default): keep a cache" in out
    assert "{fast,slow}" in out and "a tag (repeatable)" in out


def test_positional_exclusive_and_explicit_options():
    p = _parser(
        positional=["source"], exclusive=[("steps", "epochs")], options={"rate": {"flags": ["--rate", "-r"]}}
    )
    job = model_from_args(Job, p.parse_args(["in", "-r", "3", "--epochs", "2"]))
    assert (job.source, job.rate, job.epochs) == ("in", 3.0, 2)
    with pytest.raises(SystemExit):
        p.parse_args(["in", "--steps", "1", "--epochs", "2"])


def test_run_command_maps_errors_to_exit_codes_and_takes_verbose_anywhere(capsys):
    def build(func):
        parser = argparse.ArgumentParser(prog="x")
        add_verbose(parser, top=True)
        sub = parser.add_subparsers(dest="command", required=True)
        p = sub.add_parser("go")
        add_verbose(p, top=False)
        p.set_defaults(func=func)
        return parser

    def fail_store(args):
        raise StoreError("bucket missing")

    def crash(args):
        raise RuntimeError("boom\nsecond line")

    seen = []
    assert run_command(build(lambda a: seen.append(a.verbose) or 0), ["go", "-v"]) == 0
    assert run_command(build(lambda a: seen.append(a.verbose) or 0), ["-v", "go"]) == 0
    assert run_command(build(lambda a: seen.append(a.verbose) or 0), ["go"]) == 0
    assert seen == [True, True, False]
    assert run_command(build(fail_store), ["go"]) == 3
    assert capsys.readouterr().err.strip() == "error: bucket missing"
    assert run_command(build(crash), ["go"]) == 1
    assert "error: unexpected RuntimeError: boom (run with -v for the traceback)" in capsys.readouterr().err
