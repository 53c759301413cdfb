"""The Kubernetes manifests: every kustomization builds, every object passes the Kubernetes API
schema (with unknown fields rejected), the validator really rejects broken objects, and the ports,
paths and names of sidecar.yaml, the Deployment, the Service and the Dockerfile agree."""
import copy
import json
import re
import shlex

import pytest
import yaml

from conftest import (DOCKERFILE, MANIFESTS, ROOT, find, kustomizations, memory_bytes, render, run,
                      validate_k8s)

BASE = "base"
CLASSIC = "overlays/classic-sidecar"
CERT_MANAGER = "overlays/cert-manager"
PROMETHEUS = "overlays/prometheus"
CONFIG_PATH = "/etc/sidecar/sidecar.yaml"  # where the images' default commands read the config


def project_version():
    text = (ROOT / "CMakeLists.txt").read_text()
    return re.search(r"project\(sidecar VERSION ([0-9.]+)", text).group(1)


def pod_spec(objects):
    return find(objects, "Deployment", "nginx")["spec"]["template"]["spec"]


def container(spec, name, where=("initContainers", "containers")):
    for field in where:
        for c in spec.get(field, []):
            if c["name"] == name:
                return c
    raise AssertionError(f"no container {name}")


def sidecar_config(objects):
    cm = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("sidecar-config")]
    assert len(cm) == 1
    return cm[0], yaml.safe_load(cm[0]["data"]["sidecar.yaml"])


def host_port(address):
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def dockerfile_json(instruction, stage):
    """The JSON-form argument of INSTRUCTION in the Dockerfile stage named STAGE."""
    current = None
    for line in DOCKERFILE.read_text().splitlines():
        m = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.I)
        if m:
            current = m.group(1)
        elif current == stage and line.upper().startswith(instruction + " "):
            return json.loads(line[len(instruction):])
    raise AssertionError(f"no {instruction} in stage {stage}")


# ---- building and schema validation ----------------------------------------------------------

def test_the_expected_kustomizations_exist():
    assert set(kustomizations()) == {BASE, CLASSIC, CERT_MANAGER, PROMETHEUS}
    for name in ("cert-manager", "prometheus"):
        component = yaml.safe_load((MANIFESTS / f"components/{name}/kustomization.yaml").read_text())
        assert component["kind"] == "Component"


@pytest.mark.parametrize("name", kustomizations())
def test_kustomization_builds(name):
    text, objects = render(name)
    assert objects, f"{name} rendered nothing"


@pytest.mark.parametrize("name", kustomizations())
def test_every_rendered_object_passes_the_api_schema(name, node_modules, tmp_path):
    text, _ = render(name)
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(text)
    r = validate_k8s(rendered)
    assert r.returncode == 0, r.stdout + r.stderr


BAD_OBJECTS = {
    "containers is a string": (
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": "x"}},
        "containers must be array"),
    "port is not a number": (
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
         "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": "eighty"}]}]}},
        "containerPort must be integer"),
    "container without a name": (
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"image": "i"}]}},
        "containers/0 must have required property name"),
    "misspelt field": (
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
         "spec": {"containers": [{"name": "c", "image": "i", "restartpolicy": "Always"}]}},
        'unknown field ".spec.containers[0].restartpolicy"'),
    "bad enum value": (
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
         "spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TPC"}]}},
        "allowed values"),
    "unknown kind": (
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}},
        "no schema"),
    "cert-manager field misspelt": (
        {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "c"},
         "spec": {"secretName": "s", "issuerRef": {"name": "i"}, "dnsName": ["x"]}},
        'unknown field ".spec.dnsName"'),
    "PodMonitor field misspelt": (
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": "m"},
         "spec": {"selector": {}, "podMetricsEndpoints": [{"port": "admin", "intervl": "30s"}]}},
        'unknown field ".spec.podMetricsEndpoints[0].intervl"'),
}


@pytest.mark.parametrize("case", list(BAD_OBJECTS))
def test_validator_rejects_a_broken_object(case, node_modules, tmp_path):
    obj, expected = BAD_OBJECTS[case]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(obj))
    r = validate_k8s(path)
    assert r.returncode == 1, f"the validator accepted: {obj}\n{r.stdout}"
    assert expected in r.stdout


MUTATIONS = {
    # A misspelt restartPolicy would make the proxy an init container that never ends.
    "restartPolicy misspelt": (
        lambda spec: spec["initContainers"][1].__setitem__(
            "restartpolicy", spec["initContainers"][1].pop("restartPolicy")),
        "restartpolicy"),
    "probe port as a list": (
        lambda spec: spec["initContainers"][1]["readinessProbe"]["httpGet"].__setitem__("port", [9901]),
        "readinessProbe/httpGet/port"),
    "capabilities as a string": (
        lambda spec: spec["initContainers"][0]["securityContext"]["capabilities"].__setitem__("add", "NET_ADMIN"),
        "capabilities/add must be array"),
    "secret volume field misspelt": (
        lambda spec: spec["volumes"][1]["secret"].__setitem__("secretname", "x"),
        "secretname"),
}


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_validator_rejects_a_broken_copy_of_the_base(case, node_modules, tmp_path):
    """The same checks on the real Deployment: a mutated copy fails, the original passes."""
    _, objects = render(BASE)
    deployment = copy.deepcopy(find(objects, "Deployment", "nginx"))
    mutate, expected = MUTATIONS[case]
    mutate(deployment["spec"]["template"]["spec"])
    path = tmp_path / "mutated.yaml"
    path.write_text(yaml.safe_dump(deployment))
    r = validate_k8s(path)
    assert r.returncode == 1, f"the validator accepted the mutation {case!r}"
    assert expected in r.stdout


# ---- the base --------------------------------------------------------------------------------

def test_base_renders_the_walkthrough_objects():
    _, objects = render(BASE)
    kinds = sorted((o["kind"], o["metadata"]["name"].split("-")[0]) for o in objects)
    assert kinds == [("ConfigMap", "sidecar"), ("Deployment", "nginx"), ("NetworkPolicy", "nginx"),
                     ("Service", "nginx")]


def test_no_key_material_in_any_rendering():
    for name in kustomizations():
        text, objects = render(name)
        assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text, name
        assert not [o for o in objects if o["kind"] == "Secret"], f"{name} bakes a Secret in"


def test_app_container_is_the_walkthroughs_unchanged():
    for name in kustomizations():
        nginx = container(pod_spec(render(name)[1]), "nginx", ("containers",))
        assert nginx == {"image": "nginx", "name": "nginx",
                         "ports": [{"containerPort": 80, "protocol": "TCP"}]}, name


def test_native_sidecar_order_and_restart_policy():
    spec = pod_spec(render(BASE)[1])
    assert [c["name"] for c in spec["initContainers"]] == ["init-networking", "proxy"]
    assert "restartPolicy" not in spec["initContainers"][0], "init-networking must run to completion"
    assert spec["initContainers"][1]["restartPolicy"] == "Always"
    assert [c["name"] for c in spec["containers"]] == ["nginx"]


def test_init_networking_has_only_the_capabilities_iptables_needs():
    init = container(pod_spec(render(BASE)[1]), "init-networking")
    sc = init["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    assert sc.get("privileged", False) is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["runAsUser"] == 0
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert init["image"] == f"sidecar-init:{project_version()}"
    assert "command" not in init and "args" not in init, "the image's entrypoint is the command"


def test_proxy_container_is_locked_down():
    proxy = container(pod_spec(render(BASE)[1]), "proxy")
    sc = proxy["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert proxy["image"] == f"sidecar:{project_version()}"
    assert "command" not in proxy and "args" not in proxy, "the image's CMD is the command"


def test_proxy_resources_are_set():
    proxy = container(pod_spec(render(BASE)[1]), "proxy")
    res = proxy["resources"]
    assert memory_bytes(res["limits"]["memory"]) >= 2 * memory_bytes(res["requests"]["memory"])
    assert res["requests"]["cpu"]


def test_probes_aim_at_the_admin_endpoint():
    proxy = container(pod_spec(render(BASE)[1]), "proxy")
    for probe in ("startupProbe", "readinessProbe"):
        assert proxy[probe]["httpGet"]["path"] == "/readyz", probe
    assert proxy["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_certificate_is_a_mounted_tls_secret():
    _, objects = render(BASE)
    spec = pod_spec(objects)
    tls = [v for v in spec["volumes"] if v["name"] == "tls"][0]
    assert tls["secret"]["secretName"] == "sidecar-tls"
    assert tls["secret"]["defaultMode"] == 0o440
    assert spec["securityContext"]["fsGroup"] == 65532, "the proxy's group must read the 0440 key"
    mounts = {m["mountPath"]: m for m in container(spec, "proxy")["volumeMounts"]}
    assert mounts["/etc/sidecar/tls"]["name"] == "tls" and mounts["/etc/sidecar/tls"]["readOnly"]
    assert not any(m["name"] == "tls" for m in container(spec, "init-networking")["volumeMounts"])


def test_config_volume_is_the_generated_configmap():
    _, objects = render(BASE)
    cm, _ = sidecar_config(objects)
    assert re.fullmatch(r"sidecar-config-[a-z0-9]{10}", cm["metadata"]["name"]), "hash suffix expected"
    assert cm["data"]["sidecar.yaml"] == (MANIFESTS / "base/sidecar.yaml").read_text()
    spec = pod_spec(objects)
    config = [v for v in spec["volumes"] if v["name"] == "config"][0]
    assert config["configMap"]["name"] == cm["metadata"]["name"]


def test_service_is_the_walkthroughs():
    _, objects = render(BASE)
    svc = find(objects, "Service", "nginx")
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    labels = find(objects, "Deployment", "nginx")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()


# ---- cross-references between sidecar.yaml, the Pod, the Service and the images -------------

@pytest.mark.parametrize("name", kustomizations())
def test_ports_agree(name):
    _, objects = render(name)
    _, cfg = sidecar_config(objects)
    spec = pod_spec(objects)
    proxy = container(spec, "proxy")
    nginx = container(spec, "nginx", ("containers",))
    svc = find(objects, "Service", "nginx")

    redirected = {r["port"]: r["listener"] for r in cfg["redirect"]["inbound"]}
    listeners = {l["name"]: l for l in cfg["listeners"]}
    app_ports = {p["containerPort"] for p in nginx["ports"]}
    proxy_ports = {p["containerPort"] for p in proxy["ports"]}

    # Service targetPort == a redirected port == the app's containerPort.
    for port in svc["spec"]["ports"]:
        assert port["targetPort"] in redirected, "the Service's port must go through the proxy"
        assert port["targetPort"] in app_ports
    # Every redirect names a listener whose port the proxy container declares, on all addresses.
    for port, listener in redirected.items():
        assert listener in listeners, f"redirect of {port} names unknown listener {listener}"
        host, lport = host_port(listeners[listener]["listen"])
        assert lport in proxy_ports, f"listener {listener} port {lport} not declared by the proxy"
        assert host in ("0.0.0.0", "::"), "REDIRECT never reaches a loopback-only listener"
        assert "tls" in listeners[listener], "the redirected port must be served over TLS"
    # Every listener's upstream is the app, on loopback.
    for listener in listeners.values():
        uhost, uport = host_port(listener["upstream"]["address"])
        assert uhost == "127.0.0.1" and uport in app_ports

    # Probes hit the admin port; the admin port is reachable from kubelet and never captured.
    ahost, aport = host_port(cfg["admin"]["listen"])
    assert cfg["admin"].get("enabled", True)
    assert ahost in ("0.0.0.0", "::"), "kubelet probes the Pod IP"
    assert aport in proxy_ports
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert proxy[probe]["httpGet"]["port"] == aport, probe
    assert aport not in redirected
    assert aport not in {host_port(l["listen"])[1] for l in listeners.values()}

    # Other Pods may reach the redirected ports only, not the admin endpoint (POST /shutdown).
    policy = find(objects, "NetworkPolicy", "nginx")
    allowed = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert allowed == set(redirected)
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= \
        find(objects, "Deployment", "nginx")["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("name", kustomizations())
def test_paths_agree(name):
    _, objects = render(name)
    cm, cfg = sidecar_config(objects)
    spec = pod_spec(objects)
    volumes = {v["name"]: v for v in spec["volumes"]}

    def mounted_file(c, path):
        """(volume, key) that serves PATH inside container C."""
        best = None
        for m in c["volumeMounts"]:
            prefix = m["mountPath"].rstrip("/") + "/"
            if path.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
                best = (prefix, m["name"])
        assert best, f"{path} is on no volume of {c['name']}"
        return volumes[best[1]], path[len(best[0]):]

    # The images read /etc/sidecar/sidecar.yaml: the ConfigMap's key must be there in both.
    assert dockerfile_json("CMD", "proxy") == ["run", "-c", CONFIG_PATH]
    assert dockerfile_json("ENTRYPOINT", "init")[-2:] == ["-c", CONFIG_PATH]
    for c in ("proxy", "init-networking"):
        volume, key = mounted_file(container(spec, c), CONFIG_PATH)
        assert volume["configMap"]["name"] == cm["metadata"]["name"] and key == "sidecar.yaml", c

    # The certificate and key come from the kubernetes.io/tls Secret's tls.crt and tls.key.
    for listener in cfg["listeners"]:
        tls = listener.get("tls")
        if not tls:
            continue
        for field, expected_key in (("certificate", "tls.crt"), ("private_key", "tls.key")):
            volume, key = mounted_file(container(spec, "proxy"), tls[field])
            assert "secret" in volume, f"{field} must come from a Secret volume"
            assert key == expected_key


@pytest.mark.parametrize("name", kustomizations())
def test_drain_fits_in_the_grace_period(name):
    _, objects = render(name)
    _, cfg = sidecar_config(objects)
    drain = cfg.get("drain_timeout", "20s")
    assert drain.endswith("s") and drain[:-1].isdigit()
    assert int(drain[:-1]) < pod_spec(objects).get("terminationGracePeriodSeconds", 30)


# ---- the overlays ----------------------------------------------------------------------------

def test_classic_overlay_moves_the_proxy_into_containers():
    base = pod_spec(render(BASE)[1])
    classic = pod_spec(render(CLASSIC)[1])
    assert [c["name"] for c in classic["initContainers"]] == ["init-networking"]
    assert [c["name"] for c in classic["containers"]] == ["proxy", "nginx"]
    expected = copy.deepcopy(container(base, "proxy"))
    del expected["restartPolicy"]
    assert classic["containers"][0] == expected, "the classic proxy must be the native one, as is"
    assert classic["initContainers"][0] == base["initContainers"][0]


def test_cert_manager_overlay_issues_the_mounted_secret():
    _, objects = render(CERT_MANAGER)
    cert = find(objects, "Certificate", "sidecar-tls")
    spec = pod_spec(objects)
    tls = [v for v in spec["volumes"] if v["name"] == "tls"][0]
    assert cert["spec"]["secretName"] == tls["secret"]["secretName"]
    issuer = cert["spec"]["issuerRef"]
    find(objects, issuer["kind"], issuer["name"])
    _, base_objects = render(BASE)
    assert len(objects) == len(base_objects) + 2


def admin_port(objects):
    _, config = sidecar_config(objects)
    return host_port(config["admin"]["listen"])[1]


def test_prometheus_annotations_aim_at_the_metrics_endpoint():
    objects = render(BASE)[1]
    annotations = find(objects, "Deployment", "nginx")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(admin_port(objects))
    assert annotations["prometheus.io/path"] == "/metrics"


def test_prometheus_overlay_scrapes_the_admin_port():
    _, objects = render(PROMETHEUS)
    _, base_objects = render(BASE)
    assert len(objects) == len(base_objects) + 2
    monitor = find(objects, "PodMonitor", "sidecar")
    labels = find(objects, "Deployment", "nginx")["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    ports = {p["name"]: p["containerPort"] for p in container(pod_spec(objects), "proxy")["ports"]}
    assert ports[endpoint["port"]] == admin_port(objects)
    policy = find(objects, "NetworkPolicy", "nginx-metrics")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": admin_port(objects)}]


# ---- the config itself, checked by the binary ------------------------------------------------

def config_with_local_certs(certs, tmp_path):
    text = (MANIFESTS / "base/sidecar.yaml").read_text()
    assert "/etc/sidecar/tls/" in text
    path = tmp_path / "sidecar.yaml"
    path.write_text(text.replace("/etc/sidecar/tls/", f"{certs}/"))
    return path


def test_base_config_passes_check_config(static_bin, certs, tmp_path):
    path = config_with_local_certs(certs, tmp_path)
    r = run([static_bin, "check-config", "-c", path])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok" in r.stdout


def test_check_config_rejects_the_config_without_its_certificates(static_bin, tmp_path):
    """The check above is real: without the Secret's files the same config fails."""
    path = tmp_path / "sidecar.yaml"
    path.write_text((MANIFESTS / "base/sidecar.yaml").read_text().replace("/etc/sidecar/tls/", f"{tmp_path}/none/"))
    r = run([static_bin, "check-config", "-c", path])
    assert r.returncode == 1
    assert "sidecar.yaml:" in r.stderr


def test_base_config_redirect_plan(static_bin, tmp_path):
    """init-net's dry run of the shipped config: port 80 to 8443, the admin port left alone."""
    path = tmp_path / "sidecar.yaml"
    path.write_text((MANIFESTS / "base/sidecar.yaml").read_text())
    r = run([static_bin, "init-net", "apply", "--dry-run", "-c", path])
    assert r.returncode == 0, r.stdout + r.stderr
    rules = r.stdout
    assert re.search(r"--dport 80\b.*--to-ports 8443\b", rules), rules
    assert not re.search(r"--dport 9901\b.*REDIRECT", rules), rules
    assert "warning" not in r.stderr.lower(), r.stderr
    print(shlex.join(["init-net", "apply", "--dry-run"]) + "\n" + rules)
