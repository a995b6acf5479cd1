#!/usr/bin/env bash
# Installs a headless-capable Chromium from the distribution's packages (Debian: `chromium`),
# for the slow browser test of `probes report` (tests/test_probes_report_browser.py).
# Idempotent: does nothing when a `chromium` executable is already on PATH. Needs root;
# browsers are never downloaded from the web, only installed with apt-get.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "chromium already installed: $(command -v chromium)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium.sh: apt-get not found; install Chromium with your package manager" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_chromium.sh: must run as root (apt-get install chromium)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
if ! command -v chromium >/dev/null 2>&1; then
    echo "install_chromium.sh: apt-get finished but there is no 'chromium' on PATH" >&2
    exit 1
fi
echo "installed $(chromium --version 2>/dev/null || command -v chromium)"
