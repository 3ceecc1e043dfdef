"""Checks every service applies to the strings callers send.

PostgreSQL refuses NUL in text (a request would fail deep in a store as an unexpected
error), and other C0 control characters are never meaningful in our data: they hide text
in logs and break consumers of our events. Tab, line feed and carriage return are text.
"""

from __future__ import annotations

import re

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from cloudshelf.runtime.errors import InvalidArgument

# C0 controls except \t (0x09), \n (0x0a) and \r (0x0d).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
CONTROL_CHARACTER = "CONTROL_CHARACTER"


def control_character_problem(value: str) -> str | None:
    """Why `value` is refused (it holds a control character), or None."""
    found = _CONTROL.search(value)
    if found is None:
        return None
    return (
        f"contains the control character U+{ord(found.group()):04X} at position "
        f"{found.start()}; only tab, line feed and carriage return are allowed"
    )


def check_text(field: str, value: str, *, max_length: int | None = None) -> str:
    """`value` unchanged when it holds no control character and fits `max_length`
    (characters); INVALID_ARGUMENT naming `field` otherwise."""
    if max_length is not None and len(value) > max_length:
        raise InvalidArgument(field, f"must be at most {max_length} characters")
    problem = control_character_problem(value)
    if problem is not None:
        raise InvalidArgument(field, problem, reason=CONTROL_CHARACTER)
    return value


def check_message_text(message: Message) -> None:
    """INVALID_ARGUMENT naming the first string field (a path such as
    "book.authors[0].display_name") of `message` that holds a control character."""
    if not _has_strings(message.DESCRIPTOR):  # type: ignore[arg-type]
        return
    found = _first_control_character(message, "")
    if found is not None:
        path, problem = found
        raise InvalidArgument(path, problem, reason=CONTROL_CHARACTER)


def _first_control_character(message: Message, prefix: str) -> tuple[str, str] | None:
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.type == FieldDescriptor.TYPE_STRING:
            values = enumerate(value) if field.is_repeated else [(None, value)]
            for index, text in values:
                problem = control_character_problem(text)
                if problem is not None:
                    return (path if index is None else f"{path}[{index}]"), problem
        elif field.type == FieldDescriptor.TYPE_MESSAGE and _has_strings(_message_type(field)):
            found = _nested(field, value, path)
            if found is not None:
                return found
    return None


def _nested(field: FieldDescriptor, value: object, path: str) -> tuple[str, str] | None:
    entry_type = _message_type(field)
    if entry_type.GetOptions().map_entry:
        key_field = entry_type.fields_by_name["key"]
        value_field = entry_type.fields_by_name["value"]
        for key, item in value.items():  # type: ignore[attr-defined]
            entry = f"{path}[{key!r}]"
            if key_field.type == FieldDescriptor.TYPE_STRING:
                problem = control_character_problem(key)
                if problem is not None:
                    return entry, problem
            if value_field.type == FieldDescriptor.TYPE_STRING:
                problem = control_character_problem(item)
                if problem is not None:
                    return entry, problem
            elif value_field.type == FieldDescriptor.TYPE_MESSAGE:
                found = _first_control_character(item, f"{entry}.")
                if found is not None:
                    return found
        return None
    if field.is_repeated:
        for index, item in enumerate(value):  # type: ignore[arg-type]
            found = _first_control_character(item, f"{path}[{index}].")
            if found is not None:
                return found
        return None
    assert isinstance(value, Message)
    return _first_control_character(value, f"{path}.")


def _message_type(field: FieldDescriptor) -> Descriptor:
    assert field.message_type is not None  # a message-typed field has one
    return field.message_type


_HAS_STRINGS: dict[str, bool] = {}


def _has_strings(descriptor: Descriptor) -> bool:
    """Whether a message type can hold a string anywhere (cached per type): requests with
    none, e.g. GetBook by id, skip the walk."""
    known = _HAS_STRINGS.get(descriptor.full_name)
    if known is None:
        known = _HAS_STRINGS[descriptor.full_name] = _reaches_string(descriptor, set())
    return known


def _reaches_string(descriptor: Descriptor, seen: set[str]) -> bool:
    if descriptor.full_name in seen:  # recursive types: already being searched
        return False
    seen.add(descriptor.full_name)
    return any(
        field.type == FieldDescriptor.TYPE_STRING
        or (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and _reaches_string(_message_type(field), seen)
        )
        for field in descriptor.fields
    )
