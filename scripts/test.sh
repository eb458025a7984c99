#!/usr/bin/env bash
# The README's test command: install the pinned versions (constraints.txt: CPU torch from this machine's disk
# where it lies there, the CUDA build of the same version from PyPI on a GPU box), Chromium for the report's
# browser test, then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
pip install -q -c constraints.txt "torch==2.13.0" -e ".[dev]"
python -m pytest -q "$@"
