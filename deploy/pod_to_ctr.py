#!/usr/bin/env python3
"""Turns one container of a rendered tapwire manifest into a `ctr run` command line.

deploy/smoke.sh uses it to run the real binaries with the security settings, mounts,
environment and arguments the manifests give them, without a cluster: a small stand-in
for the kubelet, so that what the pods would get is what the smoke test exercises.

What it translates: capabilities (drop ALL / add), readOnlyRootFilesystem, seccomp
RuntimeDefault (containerd's default profile, derived from the capabilities), hostPID,
runAsUser/runAsGroup (through setpriv, as ctr 1.6 cannot set a user), fsGroup (group
ownership of the volumes), hostPath/emptyDir/secret/persistentVolumeClaim volumes, env
(literals, ConfigMaps, Secrets, spec.nodeName), envFrom, and $(VAR) expansion in args.
What it cannot: network namespaces (the smoke test uses the host network, so Services are
replaced by localhost URLs in the ConfigMaps), AppArmor, probes, resources.

Usage:
  pod_to_ctr.py MANIFEST KIND/NAME --rootfs DIR --binary PATH --entrypoint PATH
                --secrets DIR --volumes DIR --id ID [--address SOCKET] [--node NAME]
                [--host-pid-ns /proc/PID/ns/pid] [--runc-root DIR]
                [--set CONFIGMAP-PREFIX:KEY=VALUE]...
Prints the command as JSON (a list of strings). Secrets are read from
SECRETS/<secret-name>/<key>; volumes are created under VOLUMES.
"""

import argparse
import json
import os
import re
import shutil
import sys

import yaml

# containerd's default capability set for a new container; all of it is dropped, as
# `capabilities.drop: [ALL]` does, and the container gets back only what it adds.
CONTAINERD_DEFAULT_CAPS = [
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
]
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


class TranslateError(Exception):
    """The manifest uses something this stand-in cannot reproduce."""


def own_bounding_caps():
    """Capabilities this process may hand out (a container cannot get more)."""
    mask = 0
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("CapBnd:"):
                mask = int(line.split()[1], 16)
    # Bit numbers of linux/capability.h, in order.
    names = [
        "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
        "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
        "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
        "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
        "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
        "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
        "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
    ]
    return {name for bit, name in enumerate(names) if mask & (1 << bit)}


def find(docs, kind, name):
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise TranslateError(f"{kind}/{name} is not in the manifest")


def read_secret(secrets_dir, name, key):
    path = os.path.join(secrets_dir, name, key)
    if not os.path.exists(path):
        raise TranslateError(f"secret {name} has no key {key} (expected the file {path})")
    with open(path, encoding="utf-8") as f:
        return f.read()


def environment(docs, container, secrets_dir, node):
    """The container's environment, in the kubelet's order (envFrom, then env)."""
    env = {"PATH": PATH}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find(docs, "ConfigMap", source["configMapRef"]["name"]).get("data", {}))
        elif "secretRef" in source:
            name = source["secretRef"]["name"]
            for key in sorted(os.listdir(os.path.join(secrets_dir, name))):
                env[key] = read_secret(secrets_dir, name, key)
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), var["value"])
            continue
        ref = var["valueFrom"]
        if "secretKeyRef" in ref:
            env[var["name"]] = read_secret(secrets_dir, ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
        elif "configMapKeyRef" in ref:
            data = find(docs, "ConfigMap", ref["configMapKeyRef"]["name"]).get("data", {})
            env[var["name"]] = data[ref["configMapKeyRef"]["key"]]
        elif ref.get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
            env[var["name"]] = node
        else:
            raise TranslateError(f"env {var['name']}: unsupported valueFrom {ref}")
    return env


def volume_mounts(spec, container, args, gid):
    """`ctr --mount` options for the container's volume mounts."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = []
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        options = ["rbind", "ro" if mount.get("readOnly") else "rw"]
        if mount.get("mountPropagation") == "HostToContainer":
            options.append("rslave")
        source = os.path.join(args.volumes, mount["name"])
        if "hostPath" in volume:
            host = volume["hostPath"]["path"]
            if host.startswith("/sys/"):
                source = host  # kernel interfaces: the real thing
            else:
                os.makedirs(source, exist_ok=True)  # DirectoryOrCreate, kept out of the host
        elif "emptyDir" in volume or "persistentVolumeClaim" in volume:
            os.makedirs(source, exist_ok=True)
        elif "secret" in volume:
            secret = volume["secret"]
            os.makedirs(source, exist_ok=True)
            mode = secret.get("defaultMode", 0o644)
            for item in secret.get("items", []):
                target = os.path.join(source, item["path"])
                shutil.copyfile(os.path.join(args.secrets, secret["secretName"], item["key"]), target)
                if gid is not None:
                    # As the kubelet does for fsGroup: group-owned, group-readable.
                    os.chown(target, 0, gid)
                    mode |= 0o440
                os.chmod(target, mode)
        else:
            raise TranslateError(f"volume {mount['name']}: unsupported type")
        if gid is not None and not source.startswith("/sys/"):
            os.chown(source, 0, gid)
            os.chmod(source, 0o2775 if not mount.get("readOnly") else 0o2755)
        mounts += ["--mount", f"type=bind,src={source},dst={mount['mountPath']},options={':'.join(options)}"]
    return mounts


def translate(args):
    with open(args.manifest, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for setting in args.set:
        name, _, rest = setting.partition(":")
        key, _, value = rest.partition("=")
        for doc in docs:
            if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith(name):
                doc["data"][key] = value
    kind, _, name = args.workload.partition("/")
    workload = find(docs, kind, name)
    spec = workload["spec"]["template"]["spec"]
    container = spec["containers"][0]
    pod_security = spec.get("securityContext", {})
    security = container.get("securityContext", {})
    if security.get("privileged"):
        raise TranslateError("privileged containers are not reproduced")

    command = ["ctr", "--address", args.address, "run", "--rm", "--rootfs", "--net-host"]
    if args.runc_root:
        command += ["--runc-root", args.runc_root]
    if security.get("readOnlyRootFilesystem"):
        command.append("--read-only")
    seccomp = security.get("seccompProfile", pod_security.get("seccompProfile", {})).get("type")
    if seccomp == "RuntimeDefault":
        command.append("--seccomp")
    if spec.get("hostPID"):
        command += ["--with-ns", f"pid:{args.host_pid_ns}"]

    uid = pod_security.get("runAsUser", 0)
    gid = pod_security.get("runAsGroup", 0)
    caps = security.get("capabilities", {})
    if caps.get("drop") != ["ALL"]:
        raise TranslateError("only `capabilities.drop: [ALL]` is reproduced")
    added = set(caps.get("add", []))
    missing = added - own_bounding_caps()
    if missing:
        print(f"note: this machine cannot grant {sorted(missing)}; running without them", file=sys.stderr)
    # setpriv needs SETUID/SETGID to switch to a non-root user; it drops them again.
    switch_user = uid != 0
    granted = (added - missing) | ({"SETUID", "SETGID"} if switch_user else set())
    for cap in CONTAINERD_DEFAULT_CAPS:
        if cap not in granted:
            command += ["--cap-drop", f"CAP_{cap}"]
    for cap in sorted(granted - set(CONTAINERD_DEFAULT_CAPS)):
        command += ["--cap-add", f"CAP_{cap}"]

    command += volume_mounts(spec, container, args, pod_security.get("fsGroup"))
    # The image's ENTRYPOINT (deploy/images/Containerfile.*), bound from the build.
    entrypoint = args.entrypoint
    command += ["--mount", f"type=bind,src={os.path.realpath(args.binary)},dst={entrypoint},options=rbind:ro"]

    env = environment(docs, container, args.secrets, args.node)
    for key, value in env.items():
        command += ["--env", f"{key}={value}"]
    argv = [entrypoint] + [VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), a)
                           for a in container.get("command", []) + container.get("args", [])]
    if switch_user:
        extra = [f"--groups={pod_security['fsGroup']}"] if "fsGroup" in pod_security else ["--clear-groups"]
        argv = ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={gid}", *extra,
                "--inh-caps=-all", "--bounding-set=-all", "--"] + argv
    return command + [args.rootfs, args.id] + argv


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("manifest")
    parser.add_argument("workload", help="KIND/NAME, e.g. DaemonSet/tapwire-agent")
    parser.add_argument("--rootfs", required=True)
    parser.add_argument("--binary", required=True, help="the built program")
    parser.add_argument("--entrypoint", required=True, help="where the image has it")
    parser.add_argument("--secrets", required=True)
    parser.add_argument("--volumes", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--address", default="/run/containerd/containerd.sock")
    parser.add_argument("--runc-root", help="runc's state folder (default: containerd's)")
    parser.add_argument("--node", default=os.uname().nodename)
    parser.add_argument("--host-pid-ns", default="/proc/1/ns/pid",
                        help="the host PID namespace, for hostPID (a process that outlives the run)")
    parser.add_argument("--set", action="append", default=[],
                        help="CONFIGMAP-PREFIX:KEY=VALUE, overrides a rendered ConfigMap value")
    args = parser.parse_args()
    try:
        print(json.dumps(translate(args)))
    except (TranslateError, KeyError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
