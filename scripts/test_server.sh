#!/usr/bin/env bash
# The server against the official `openai` Python client, and the CI load test. Needs a built
# ./build/farsight (or $FARSIGHT_BIN). Creates a venv under build/ (reused on later runs).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${FARSIGHT_BIN:-build/farsight}
VENV=${FARSIGHT_TEST_VENV:-build/venv-server}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import openai" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "openai>=1.40,<4"
fi
exec "$VENV/bin/python" tests/server/test_openai.py "$BIN" ../shared/models/stories260K \
  tests/fixtures/server/chat_template.jinja
