#!/usr/bin/env python3
"""Checks what schema validation cannot see in rendered tapwire manifests.

kubernetes-validate checks each object on its own; this checks the objects against each
other and against tapwire's own rules: every name a pod refers to (volume, port, ConfigMap,
Secret, claim, service account, $(VAR) in args) exists, every selector selects something,
every object is in the tapwire namespace, the agent keeps its documented capability set,
and a deployable overlay says where the collector's payloads go.

Usage: check_references.py [--overlay] FILE...   (exit status 1 on any problem)
"""

import re
import sys

import yaml

NAMESPACE = "tapwire"
CLUSTER_SCOPED = {"Namespace", "PriorityClass", "ClusterRole", "ClusterRoleBinding"}
WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet"}
# Secrets the user creates (docs/deployment.md); nothing in the repository holds them.
USER_SECRETS = {
    "tapwire-token",
    "tapwire-ca",
    "tapwire-collector-tls",
    "tapwire-database",
    "tapwire-s3",
    "tapwire-agent-tls",
}
# docs/deployment.md explains each of these; keep both in step.
AGENT_CAPABILITIES = {"BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE", "SYS_RESOURCE", "DAC_READ_SEARCH"}
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


class Checker:
    """Collects problems for one rendered file."""

    def __init__(self, name, docs, overlay):
        self.name = name
        self.docs = docs
        self.overlay = overlay
        self.problems = []
        self.by_kind = {}
        for doc in docs:
            self.by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc

    def problem(self, obj, message):
        self.problems.append(f"{self.name}: {obj['kind']}/{obj['metadata']['name']}: {message}")

    def names(self, kind):
        return set(self.by_kind.get(kind, {}))

    def pod_templates(self):
        for kind in WORKLOADS:
            for obj in self.by_kind.get(kind, {}).values():
                yield obj, obj["spec"]["template"]

    def selected_templates(self, selector):
        """Pod templates whose labels satisfy a matchLabels-style selector."""
        if not selector:
            return []
        return [
            (obj, tpl)
            for obj, tpl in self.pod_templates()
            if all(tpl["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
        ]

    def run(self):
        for doc in self.docs:
            self.check_namespace(doc)
        for obj, tpl in self.pod_templates():
            self.check_pod(obj, tpl)
        for svc in self.by_kind.get("Service", {}).values():
            self.check_service(svc)
        for pdb in self.by_kind.get("PodDisruptionBudget", {}).values():
            if not self.selected_templates(pdb["spec"]["selector"].get("matchLabels")):
                self.problem(pdb, "selects no pods")
        for policy in self.by_kind.get("NetworkPolicy", {}).values():
            self.check_network_policy(policy)
        self.check_agent()
        if self.overlay:
            self.check_collector_storage()
        return self.problems

    def check_namespace(self, doc):
        if doc["kind"] in CLUSTER_SCOPED:
            return
        if doc["metadata"].get("namespace") != NAMESPACE:
            self.problem(doc, f"not in namespace {NAMESPACE}")

    def config_map_keys(self, name):
        cm = self.by_kind.get("ConfigMap", {}).get(name)
        return set(cm.get("data", {})) if cm else set()

    def check_pod(self, obj, tpl):
        spec = tpl["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in obj["spec"].get("volumeClaimTemplates", [])}
        sa = spec.get("serviceAccountName")
        if sa and sa not in self.names("ServiceAccount"):
            self.problem(obj, f"service account {sa} is not defined")
        for vol in volumes.values():
            if "configMap" in vol and vol["configMap"]["name"] not in self.names("ConfigMap"):
                self.problem(obj, f"volume {vol['name']}: ConfigMap {vol['configMap']['name']} is not defined")
            if "secret" in vol:
                self.check_secret(obj, vol["secret"]["secretName"])
            if "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                if claim not in self.names("PersistentVolumeClaim"):
                    self.problem(obj, f"volume {vol['name']}: claim {claim} is not defined")
        ports = set()
        for container in spec.get("initContainers", []) + spec["containers"]:
            ports |= self.check_container(obj, container, set(volumes) | claims)
        annotated = tpl["metadata"].get("annotations", {}).get("prometheus.io/port")
        if annotated and int(annotated) not in {p for p in ports if isinstance(p, int)}:
            self.problem(obj, f"prometheus.io/port {annotated} is no container port")

    def check_secret(self, obj, name):
        if name not in USER_SECRETS and name not in self.names("Secret"):
            self.problem(obj, f"Secret {name} is neither defined nor a documented user secret")

    def check_container(self, obj, container, volume_names):
        """Checks one container; returns its port names and numbers."""
        where = f"container {container['name']}"
        env_names = set()
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                name = source["configMapRef"]["name"]
                if name not in self.names("ConfigMap"):
                    self.problem(obj, f"{where}: ConfigMap {name} is not defined")
                env_names |= self.config_map_keys(name)
            if "secretRef" in source:
                self.check_secret(obj, source["secretRef"]["name"])
        for var in container.get("env", []):
            env_names.add(var["name"])
            ref = var.get("valueFrom", {})
            if "secretKeyRef" in ref:
                self.check_secret(obj, ref["secretKeyRef"]["name"])
            if "configMapKeyRef" in ref:
                key_ref = ref["configMapKeyRef"]
                if key_ref["key"] not in self.config_map_keys(key_ref["name"]):
                    self.problem(obj, f"{where}: ConfigMap key {key_ref['name']}/{key_ref['key']} is not defined")
        # An unresolved $(VAR) reaches the program as literal text: catch typos here.
        for arg in container.get("command", []) + container.get("args", []):
            for var in VAR_REF.findall(arg):
                if var not in env_names:
                    self.problem(obj, f"{where}: argument {arg!r} refers to undefined ${var}")
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in volume_names:
                self.problem(obj, f"{where}: mount {mount['name']} has no volume")
        ports = set()
        for port in container.get("ports", []):
            ports.add(port["containerPort"])
            if "name" in port:
                ports.add(port["name"])
        for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container.get(probe_name, {})
            for handler in ("httpGet", "tcpSocket"):
                port = probe.get(handler, {}).get("port")
                if port is not None and port not in ports:
                    self.problem(obj, f"{where}: {probe_name} port {port} is no container port")
        return ports

    def check_service(self, svc):
        selected = self.selected_templates(svc["spec"].get("selector"))
        if not selected:
            self.problem(svc, "selects no pods")
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if not any(target in self.template_ports(tpl) for _, tpl in selected):
                self.problem(svc, f"targetPort {target} is not a port of the selected pods")

    @staticmethod
    def template_ports(tpl):
        ports = set()
        for container in tpl["spec"]["containers"]:
            for port in container.get("ports", []):
                ports.add(port["containerPort"])
                ports.add(port.get("name"))
        return ports

    def check_network_policy(self, policy):
        selected = self.selected_templates(policy["spec"]["podSelector"].get("matchLabels"))
        if not selected:
            self.problem(policy, "selects no pods")
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if not any(port["port"] in self.template_ports(tpl) for _, tpl in selected):
                    self.problem(policy, f"port {port['port']} is not a port of the selected pods")
            for peer in rule.get("from", []):
                # Peers in this namespace must exist; other namespaces are the user's.
                labels = peer.get("podSelector", {}).get("matchLabels")
                if "namespaceSelector" not in peer and labels and not self.selected_templates(labels):
                    self.problem(policy, f"peer selector {labels} selects no pods")

    def check_agent(self):
        agent = self.by_kind.get("DaemonSet", {}).get("tapwire-agent")
        if agent is None:
            return
        spec = agent["spec"]["template"]["spec"]
        if not spec.get("hostPID"):
            self.problem(agent, "hostPID must be true (the agent reads every process's /proc)")
        if spec.get("hostNetwork"):
            self.problem(agent, "hostNetwork must stay off (tracepoints see every netns anyway)")
        if {"operator": "Exists"} not in spec.get("tolerations", []):
            self.problem(agent, "must tolerate every taint")
        security = spec["containers"][0].get("securityContext", {})
        if security.get("privileged"):
            return  # components/privileged-agent: an explicit, documented fallback
        caps = security.get("capabilities", {})
        if caps.get("drop") != ["ALL"] or set(caps.get("add", [])) != AGENT_CAPABILITIES:
            self.problem(agent, f"capabilities must be drop [ALL], add {sorted(AGENT_CAPABILITIES)}")

    def check_collector_storage(self):
        collector = self.by_kind.get("Deployment", {}).get("tapwire-collector")
        if collector is None:
            self.problems.append(f"{self.name}: no tapwire-collector Deployment")
            return
        container = collector["spec"]["template"]["spec"]["containers"][0]
        env = {v["name"] for v in container.get("env", [])}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env |= self.config_map_keys(source["configMapRef"]["name"])
        for required in ("TAPWIRE_PAYLOAD_STORE", "TAPWIRE_DATABASE_URL"):
            if required not in env:
                self.problem(collector, f"{required} is not set: an overlay must choose it")


def main(argv):
    overlay = "--overlay" in argv
    files = [a for a in argv if a != "--overlay"]
    if not files:
        print(__doc__, file=sys.stderr)
        return 2
    problems = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        problems += Checker(path, docs, overlay).run()
    for line in problems:
        print(f"ERROR {line}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
