"""The governance service process: classification, retention, quality, migrations, sync."""

from __future__ import annotations

from contextlib import AsyncExitStack

from cloudshelf.governance.v1 import governance_pb2, governance_pb2_grpc
from cloudshelf.runtime.config import Settings
from cloudshelf.runtime.server import ServiceApp, Servicer, run_service
from cloudshelf.runtime.stores import open_postgres
from services.governance.policy import GOVERNANCE_POLICY


async def setup(settings: Settings, stack: AsyncExitStack) -> ServiceApp:
    _pool, postgres = await open_postgres(settings, stack)
    return ServiceApp(
        servicers=[
            Servicer(
                governance_pb2_grpc.GovernanceServiceServicer(),  # type: ignore[abstract]  # RPCs not built yet answer UNIMPLEMENTED
                governance_pb2_grpc.add_GovernanceServiceServicer_to_server,
                governance_pb2.DESCRIPTOR.services_by_name["GovernanceService"].full_name,
                GOVERNANCE_POLICY,
            )
        ],
        dependencies=[postgres],
    )


def main() -> None:
    run_service("governance", setup)
