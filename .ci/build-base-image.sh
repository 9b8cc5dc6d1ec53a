#!/usr/bin/env bash
# Build a Python base image from Debian packages, for machines that reach no
# container registry (CI here): what the rendered Dockerfiles' BASE_IMAGE needs.
#
# A base image needs: a system `python3` that `uv pip install --system` accepts
# (Debian marks its Python "externally managed": the marker file is removed),
# pip (to install uv), and the CA certificates the host trusts, since TLS to the
# package index may go through an intercepting proxy. SSL_CERT_FILE points uv at
# them (uv ignores pip's configuration).
#
# The Debian mirror is the one apt is configured with on this host, read from
# apt's own configuration. Idempotent: an existing image is kept.
# Usage: bash .ci/build-base-image.sh [IMAGE_NAME]   (as root; needs debootstrap)
set -euo pipefail

image="${1:-mlops-workshop-base:bookworm}"
if docker image inspect "${image}" > /dev/null 2>&1; then
    echo "Base image ${image} already built."
    exit 0
fi

# The first "deb" source apt uses, whatever the format of its configuration.
mirror="$(apt-get indextargets --format '$(REPO_URI)' 'Created-By: Packages' 2> /dev/null | grep -m1 '/debian/$' || true)"
if [ -z "${mirror}" ]; then
    echo "build-base-image.sh: no Debian mirror in apt's configuration (run apt-get update)." >&2
    exit 1
fi
suite="$(. /etc/os-release && echo "${VERSION_CODENAME}")"

rootfs="$(mktemp -d)"
trap 'rm -rf "${rootfs}"' EXIT
echo "debootstrap ${suite} from ${mirror} ..."
debootstrap --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates \
    "${suite}" "${rootfs}" "${mirror}" > "${rootfs}.log" 2>&1 \
    || { tail -20 "${rootfs}.log" >&2; exit 1; }
rm -f "${rootfs}.log"

# The host's extra CA certificates (the proxy's), trusted inside the image too.
cp /usr/local/share/ca-certificates/*.crt "${rootfs}/usr/local/share/ca-certificates/" 2> /dev/null || true
chroot "${rootfs}" update-ca-certificates > /dev/null
rm -f "${rootfs}"/usr/lib/python3.*/EXTERNALLY-MANAGED
# The host's apt sources, so that a Dockerfile could still install Debian packages.
cp -r /etc/apt/sources.list* "${rootfs}/etc/apt/" 2> /dev/null || true
rm -rf "${rootfs}"/var/cache/apt/archives/*.deb "${rootfs}"/var/lib/apt/lists/*

tar -C "${rootfs}" -c . | docker import \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' \
    - "${image}" > /dev/null
echo "Built ${image}: $(docker image inspect --format '{{.Size}}' "${image}" | numfmt --to=iec)"
