#!/usr/bin/env bash
# Sets everything up (virtualenv, torch, the compiled extension) and runs `lorm demo`:
# lorm vs fedavg-lora on the embedded digits benchmark. Arguments go to `lorm demo`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$LORM_ROOT"
python -m lorm demo "$@"
