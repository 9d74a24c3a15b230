#!/usr/bin/env bash
# Installs Debian's headless Chromium for the playground browser test, only when it is missing.
# Playwright drives this system browser; it never downloads one of its own.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null; then
  echo "ci_browser: cannot install chromium here (needs root and apt-get); the browser test will skip"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
echo "ci_browser: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
