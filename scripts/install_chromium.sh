#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests (Playwright drives it; no browser download).
# Uses $CHROMIUM when it points at a browser already; otherwise apt-get, as root or through sudo.
set -euo pipefail
browser="${CHROMIUM:-/usr/bin/chromium}"
if [ -x "$browser" ] || command -v "$browser" >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
else
    echo "error: Chromium is needed for the browser tests: install Debian's chromium (apt-get install chromium) or set CHROMIUM" >&2
    exit 1
fi
echo "installing Debian's chromium for the browser tests ..." >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
