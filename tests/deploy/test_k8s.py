"""What an operator relies on in deploy/k8s: each overlay builds; every built-in resource is valid for Kubernetes
1.30 and the newest version kubernetes-validate knows; each service has a Deployment that starts the right service,
probes /readyz and /healthz on its port, asks for resources and is reached through a Service and scaled by an
autoscaler; secrets are referenced by name only, each documented in deploy/k8s/README.md; the RabbitMQ and
CloudNativePG resources have what the services count on; each service connects as its own database role and its own
broker user, with exactly the permissions tests/integration/test_least_privilege.py proves on a real broker, and two
Jobs set up the databases and the broker topology with the administrators.

No kustomize, kubectl or network needed: the overlays are rendered here the way kustomize renders the features they
use (resources, JSON 6902 patches with explicit targets, images), and anything else in a kustomization fails the
build. The Kubernetes JSON schemas are the ones bundled in the kubernetes-validate package; the operators' custom
resources have no bundled schema and are checked by hand for the fields used.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, all_versions, latest_version, major_minor
from prometheus_client.metrics import MetricWrapperBase
from yarl import URL

import shared.metrics
from services.accounts.settings import AccountsSettings
from services.customers.settings import CustomersSettings
from services.notifications.settings import NotificationsSettings
from services.visitors.settings import VisitorsSettings
from shared.metrics import HttpMetrics
from shared.settings import CommonSettings, ServiceSettings
from shared.topology import Topology

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
README = K8S / "README.md"
APPS = {"customers": 8001, "accounts": 8002, "visitors": 8003, "notifications": 8004}
SETTINGS: dict[str, type[ServiceSettings]] = {
    "customers": CustomersSettings,
    "accounts": AccountsSettings,
    "visitors": VisitorsSettings,
    "notifications": NotificationsSettings,
}
OVERLAYS = ("production", "external-db", "dev")
WITH_CNPG = {"production": True, "external-db": False, "dev": True}
MIN_PODS = {"production": 3, "external-db": 3, "dev": 1}
NAMESPACE = "coworking"
K8S_VERSION = "1.30"
IMAGE = "coworking-backend"
SEAL_KEY_VARS = {"accounts": "ACCOUNTS_SEAL_KEY", "notifications": "NOTIFICATIONS_SEAL_KEY"}

# Secrets the operator creates (README.md) and the keys the manifests may read from them
USER_SECRETS = {
    "coworking-jwt-signing-key": {"jwt-signing-key.pem"},
    "coworking-seal-key": {"seal.key"},
    "coworking-smtp": {"username", "password"},
    "coworking-database-urls": set(APPS),
    **{f"coworking-db-{name}": {"password"} for name in APPS},  # each service's own database role
}
# Secrets the operators create, by the name of their resource, with the keys they hold: the RabbitMQ Cluster
# Operator's default user (internal/resource/default_user_secret.go) and CloudNativePG's application user
# (pkg/specs/secrets.go)
RABBITMQ_USER_KEYS = {"username", "password", "host", "port", "provider", "type", "default_user.conf"}
CNPG_APP_KEYS = {"username", "user", "password", "dbname", "host", "port", "pgpass", "uri", "jdbc-uri", "fqdn-uri"}
# the Messaging Topology Operator's generated credentials of a User, `<user>-user-credentials`
TOPOLOGY_USER_KEYS = {"username", "password"}

# Custom resources: apiVersion and kind, and the spec fields of their CRDs these manifests may use
RABBITMQ = ("rabbitmq.com/v1beta1", "RabbitmqCluster")
CNPG = ("postgresql.cnpg.io/v1", "Cluster")
RABBITMQ_USER = ("rabbitmq.com/v1beta1", "User")
RABBITMQ_PERMISSION = ("rabbitmq.com/v1beta1", "Permission")
RABBITMQ_TOPIC_PERMISSION = ("rabbitmq.com/v1beta1", "TopicPermission")
CUSTOM = {RABBITMQ, CNPG, RABBITMQ_USER, RABBITMQ_PERMISSION, RABBITMQ_TOPIC_PERMISSION}
CRD_SPEC_FIELDS = {
    RABBITMQ: {"replicas", "image", "resources", "persistence", "affinity", "tolerations", "rabbitmq", "service"},
    CNPG: {
        "instances",
        "imageName",
        "primaryUpdateStrategy",
        "enableSuperuserAccess",
        "storage",
        "resources",
        "postgresql",
        "affinity",
        "bootstrap",
        "monitoring",
    },
    # the Messaging Topology Operator's CRDs (api/v1beta1: user_types.go, permission_types.go, topicpermission_types.go)
    RABBITMQ_USER: {"rabbitmqClusterReference", "tags", "importCredentialsSecret"},
    RABBITMQ_PERMISSION: {"vhost", "user", "userReference", "permissions", "rabbitmqClusterReference"},
    RABBITMQ_TOPIC_PERMISSION: {"vhost", "user", "userReference", "permissions", "rabbitmqClusterReference"},
}

KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "patches", "images"}
PATCH_TARGET_FIELDS = {"group", "version", "kind", "name"}
SECRET_LOOKING_VAR = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$")
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


# --- kustomize, for the features these kustomizations use ------------------------------------------------------


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def resource_id(resource: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = resource["metadata"]
    return resource["apiVersion"], resource["kind"], meta.get("namespace", ""), meta["name"]


def selects(target: dict[str, str], resource: dict[str, Any]) -> bool:
    group, version = group_version(resource["apiVersion"])
    actual = {"group": group, "version": version, "kind": resource["kind"], "name": resource["metadata"]["name"]}
    return all(actual[field] == value for field, value in target.items())


def _pointer(path: str) -> list[str]:
    assert path.startswith("/"), path
    return [token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/")]


def _index(container: list[Any], token: str, *, end_ok: bool = False) -> int:
    assert re.fullmatch(r"0|[1-9][0-9]*", token), f"bad array index {token!r}"
    index = int(token)
    if index > len(container) or (index == len(container) and not end_ok):
        raise IndexError(f"index {index} out of range")
    return index


def json_patch(document: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add, remove, replace and test, as kustomize applies them: any failed operation fails the build."""
    document = copy.deepcopy(document)
    for operation in operations:
        op, tokens = operation["op"], _pointer(operation["path"])
        assert op in {"add", "remove", "replace", "test"}, f"unsupported operation {op}"
        parent: Any = document
        for token in tokens[:-1]:
            parent = parent[_index(parent, token)] if isinstance(parent, list) else parent[token]
        last = tokens[-1]
        if op == "test":
            actual = parent[_index(parent, last)] if isinstance(parent, list) else parent[last]
            if actual != operation["value"]:
                raise AssertionError(f"test failed at {operation['path']}: {actual!r} != {operation['value']!r}")
        elif isinstance(parent, list):
            if op == "add":
                parent.insert(len(parent) if last == "-" else _index(parent, last, end_ok=True), operation["value"])
            elif op == "remove":
                del parent[_index(parent, last)]
            else:
                parent[_index(parent, last)] = operation["value"]
        elif op == "add":
            parent[last] = operation["value"]
        else:
            if last not in parent:
                raise KeyError(f"{operation['path']} does not exist")
            if op == "remove":
                del parent[last]
            else:
                parent[last] = operation["value"]
    return document


def set_images(node: Any, image: dict[str, str]) -> None:
    """The images transformer: every container whose image name (without tag or digest) is image["name"]."""
    assert set(image) <= {"name", "newName", "newTag"}, image
    if isinstance(node, list):
        for item in node:
            set_images(item, image)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in {"containers", "initContainers"} and isinstance(value, list):
                for container in value:
                    name, tag = split_image(container["image"])
                    if name == image["name"]:
                        tag = image.get("newTag", tag)
                        container["image"] = image.get("newName", name) + (f":{tag}" if tag else "")
            set_images(value, image)


def split_image(image: str) -> tuple[str, str | None]:
    assert "@" not in image, image
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return image, None
    return name, tag


def build(directory: Path) -> list[dict[str, Any]]:
    """``kustomize build directory``."""
    directory = directory.resolve()
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert (spec["apiVersion"], spec["kind"]) == ("kustomize.config.k8s.io/v1beta1", "Kustomization")
    assert set(spec) <= KUSTOMIZATION_FIELDS, f"{directory}: {set(spec) - KUSTOMIZATION_FIELDS} is not rendered here"
    resources: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            resources += build(path)
        else:  # kustomize loads files only from under the kustomization's folder
            assert directory in path.parents, f"{directory}: {entry} is outside its folder"
            resources += load_documents(path)
    ids = [resource_id(r) for r in resources]
    assert len(ids) == len(set(ids)), f"{directory}: the same resource twice"
    for patch in spec.get("patches", []):
        assert set(patch) == {"path", "target"}, patch
        assert set(patch["target"]) <= PATCH_TARGET_FIELDS, patch["target"]
        assert all(re.fullmatch(r"[A-Za-z0-9.-]+", v) for v in patch["target"].values()), "targets are literal names"
        path = (directory / patch["path"]).resolve()
        assert directory in path.parents, f"{directory}: {patch['path']} is outside its folder"
        operations = yaml.safe_load(path.read_text())
        assert isinstance(operations, list), f"{path} is not a JSON 6902 patch"
        assert any(selects(patch["target"], r) for r in resources), f"{path} patches nothing"
        resources = [json_patch(r, operations) if selects(patch["target"], r) else r for r in resources]
    for image in spec.get("images", []):
        set_images(resources, image)
    return resources


# --- fixtures and helpers ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {overlay: build(K8S / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the validation tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def of_kind(resources: list[dict[str, Any]], kind: str, api_version: str | None = None) -> dict[str, dict[str, Any]]:
    return {
        r["metadata"]["name"]: r
        for r in resources
        if r["kind"] == kind and (api_version is None or r["apiVersion"] == api_version)
    }


def one(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = of_kind(resources, kind).get(name)
    assert found is not None, f"no {kind} {name}"
    return found


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def fake_secret(name: str, key: str) -> str:
    """What the Secrets hold, for resolving environments: URL-safe, as the operators generate them."""
    if name == "coworking-database-urls":
        return f"postgresql://{key}:pw-{key}@db.managed.example:5432/coworking_{key}?sslmode=require"
    if name.endswith("-default-user"):
        return {"username": "default_user_Zm9vYmFy", "password": "cGFzc3dvcmQ-x_1"}[key]
    if name.endswith("-user-credentials"):
        return {"username": f"user-of-{name}", "password": f"pw-of-{name}"}[key]
    if name.endswith(("-app", "-superuser")):
        return {"username": name.rsplit("-", 1)[1], "password": "generated-password"}[key]
    return f"<{name}/{key}>"


def workloads(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Deployments and Jobs, by name: what runs the image."""
    return {**of_kind(resources, "Deployment"), **of_kind(resources, "Job")}


def environment(deployment: dict[str, Any], resources: list[dict[str, Any]]) -> dict[str, str]:
    """The container's environment as the kubelet makes it: envFrom first, then env in order, each `$(VAR)`
    expanded from the variables defined before it (an undefined one fails here; Kubernetes would keep it as is)."""
    container = container_of(deployment)
    configmaps = of_kind(resources, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, source  # secrets come one key at a time, by name
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for var in container.get("env", []):
        if "value" in var:

            def expand(match: re.Match[str], var: dict[str, Any] = var) -> str:
                assert match.group(1) in env, f"{var['name']} uses $({match.group(1)}), undefined before it"
                return env[match.group(1)]

            env[var["name"]] = VAR_REF.sub(expand, var["value"])
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = fake_secret(ref["name"], ref["key"])
    return env


def secret_references(resources: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(secret, key) pairs read by the pods: secretKeyRef and secret volumes (envFrom of a Secret is refused)."""
    refs = set()
    for deployment in workloads(resources).values():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            assert all("secretRef" not in source for source in container.get("envFrom", []))
            for var in container.get("env", []):
                if "valueFrom" in var:
                    ref = var["valueFrom"]["secretKeyRef"]
                    refs.add((ref["name"], ref["key"]))
        for volume in pod.get("volumes", []):
            secrets = [volume["secret"]] if "secret" in volume else []
            secrets += [s["secret"] for s in volume.get("projected", {}).get("sources", []) if "secret" in s]
            for secret in secrets:
                items = secret.get("items")
                assert items, f"secret volume {volume['name']} mounts every key: list them"
                name = secret.get("secretName", secret.get("name"))
                refs |= {(name, item["key"]) for item in items}
    return refs


def named_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return int(number)


def quantity(value: str | int) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match and match.group(2) in {"", *units}, f"not a quantity: {value!r}"
    return float(match.group(1)) * units.get(match.group(2), 1)


def dockerfile_uid() -> int:
    match = re.search(r"useradd .*--uid (\d+)", (ROOT / "deploy" / "Dockerfile").read_text())
    assert match
    return int(match.group(1))


def readme_secret_commands() -> dict[str, set[str]]:
    """Secret name → the keys its `kubectl create secret generic` command in README.md puts in it (a shell
    ``for s in a b; do ... done`` loop is expanded)."""
    text = README.read_text().replace("\\\n", " ")
    text = re.sub(r"\n  (?=\S)", " ", text)  # a loop's body continues on indented lines
    commands = {}
    for line in text.splitlines():
        loop = re.match(r"for (\w+) in ([\w ]+); do (.*); done$", line)
        lines = [loop.group(3).replace(f"${loop.group(1)}", v) for v in loop.group(2).split()] if loop else [line]
        for one_line in lines:
            match = re.search(r"kubectl (?:-n \S+ )?create secret generic (\S+)(.*)", one_line)
            if match:
                commands[match.group(1)] = set(re.findall(r"--from-file=([^=\s]+)=\S+", match.group(2)))
    return commands


# --- the renderer itself -----------------------------------------------------------------------------------------


def test_json_patch_follows_rfc_6902() -> None:
    doc = {"a": {"b": [1, 2, 3]}}
    assert json_patch(doc, [{"op": "remove", "path": "/a/b/1"}]) == {"a": {"b": [1, 3]}}
    assert json_patch(doc, [{"op": "add", "path": "/a/b/-", "value": 4}]) == {"a": {"b": [1, 2, 3, 4]}}
    assert json_patch(doc, [{"op": "add", "path": "/a/b/0", "value": 0}]) == {"a": {"b": [0, 1, 2, 3]}}
    assert json_patch(doc, [{"op": "replace", "path": "/a/b", "value": []}]) == {"a": {"b": []}}
    assert doc == {"a": {"b": [1, 2, 3]}}
    with pytest.raises(AssertionError, match="test failed"):
        json_patch(doc, [{"op": "test", "path": "/a/b/0", "value": 2}])
    with pytest.raises(KeyError):
        json_patch(doc, [{"op": "replace", "path": "/a/c", "value": 1}])
    with pytest.raises(IndexError):
        json_patch(doc, [{"op": "remove", "path": "/a/b/3"}])


def test_images_transformer_keeps_or_replaces_the_tag() -> None:
    pod = {"spec": {"containers": [{"image": "coworking-backend"}, {"image": "other:1"}]}}
    set_images(pod, {"name": "coworking-backend", "newName": "reg.example/cw/coworking-backend", "newTag": "2"})
    assert [c["image"] for c in pod["spec"]["containers"]] == ["reg.example/cw/coworking-backend:2", "other:1"]
    pod = {"spec": {"containers": [{"image": "coworking-backend:1"}]}}
    set_images(pod, {"name": "coworking-backend", "newName": "localhost:5000/coworking-backend"})
    assert pod["spec"]["containers"][0]["image"] == "localhost:5000/coworking-backend:1"


def test_every_manifest_is_used_by_a_kustomization() -> None:
    used = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        used.add(kustomization)
        used |= {(kustomization.parent / e).resolve() for e in spec.get("resources", [])}
        used |= {(kustomization.parent / p["path"]).resolve() for p in spec.get("patches", [])}
    assert {p.resolve() for p in K8S.rglob("*.yaml")} <= used


# --- schemas -----------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("version", [K8S_VERSION, major_minor(latest_version())])
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_built_in_resources_match_the_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, version: str
) -> None:
    assert version in {major_minor(v) for v in all_versions()}, f"kubernetes-validate has no {version} schemas"
    kinds = set()
    for resource in rendered[overlay]:
        kinds.add(resource["kind"])
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except SchemaNotFoundError:
            assert (resource["apiVersion"], resource["kind"]) in CUSTOM, f"no schema: {resource_id(resource)}"
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{resource_id(resource)} at {where}: {exc.message}")
    assert {"Namespace", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"} <= kinds
    assert "PodDisruptionBudget" in kinds


@pytest.mark.usefixtures("no_network")
def test_the_schemas_refuse_a_mistake(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = copy.deepcopy(one(rendered["production"], "Deployment", "accounts"))
    container_of(deployment)["readinesProbe"] = container_of(deployment).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    container_of(deployment)["readinessProbe"] = container_of(deployment).pop("readinesProbe")
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "60"
    with pytest.raises(kubernetes_validate.ValidationError, match="integer"):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_is_in_the_coworking_namespace(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    assert one(rendered[overlay], "Namespace", NAMESPACE)
    for resource in rendered[overlay]:
        if resource["kind"] != "Namespace":
            assert resource["metadata"].get("namespace") == NAMESPACE, resource_id(resource)


# --- the four services -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize(("name", "port"), APPS.items())
def test_deployment_starts_the_service_from_the_image(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, name: str, port: int
) -> None:
    deployment = one(rendered[overlay], "Deployment", name)
    container = container_of(deployment)
    assert "command" not in container  # keeps the image's ENTRYPOINT, `python -m`
    assert container["args"] == [f"services.{name}", "serve"]
    assert importlib.util.find_spec(f"services.{name}.__main__") is not None
    image, tag = split_image(container["image"])
    assert image.rsplit("/", 1)[-1] == IMAGE
    assert tag and tag != "latest", f"{overlay} runs {container['image']}: pin a version"
    assert [p["containerPort"] for p in container["ports"]] == [port]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize(("name", "port"), APPS.items())
def test_deployment_probes_and_resources(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, name: str, port: int
) -> None:
    deployment = one(rendered[overlay], "Deployment", name)
    container = container_of(deployment)
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")):
        http = container[probe]["httpGet"]
        assert http["path"] == path, probe
        assert named_port(container, http["port"]) == port, probe
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # migrations run before the port opens
    resources = container["resources"]
    assert quantity(resources["requests"]["cpu"]) >= 0.1  # the autoscaler's 70 % is of this
    assert quantity(resources["requests"]["memory"]) >= 128 * 2**20  # ~70-95 MiB resident
    assert quantity(resources["limits"]["memory"]) >= 2 * quantity(resources["requests"]["memory"])


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", APPS)
def test_deployment_stops_gracefully_and_runs_locked_down(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, name: str
) -> None:
    deployment = one(rendered[overlay], "Deployment", name)
    pod, container = deployment["spec"]["template"]["spec"], container_of(deployment)
    # the service drains for up to ~45 s on SIGTERM, after the preStop pause
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= 45 + int(pre_stop[1])
    assert pod["enableServiceLinks"] is False  # else Kubernetes sets <SERVICE>_PORT=tcp://... in the pods
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile_uid()
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "replicas" not in deployment["spec"]  # the autoscaler owns it; `kubectl apply` must not reset it


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize(("name", "port"), APPS.items())
def test_service_autoscaler_and_disruption_budget(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, name: str, port: int
) -> None:
    resources = rendered[overlay]
    deployment = one(resources, "Deployment", name)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = one(resources, "Service", name)
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == port
    assert named_port(container_of(deployment), service_port["targetPort"]) == port

    hpa = one(resources, "HorizontalPodAutoscaler", name)["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert MIN_PODS[overlay] == hpa["minReplicas"] <= hpa["maxReplicas"]
    assert hpa["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}
    ]

    pdb = one(resources, "PodDisruptionBudget", name)["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb == {"maxUnavailable": 1, "selector": pdb["selector"]}  # a drain may always move one pod


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize(("name", "port"), APPS.items())
def test_service_settings_from_the_environment(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, name: str, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment the pod gets, read by the service's own settings classes."""
    resources = rendered[overlay]
    env = environment(one(resources, "Deployment", name), resources)
    for var in list(os.environ):
        monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    settings = SETTINGS[name]()
    assert (settings.host, settings.port) == ("0.0.0.0", port)
    common = settings.common
    assert common.log_format == "json"

    jwks = URL(common.jwks_url)
    assert (jwks.host, jwks.path) == ("accounts", "/.well-known/jwks.json")
    assert one(resources, "Service", jwks.host)["spec"]["ports"][0]["port"] == jwks.port == APPS["accounts"]

    amqp = URL(common.amqp_url)
    (rabbitmq,) = of_kind(resources, RABBITMQ[1], RABBITMQ[0])
    assert (amqp.scheme, amqp.host, amqp.port, amqp.path) == ("amqp", rabbitmq, 5672, "/")
    user_secret = f"coworking-{name}-user-credentials"  # its own user (rabbitmq-users.yaml), not the administrator
    assert (amqp.user, amqp.password) == (fake_secret(user_secret, "username"), fake_secret(user_secret, "password"))

    db = URL(settings.database_url)
    assert db.scheme == "postgresql"
    assert db.path == f"/coworking_{name}"
    if WITH_CNPG[overlay]:
        (cluster,) = of_kind(resources, CNPG[1], CNPG[0])
        assert (db.host, db.port, db.user, db.password) == (f"{cluster}-rw", 5432, None, None)
        assert env["PGUSER"] == f"coworking_{name}"  # its own role; asyncpg reads them when the URL has none
        assert env["PGPASSWORD"] == fake_secret(f"coworking-db-{name}", "password")
    else:
        assert settings.database_url == fake_secret("coworking-database-urls", name)
        assert "PGUSER" not in env
        assert "PGPASSWORD" not in env

    if name in SEAL_KEY_VARS:
        assert getattr(settings, "seal_key", None) == fake_secret("coworking-seal-key", "seal.key")
    assert not {var for var in env if var.endswith("SEAL_KEY")} - {SEAL_KEY_VARS.get(name)}


# --- secrets -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_is_written_in_the_manifests(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    resources = rendered[overlay]
    assert not of_kind(resources, "Secret")
    for value in strings(resources):
        assert "-----BEGIN" not in value
        for password in re.findall(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:([^@\s]*)@", value):
            assert VAR_REF.fullmatch(password), f"password in {value!r}"
        for token in re.findall(r"[A-Za-z0-9_+=-]{24,}", value):
            looks_random = re.search(r"[0-9]", token) and re.search(r"[a-z]", token) and re.search(r"[A-Z]", token)
            assert not looks_random, f"{token!r} looks like a key"
    for configmap in of_kind(resources, "ConfigMap").values():
        assert not [key for key in configmap["data"] if SECRET_LOOKING_VAR.search(key)]
    for deployment in workloads(resources).values():
        for var in container_of(deployment).get("env", []):
            if SECRET_LOOKING_VAR.search(var["name"]):
                assert "secretKeyRef" in var.get("valueFrom", {}), f"{var['name']} is not read from a Secret"
            for ref in VAR_REF.findall(var.get("value", "")):
                if SECRET_LOOKING_VAR.search(ref):
                    assert any(v["name"] == ref and "valueFrom" in v for v in container_of(deployment)["env"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_read_is_documented_and_made(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    resources = rendered[overlay]
    readme, commands = README.read_text(), readme_secret_commands()
    # `<service>` (and a loop's `$s`) in the README stand for each service
    readme += "".join(readme.replace("<service>", name).replace("$s", name) for name in APPS)
    made_by_operators = {f"{name}-default-user": RABBITMQ_USER_KEYS for name in of_kind(resources, RABBITMQ[1])}
    made_by_operators |= {f"{name}-app": CNPG_APP_KEYS for name in of_kind(resources, CNPG[1], CNPG[0])}
    made_by_operators |= {
        f"{name}-superuser": CNPG_APP_KEYS
        for name, cluster in of_kind(resources, CNPG[1], CNPG[0]).items()
        if cluster["spec"].get("enableSuperuserAccess")
    }
    made_by_operators |= {
        f"{name}-user-credentials": TOPOLOGY_USER_KEYS
        for name, user in of_kind(resources, RABBITMQ_USER[1], RABBITMQ_USER[0]).items()
        if "importCredentialsSecret" not in user["spec"]
    }
    for secret, key in secret_references(resources):
        assert re.search(rf"(?<![\w-]){secret}(?![\w-])", readme), f"{secret} is not documented in {README}"
        if secret in made_by_operators:
            assert key in made_by_operators[secret], f"the operator's {secret} has no key {key}"
        else:
            assert key in USER_SECRETS.get(secret, set()), f"{overlay} reads {secret}/{key}: who makes it?"
            assert key in commands.get(secret, set()), f"README.md's command for {secret} does not make {key}"


def test_the_readme_makes_the_keys_with_the_project_commands() -> None:
    text = README.read_text()
    assert set(readme_secret_commands()) == set(USER_SECRETS)
    assert "python -m services.accounts generate-signing-key ./jwt-signing-key.pem" in text
    assert "python -m shared.sealing > ./seal.key" in text
    assert "--from-file=jwt-signing-key.pem=./jwt-signing-key.pem" in text
    assert "--from-file=seal.key=./seal.key" in text


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_signing_key_is_a_file_for_accounts_only(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    resources = rendered[overlay]
    for name, deployment in of_kind(resources, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        volumes = {
            v["name"]: v["secret"]
            for v in pod.get("volumes", [])
            if v.get("secret", {}).get("secretName") == "coworking-jwt-signing-key"
        }
        assert bool(volumes) == (name == "accounts"), name
    accounts = one(resources, "Deployment", "accounts")
    pod, container = accounts["spec"]["template"]["spec"], container_of(accounts)
    key_file = Path(environment(accounts, resources)["ACCOUNTS_JWT_PRIVATE_KEY_FILE"])
    (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == key_file.parent]
    assert mount["readOnly"] is True
    (volume,) = [v["secret"] for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secretName"] == "coworking-jwt-signing-key"
    assert {item["path"]: item["key"] for item in volume["items"]} == {key_file.name: "jwt-signing-key.pem"}
    assert volume["defaultMode"] & 0o040 and pod["securityContext"]["fsGroup"] == dockerfile_uid()  # readable
    assert not volume["defaultMode"] & 0o007  # by nobody else


# --- RabbitMQ and PostgreSQL -------------------------------------------------------------------------------------


def validate_embedded(spec: dict[str, Any]) -> None:
    """Core types inside a custom resource (resources, affinity) checked against the schemas, inside a Pod."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "embedded"},
        "spec": {"containers": [{"name": "c", "image": "i", "resources": spec.get("resources", {})}]},
    }
    if "affinity" in spec and "enablePodAntiAffinity" not in spec["affinity"]:
        pod["spec"]["affinity"] = spec["affinity"]
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rabbitmq_cluster(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    resources = rendered[overlay]
    clusters = of_kind(resources, RABBITMQ[1])
    assert len(clusters) == 1
    ((name, cluster),) = clusters.items()
    assert cluster["apiVersion"] == RABBITMQ[0]
    assert (
        one(resources, "ConfigMap", "coworking-config")["data"]["AMQP_HOST"] == name
    )  # the operator's client Service has the cluster's name
    spec = cluster["spec"]
    assert set(spec) <= CRD_SPEC_FIELDS[RABBITMQ]
    assert spec["replicas"] == (1 if overlay == "dev" else 3)  # quorum queues survive one node in three
    assert spec["image"].startswith("rabbitmq:3.13-")  # as in deploy/compose.yaml
    assert quantity(spec["persistence"]["storage"]) >= 2**30
    assert quantity(spec["resources"]["limits"]["memory"]) == quantity(spec["resources"]["requests"]["memory"])
    validate_embedded(spec)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_postgres_cluster_and_a_role_owning_each_database(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    resources = rendered[overlay]
    clusters = of_kind(resources, CNPG[1], CNPG[0])
    if not WITH_CNPG[overlay]:
        assert not clusters
        assert "setup-databases" not in of_kind(resources, "Job")
        assert not [s for s, _ in secret_references(resources) if s.startswith("coworking-db")]
        return
    assert len(clusters) == 1
    ((name, cluster),) = clusters.items()
    spec = cluster["spec"]
    assert set(spec) <= CRD_SPEC_FIELDS[CNPG]
    assert spec["instances"] == (1 if overlay == "dev" else 3)
    assert spec["imageName"].startswith("ghcr.io/cloudnative-pg/postgresql:16")
    assert quantity(spec["storage"]["size"]) >= 2**30
    validate_embedded(spec)
    assert spec["enableSuperuserAccess"] is True  # the Secret <cluster>-superuser, for the setup Job only

    # the Job: `python -m services setup-databases` as the superuser, each service's role with its own password
    job = one(resources, "Job", "setup-databases")
    container, env = container_of(job), environment(job, resources)
    args = container["args"]
    assert args[:4] == ["services", "setup-databases", "--admin-url", f"postgresql://{name}-rw:5432/postgres"]
    assert (env["PGUSER"], env["PGPASSWORD"]) == (
        fake_secret(f"{name}-superuser", "username"),
        fake_secret(f"{name}-superuser", "password"),
    )
    assert "--prefix" not in args  # coworking_<service>, the names the Deployments use
    assert args[4::3] == ["--password-file"] * len(APPS)
    files = dict(zip(args[5::3], args[6::3], strict=True))
    assert set(files) == set(APPS)
    pod = job["spec"]["template"]["spec"]
    (mount,) = container["volumeMounts"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    mounted = {
        f"{mount['mountPath']}/{item['path']}": (source["secret"]["name"], item["key"])
        for source in volume["projected"]["sources"]
        for item in source["secret"]["items"]
    }
    for service, path in files.items():
        assert mounted[path] == (f"coworking-db-{service}", "password")  # the Secret its Deployment reads
        deployment_env = environment(one(resources, "Deployment", service), resources)
        assert deployment_env["PGUSER"] == f"coworking_{service}"
        assert deployment_env["PGPASSWORD"] == fake_secret(f"coworking-db-{service}", "password")
    # only the Job reads the superuser's Secret
    readers = {
        w for w, d in workloads(resources).items() if any(f"{name}-superuser" == s for s, _ in secret_references([d]))
    }
    assert readers == {"setup-databases"}
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_its_own_broker_user_with_least_privilege(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    resources = rendered[overlay]
    (rabbitmq,) = of_kind(resources, RABBITMQ[1], RABBITMQ[0])
    users = of_kind(resources, RABBITMQ_USER[1], RABBITMQ_USER[0])
    permissions = of_kind(resources, RABBITMQ_PERMISSION[1], RABBITMQ_PERMISSION[0])
    topic_permissions = of_kind(resources, RABBITMQ_TOPIC_PERMISSION[1], RABBITMQ_TOPIC_PERMISSION[0])
    assert set(users) == {f"coworking-{name}" for name in APPS}
    for resource in [*users.values(), *permissions.values(), *topic_permissions.values()]:
        assert set(resource["spec"]) <= CRD_SPEC_FIELDS[(resource["apiVersion"], resource["kind"])]
        assert resource["spec"]["rabbitmqClusterReference"] == {"name": rabbitmq}
    for name in APPS:
        user = f"coworking-{name}"
        assert users[user]["spec"].get("tags", []) == []  # no management, no administrator
        expected = Topology().permissions(name)  # what test_least_privilege.py proves on a real broker
        granted = [p["spec"] for p in permissions.values() if p["spec"]["userReference"] == {"name": user}]
        assert granted == [
            {
                "vhost": "/",
                "userReference": {"name": user},
                "permissions": {"configure": expected.configure, "write": expected.write, "read": expected.read},
                "rabbitmqClusterReference": {"name": rabbitmq},
            }
        ]
        topics = [p["spec"] for p in topic_permissions.values() if p["spec"]["userReference"] == {"name": user}]
        assert {
            t["permissions"]["exchange"]: (t["permissions"]["write"], t["permissions"]["read"]) for t in topics
        } == (expected.topic)
        assert all(t["vhost"] == "/" for t in topics)
        # the Deployment connects as this user, and reads no other broker credentials
        refs = {s for s, _ in secret_references([one(resources, "Deployment", name)])}
        assert f"{user}-user-credentials" in refs
        assert not {s for s in refs if s.endswith(("-user-credentials", "-default-user"))} - {
            f"{user}-user-credentials"
        }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_setup_broker_job_declares_the_topology_as_the_administrator(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources = rendered[overlay]
    (rabbitmq,) = of_kind(resources, RABBITMQ[1], RABBITMQ[0])
    job = one(resources, "Job", "setup-broker")
    container = container_of(job)
    assert container["args"] == ["services", "setup-broker"]
    assert split_image(container["image"])[0].rsplit("/", 1)[-1] == IMAGE
    env = environment(job, resources)
    for var in list(os.environ):
        monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    amqp = URL(CommonSettings().amqp_url)
    admin = f"{rabbitmq}-default-user"
    assert (amqp.host, amqp.user, amqp.password) == (
        rabbitmq,
        fake_secret(admin, "username"),
        fake_secret(admin, "password"),
    )
    # only this Job reads the administrator's Secret
    readers = {w for w, d in workloads(resources).items() if admin in {s for s, _ in secret_references([d])}}
    assert readers == {"setup-broker"}
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("overlay", ["production", "dev"])
def test_postgres_has_connections_for_every_pod(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    resources = rendered[overlay]
    (cluster,) = of_kind(resources, CNPG[1], CNPG[0]).values()
    config = one(resources, "ConfigMap", "coworking-config")["data"]
    needed = sum(
        one(resources, "HorizontalPodAutoscaler", name)["spec"]["maxReplicas"]
        * (int(config[f"{name.upper()}_DB_POOL_MAX"]) + 2)  # the pool, the relay's LISTEN, a migration
        for name in APPS
    )
    assert needed <= int(cluster["spec"]["postgresql"]["parameters"]["max_connections"]) - 20


def test_external_db_is_production_without_the_cluster(rendered: dict[str, list[dict[str, Any]]]) -> None:
    def without_database(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for resource in copy.deepcopy(resources):
            if (resource["apiVersion"], resource["kind"]) == CNPG or resource["metadata"]["name"] == "setup-databases":
                continue
            if resource["kind"] == "Deployment":
                container = container_of(resource)
                container["env"] = [
                    v
                    for v in container["env"]
                    if v["name"] not in {"PGUSER", "PGPASSWORD"} and "DATABASE_URL" not in v["name"]
                ]
            out.append(resource)
        return out

    assert without_database(rendered["external-db"]) == without_database(rendered["production"])


# --- the README ----------------------------------------------------------------------------------------------------


def test_readme_says_how_to_deploy_and_what_to_watch() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < 60
    for needle in (
        "kubectl apply -k deploy/k8s/overlays/production",
        "exec -it deploy/accounts -- python -m services.accounts create-operator",
        "docker build -f deploy/Dockerfile",
        "advisory lock",
        "no migration Job",
        "/readyz",
        "python -m shared.ops dead-letters",
        'events_consumed_total{outcome="dead_lettered"}',
    ):
        assert needle in text, needle
    for overlay in OVERLAYS:
        assert f"overlays/{overlay}" in text
    collectors = [c for c in vars(shared.metrics).values() if isinstance(c, MetricWrapperBase | HttpMetrics)]
    metrics = {m.name for c in collectors for m in c.describe()}
    for metric in re.findall(r"`([a-z_]+)(?:\{[^}]*\})?`", text):
        if metric.endswith(("_total", "_seconds", "_backlog")):
            assert metric in metrics or f"{metric}_total" in metrics or metric.removesuffix("_total") in metrics, metric
