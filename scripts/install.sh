#!/usr/bin/env bash
# Create .venv (once) and install the gateway into it, pinned by requirements.lock.
# Usage: scripts/install.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."

python=""
for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 \
        && "$candidate" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 14) else 1)' \
            2>/dev/null; then  # a version manager's shim may name a version it lacks
        python=$candidate
        break
    fi
done
if [ -z "$python" ]; then
    echo "error: Python 3.11, 3.12 or 3.13 is needed (with venv and pip)" >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"

# pip runs only when what it would install changed since the last install here: the pins,
# the project's own metadata, the extras asked for, or the interpreter. A restart then
# starts in seconds. GATEWAY_REINSTALL=1 forces a run.
# (An install with the dev tools also serves a plain one.)
stamp_file=.venv/.gateway-install
sources="$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
interpreter="$(.venv/bin/python -c 'import sys; print(sys.version.split()[0])')"
if [ "${GATEWAY_REINSTALL:-}" != "1" ] && [ -f "$stamp_file" ]; then
    read -r done_sources done_interpreter done_extra < "$stamp_file" || true
    if [ "$done_sources" = "$sources" ] && [ "$done_interpreter" = "$interpreter" ] \
        && { [ "${done_extra:-}" = "${extra:-none}" ] || [ -z "$extra" ]; }; then
        exit 0
    fi
fi
rm -f "$stamp_file"
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    -c requirements.lock -e ".${extra}"
echo "$sources $interpreter ${extra:-none}" > "$stamp_file"
