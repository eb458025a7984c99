#!/usr/bin/env bash
# Rewrite constraints.txt from the active environment, after the suite passed in it (see the file's header).
set -euo pipefail
cd "$(dirname "$0")/.."
header=$(grep '^#' constraints.txt)
{ echo "$header"; pip freeze --exclude-editable | grep -v '^-e ' | sed 's/^torch==\(.*\)+cpu$/torch==\1/'; } > constraints.txt.new
mv constraints.txt.new constraints.txt
