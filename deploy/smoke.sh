#!/usr/bin/env bash
# Smoke test of the deployment without a cluster: runs the real tapwire-collector and
# tapwire-agent in containers (containerd + runc, containerd's default seccomp profile)
# set up as the rendered `local` overlay sets up their pods: capabilities, read-only root,
# host PID, users and fsGroup, volumes, Secrets, ConfigMaps, arguments
# (deploy/pod_to_ctr.py translates them). Secrets are made with the commands of
# docs/deployment.md. Then it checks, through the query API:
#   1. the collector starts with TLS + token, /healthz answers, a wrong token is refused;
#   2. the agent starts, /healthz answers;
#   3. curl requests to a local server appear as pairs, once inbound and once outbound.
#
# Deviations from a cluster (no kubelet here): host network for both (Services become
# localhost URLs, other ports are chosen free), no AppArmor, no probes; the index database
# is yours: TAPWIRE_SMOKE_DATABASE_URL (PostgreSQL 15+ or TimescaleDB; a database the
# collector may create its tables in).
#
#   TAPWIRE_SMOKE_DATABASE_URL=postgres://... deploy/smoke.sh
#
# Needs root; installs containerd, runc and mmdebstrap (apt) and a Debian bookworm root
# filesystem (like the images' runtime stage) into $TAPWIRE_TOOLS when missing. Uses
# target/debug binaries (TAPWIRE_AGENT_BIN / TAPWIRE_COLLECTOR_BIN override), building them
# when absent. Without a database it fails under CI=true and skips otherwise.
set -euo pipefail

DEPLOY=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$DEPLOY")
TOOLS=${TAPWIRE_TOOLS:-$HOME/.cache/tapwire}
VENV=$TOOLS/venv
ROOTFS=$TOOLS/smoke-rootfs-bookworm

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

if [ -z "${TAPWIRE_SMOKE_DATABASE_URL:-}" ]; then
  [ "${CI:-}" = true ] && fail "TAPWIRE_SMOKE_DATABASE_URL is not set: the smoke test needs a real database"
  echo "skipped: set TAPWIRE_SMOKE_DATABASE_URL to a PostgreSQL/TimescaleDB database" >&2
  exit 0
fi
[ "$(id -u)" -eq 0 ] || fail "run as root (containers with kernel capabilities)"
for tool in kubectl openssl curl python3; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done
if [ ! -x "$VENV/bin/grpcurl" ] || [ ! -x "$VENV/bin/python" ]; then
  fail "$VENV needs grpcurl and PyYAML (the project's test set-up installs them; deploy/check.sh adds PyYAML)"
fi

if ! command -v ctr >/dev/null || ! command -v runc >/dev/null || ! command -v mmdebstrap >/dev/null; then
  step "installing containerd, runc and mmdebstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends containerd runc mmdebstrap >/dev/null ||
    fail "apt-get install containerd runc mmdebstrap failed (run apt-get update first?)"
fi
if [ ! -x "$ROOTFS/usr/bin/setpriv" ]; then
  step "building a Debian bookworm root filesystem in $ROOTFS (about a minute)"
  rm -rf "$ROOTFS.tmp"
  mmdebstrap --variant=minbase --include=ca-certificates bookworm "$ROOTFS.tmp" \
    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" \
    >/dev/null 2>&1 || fail "mmdebstrap could not build the root filesystem (Debian archive unreachable?)"
  mv "$ROOTFS.tmp" "$ROOTFS"
fi

AGENT_BIN=${TAPWIRE_AGENT_BIN:-$ROOT/target/debug/tapwire-agent}
COLLECTOR_BIN=${TAPWIRE_COLLECTOR_BIN:-$ROOT/target/debug/tapwire-collector}
if [ ! -x "$AGENT_BIN" ] || [ ! -x "$COLLECTOR_BIN" ]; then
  step "building tapwire-agent and tapwire-collector"
  (cd "$ROOT" && cargo build -p tapwire-agent -p tapwire-collector) || fail "cargo build failed"
fi

WORK=$(mktemp -d)
CONTAINERD_PID=
declare -A POD_PID=()
cleanup() {
  local id
  for id in "${!POD_PID[@]}"; do
    ctr --address "$WORK/containerd.sock" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    wait "${POD_PID[$id]}" 2>/dev/null || true  # `ctr run --rm` removes the container
  done
  [ -n "${HTTP_PID:-}" ] && kill "$HTTP_PID" 2>/dev/null
  [ -n "$CONTAINERD_PID" ] && kill "$CONTAINERD_PID" 2>/dev/null && wait "$CONTAINERD_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

step "starting a private containerd"
cat >"$WORK/containerd.toml" <<EOF
version = 2
root = "$WORK/containerd-root"
state = "$WORK/containerd-state"
[grpc]
  address = "$WORK/containerd.sock"
[ttrpc]
  address = "$WORK/containerd.sock.ttrpc"
EOF
containerd --config "$WORK/containerd.toml" >"$WORK/containerd.log" 2>&1 &
CONTAINERD_PID=$!
for _ in $(seq 50); do ctr --address "$WORK/containerd.sock" version >/dev/null 2>&1 && break; sleep 0.2; done
ctr --address "$WORK/containerd.sock" version >/dev/null 2>&1 || fail "containerd did not start: $(tail -3 "$WORK/containerd.log")"

step "making the Secrets as docs/deployment.md says"
S=$WORK/secrets
mkdir -p "$S"/{tapwire-token,tapwire-ca,tapwire-collector-tls,tapwire-database}
(
  cd "$WORK"
  openssl rand -hex 32 | tr -d '\n' > token
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
    -keyout ca.key -out ca.crt -subj "/CN=tapwire CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout tls.key -out tls.csr -subj "/CN=tapwire-collector" 2>/dev/null
  cat > collector.ext <<'EOF'
subjectAltName = DNS:tapwire-collector, DNS:tapwire-collector.tapwire, DNS:tapwire-collector.tapwire.svc, DNS:tapwire-collector.tapwire.svc.cluster.local, DNS:localhost, IP:127.0.0.1
extendedKeyUsage = serverAuth
EOF
  openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
    -extfile collector.ext -out tls.crt 2>/dev/null
) || fail "making the certificates failed"
cp "$WORK/token" "$S/tapwire-token/token"
cp "$WORK/ca.crt" "$S/tapwire-ca/ca.crt"
cp "$WORK/tls.crt" "$WORK/tls.key" "$S/tapwire-collector-tls/"
printf '%s' "$TAPWIRE_SMOKE_DATABASE_URL" > "$S/tapwire-database/url"
printf 'unused' > "$S/tapwire-database/password"

step "rendering deploy/overlays/local"
kubectl kustomize "$DEPLOY/overlays/local" > "$WORK/local.yaml" || fail "kubectl kustomize failed"

free_port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GRPC=$(free_port) METRICS=$(free_port) AGENT_METRICS=$(free_port) HTTP=$(free_port)

# Runs one workload of the rendered manifest in the background; its log in $WORK/ID.log.
run_pod() { # ID KIND/NAME BINARY ENTRYPOINT [--set ...]
  local id=$1 workload=$2 binary=$3 entrypoint=$4 cmd
  shift 4
  mkdir -p "$WORK/volumes-$id"
  cmd=$("$VENV/bin/python" "$DEPLOY/pod_to_ctr.py" "$WORK/local.yaml" "$workload" \
    --rootfs "$ROOTFS" --binary "$binary" --entrypoint "$entrypoint" --secrets "$S" \
    --volumes "$WORK/volumes-$id" --id "$id" --address "$WORK/containerd.sock" \
    --host-pid-ns "/proc/$CONTAINERD_PID/ns/pid" --runc-root "$WORK/runc" "$@") ||
    fail "could not translate $workload"
  "$VENV/bin/python" -c 'import json,os,sys; a=json.loads(sys.argv[1]); os.execvp(a[0], a)' "$cmd" \
    >"$WORK/$id.log" 2>&1 &
  POD_PID[$id]=$!
}

wait_healthy() { # NAME PORT SECONDS
  for _ in $(seq $(($3 * 5))); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$2/healthz")" = 200 ] && return 0
    kill -0 "${POD_PID[$1]}" 2>/dev/null || break  # the container is gone
    sleep 0.2
  done
  echo "--- $1 log:" >&2; tail -30 "$WORK/$1.log" >&2
  fail "$1: /healthz did not answer 200 (container exited, or not within $3 s)"
}

query() { # METHOD JSON [TOKEN]
  "$VENV/bin/grpcurl" -cacert "$WORK/ca.crt" -import-path "$ROOT/proto" -proto tapwire/v1/query.proto \
    -H "authorization: Bearer ${3:-$(cat "$WORK/token")}" -d "$2" "localhost:$GRPC" "tapwire.v1.Query/$1"
}

step "collector: Deployment/tapwire-collector"
run_pod smoke-collector Deployment/tapwire-collector "$COLLECTOR_BIN" /usr/local/bin/tapwire-collector \
  --set "tapwire-collector:TAPWIRE_LISTEN=0.0.0.0:$GRPC" \
  --set "tapwire-collector:TAPWIRE_METRICS_ADDR=0.0.0.0:$METRICS"
wait_healthy smoke-collector "$METRICS" 60
query Services '{}' >/dev/null || fail "the query API refused the documented token and CA"
if query Services '{}' wrong-token >/dev/null 2>&1; then fail "the collector accepted a wrong token"; fi
echo "ok   collector serves TLS + token, refuses a wrong token"

step "agent: DaemonSet/tapwire-agent"
run_pod smoke-agent DaemonSet/tapwire-agent "$AGENT_BIN" /usr/local/bin/tapwire-agent \
  --set "tapwire-agent:TAPWIRE_COLLECTOR_URL=https://localhost:$GRPC" \
  --set "tapwire-agent:TAPWIRE_METRICS_ADDR=0.0.0.0:$AGENT_METRICS"
wait_healthy smoke-agent "$AGENT_METRICS" 120
grep -a "attach plan" "$WORK/smoke-agent.log" >&2 || true
echo "ok   agent healthy"

step "traffic: curl -> python3 http.server, then the pairs through the query API"
mkdir -p "$WORK/www"
python3 -m http.server "$HTTP" --bind 127.0.0.1 --directory "$WORK/www" >/dev/null 2>&1 &
HTTP_PID=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$HTTP/" && break; sleep 0.1; done
MARK=/smoke-$RANDOM$RANDOM
REQUESTS=3
for i in $(seq $REQUESTS); do curl -s -o /dev/null "http://127.0.0.1:$HTTP$MARK-$i"; done
inbound=0 outbound=0
for _ in $(seq 30); do
  answer=$(query ListPairs "{\"filter\":{\"path_prefix\":\"$MARK\"},\"limit\":100}" 2>/dev/null || true)
  read -r inbound outbound < <(printf '%s' "$answer" | "$VENV/bin/python" -c '
import json, sys
text = sys.stdin.read()
pairs = json.loads(text).get("pairs", []) if text.strip() else []
inbound = sum(1 for p in pairs if p.get("isInbound"))
print(inbound, len(pairs) - inbound)')
  [ "$inbound" -eq "$REQUESTS" ] && [ "$outbound" -eq "$REQUESTS" ] && break
  sleep 1
done
if [ "$inbound" -ne "$REQUESTS" ] || [ "$outbound" -ne "$REQUESTS" ]; then
  echo "--- agent log:" >&2; tail -30 "$WORK/smoke-agent.log" >&2
  fail "expected $REQUESTS inbound and $REQUESTS outbound pairs under $MARK, got $inbound and $outbound"
fi
echo "ok   $REQUESTS requests stored once inbound and once outbound"

step "stopping (SIGTERM, as the kubelet does)"
for id in smoke-agent smoke-collector; do
  ctr --address "$WORK/containerd.sock" tasks kill -s SIGTERM "$id" >/dev/null 2>&1 || true
done
wait_gone() {
  for _ in $(seq 150); do ctr --address "$WORK/containerd.sock" tasks ls -q 2>/dev/null | grep -qx "$1" || return 0; sleep 0.2; done
  fail "$1 did not stop within 30 s of SIGTERM"
}
wait_gone smoke-agent
wait_gone smoke-collector
echo "ok   both stopped on SIGTERM"
step "smoke test passed"
