#!/usr/bin/env python3
"""Renders the kustomizations under deploy/kubernetes and checks them against what the Switchboard
binaries and images expect:

  - every image is switchboard:* (or postgres:* in postgres/);
  - every environment variable is one the nodes document (SWITCHBOARD_*, DATABASE_URL, RUST_LOG)
    or a POD_* downward-API variable (POSTGRES_*/PGDATA in postgres/);
  - ports agree: 7070 inter-node, 8080 http API, 9090 metrics, in containers, listen addresses,
    SWITCHBOARD_ADVERTISE, seeds, Services, probes and the Ingress;
  - seeds are headless Services (clusterIP None, publishNotReadyAddresses) on 7070;
  - probes use /healthz or /readyz (http: /readyz on 8080; others /healthz on 9090);
  - every Deployment has resource requests and limits, liveness and readiness probes, a PDB, and
    a termination grace longer than SWITCHBOARD_SHUTDOWN_GRACE_MS;
  - no Secret is rendered by the workloads, and the secret env files are git-ignored templates.

Renders with `kubectl kustomize` when kubectl is installed, else with a small built-in renderer of
the kustomize features these files use. Needs PyYAML (pip install pyyaml, or apt-get install
python3-yaml). Prints one line per check and `N passed, M failed`; exits non-zero on a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("check.py needs PyYAML: pip install pyyaml (or apt-get install python3-yaml)")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SERVICES = ["http", "database", "log", "reporting", "analytics"]
GRPC, HTTP, METRICS = 7070, 8080, 9090

# The variables the node binaries read (shared/src/config.rs, cookie.rs, telemetry.rs, and the
# service-specific ones), and those the manifests define for them through the downward API.
NODE_VARS = {
    "SWITCHBOARD_COOKIE", "SWITCHBOARD_COOKIE_FILE", "SWITCHBOARD_NODE_NAME", "SWITCHBOARD_LISTEN",
    "SWITCHBOARD_ADVERTISE", "SWITCHBOARD_SEEDS", "SWITCHBOARD_METRICS_LISTEN",
    "SWITCHBOARD_HTTP_LISTEN", "SWITCHBOARD_ADMIN_TOKEN", "SWITCHBOARD_ADMIN_TOKEN_FILE",
    "SWITCHBOARD_DATABASE_PASSWORD_FILE", "SWITCHBOARD_DATA_DIR",
    "SWITCHBOARD_LOG_FORMAT", "SWITCHBOARD_SHUTDOWN_GRACE_MS", "SWITCHBOARD_CONFIG",
    "SWITCHBOARD_HEARTBEAT_INTERVAL_MS", "SWITCHBOARD_HEARTBEAT_TIMEOUT_MS",
    "SWITCHBOARD_MAX_FRAME_BYTES", "SWITCHBOARD_LINK_QUEUE", "SWITCHBOARD_MAX_INBOUND_CALLS",
    "SWITCHBOARD_SEED_REFRESH_MS", "SWITCHBOARD_CALL_TIMEOUT_MS",
    "DATABASE_URL", "RUST_LOG",
}
POSTGRES_VARS = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "POSTGRES_INITDB_ARGS", "PGDATA"}
PROBE_PATHS = {"/healthz", "/readyz"}
# Keys of the secret templates whose values are secrets (and so must be placeholders there).
SECRET_KEYS = {"cookie", "admin-token", "database-url", "POSTGRES_PASSWORD"}


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, name: str, problems: list[str]) -> None:
        problems = list(dict.fromkeys(problems))  # each once, in order
        if problems:
            self.failed += 1
            print(f"FAILED  {name}")
            for p in problems:
                print(f"          - {p}")
        else:
            self.passed += 1
            print(f"ok      {name}")


# ---- rendering ---------------------------------------------------------------------------------

def kubectl() -> str | None:
    path = shutil.which("kubectl")
    if not path:
        return None
    try:
        subprocess.run([path, "kustomize", "--help"], capture_output=True, check=True, timeout=60)
    except (subprocess.SubprocessError, OSError):
        return None
    return path


def render(directory: Path) -> list[dict]:
    """The objects `kustomize build directory` makes."""
    tool = kubectl()
    if tool:
        out = subprocess.run([tool, "kustomize", str(directory)], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"kubectl kustomize {directory}: {out.stderr.strip()}")
        return [d for d in yaml.safe_load_all(out.stdout) if d]
    return builtin_render(directory)


def read_env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        pairs[key.strip()] = value
    return pairs


def builtin_render(directory: Path) -> list[dict]:
    """Enough of kustomize for these files: resources (files and directories), configMapGenerator
    and secretGenerator with envs (no hash suffix), labels, images (name/newName/newTag)."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "labels", "resources", "configMapGenerator", "secretGenerator",
             "generatorOptions", "images"}
    unknown = set(k) - known
    if unknown:
        raise RuntimeError(f"the built-in renderer does not know {sorted(unknown)}; install kubectl")
    objects: list[dict] = []
    for resource in k.get("resources", []):
        path = directory / resource
        if path.is_dir():
            objects += builtin_render(path)
        else:
            objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for kind, field in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for gen in k.get(field, []):
            data: dict[str, str] = {}
            for env in gen.get("envs", []):
                data.update(read_env_file(directory / env))
            obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": gen["name"]}, "data": data}
            if kind == "Secret":
                obj["type"] = "Opaque"
            objects.append(obj)
    for entry in k.get("labels", []):
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(entry.get("pairs", {}))
    for image in k.get("images", []):
        for container in all_containers(objects):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"
    return objects


# ---- helpers -----------------------------------------------------------------------------------

def pod_spec(obj: dict) -> dict | None:
    if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def all_containers(objects: list[dict]) -> list[dict]:
    out = []
    for obj in objects:
        spec = pod_spec(obj)
        if spec:
            out += spec.get("containers", []) + spec.get("initContainers", [])
    return out


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o.get("kind") == kind]


def name_of(obj: dict) -> str:
    return obj.get("metadata", {}).get("name", "?")


def port_of(address: str) -> int | None:
    m = re.search(r":(\d+)$", address.strip())
    return int(m.group(1)) if m else None


def configmaps(objects: list[dict]) -> dict[str, dict[str, str]]:
    return {name_of(c): c.get("data", {}) for c in of_kind(objects, "ConfigMap")}


def container_env(container: dict, cms: dict[str, dict[str, str]]) -> dict[str, str]:
    """The container's environment: envFrom ConfigMaps, then env (values, or <from ...>)."""
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            env.update(cms.get(src["configMapRef"]["name"], {}))
    for var in container.get("env", []):
        env[var["name"]] = var.get("value", "<valueFrom>")
    return env


def resolve_port(container: dict, port) -> int | None:
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ---- the checks --------------------------------------------------------------------------------

def check_workloads(c: Checks, objects: list[dict]) -> None:
    deployments = of_kind(objects, "Deployment")
    services = of_kind(objects, "Service")
    cms = configmaps(objects)
    by_component = {d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component"): d
                    for d in deployments}

    c.check("a Deployment per service (http, database, log, reporting, analytics)",
            [f"no Deployment for {s}" for s in SERVICES if s not in by_component])

    problems = []
    for container in all_containers(objects):
        image = container.get("image", "")
        if not re.fullmatch(r"switchboard:[\w.\-]+", image):
            problems.append(f"container {container['name']}: image {image!r} is not switchboard:*")
    c.check("every image is switchboard:*", problems)

    problems = []
    for d in deployments:
        for container in pod_spec(d)["containers"]:
            for var in container_env(container, cms):
                if var not in NODE_VARS and not var.startswith("POD_"):
                    problems.append(f"{name_of(d)}: {var} is not a documented variable")
    for name, data in cms.items():
        for var in data:
            if var not in NODE_VARS:
                problems.append(f"ConfigMap {name}: {var} is not a documented variable")
    c.check("every environment variable is a documented SWITCHBOARD_*/DATABASE_URL/RUST_LOG/POD_* one",
            problems)

    problems = []
    for service, d in by_component.items():
        spec = pod_spec(d)
        container = spec["containers"][0]
        env = container_env(container, cms)
        command = container.get("command", []) + container.get("args", [])
        if command[:1] != [f"switchboard-{service}"]:
            problems.append(f"{name_of(d)}: runs {command}, not switchboard-{service}")
        if env.get("SWITCHBOARD_NODE_NAME") != f"{service}@$(POD_NAME)":
            problems.append(f"{name_of(d)}: SWITCHBOARD_NODE_NAME is {env.get('SWITCHBOARD_NODE_NAME')!r}, not {service}@$(POD_NAME)")
        if env.get("SWITCHBOARD_ADVERTISE") != f"$(POD_IP):{GRPC}":
            problems.append(f"{name_of(d)}: SWITCHBOARD_ADVERTISE is {env.get('SWITCHBOARD_ADVERTISE')!r}, not $(POD_IP):{GRPC}")
        order = [v["name"] for v in container.get("env", [])]
        for var, field in (("POD_NAME", "metadata.name"), ("POD_IP", "status.podIP")):
            entry = next((v for v in container.get("env", []) if v["name"] == var), None)
            if not entry or entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != field:
                problems.append(f"{name_of(d)}: {var} is not the downward API's {field}")
            elif any(order.index(var) > order.index(user) for user in order
                     if user in ("SWITCHBOARD_NODE_NAME", "SWITCHBOARD_ADVERTISE")):
                problems.append(f"{name_of(d)}: {var} must come before the variables that use $({var})")
        if "SWITCHBOARD_COOKIE" not in env and "SWITCHBOARD_COOKIE_FILE" not in env:
            problems.append(f"{name_of(d)}: no SWITCHBOARD_COOKIE")
        cookie = next((v for v in container.get("env", []) if v["name"] == "SWITCHBOARD_COOKIE"), {})
        if cookie.get("valueFrom", {}).get("secretKeyRef", {}).get("name") != "switchboard-secrets":
            problems.append(f"{name_of(d)}: SWITCHBOARD_COOKIE does not come from the Secret switchboard-secrets")
        if service == "database":
            url = next((v for v in container.get("env", []) if v["name"] == "DATABASE_URL"), {})
            if url.get("valueFrom", {}).get("secretKeyRef", {}).get("name") != "switchboard-secrets":
                problems.append(f"{name_of(d)}: DATABASE_URL does not come from the Secret switchboard-secrets")
        if service == "http":
            token = next((v for v in container.get("env", []) if v["name"] == "SWITCHBOARD_ADMIN_TOKEN"), {})
            if token.get("valueFrom", {}).get("secretKeyRef", {}).get("name") != "switchboard-secrets":
                problems.append(f"{name_of(d)}: SWITCHBOARD_ADMIN_TOKEN does not come from the Secret switchboard-secrets")
    c.check("node names, advertised pod IPs and secrets come from the pod and switchboard-secrets", problems)

    problems = []
    for service, d in by_component.items():
        container = pod_spec(d)["containers"][0]
        env = container_env(container, cms)
        ports = {p["containerPort"] for p in container.get("ports", [])}
        expected = {GRPC, METRICS} | ({HTTP} if service == "http" else set())
        if ports != expected:
            problems.append(f"{name_of(d)}: container ports {sorted(ports)}, expected {sorted(expected)}")
        for var, port in (("SWITCHBOARD_LISTEN", GRPC), ("SWITCHBOARD_METRICS_LISTEN", METRICS)):
            if port_of(env.get(var, "")) != port:
                problems.append(f"{name_of(d)}: {var}={env.get(var)!r} is not on port {port}")
        if service == "http" and port_of(env.get("SWITCHBOARD_HTTP_LISTEN", "")) != HTTP:
            problems.append(f"{name_of(d)}: SWITCHBOARD_HTTP_LISTEN={env.get('SWITCHBOARD_HTTP_LISTEN')!r} is not on {HTTP}")
    c.check("ports: 7070 inter-node, 8080 http API, 9090 metrics in containers and listen addresses",
            problems)

    problems = []
    headless = {name_of(s): s for s in services if s["spec"].get("clusterIP") == "None"}
    seed_sets = set()
    for service, d in by_component.items():
        seeds = container_env(pod_spec(d)["containers"][0], cms).get("SWITCHBOARD_SEEDS", "")
        seed_sets.add(seeds)
        seeded = set()
        for seed in filter(None, (s.strip() for s in seeds.split(","))):
            host, _, port = seed.rpartition(":")
            if port != str(GRPC):
                problems.append(f"{name_of(d)}: seed {seed} is not on port {GRPC}")
            svc = headless.get(host)
            if not svc:
                problems.append(f"{name_of(d)}: seed host {host} is not a headless Service")
                continue
            if not svc["spec"].get("publishNotReadyAddresses"):
                problems.append(f"Service {host}: publishNotReadyAddresses is not true")
            if not any(p.get("port") == GRPC and resolve_port(pod_spec(d)["containers"][0], p.get("targetPort", p.get("port"))) == GRPC
                       for p in svc["spec"].get("ports", [])):
                problems.append(f"Service {host}: no port {GRPC} reaching the pods' {GRPC}")
            for target in deployments:
                if selects(svc["spec"].get("selector", {}), target["spec"]["template"]["metadata"]["labels"]):
                    seeded.add(target["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component"))
        missing = set(SERVICES) - seeded
        if missing:
            problems.append(f"{name_of(d)}: the seeds reach no pods of {sorted(missing)}")
    if len(seed_sets) > 1:
        problems.append("the Deployments have different SWITCHBOARD_SEEDS")
    c.check("seeds are headless Services (publishNotReadyAddresses) on 7070 covering every service", problems)

    problems = []
    for service, d in by_component.items():
        container = pod_spec(d)["containers"][0]
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = container.get(kind)
            if probe is None:
                if kind != "startupProbe":
                    problems.append(f"{name_of(d)}: no {kind}")
                continue
            get = probe.get("httpGet")
            if not get:
                problems.append(f"{name_of(d)}: {kind} is not an httpGet")
                continue
            path, port = get.get("path"), resolve_port(container, get.get("port"))
            if path not in PROBE_PATHS:
                problems.append(f"{name_of(d)}: {kind} path {path} is not /healthz or /readyz")
            want = (HTTP if service == "http" else METRICS)
            if port != want:
                problems.append(f"{name_of(d)}: {kind} on port {port}, expected {want}")
            if path == "/readyz" and service != "http":
                problems.append(f"{name_of(d)}: only the http node serves /readyz")
        if service == "http" and container.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
            problems.append(f"{name_of(d)}: the http readiness probe should be /readyz")
        if container.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
            problems.append(f"{name_of(d)}: the liveness probe should be /healthz")
    c.check("probes: /readyz and /healthz on 8080 for http, /healthz on 9090 for the others", problems)

    problems = []
    pdbs = of_kind(objects, "PodDisruptionBudget")
    for d in deployments:
        spec = pod_spec(d)
        labels = d["spec"]["template"]["metadata"]["labels"]
        for container in spec["containers"]:
            res = container.get("resources", {})
            for part in ("requests", "limits"):
                for what in ("cpu", "memory"):
                    if what not in res.get(part, {}):
                        problems.append(f"{name_of(d)}/{container['name']}: no resources.{part}.{what}")
        if not any(selects(p["spec"].get("selector", {}).get("matchLabels", {}), labels) for p in pdbs):
            problems.append(f"{name_of(d)}: no PodDisruptionBudget selects its pods")
        grace_ms = int(container_env(spec["containers"][0], cms).get("SWITCHBOARD_SHUTDOWN_GRACE_MS", "10000"))
        period = spec.get("terminationGracePeriodSeconds", 30)
        if period * 1000 <= grace_ms:
            problems.append(f"{name_of(d)}: terminationGracePeriodSeconds {period} does not exceed the node's grace {grace_ms} ms")
    for p in pdbs:
        spec = p["spec"]
        if spec.get("minAvailable") in (1, "100%") or spec.get("maxUnavailable") in (0, "0%"):
            problems.append(f"PDB {name_of(p)} would block every eviction of a single-replica service")
    c.check("every Deployment has resources, a PDB and a termination grace above the node's", problems)

    # The http Deployment has a (non-headless) Service in front of it: its selector matches the
    # pods the Deployment makes and no other Deployment's, and each of its ports reaches the
    # container's API port.
    problems = []
    http = by_component["http"]
    http_labels = http["spec"]["template"]["metadata"].get("labels", {})
    api = [s for s in services if s["spec"].get("clusterIP") != "None"
           and selects(s["spec"].get("selector", {}), http_labels)]
    if not api:
        problems.append(f"no ClusterIP Service selects the pods of {name_of(http)} (labels {http_labels})")
    http_container = pod_spec(http)["containers"][0]
    for s in api:
        selector = s["spec"]["selector"]
        for other in deployments:
            if other is not http and selects(selector, other["spec"]["template"]["metadata"].get("labels", {})):
                problems.append(f"Service {name_of(s)}: its selector {selector} also selects the pods of {name_of(other)}")
        if not s["spec"].get("ports"):
            problems.append(f"Service {name_of(s)}: no ports")
        for p in s["spec"].get("ports", []):
            if resolve_port(http_container, p.get("targetPort", p.get("port"))) != HTTP:
                problems.append(f"Service {name_of(s)}: port {p.get('port')} (targetPort {p.get('targetPort')}) "
                                f"does not reach the container's API port {HTTP}")
    c.check("the http Deployment has a Service in front of it, on its API port 8080", problems)

    problems = []
    for ing in of_kind(objects, "Ingress"):
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]
                target = next((s for s in api if name_of(s) == backend["name"]), None)
                if not target:
                    problems.append(f"Ingress {name_of(ing)}: backend {backend['name']} is not the http Service")
                    continue
                port = backend.get("port", {})
                if not any(p.get("name") == port.get("name") or p.get("port") == port.get("number")
                           for p in target["spec"]["ports"]):
                    problems.append(f"Ingress {name_of(ing)}: backend port {port} is not a port of {backend['name']}")
    if not of_kind(objects, "Ingress"):
        problems.append("no example Ingress")
    c.check("the Ingress reaches the http Service", problems)

    problems = []
    targets = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objects, "HorizontalPodAutoscaler")}
    for service in ("http", "database"):
        d = by_component.get(service)
        if d and name_of(d) not in targets:
            problems.append(f"no HorizontalPodAutoscaler for {name_of(d)}")
        if d and "replicas" in d["spec"]:
            problems.append(f"{name_of(d)}: sets replicas although an HPA owns the count")
    for t in targets:
        if t not in {name_of(d) for d in deployments}:
            problems.append(f"an HPA targets {t}, which is not a Deployment")
    c.check("HPAs for http and database", problems)

    c.check("the workloads render no Secret (secrets are not committed)",
            [f"Secret {name_of(s)} is rendered" for s in of_kind(objects, "Secret")])


def check_postgres(c: Checks, objects: list[dict]) -> None:
    problems = []
    sts = of_kind(objects, "StatefulSet")
    if len(sts) != 1:
        problems.append(f"{len(sts)} StatefulSets, expected one")
    for container in all_containers(objects):
        if not re.fullmatch(r"postgres:[\w.\-]+", container.get("image", "")):
            problems.append(f"image {container.get('image')!r} is not postgres:*")
        for var in container_env(container, {}):
            if var not in POSTGRES_VARS:
                problems.append(f"{var} is not a variable of the postgres image")
        for src in container.get("envFrom", []):
            if src.get("secretRef", {}).get("name") != "switchboard-postgres":
                problems.append(f"envFrom {src} is not the Secret switchboard-postgres")
        for kind in ("readinessProbe", "livenessProbe"):
            if "pg_isready" not in " ".join(container.get(kind, {}).get("exec", {}).get("command", [])):
                problems.append(f"{kind} does not run pg_isready")
        res = container.get("resources", {})
        if not res.get("requests") or not res.get("limits"):
            problems.append("no resource requests and limits")
    if not any(s["spec"].get("ports", [{}])[0].get("port") == 5432 and name_of(s) == "postgres"
               for s in of_kind(objects, "Service")):
        problems.append("no Service postgres on 5432 (the host in database-url)")
    if not of_kind(objects, "PodDisruptionBudget"):
        problems.append("no PodDisruptionBudget")
    if of_kind(objects, "Secret"):
        problems.append("renders a Secret")
    c.check("postgres/: one postgres:* StatefulSet, Service postgres:5432, pg_isready probes, PDB", problems)


def check_secrets(c: Checks) -> None:
    directory = HERE / "secrets"
    problems = []
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    generated = {}
    for gen in k.get("secretGenerator", []):
        for env in gen.get("envs", []):
            example = directory / f"{env}.example"
            if not example.exists():
                problems.append(f"{env} has no template {example.name}")
                continue
            generated[gen["name"]] = set(read_env_file(example))
            for key, value in read_env_file(example).items():
                if key in SECRET_KEYS and "CHANGE-ME" not in value:
                    problems.append(f"{example.name}: {key} is not a CHANGE-ME placeholder")
            ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", str(directory / env)])
            if ignored.returncode != 0:
                problems.append(f"{directory.relative_to(REPO) / env} is not git-ignored")
            tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "--error-unmatch", str(directory / env)],
                                     capture_output=True)
            if tracked.returncode == 0:
                problems.append(f"{directory.relative_to(REPO) / env} is committed")
    if generated.get("switchboard-secrets") != {"cookie", "admin-token", "database-url"}:
        problems.append(f"switchboard-secrets keys are {sorted(generated.get('switchboard-secrets', []))}")
    if generated.get("switchboard-postgres") != {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}:
        problems.append(f"switchboard-postgres keys are {sorted(generated.get('switchboard-postgres', []))}")
    if not k.get("generatorOptions", {}).get("disableNameSuffixHash"):
        problems.append("generated Secret names must be fixed (disableNameSuffixHash), the workloads name them")
    # The kustomization renders from the templates (copied to a scratch directory).
    if not problems:
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch) / "secrets"
            shutil.copytree(directory, copy)
            for env in (e for g in k["secretGenerator"] for e in g["envs"]):
                shutil.copy(copy / f"{env}.example", copy / env)
            try:
                secrets = {name_of(s) for s in of_kind(render(copy), "Secret")}
            except RuntimeError as e:
                secrets = set()
                problems.append(str(e))
            if secrets != {"switchboard-secrets", "switchboard-postgres"}:
                problems.append(f"renders Secrets {sorted(secrets)}")
    c.check("secrets/: generated from git-ignored env files; templates hold placeholders only", problems)


def check_workload_secret_keys(c: Checks, objects: list[dict]) -> None:
    example = read_env_file(HERE / "secrets" / "switchboard.env.example")
    problems = []
    for container in all_containers(objects):
        for var in container.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["name"] == "switchboard-secrets" and ref["key"] not in example:
                problems.append(f"{container['name']}: {var['name']} reads key {ref['key']}, which the template lacks")
    c.check("every secret key the workloads read is in secrets/switchboard.env.example", problems)


def main() -> int:
    c = Checks()
    tool = kubectl()
    print(f"rendering with {'kubectl kustomize (' + tool + ')' if tool else 'the built-in renderer (no kubectl)'}")
    rendered = {}
    for name, directory in (("workloads", HERE), ("postgres", HERE / "postgres")):
        try:
            rendered[name] = render(directory)
            c.check(f"{directory.relative_to(REPO)} renders", [])
        except (RuntimeError, OSError, yaml.YAMLError) as e:
            c.check(f"{directory.relative_to(REPO)} renders", [str(e)])
    if "workloads" in rendered:
        check_workloads(c, rendered["workloads"])
        check_workload_secret_keys(c, rendered["workloads"])
    if "postgres" in rendered:
        check_postgres(c, rendered["postgres"])
    check_secrets(c)
    print(f"{c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
