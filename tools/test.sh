#!/usr/bin/env bash
# Installs everything the tests need, then runs them all (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "installing mosquitto (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium (apt-get, for the report and dashboard browser tests)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "chromium could not be installed; browser tests will skip"
fi

python -m pip install -q -e ".[all]"
python -m ruff check .
python -m pytest -q -ra "$@"
