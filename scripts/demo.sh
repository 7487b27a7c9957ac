#!/usr/bin/env bash
# The README's demo command: set up, then run broker + cloud + a simulated building with a real gateway.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${GATEHOUSE_VENV:-.venv}/bin/gatehouse" demo "$@"
