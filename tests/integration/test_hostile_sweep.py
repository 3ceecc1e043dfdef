"""Hostile requests to every RPC of every service, found over reflection (issue 15, D5).

Each service process of the stack is asked, over its reflection service, which services
it serves and what their requests look like; then every unary RPC gets:

1. systematic variants: a plausible request with one field at a time (nested fields too)
   set to a hostile value of its type: empty, huge, NUL-bearing and control-character
   strings, forged page tokens, int32/int64 extremes, NaN and infinities, unknown enum
   values, 1,000-element lists; and hand-encoded bytes: invalid UTF-8 in a string field,
   a truncated message, garbage;
2. random requests that hypothesis builds from the message descriptors (derandomized:
   every run sends the same requests).

The sweep runs once per kind of caller: anonymous, a shopper, an admin and a service, so
that it reaches past authorization into every handler (each RPC is open to at least one of
them), and refusals by authentication and authorization are checked like any other answer.

No answer may be INTERNAL or UNKNOWN, and none may run into its deadline: nothing here
is heavy on a test-sized stack, so a DEADLINE_EXCEEDED means a hang. Every error from a
CloudShelf service must carry an ErrorInfo, and every service must still be SERVING at
the end. A service added to the stack later is swept without editing this file.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cloudshelf.devstack.stack import SERVICES, Stack
from tests.conftest import bearer
from tests.error_details import details_of
from tests.factories import isbn13, word

# Generous: a healthy call here takes milliseconds.
CALL_TIMEOUT = 10.0
# Random requests per RPC, on top of the systematic variants: the whole sweep stays well
# under a minute on two cores.
RANDOM_EXAMPLES = 12
# Streaming only, and the machinery that lets us sweep at all.
SKIPPED_SERVICES = frozenset({"grpc.reflection.v1alpha.ServerReflection"})
# Answers that are never acceptable.
FORBIDDEN = frozenset(
    {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
)
# Codes grpc itself may answer before a handler runs (e.g. a message over 4 MB).
TRANSPORT_CODES = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED})

T = FieldDescriptor
INT32 = (T.TYPE_INT32, T.TYPE_SINT32, T.TYPE_SFIXED32)
INT64 = (T.TYPE_INT64, T.TYPE_SINT64, T.TYPE_SFIXED64)
UINT32 = (T.TYPE_UINT32, T.TYPE_FIXED32)
UINT64 = (T.TYPE_UINT64, T.TYPE_FIXED64)
FLOATS = (T.TYPE_DOUBLE, T.TYPE_FLOAT)

INT32_EXTREMES = [-1, 2**31 - 1, -(2**31), 1_000_000]
INT64_EXTREMES = [-1, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, -(2**63)]
UINT32_EXTREMES = [2**32 - 1, 2**31]
UINT64_EXTREMES = [2**64 - 1, 2**63, 2**31]
FLOAT_EXTREMES = [math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]
UNKNOWN_ENUM_VALUES = [99, -1, 2**31 - 1]
STRINGS: list[tuple[str, str]] = [
    ("empty", ""),
    ("blank", " \t\n"),
    ("NUL", "\x00"),
    ("NUL inside", "abc\x00def"),
    ("escape sequence", "\x1b[2J"),
    ("DEL and C1", "\x7f\x85\x9f"),
    ("100,000 characters", "x" * 100_000),
    ("multi-byte", "é🙂" * 300),
    ("bidi override", "\u202eevil"),
    ("SQL and LIKE", "'; DROP TABLE x; -- %_\\"),
    ("non-characters", "\ufffe\uffff"),
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _forged(position: object) -> str:
    return _b64(json.dumps({"p": position, "q": "0" * 16}).encode())


FORGED_TOKENS: list[tuple[str, str]] = [
    ("forged negative offset", _forged({"offset": -20})),
    ("forged string offset", _forged({"offset": "x"})),
    ("forged huge int", _forged({"after": 2**70})),
    ("forged short key", _forged({"after": [1]})),
    ("forged list", _forged([1, 2])),
    ("forged nesting", _b64(b"[" * 1500)),
    ("forged signature", _forged({"after": 1}) + "." + _b64(b"\x00" * 16)),
    ("not base64", "!!!.???"),
]

# Values that make a request plausible (so a hostile value in another field gets past the
# first check and reaches the stores), by field name.
HINTS: dict[str, Callable[[], object]] = {
    "isbn_13": isbn13,
    "currency_code": lambda: "USD",
    "language_code": lambda: "en",
    "title": lambda: f"Sweep {word()}",
    "name": lambda: f"Sweep {word()}",
    "first_name": lambda: "Sweep",
    "last_name": word,
    "user_id": lambda: f"sweep-{word()}",
    "session_id": lambda: f"sweep-{word()}",
    "rating": lambda: 3,
    "minor_units": lambda: 1999,
    "delta": lambda: 1,
    "page_size": lambda: 5,
    "limit": lambda: 5,
}


# --- discovery -------------------------------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    process: str
    channel: grpc.Channel
    path: str
    input_type: Descriptor

    @property
    def ours(self) -> bool:
        return self.path.startswith("/cloudshelf.")


def discover(stack: Stack, channels: dict[str, grpc.Channel]) -> list[Rpc]:
    """Every unary RPC of every service each process serves, from its reflection."""
    rpcs = []
    for process in SERVICES:
        channel = channels[process] = grpc.insecure_channel(stack.address(process))
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        for service_name in sorted(database.get_services()):
            if service_name in SKIPPED_SERVICES:
                continue
            service = pool.FindServiceByName(service_name)
            for method in service.methods:
                if method.client_streaming or method.server_streaming:
                    continue
                path = f"/{service.full_name}/{method.name}"
                rpcs.append(Rpc(process, channel, path, method.input_type))
    return rpcs


# --- building requests ------------------------------------------------------------------


def new(descriptor: Descriptor) -> Message:
    return message_factory.GetMessageClass(descriptor)()


def _message_type(field_: FieldDescriptor) -> Descriptor:
    assert field_.message_type is not None
    return field_.message_type


def _is_map(field_: FieldDescriptor) -> bool:
    return field_.type == T.TYPE_MESSAGE and _message_type(field_).GetOptions().map_entry


def plausible(descriptor: Descriptor, depth: int = 0) -> Message:
    """A request with the hinted fields set, recursively."""
    message = new(descriptor)
    for field_ in descriptor.fields:
        if field_.is_repeated:
            continue
        if field_.type == T.TYPE_MESSAGE:
            if depth < 2:
                inner = plausible(_message_type(field_), depth + 1)
                if inner.ByteSize():
                    getattr(message, field_.name).CopyFrom(inner)
        elif field_.name in HINTS:
            setattr(message, field_.name, HINTS[field_.name]())
    return message


def assign(message: Message, field_: FieldDescriptor, value: Any) -> None:
    """Sets a field to a value of its shape (a list for repeated fields, a dict for maps)."""
    if _is_map(field_):
        target = getattr(message, field_.name)
        value_field = _message_type(field_).fields_by_name["value"]
        for key, item in value.items():
            if value_field.type == T.TYPE_MESSAGE:
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif field_.is_repeated:
        container = getattr(message, field_.name)
        del container[:]
        if field_.type == T.TYPE_MESSAGE:
            for item in value:
                container.add().CopyFrom(item)
        else:
            container.extend(value)
    elif field_.type == T.TYPE_MESSAGE:
        getattr(message, field_.name).CopyFrom(value)
    else:
        setattr(message, field_.name, value)


def scalar_extremes(field_: FieldDescriptor) -> list[tuple[str, Any]]:
    """Hostile values of one (non-repeated) field's type, with a label each."""
    kind = field_.type
    if kind == T.TYPE_STRING:
        tokens = FORGED_TOKENS if field_.name.endswith("page_token") else []
        return [*STRINGS, *tokens]
    if kind == T.TYPE_BYTES:
        return [("invalid UTF-8 bytes", b"\xff\xfe"), ("100,000 bytes", b"\x00" * 100_000)]
    if kind in INT32:
        return [(str(v), v) for v in INT32_EXTREMES]
    if kind in INT64:
        return [(str(v), v) for v in INT64_EXTREMES]
    if kind in UINT32:
        return [(str(v), v) for v in UINT32_EXTREMES]
    if kind in UINT64:
        return [(str(v), v) for v in UINT64_EXTREMES]
    if kind in FLOATS:
        return [(repr(v), v) for v in FLOAT_EXTREMES]
    if kind == T.TYPE_ENUM:
        return [(f"unknown enum {v}", v) for v in UNKNOWN_ENUM_VALUES]
    if kind == T.TYPE_BOOL:
        return [("true", True)]
    if kind == T.TYPE_MESSAGE:
        return [("empty message", new(_message_type(field_)))]
    return []


def _typical(field_: FieldDescriptor) -> Any:
    if field_.type == T.TYPE_MESSAGE:
        return plausible(_message_type(field_), 2)
    if field_.type == T.TYPE_STRING:
        return "x"
    if field_.type == T.TYPE_BYTES:
        return b"x"
    if field_.type == T.TYPE_BOOL:
        return True
    if field_.type in FLOATS:
        return 1.0
    return 1


def extremes(field_: FieldDescriptor) -> list[tuple[str, Any]]:
    """Hostile values of a field in its shape: lists for repeated fields."""
    if _is_map(field_):
        key_field = _message_type(field_).fields_by_name["key"]
        typical = _typical(_message_type(field_).fields_by_name["value"])
        entries: list[tuple[str, Any]] = [
            (f"map key {label}", {key: typical}) for label, key in scalar_extremes(key_field)[:4]
        ]
        if key_field.type == T.TYPE_STRING:
            entries.append(("1,000 map entries", {f"k{i}": typical for i in range(1000)}))
        elif key_field.type != T.TYPE_BOOL:
            entries.append(("1,000 map entries", dict.fromkeys(range(1000), typical)))
        return entries
    if field_.is_repeated:
        single = [(f"[{label}]", [value]) for label, value in scalar_extremes(field_)]
        return [*single, ("1,000 elements", [_typical(field_)] * 1000)]
    return scalar_extremes(field_)


def field_paths(descriptor: Descriptor, depth: int = 0) -> Iterator[tuple[FieldDescriptor, ...]]:
    """Every field reachable from a message, nested ones included (three levels)."""
    for field_ in descriptor.fields:
        yield (field_,)
        if field_.type == T.TYPE_MESSAGE and not _is_map(field_) and depth < 2:
            for inner in field_paths(_message_type(field_), depth + 1):
                yield (field_, *inner)


def with_value(base: Message, path: tuple[FieldDescriptor, ...], value: Any) -> Message:
    request = type(base)()
    request.CopyFrom(base)
    message = request
    for step in path[:-1]:
        if step.is_repeated:
            container = getattr(message, step.name)
            message = container[0] if len(container) else container.add()
        else:
            message = getattr(message, step.name)
    assign(message, path[-1], value)
    return request


# --- hand-encoded bytes -----------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _string_path(descriptor: Descriptor, depth: int = 0) -> list[int] | None:
    """Field numbers down to the nearest string field."""
    for field_ in descriptor.fields:
        if field_.type == T.TYPE_STRING:
            return [field_.number]
    if depth < 3:
        for field_ in descriptor.fields:
            if field_.type == T.TYPE_MESSAGE and not _is_map(field_):
                inner = _string_path(_message_type(field_), depth + 1)
                if inner is not None:
                    return [field_.number, *inner]
    return None


def malformed_payloads(rpc: Rpc) -> Iterator[tuple[str, bytes]]:
    path = _string_path(rpc.input_type)
    if path is not None:
        payload = b"ok\xff\xfe\xc3("  # not UTF-8
        for number in reversed(path):
            payload = _length_delimited(number, payload)
        yield "invalid UTF-8 in a string field", payload
    valid = plausible(rpc.input_type).SerializeToString()
    if len(valid) >= 2:
        yield "truncated message", valid[: len(valid) // 2]
    yield "garbage", b"\xff\xff\xff\xff"


# --- sending and judging ----------------------------------------------------------------


@dataclass
class Sweep:
    # The caller's credentials, sent with every call (empty: anonymous).
    metadata: tuple[tuple[str, str], ...] = ()
    calls: int = 0
    failures: list[str] = field(default_factory=list)

    def send(self, rpc: Rpc, payload: bytes, label: str) -> None:
        self.calls += 1
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = rpc.channel.unary_unary(rpc.path)
        try:
            call(payload, timeout=CALL_TIMEOUT, metadata=self.metadata)
        except grpc.RpcError as exc:
            problem = self.judge(rpc, exc)
            if problem is not None:
                self.failures.append(f"{rpc.path} [{label[:160]}]: {problem}")

    @staticmethod
    def judge(rpc: Rpc, exc: grpc.RpcError) -> str | None:
        assert isinstance(exc, grpc.Call)  # a failed call: it has a code and details
        code = exc.code()
        message = exc.details() or ""
        if code in FORBIDDEN:
            return f"{code.name}: {message[:300]}"
        if "<class" in message or "Traceback" in message:
            return f"{code.name} names Python internals: {message[:300]}"
        if rpc.ours and code not in TRANSPORT_CODES:
            trailers: Any = exc.trailing_metadata() or ()
            metadata = [(str(key), value) for key, value in trailers]
            details = details_of(code, message, metadata)
            if details.error_info is None:
                return f"{code.name} without an ErrorInfo: {message[:300]}"
            if code == grpc.StatusCode.INVALID_ARGUMENT and details.bad_request is None:
                return f"INVALID_ARGUMENT without a field violation: {message[:300]}"
        return None


def systematic(sweep: Sweep, rpc: Rpc) -> None:
    sweep.send(rpc, plausible(rpc.input_type).SerializeToString(), "plausible")
    for label, payload in malformed_payloads(rpc):
        sweep.send(rpc, payload, label)
    for path in field_paths(rpc.input_type):
        name = ".".join(step.name for step in path)
        for label, value in extremes(path[-1]):
            # A fresh plausible base each time: hinted values (ISBNs, names) stay unique.
            request = with_value(plausible(rpc.input_type), path, value)
            sweep.send(rpc, request.SerializeToString(), f"{name}={label}")


def _strings() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from([s for _, s in STRINGS]), st.text(max_size=40))


def _scalars(field_: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field_.type
    if kind == T.TYPE_STRING:
        if field_.name.endswith("page_token"):
            return st.one_of(_strings(), st.sampled_from([t for _, t in FORGED_TOKENS]))
        return _strings()
    if kind == T.TYPE_BYTES:
        return st.binary(max_size=40)
    if kind == T.TYPE_BOOL:
        return st.booleans()
    if kind in FLOATS:
        return st.floats(width=32 if kind == T.TYPE_FLOAT else 64)
    bounds = {
        **dict.fromkeys(INT32, (-(2**31), 2**31 - 1, INT32_EXTREMES)),
        **dict.fromkeys(INT64, (-(2**63), 2**63 - 1, INT64_EXTREMES)),
        **dict.fromkeys(UINT32, (0, 2**32 - 1, UINT32_EXTREMES)),
        **dict.fromkeys(UINT64, (0, 2**64 - 1, UINT64_EXTREMES)),
    }
    if kind in bounds:
        low, high, extreme = bounds[kind]
        return st.one_of(st.sampled_from([0, 1, *extreme]), st.integers(low, high))
    if kind == T.TYPE_ENUM:
        assert field_.enum_type is not None
        known = [value.number for value in field_.enum_type.values]
        return st.sampled_from(known + UNKNOWN_ENUM_VALUES)
    raise AssertionError(f"no strategy for field type {kind} ({field_.full_name})")


def _values(field_: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if _is_map(field_):
        key_field = _message_type(field_).fields_by_name["key"]
        value_field = _message_type(field_).fields_by_name["value"]
        return st.dictionaries(_scalars(key_field), _values(value_field, depth + 1), max_size=3)
    if field_.type == T.TYPE_MESSAGE:
        element: st.SearchStrategy[Any] = (
            messages(_message_type(field_), depth + 1)
            if depth < 3
            else st.just(new(_message_type(field_)))
        )
    else:
        element = _scalars(field_)
    if not field_.is_repeated:
        return element
    # 1,000 copies of a small element: long lists, not 100 MB requests grpc refuses anyway.
    small = st.just(_typical(field_)) if field_.type == T.TYPE_MESSAGE else _small(field_)
    return st.one_of(st.lists(element, max_size=3), small.map(lambda item: [item] * 1000))


def _small(field_: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field_.type == T.TYPE_STRING:
        return st.sampled_from(["", "\x00", "x", "\x1b", "é🙂"])
    if field_.type == T.TYPE_BYTES:
        return st.binary(max_size=4)
    return _scalars(field_)


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> Message:
    message = new(descriptor)
    for field_ in descriptor.fields:
        if draw(st.booleans()):
            assign(message, field_, draw(_values(field_, depth)))
    return message


def random_requests(sweep: Sweep, rpc: Rpc) -> None:
    @settings(
        max_examples=RANDOM_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(messages(rpc.input_type))
    def send_random(request: Message) -> None:
        label = text_format.MessageToString(request, as_one_line=True)
        sweep.send(rpc, request.SerializeToString(), f"random: {label}")

    send_random()


@pytest.mark.parametrize("caller", ["anonymous", "shopper", "admin", "service"])
def test_no_rpc_answers_internal_unknown_or_hangs_on_hostile_input(
    stack: Stack, caller: str, request: pytest.FixtureRequest
) -> None:
    token = None if caller == "anonymous" else request.getfixturevalue(f"{caller}_token")
    channels: dict[str, grpc.Channel] = {}
    try:
        rpcs = discover(stack, channels)
        services = {rpc.path.split("/")[1] for rpc in rpcs}
        # Reflection found the services: every process at least its own API and health.
        assert {"grpc.health.v1.Health", "cloudshelf.catalog.v1.CatalogService"} <= services
        assert len({rpc.process for rpc in rpcs}) == len(SERVICES)

        sweep = Sweep(bearer(token) if token is not None else ())
        started = time.monotonic()
        for rpc in rpcs:
            systematic(sweep, rpc)
            random_requests(sweep, rpc)
        elapsed = time.monotonic() - started
    finally:
        for channel in channels.values():
            channel.close()

    shown = "\n".join(sweep.failures[:30])
    assert not sweep.failures, (
        f"as {caller}: {len(sweep.failures)} of {sweep.calls} calls to {len(rpcs)} RPCs failed "
        f"({elapsed:.0f} s):\n{shown}"
    )
    not_serving = {name: stack.health(name) for name in SERVICES if stack.health(name) != "SERVING"}
    assert not not_serving, f"after {sweep.calls} hostile calls: {not_serving}"
