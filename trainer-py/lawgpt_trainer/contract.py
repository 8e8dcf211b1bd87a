"""Reads the orchestrator/trainer contract (contract.schema.json, generated from common/contract.ts)."""

import json
from functools import cache
from importlib import resources

from jsonschema import Draft202012Validator

from lawgpt_trainer.errors import InvalidInput


@cache
def schema() -> dict:
    return json.loads(resources.files(__package__).joinpath("contract.schema.json").read_text("utf-8"))


@cache
def _variants(part: str) -> dict[str, Draft202012Validator]:
    """The part's schema is a union tagged by `stage` (requests) or `event` (events); validating
    against the matching variant alone gives errors that name fields, not "matches no variant"."""
    tag = "stage" if part == "request" else "event"
    return {v["properties"][tag]["const"]: Draft202012Validator(v) for v in schema()[part]["oneOf"]}


def exit_invalid_input() -> int:
    return schema()["exit_invalid_input"]


def problems(part: str, document: dict) -> list[str]:
    """Every way `document` breaks the `part` ("request" or "event") schema, one line each."""
    if part == "manifest":
        return _format(Draft202012Validator(schema()["manifest"]).iter_errors(document))
    tag = "stage" if part == "request" else "event"
    variants = _variants(part)
    validator = variants.get(document.get(tag)) if isinstance(document, dict) else None
    if validator is None:
        return [f"{tag}: must be one of {', '.join(variants)}"]
    return _format(validator.iter_errors(document))


def _format(errors) -> list[str]:
    errors = sorted(errors, key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {_message(e)}" for e in errors]


def _message(error) -> str:
    # "is not valid under any of the given schemas" would name neither alternative (a stand-in's).
    if error.validator == "anyOf" and error.context:
        return " or ".join(sorted({sub.message for sub in error.context}))
    return error.message


def load_request(path: str, stage: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            request = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise InvalidInput(f"cannot read request {path}: {e}") from e
    found = problems("request", request)
    if found:
        raise InvalidInput("invalid request:\n  " + "\n  ".join(found))
    if request["stage"] != stage:
        raise InvalidInput(f"request is for stage {request['stage']!r}, command is {stage!r}")
    return request
