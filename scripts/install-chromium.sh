#!/usr/bin/env bash
# Debian's chromium for the browser tests (reports, feedback app). Playwright drives it through
# executable_path; `playwright install` cannot download browsers on machines without a hub.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
SUDO=""; if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
