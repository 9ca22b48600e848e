"""Text the database and the vendors' requests can take, checked before anything is stored.

PostgreSQL refuses NUL in `text` parameters and in JSON it must process (`\\u0000`), and a
string with a lone surrogate (JSON can carry `"\\ud800"`) cannot be encoded as UTF-8 for the
database or for a request. Either would crash the insert or the send; here it is a field error.
"""

from __future__ import annotations

from typing import Any

from eventrelay.worker.errors import FieldError

# Enough to fix a payload by; a hostile one could otherwise produce an error per string.
MAX_REPORTED = 20


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored or sent, or None."""
    if "\x00" in value:
        return "must not contain NUL characters (\\u0000): PostgreSQL cannot store them"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return (
            "must be valid Unicode text: it holds a lone surrogate (half of a UTF-16 pair, "
            "e.g. a cut emoji); send whole characters"
        )
    return None


def payload_text_problems(payload: Any) -> list[FieldError]:
    """Every string of `payload`, keys included, checked; field paths as pydantic spells them
    (`payload.data.0.name`). Iterative: hostile payloads can be deep."""
    problems: list[FieldError] = []
    stack: list[tuple[Any, str]] = [(payload, "payload")]
    while stack and len(problems) < MAX_REPORTED:
        value, path = stack.pop()
        if isinstance(value, str):
            problem = text_problem(value)
            if problem:
                problems.append(FieldError(path, problem))
        elif isinstance(value, dict):
            for key, child in value.items():
                key_problem = text_problem(str(key))
                if key_problem:
                    problems.append(FieldError(path, f"a key {key_problem}"))
                    continue
                stack.append((child, f"{path}.{key}"))
        elif isinstance(value, list):
            stack.extend((child, f"{path}.{i}") for i, child in enumerate(value))
    return sorted(problems, key=lambda e: e.loc)
