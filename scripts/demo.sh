#!/usr/bin/env bash
# Sets everything up (virtualenv, torch, the compiled extension) and runs the demo.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$LORM_ROOT"
python -m lorm_ext.demo "$@"
