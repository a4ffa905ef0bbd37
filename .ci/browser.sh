#!/usr/bin/env bash
# Install the browser the `browser` tests and benchmarks/bench_pages.py drive: Debian's Chromium and its driver.
# Playwright's own browser download (`playwright install`) is never used: tests launch /usr/bin/chromium.
# Run as root (CI image). Idempotent: does nothing when Chromium is already installed.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version)"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
# fonts-noto-cjk renders Chinese labels in screenshots; fonts-liberation gives Latin text metrics.
apt-get install -y --no-install-recommends chromium chromium-driver fonts-liberation fonts-noto-cjk
/usr/bin/chromium --version
