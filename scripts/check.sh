#!/usr/bin/env bash
# The project's checks, as the README's "Tests" section and CI (.ci/run) run them: the linters
# (ruff, pyright in basic mode; settings in pyproject.toml), then the test suite. Arguments go
# to pytest (e.g. -m "not slow"). Run it from the environment of the README's setup command.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== ruff check diffrl_jax"
ruff check diffrl_jax
echo "== pyright"
pyright
echo "== pytest"
exec python -m pytest -n 2 --maxschedchunk 1 "$@"
