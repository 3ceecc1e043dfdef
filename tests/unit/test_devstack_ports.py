"""Test stacks take free ports; `make up` takes fixed ones. The two must never meet."""

from __future__ import annotations

import pytest

from cloudshelf.devstack.components import LOCAL_MESH_PORTS, free_port
from cloudshelf.devstack.stack import StackPorts

# Linux's default ip_local_port_range: where bind(0) draws from.
EPHEMERAL = range(32768, 61000)


def test_the_meshs_ports_in_the_ephemeral_range_are_all_reserved() -> None:
    ports = StackPorts.defaults()
    fixed = [ports.postgres, ports.redis, ports.aws, *ports.services.values()]
    fixed += ports.workers.values()
    assert [p for p in fixed if p in EPHEMERAL and p not in LOCAL_MESH_PORTS] == []


def test_a_mesh_port_handed_out_by_the_kernel_is_passed_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handed_out = iter([50052, 50063, 40001])

    class Socket:
        def __enter__(self) -> Socket:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def bind(self, address: tuple[str, int]) -> None:
            self.port = next(handed_out)

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr("socket.socket", Socket)
    assert free_port() == 40001
