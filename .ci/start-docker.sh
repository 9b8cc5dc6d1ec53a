#!/usr/bin/env bash
# Make sure a Docker engine answers: install Debian's docker.io (with iptables and
# debootstrap, for the base image) and start dockerd by hand, as there is no systemd.
# Prints the PID of a dockerd it started (nothing when one already answered), so
# that the caller stops exactly what it started.
# Usage: pid="$(bash .ci/start-docker.sh)"        (as root)
set -euo pipefail

if docker info > /dev/null 2>&1; then
    exit 0
fi
if ! command -v dockerd > /dev/null || ! command -v debootstrap > /dev/null; then
    echo "Installing docker.io, iptables and debootstrap from Debian..." >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io iptables debootstrap >&2
fi

log="${TMPDIR:-/tmp}/dockerd.log"
nohup dockerd > "${log}" 2>&1 &
pid=$!
for _ in $(seq 60); do
    if docker info > /dev/null 2>&1; then
        echo "${pid}"
        exit 0
    fi
    if ! kill -0 "${pid}" 2> /dev/null; then
        break
    fi
    sleep 1
done
echo "dockerd did not start; the end of ${log}:" >&2
tail -20 "${log}" >&2
exit 1
