#!/usr/bin/env bash
# Render a project with the default answers and run it, as a teacher would try
# the template: install, generate the data, start the servers (no Docker).
# Usage: bash scripts/demo.sh [DESTINATION]   (default: ./demo-workshop)
# Ctrl+C stops the servers; the project stays in DESTINATION.
set -euo pipefail
template="$(cd "$(dirname "$0")/.." && pwd)"
destination="${1:-demo-workshop}"

if [ -e "$destination" ]; then
    echo "error: $destination already exists; choose another destination or remove it." >&2
    exit 1
fi
# uv: the one on PATH, else the pinned version, installed once in a per-user cache.
uv="$(bash "$template/scripts/ensure-uv.sh")"
PATH="$(dirname "$uv"):$PATH"  # PATH is exported: the commands below find this uv

(cd "$template" && uv sync --quiet)
"$template/.venv/bin/copier" copy --trust --defaults --vcs-ref HEAD "$template" "$destination"
cd "$destination"

# The project asks for its .python-version; fall back to this machine's Python 3
# when uv cannot find or download that version (offline machines).
if ! uv venv --quiet 2>/dev/null; then
    echo "Python $(cat .python-version) is not available here: using $(python3 --version)."
    uv venv --quiet --python "$(command -v python3)"
fi
uv pip install --quiet -r requirements.txt
make data
echo "In another terminal: cd $destination && make train   (then open MLflow)"
exec make dev
