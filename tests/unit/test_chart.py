"""The Helm chart, rendered for real and validated, with no helm binary and no cluster.

helm-python-sdk runs Helm's own Go engine (render and lint); kubernetes-validate checks
every rendered object against the Kubernetes 1.30 OpenAPI schemas (strict: unknown
fields fail too).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from cloudshelf.runtime.config import DEFAULT_PORTS, Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "cloudshelf"
# Not the chart's name, so names built from the chart instead of the release would show.
RELEASE = "shop"
NAMESPACE = "bookstore"
KUBE_VERSION = "1.30.0"
# Services that own a store, so get a provisioning hook Job.
WITH_STORE = {"catalog", "cart", "analytics", "governance", "storefront"}
WITH_POSTGRES = {"catalog", "analytics", "governance", "storefront"}
HOOK_ANNOTATIONS = {
    "helm.sh/hook": "pre-install,pre-upgrade",
    "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded",
}
INSTALL_TIME_ANNOTATIONS = {
    "helm.sh/hook": "post-install,post-upgrade",
    "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded",
}

Manifest = dict[str, Any]
# Deployments of `workers:` entries (processes without RPCs, no Service).
WORKER_DEPLOYMENTS = {f"{RELEASE}-analytics-consumer"}


def render(values: dict[str, Any] | None = None) -> list[Manifest]:
    with helm_python.Chart.load(CHART) as chart:
        rendered = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
    manifests: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return manifests


def chart_values() -> dict[str, Any]:
    with helm_python.Chart.load(CHART) as chart:
        return chart.values


def of_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def workloads(manifests: list[Manifest]) -> Iterator[Manifest]:
    return (m for m in manifests if m["kind"] in ("Deployment", "Job", "CronJob"))


def pod_template(workload: Manifest) -> Manifest:
    """The pod template of a Deployment, a Job or a CronJob."""
    spec = workload["spec"]
    template: Manifest = (
        spec["jobTemplate"]["spec"]["template"]
        if workload["kind"] == "CronJob"
        else spec["template"]
    )
    return template


def container_of(workload: Manifest) -> Manifest:
    containers: list[Manifest] = pod_template(workload)["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def service_of(workload: Manifest) -> str:
    """The service a workload runs for: whose ServiceAccount it uses, or that it provisions."""
    pod = pod_template(workload)
    account = pod["spec"]["serviceAccountName"]
    if account == f"{RELEASE}-provision":
        return str(pod["metadata"]["labels"]["app.kubernetes.io/component"]).removesuffix(
            "-provision"
        )
    return str(account).removeprefix(f"{RELEASE}-")


def env_of(container: Manifest) -> dict[str, Manifest]:
    return {e["name"]: e for e in container.get("env", [])}


def otel_service_name(workload: Manifest) -> str:
    """OTEL_SERVICE_NAME as the pod will see it (a literal, or a label of the pod)."""
    template = pod_template(workload)
    entry = env_of(template["spec"]["containers"][0])["OTEL_SERVICE_NAME"]
    if "value" in entry:
        return str(entry["value"])
    path = entry["valueFrom"]["fieldRef"]["fieldPath"]
    label = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
    assert label, path
    return str(template["metadata"]["labels"][label.group(1)])


@pytest.fixture(scope="module")
def manifests() -> list[Manifest]:
    return render()


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    configured: dict[str, Any] = chart_values()["services"]
    return configured


def test_values_cover_every_service_on_its_default_port(services: dict[str, Any]) -> None:
    assert {name: entry["port"] for name, entry in services.items()} == DEFAULT_PORTS


def test_lint_is_clean() -> None:
    report = helm_python.lint(CHART, kube_version=f"v{KUBE_VERSION}", strict=True)
    assert report["errors"] == []
    # Severity 1 is information ("icon is recommended"); 2 and 3 are warnings and errors.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_every_object_is_valid_for_kubernetes_1_30(manifests: list[Manifest]) -> None:
    assert manifests
    for manifest in manifests:
        kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)


def test_one_deployment_and_service_per_service(
    manifests: list[Manifest], services: dict[str, Any]
) -> None:
    expected = {f"{RELEASE}-{name}" for name in services}
    deployments = of_kind(manifests, "Deployment")
    svcs = of_kind(manifests, "Service")
    assert set(deployments) == expected | WORKER_DEPLOYMENTS
    assert set(svcs) == expected
    assert set(of_kind(manifests, "ServiceAccount")) >= expected
    for name, entry in services.items():
        (port,) = svcs[f"{RELEASE}-{name}"]["spec"]["ports"]
        assert port == {
            "name": "grpc",
            "port": entry["port"],
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "grpc",
        }
        pod = deployments[f"{RELEASE}-{name}"]["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        assert container["command"] == ["python", "-m", f"services.{name}"]
        assert container["ports"][0]["containerPort"] == entry["port"]
        assert pod["spec"]["serviceAccountName"] == f"{RELEASE}-{name}"
        # The Service selects exactly this Deployment's pods.
        selector = svcs[f"{RELEASE}-{name}"]["spec"]["selector"]
        assert selector.items() <= pod["metadata"]["labels"].items()


def test_containers_are_hardened(manifests: list[Manifest]) -> None:
    kinds = set()
    for workload in workloads(manifests):
        kinds.add(workload["kind"])
        pod = pod_template(workload)["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes["tmp"]
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
            assert {"requests", "limits"} <= container["resources"].keys()
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert kinds == {"Deployment", "Job", "CronJob"}


def test_pods_have_grpc_probes_and_outlast_the_drain(
    manifests: list[Manifest], services: dict[str, Any]
) -> None:
    deployments = of_kind(manifests, "Deployment")
    for name, entry in services.items():
        pod = deployments[f"{RELEASE}-{name}"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        readiness = container["readinessProbe"]["grpc"]
        assert readiness == {"port": entry["port"], "service": ""}
        assert container["livenessProbe"]["grpc"]["port"] == entry["port"]
        env = env_of(container)
        grace = float(env["CLOUDSHELF_SHUTDOWN_GRACE_SECONDS"]["value"])
        # The pod keeps serving while endpoints drop it; SIGTERM comes after the sleep.
        assert container["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "5"]}}
        assert pod["terminationGracePeriodSeconds"] > 5 + grace

    longer = render({"defaults": {"shutdownGraceSeconds": 30, "preStopSleepSeconds": 8}})
    for name, deployment in of_kind(longer, "Deployment").items():
        if name in WORKER_DEPLOYMENTS:  # no endpoints to leave: no preStop sleep
            continue
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert env_of(container)["CLOUDSHELF_SHUTDOWN_GRACE_SECONDS"]["value"] == "30"
        assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "8"]
        assert pod["terminationGracePeriodSeconds"] > 30 + 8

    for deployment in of_kind(
        render({"defaults": {"preStopSleepSeconds": 0}}), "Deployment"
    ).values():
        assert "lifecycle" not in deployment["spec"]["template"]["spec"]["containers"][0]


def test_otel_service_name_is_the_service(
    manifests: list[Manifest], services: dict[str, Any]
) -> None:
    deployments = of_kind(manifests, "Deployment")
    for name in services:
        assert otel_service_name(deployments[f"{RELEASE}-{name}"]) == name


def test_environment_from_values() -> None:
    endpoint = "http://jaeger-collector.observability:4317"
    manifests = render(
        {
            "otel": {"exporterOtlpEndpoint": endpoint},
            "aws": {"region": "eu-west-1"},
            "services": {"catalog": {"redis": {"url": "redis://redis-master.cache:6379/0"}}},
        }
    )
    for workload in workloads(manifests):
        env = env_of(container_of(workload))
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == endpoint
        assert env["AWS_REGION"]["value"] == "eu-west-1"
    catalog = of_kind(manifests, "Deployment")[f"{RELEASE}-catalog"]
    env = env_of(catalog["spec"]["template"]["spec"]["containers"][0])
    assert env["CLOUDSHELF_REDIS_URL"]["value"] == "redis://redis-master.cache:6379/0"
    # Unset by default: the runtime exports no spans then.
    for workload in workloads(render()):
        env = env_of(container_of(workload))
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env


def test_peer_addresses_point_at_the_release_services(
    manifests: list[Manifest], services: dict[str, Any]
) -> None:
    deployments = of_kind(manifests, "Deployment")
    svcs = of_kind(manifests, "Service")
    for name, entry in services.items():
        container = deployments[f"{RELEASE}-{name}"]["spec"]["template"]["spec"]["containers"][0]
        env = env_of(container)
        assert env["CLOUDSHELF_LISTEN_ADDR"]["value"] == f"0.0.0.0:{entry['port']}"
        for peer, peer_entry in services.items():
            if peer == name:
                continue
            host, port = env[f"CLOUDSHELF_{peer.upper()}_ADDR"]["value"].split(":")
            assert host == f"{RELEASE}-{peer}"
            assert svcs[host]["spec"]["ports"][0]["port"] == int(port) == peer_entry["port"]


def test_provisioning_runs_as_a_hook_job_per_store(manifests: list[Manifest]) -> None:
    jobs = {
        name: job
        for name, job in of_kind(manifests, "Job").items()
        if job["metadata"]["annotations"]["helm.sh/hook"] == HOOK_ANNOTATIONS["helm.sh/hook"]
    }
    deployments = of_kind(manifests, "Deployment")
    assert set(jobs) == {f"{RELEASE}-{name}-provision" for name in WITH_STORE}
    for name in WITH_STORE:
        job = jobs[f"{RELEASE}-{name}-provision"]
        assert HOOK_ANNOTATIONS.items() <= job["metadata"]["annotations"].items()
        pod = job["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        assert container["command"] == [
            "python",
            "-m",
            "cloudshelf.cli",
            "provision",
            "--service",
            name,
        ]
        assert pod["spec"]["restartPolicy"] == "Never"
        # Same image and environment as the service it provisions.
        served = deployments[f"{RELEASE}-{name}"]["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == served["image"]
        assert container["env"] == served["env"]
        # A hook pod is never selected by the service's Service.
        selector = of_kind(manifests, "Service")[f"{RELEASE}-{name}"]["spec"]["selector"]
        assert not selector.items() <= pod["metadata"]["labels"].items()
    # Its ServiceAccount exists before the Jobs run: a hook too, with a lower weight.
    account = of_kind(manifests, "ServiceAccount")[f"{RELEASE}-provision"]
    annotations = account["metadata"]["annotations"]
    assert HOOK_ANNOTATIONS.items() <= annotations.items()
    assert int(annotations["helm.sh/hook-weight"]) < min(
        int(job["metadata"]["annotations"]["helm.sh/hook-weight"]) for job in jobs.values()
    )


def test_adding_a_service_is_one_values_entry(manifests: list[Manifest]) -> None:
    grown = render({"services": {"search": {"port": 50056}}})
    for manifest in grown:
        kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
    before, after = of_kind(manifests, "Deployment"), of_kind(grown, "Deployment")
    assert set(after) - set(before) == {f"{RELEASE}-search"}
    assert f"{RELEASE}-search" in of_kind(grown, "Service")
    assert otel_service_name(after[f"{RELEASE}-search"]) == "search"
    # Every other service learns where it is.
    for name, deployment in after.items():
        if name != f"{RELEASE}-search":
            env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
            assert env["CLOUDSHELF_SEARCH_ADDR"]["value"] == f"{RELEASE}-search:50056"


def test_disruption_budget_only_with_more_than_one_replica(manifests: list[Manifest]) -> None:
    # The analytics consumer worker runs 2 replicas by default.
    assert set(of_kind(manifests, "PodDisruptionBudget")) == WORKER_DEPLOYMENTS
    scaled = render({"services": {"cart": {"replicas": 3}}})
    budgets = of_kind(scaled, "PodDisruptionBudget")
    assert set(budgets) == {f"{RELEASE}-cart"} | WORKER_DEPLOYMENTS
    kubernetes_validate.validate(budgets[f"{RELEASE}-cart"], KUBE_VERSION, strict=True)
    assert of_kind(scaled, "Deployment")[f"{RELEASE}-cart"]["spec"]["replicas"] == 3


def test_secrets_stay_out_of_the_manifests(manifests: list[Manifest]) -> None:
    with_redis_secret = render(
        {"services": {"catalog": {"redis": {"existingSecret": "cache", "key": "url"}}}}
    )
    for rendered in (manifests, with_redis_secret):
        assert of_kind(rendered, "Secret") == {}
        assert "postgresql://" not in yaml.safe_dump_all(rendered)
        for workload in workloads(rendered):
            name = service_of(workload)
            env = env_of(container_of(workload))
            # Never the unscoped variable: a CLI acting for every service would aim all
            # of their migrations at this one database.
            assert "CLOUDSHELF_POSTGRES_DSN" not in env
            dsns = {key for key in env if key.endswith("_POSTGRES_DSN")}
            if name not in WITH_POSTGRES:
                assert dsns == set()
                continue
            assert dsns == {f"CLOUDSHELF_{name.upper()}_POSTGRES_DSN"}
            dsn = env[f"CLOUDSHELF_{name.upper()}_POSTGRES_DSN"]
            assert "value" not in dsn
            assert dsn["valueFrom"]["secretKeyRef"] == {
                "name": "cloudshelf-postgres",
                "key": f"{name}-dsn",
            }
    catalog = of_kind(with_redis_secret, "Deployment")[f"{RELEASE}-catalog"]
    redis = env_of(catalog["spec"]["template"]["spec"]["containers"][0])["CLOUDSHELF_REDIS_URL"]
    assert redis == {
        "name": "CLOUDSHELF_REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": "cache", "key": "url"}},
    }


def test_service_accounts_take_annotations() -> None:
    role = "arn:aws:iam::123456789012:role/cloudshelf-cart"
    manifests = render(
        {
            "services": {
                "cart": {"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": role}}}
            }
        }
    )
    account = of_kind(manifests, "ServiceAccount")[f"{RELEASE}-cart"]
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": role}


def test_skaffold_deploys_this_chart_and_patches_by_name() -> None:
    config = yaml.safe_load((REPO_ROOT / "skaffold.yaml").read_text())
    assert config["apiVersion"] == "skaffold/v4beta11"
    (artifact,) = config["build"]["artifacts"]
    (release,) = config["deploy"]["helm"]["releases"]
    assert (REPO_ROOT / release["chartPath"]).resolve() == CHART
    image = artifact["image"]
    templates = release["setValueTemplates"]
    assert templates["image.repository"] == f"{{{{.IMAGE_REPO_{image}}}}}"
    assert templates["image.tag"] == f"{{{{.IMAGE_TAG_{image}}}}}"
    for profile in config.get("profiles", []):
        for patch in profile.get("patches", []):
            assert not re.search(r"/\d+(/|$)", patch["path"]), patch


def assert_hardened_job_pod(workload: Manifest, service: str) -> None:
    pod = pod_template(workload)
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == f"{RELEASE}-{service}"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container_of(workload)["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert {"requests", "limits"} <= container_of(workload)["resources"].keys()


def test_refresh_popular_runs_daily_in_the_catalogs_pod(manifests: list[Manifest]) -> None:
    cron_jobs = of_kind(manifests, "CronJob")
    assert {
        f"{RELEASE}-catalog-refresh-popular",
        f"{RELEASE}-catalog-prune-idempotency-keys",
        f"{RELEASE}-storefront-prune-idempotency-keys",
    } <= set(cron_jobs)
    for name, other in cron_jobs.items():  # every job runs hardened and alone, in its pod
        kubernetes_validate.validate(other, KUBE_VERSION, strict=True)
        assert other["spec"]["concurrencyPolicy"] == "Forbid"
        assert_hardened_job_pod(other, name.removeprefix(f"{RELEASE}-").split("-")[0])
    cron = cron_jobs[f"{RELEASE}-catalog-refresh-popular"]
    kubernetes_validate.validate(cron, KUBE_VERSION, strict=True)
    spec = cron["spec"]
    minute, hour, day, month, weekday = spec["schedule"].split()
    assert minute.isdigit() and hour.isdigit() and (day, month, weekday) == ("*", "*", "*")
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    assert spec["jobTemplate"]["spec"]["backoffLimit"] >= 1
    assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] > 0
    assert_hardened_job_pod(cron, "catalog")
    assert container_of(cron)["command"] == [
        "python",
        "-m",
        "cloudshelf.cli",
        "job",
        "refresh-popular",
    ]
    # The catalog's own image, environment and Secrets.
    served = container_of(of_kind(manifests, "Deployment")[f"{RELEASE}-catalog"])
    assert container_of(cron)["image"] == served["image"]
    assert container_of(cron)["env"] == served["env"]
    # Its pods are never endpoints of the catalog's Service.
    selector = of_kind(manifests, "Service")[f"{RELEASE}-catalog"]["spec"]["selector"]
    assert not selector.items() <= pod_template(cron)["metadata"]["labels"].items()


def test_analytics_jobs_run_hourly_and_yearly_in_the_analytics_pod(
    manifests: list[Manifest],
) -> None:
    cron_jobs = of_kind(manifests, "CronJob")
    served = container_of(of_kind(manifests, "Deployment")[f"{RELEASE}-analytics"])
    selector = of_kind(manifests, "Service")[f"{RELEASE}-analytics"]["spec"]["selector"]
    expected: dict[str, tuple[str, list[str]]] = {
        "hourly-metrics": ("hourly", []),
        "compact-lake": ("hourly", []),
        "extend-dim-time": ("yearly", []),
    }
    for job, (every, args) in expected.items():
        cron = cron_jobs[f"{RELEASE}-analytics-{job}"]
        kubernetes_validate.validate(cron, KUBE_VERSION, strict=True)
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        assert_hardened_job_pod(cron, "analytics")
        container = container_of(cron)
        assert container["command"] == ["python", "-m", "cloudshelf.cli", "job", job]
        assert container.get("args", []) == args
        assert container["image"] == served["image"] and container["env"] == served["env"]
        assert "CLOUDSHELF_ANALYTICS_POSTGRES_DSN" in env_of(container)
        assert not selector.items() <= pod_template(cron)["metadata"]["labels"].items()
        minute, hour, day, month, weekday = cron["spec"]["schedule"].split()
        assert minute.isdigit() and weekday == "*"
        if every == "hourly":
            # Minutes after the hour: the hour it works on has closed.
            assert (hour, day, month) == ("*", "*", "*") and int(minute) > 0
        else:
            assert hour.isdigit() and day.isdigit() and month.isdigit()
    compactor = container_of(cron_jobs[f"{RELEASE}-analytics-compact-lake"])
    assert compactor["resources"]["limits"]["memory"] == "1Gi"

    # Compaction spills a partition-hour to /tmp: its own larger emptyDir, the others' stay.
    def tmp_limit(cron: Manifest) -> str:
        volumes = pod_template(cron)["spec"]["volumes"]
        return str(next(v for v in volumes if v["name"] == "tmp")["emptyDir"]["sizeLimit"])

    assert tmp_limit(cron_jobs[f"{RELEASE}-analytics-compact-lake"]) == "4Gi"
    assert tmp_limit(cron_jobs[f"{RELEASE}-analytics-hourly-metrics"]) == "64Mi"
    # The hour's metrics are computed before its small files are compacted.
    minute = {
        job: int(cron_jobs[f"{RELEASE}-analytics-{job}"]["spec"]["schedule"].split()[0])
        for job in ("hourly-metrics", "compact-lake")
    }
    assert minute["hourly-metrics"] < minute["compact-lake"]


def test_refresh_popular_also_runs_once_at_install(manifests: list[Manifest]) -> None:
    job = of_kind(manifests, "Job")[f"{RELEASE}-catalog-refresh-popular-install"]
    kubernetes_validate.validate(job, KUBE_VERSION, strict=True)
    # After the release's objects (the ServiceAccount it uses) and after provisioning
    # (a pre-install hook), on every install and upgrade.
    assert INSTALL_TIME_ANNOTATIONS.items() <= job["metadata"]["annotations"].items()
    assert_hardened_job_pod(job, "catalog")
    cron = of_kind(manifests, "CronJob")[f"{RELEASE}-catalog-refresh-popular"]
    assert container_of(job) == container_of(cron)


def test_adding_a_job_is_one_values_entry(manifests: list[Manifest]) -> None:
    prune = {
        "schedule": "*/30 * * * *",
        "command": ["python", "-m", "cloudshelf.cli", "outbox", "prune"],
        "args": ["--older-than-days", "7"],
        "activeDeadlineSeconds": 300,
        "resources": {"limits": {"memory": "256Mi"}},
        "env": {"CLOUDSHELF_LOG_LEVEL": "DEBUG"},
    }
    grown = render({"services": {"catalog": {"jobs": {"prune-outbox": prune}}}})
    for manifest in grown:
        kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
    before, after = of_kind(manifests, "CronJob"), of_kind(grown, "CronJob")
    assert set(after) - set(before) == {f"{RELEASE}-catalog-prune-outbox"}
    cron = after[f"{RELEASE}-catalog-prune-outbox"]
    assert cron["spec"]["schedule"] == "*/30 * * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 300
    assert_hardened_job_pod(cron, "catalog")
    container = container_of(cron)
    assert container["command"] == prune["command"] and container["args"] == prune["args"]
    assert container["resources"]["limits"]["memory"] == "256Mi"
    assert container["resources"]["requests"]  # the service's, merged
    env = env_of(container)
    assert env["CLOUDSHELF_LOG_LEVEL"]["value"] == "DEBUG"
    assert "CLOUDSHELF_CATALOG_POSTGRES_DSN" in env
    # Not run at install unless asked.
    assert set(of_kind(grown, "Job")) == set(of_kind(manifests, "Job"))


def test_jobs_can_be_disabled_and_must_name_a_schedule(manifests: list[Manifest]) -> None:
    disabled = render({"services": {"catalog": {"jobs": {"refresh-popular": {"enabled": False}}}}})
    assert set(of_kind(manifests, "CronJob")) - set(of_kind(disabled, "CronJob")) == {
        f"{RELEASE}-catalog-refresh-popular"
    }
    assert not any(name.endswith("-install") for name in of_kind(disabled, "Job"))
    with pytest.raises(helm_python.errors.HelmRenderError, match="schedule is required"):
        render({"services": {"cart": {"jobs": {"sweep": {"command": ["true"]}}}}})


def test_long_job_names_fit_kubernetes_limits(manifests: list[Manifest]) -> None:
    name = "prune-idempotency-keys-and-everything-else"
    grown = render(
        {
            "services": {
                "catalog": {
                    "jobs": {
                        name: {"schedule": "0 * * * *", "command": ["true"], "runAtInstall": True}
                    }
                }
            }
        }
    )
    for cron_name in of_kind(grown, "CronJob"):
        assert len(cron_name) <= 52
    for job_name in of_kind(grown, "Job"):
        assert len(job_name) <= 63
    assert len(of_kind(grown, "CronJob")) == len(of_kind(manifests, "CronJob")) + 1
    assert len([n for n in of_kind(grown, "Job") if n.endswith("-install")]) == 2


def test_connections_age_out_by_default(manifests: list[Manifest]) -> None:
    for deployment in of_kind(manifests, "Deployment").values():
        env = env_of(container_of(deployment))
        assert env["CLOUDSHELF_MAX_CONNECTION_AGE_SECONDS"]["value"] == "300"
    forever = render({"services": {"cart": {"maxConnectionAgeSeconds": 0}}})
    cart = env_of(container_of(of_kind(forever, "Deployment")[f"{RELEASE}-cart"]))
    assert cart["CLOUDSHELF_MAX_CONNECTION_AGE_SECONDS"]["value"] == "0"


def test_page_token_key_comes_from_a_secret_to_every_service(manifests: list[Manifest]) -> None:
    for workload in workloads(manifests):
        assert "CLOUDSHELF_PAGE_TOKEN_KEY" not in env_of(container_of(workload))
    keyed = render({"pageTokenKey": {"existingSecret": "cloudshelf-page-tokens", "key": "key"}})
    assert len(list(workloads(keyed))) == len(list(workloads(manifests)))
    for workload in workloads(keyed):
        assert env_of(container_of(workload))["CLOUDSHELF_PAGE_TOKEN_KEY"] == {
            "name": "CLOUDSHELF_PAGE_TOKEN_KEY",
            "valueFrom": {"secretKeyRef": {"name": "cloudshelf-page-tokens", "key": "key"}},
        }
    with pytest.raises(helm_python.errors.HelmRenderError, match=r"pageTokenKey\.key is required"):
        render({"pageTokenKey": {"existingSecret": "cloudshelf-page-tokens", "key": ""}})


TLS_DIR = "/etc/cloudshelf/tls"
TLS_ENV = {
    "CLOUDSHELF_TLS_CERT_FILE",
    "CLOUDSHELF_TLS_KEY_FILE",
    "CLOUDSHELF_TLS_CA_FILE",
    "CLOUDSHELF_PEER_TLS_CA_FILE",
    "CLOUDSHELF_HEALTH_LISTEN_ADDR",
}


def plain_env(container: Manifest) -> dict[str, str]:
    return {name: entry["value"] for name, entry in env_of(container).items() if "value" in entry}


def test_plaintext_by_default(manifests: list[Manifest]) -> None:
    for workload in workloads(manifests):
        assert not TLS_ENV & env_of(container_of(workload)).keys()
        assert "tls" not in {v["name"] for v in pod_template(workload)["spec"]["volumes"]}


def test_tls_mounts_the_secret_and_probes_a_plaintext_health_port(
    services: dict[str, Any],
) -> None:
    manifests = render(
        {
            "defaults": {"tls": {"enabled": True}},
            "services": {"catalog": {"tls": {"secretName": "catalog-cert"}}},
        }
    )
    for manifest in manifests:
        kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
    deployments = of_kind(manifests, "Deployment")
    for name in services:
        pod = deployments[f"{RELEASE}-{name}"]["spec"]["template"]["spec"]
        container = container_of(deployments[f"{RELEASE}-{name}"])
        (volume,) = [v for v in pod["volumes"] if v["name"] == "tls"]
        secret = "catalog-cert" if name == "catalog" else f"{RELEASE}-{name}-tls"
        assert volume["secret"]["secretName"] == secret
        # The whole Secret, never a subPath: kubelet then updates the files on renewal.
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "tls"]
        assert mount == {"name": "tls", "mountPath": TLS_DIR, "readOnly": True}

        env = plain_env(container)
        assert env["CLOUDSHELF_TLS_CERT_FILE"] == f"{TLS_DIR}/tls.crt"
        assert env["CLOUDSHELF_TLS_KEY_FILE"] == f"{TLS_DIR}/tls.key"
        assert env["CLOUDSHELF_TLS_CA_FILE"] == f"{TLS_DIR}/ca.crt"  # mutual by default
        # The runtime reads this environment as mTLS on the service port, plus a
        # plaintext health port that is exactly where both probes point.
        settings = Settings.from_env(name, env)
        assert settings.server_tls is not None and settings.server_tls.ca_file
        assert settings.peer_tls == settings.server_tls
        assert settings.health_listen_addr is not None
        health_port = int(settings.health_listen_addr.rsplit(":", 1)[1])
        assert health_port != services[name]["port"]
        assert {"name": "health", "containerPort": health_port, "protocol": "TCP"} in container[
            "ports"
        ]
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == health_port
        assert container["readinessProbe"]["grpc"]["service"] == ""
        assert container["livenessProbe"]["grpc"]["service"] == "liveness"
        # The Service still exposes only the TLS port.
        (port,) = of_kind(manifests, "Service")[f"{RELEASE}-{name}"]["spec"]["ports"]
        assert port["port"] == services[name]["port"]

    # Hook and scheduled Jobs serve nothing: no certificates, no Secret to wait for.
    for workload in workloads(manifests):
        if workload["kind"] != "Deployment":
            assert not TLS_ENV & env_of(container_of(workload)).keys()
            assert "tls" not in {v["name"] for v in pod_template(workload)["spec"]["volumes"]}


def test_tls_without_client_certificates_still_verifies_peers() -> None:
    manifests = render({"defaults": {"tls": {"enabled": True, "mutual": False}}})
    for name, deployment in of_kind(manifests, "Deployment").items():
        if name in WORKER_DEPLOYMENTS:  # serves health only, calls no peer
            continue
        env = plain_env(container_of(deployment))
        assert "CLOUDSHELF_TLS_CA_FILE" not in env
        assert env["CLOUDSHELF_PEER_TLS_CA_FILE"] == f"{TLS_DIR}/ca.crt"
        settings = Settings.from_env("cart", env)
        assert settings.server_tls is not None and settings.server_tls.ca_file is None
        assert settings.peer_tls is not None and settings.peer_tls.ca_file == f"{TLS_DIR}/ca.crt"


def test_auth_settings_reach_every_service(manifests: list[Manifest]) -> None:
    for workload in workloads(manifests):
        assert not [name for name in env_of(container_of(workload)) if "_AUTH_" in name]
    pool = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC"
    configured = render(
        {
            "auth": {
                "issuer": pool,
                "clientIds": ["web-client", "m2m-client"],
                "tokenUrl": "https://shop.auth.eu-west-1.amazoncognito.com/oauth2/token",
                "serviceClient": {"existingSecret": "cloudshelf-m2m"},
            }
        }
    )
    for workload in workloads(configured):
        env = env_of(container_of(workload))
        assert env["CLOUDSHELF_AUTH_ISSUER"]["value"] == pool
        assert env["CLOUDSHELF_AUTH_CLIENT_IDS"]["value"] == "web-client,m2m-client"
        assert "CLOUDSHELF_AUTH_JWKS_URL" not in env  # derived from the issuer
        assert env["CLOUDSHELF_AUTH_TOKEN_URL"]["value"].endswith("/oauth2/token")
        assert env["CLOUDSHELF_AUTH_SERVICE_CLIENT_SECRET"]["valueFrom"] == {
            "secretKeyRef": {"name": "cloudshelf-m2m", "key": "client-secret"}
        }


def test_the_analytics_consumer_is_a_worker_deployment_in_the_analytics_pod(
    manifests: list[Manifest], services: dict[str, Any]
) -> None:
    worker = of_kind(manifests, "Deployment")[f"{RELEASE}-analytics-consumer"]
    assert f"{RELEASE}-analytics-consumer" not in of_kind(manifests, "Service")
    assert worker["spec"]["replicas"] == 2
    budget = of_kind(manifests, "PodDisruptionBudget")[f"{RELEASE}-analytics-consumer"]
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"] == worker["spec"]["selector"]
    pod = worker["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "analytics-consumer"
    # The analytics Service never selects the worker's pods.
    selector = of_kind(manifests, "Service")[f"{RELEASE}-analytics"]["spec"]["selector"]
    assert not selector.items() <= labels.items()
    assert worker["spec"]["selector"]["matchLabels"].items() <= labels.items()
    container = container_of(worker)
    assert container["command"] == ["python", "-m", "services.analytics.consumer"]
    assert service_of(worker) == "analytics"
    assert otel_service_name(worker) == "analytics-consumer"
    port = services["analytics"]["port"]
    assert container["readinessProbe"]["grpc"] == {"port": port, "service": ""}
    assert container["livenessProbe"]["grpc"]["service"] == "liveness"
    env = env_of(container)
    assert env["CLOUDSHELF_ANALYTICS_POSTGRES_DSN"]["valueFrom"]["secretKeyRef"] == {
        "name": "cloudshelf-postgres",
        "key": "analytics-dsn",
    }
    assert "lifecycle" not in container
    grace = float(env["CLOUDSHELF_SHUTDOWN_GRACE_SECONDS"]["value"])
    assert pod["spec"]["terminationGracePeriodSeconds"] > grace

    # With TLS on, its probes still ask plaintext health on its port, and it mounts nothing.
    with_tls = of_kind(render({"defaults": {"tls": {"enabled": True}}}), "Deployment")
    tls_worker = with_tls[f"{RELEASE}-analytics-consumer"]
    assert container_of(tls_worker)["readinessProbe"]["grpc"]["port"] == port
    assert not TLS_ENV & env_of(container_of(tls_worker)).keys()


def test_adding_a_worker_is_one_values_entry() -> None:
    manifests = render(
        {
            "services": {
                "catalog": {
                    "workers": {
                        "indexer": {
                            "command": ["python", "-m", "services.catalog.indexer"],
                            "replicas": 3,
                            "env": {"EXTRA": "1"},
                        }
                    }
                },
                "analytics": {"workers": {"consumer": {"enabled": False}}},
            }
        }
    )
    for manifest in manifests:
        kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
    deployments = of_kind(manifests, "Deployment")
    assert f"{RELEASE}-analytics-consumer" not in deployments
    indexer = deployments[f"{RELEASE}-catalog-indexer"]
    assert indexer["spec"]["replicas"] == 3
    assert service_of(indexer) == "catalog"
    assert env_of(container_of(indexer))["EXTRA"]["value"] == "1"
