#!/usr/bin/env bash
# Train locally, no Docker: sets up .venv like infra/test.sh, then runs `hotlap train`.
#
#   bash infra/train-local.sh [hotlap train options]
#   bash infra/train-local.sh --custom-files ./custom_files --track reInvent2019_track --workers 2
#
# Runs are stored under ./hotlap-runs/<run id>/ (DeepRacer's layout). `--help` lists the options.
set -euo pipefail

# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$HOTLAP_ROOT"
hl_ensure_venv "" # no extras: just the project
exec "$HOTLAP_ROOT/.venv/bin/hotlap" train "$@"
