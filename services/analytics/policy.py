"""Who may call each AnalyticsService RPC (enforced by the runtime).

Orders and interactions are recorded by the services that saw them, as themselves: their
`user_id` fields describe a user as data, which only a trusted service may assert. The
figures are for the back office and for services.
"""

from __future__ import annotations

from cloudshelf.runtime.auth import ADMIN, ADMIN_OR_SERVICE, SERVICE, Policy

ANALYTICS_POLICY: Policy = {
    "RecordInteractions": SERVICE,
    "RecordOrder": SERVICE,
    "GetHourlyMetrics": ADMIN_OR_SERVICE,
    "ListTopBooks": ADMIN_OR_SERVICE,
    # Dead letters hold raw events (user ids, locations): operators only.
    "ListDeadLetters": ADMIN,
}

POLICIES: dict[str, Policy] = {"cloudshelf.analytics.v1.AnalyticsService": ANALYTICS_POLICY}
