#!/usr/bin/env bash
# Print the path of a working uv, so that a machine with only Python 3 can run the
# template's commands: the uv on PATH when there is one, else the version pinned in
# pyproject.toml's dev group, installed from PyPI into a private virtual environment
# (TOOLS_DIR) the first time and after the pin changes. Everything but that path goes to
# stderr, so that callers can write   uv="$(bash scripts/ensure-uv.sh)"
# Usage: bash scripts/ensure-uv.sh [--pinned] [TOOLS_DIR]
#   --pinned   ignore the uv on PATH: CI runs the very version the lock file was made with
#   TOOLS_DIR  default: ${XDG_CACHE_HOME:-$HOME/.cache}/mlops-course-template/tools
set -euo pipefail
template="$(cd "$(dirname "$0")/.." && pwd)"

pinned_only=false
if [ "${1:-}" = "--pinned" ]; then
    pinned_only=true
    shift
fi
tools="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/mlops-course-template/tools}"

# The pin as pyproject.toml spells it (uv==0.13.9): the version is written in one place.
requirement="$(grep -o '"uv==[^"]*"' "$template/pyproject.toml" | tr -d '"')" || {
    echo "error: no \"uv==VERSION\" pin in $template/pyproject.toml" >&2
    exit 1
}

runs() {
    "$1" --version > /dev/null 2>&1
}

is_pinned() {
    local version_line
    version_line="$("$1" --version 2> /dev/null)" || return 1
    # uv --version prints "uv 0.13.9 (x86_64-unknown-linux-gnu)"
    [[ "$version_line " == "uv ${requirement#uv==} "* ]]
}

install_pinned() {
    command -v python3 > /dev/null || {
        echo "error: uv is missing and so is python3: install Python 3.11+ (or uv)." >&2
        exit 1
    }
    # Debian and Ubuntu ship venv and pip apart from python3: venv fails without them.
    python3 -m venv "$tools" > /dev/null 2>&1 || {
        echo "error: python3 cannot create a virtual environment to install uv in:" \
            "install python3-venv (apt install python3-venv on Debian, Ubuntu) or uv." >&2
        exit 1
    }
    echo "Installing $requirement into $tools..." >&2
    "$tools/bin/python" -m pip install --quiet --disable-pip-version-check "$requirement" >&2 || {
        echo "error: pip could not install $requirement from PyPI into $tools." >&2
        exit 1
    }
}

if [ "$pinned_only" = false ] && command -v uv > /dev/null && runs uv; then
    command -v uv
    exit 0
fi
if ! is_pinned "$tools/bin/uv"; then
    install_pinned
fi
echo "$tools/bin/uv"
