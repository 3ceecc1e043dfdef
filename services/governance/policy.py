"""Who may call each GovernanceService RPC (enforced by the runtime): the back office
and services (scheduled jobs), nobody else."""

from __future__ import annotations

from cloudshelf.runtime.auth import ADMIN_OR_SERVICE, Policy

GOVERNANCE_POLICY: Policy = {
    "ListClassifications": ADMIN_OR_SERVICE,
    "ClassifyField": ADMIN_OR_SERVICE,
    "ListRetentionPolicies": ADMIN_OR_SERVICE,
    "EnforceRetention": ADMIN_OR_SERVICE,
    "RunDataQuality": ADMIN_OR_SERVICE,
    "GetMigrationStatus": ADMIN_OR_SERVICE,
    "GetRegionSyncStatus": ADMIN_OR_SERVICE,
}

POLICIES: dict[str, Policy] = {"cloudshelf.governance.v1.GovernanceService": GOVERNANCE_POLICY}
