#!/usr/bin/env bash
# Debian packages the test suite needs: Chromium (stakeholder-page tests, reports printed to PDF), CJK fonts
# (readable Chinese in charts and screenshots), poppler-utils (pdftotext and pdfinfo read the printed PDFs back),
# PostgreSQL (the SQL-source test) and a Java runtime (PySpark, the Spark equivalence tests). Idempotent;
# installs only what is missing.
set -euo pipefail

wanted=(chromium chromium-driver fonts-noto-cjk fonts-liberation poppler-utils postgresql openjdk-17-jre-headless)
missing=()
for package in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "system-deps: these Debian packages are missing and installing them needs root: ${missing[*]}" >&2
    exit 1
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
