#!/usr/bin/env bash
# Sets everything up (virtualenv, torch, the compiled extension) and runs the tests.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k spd_solve`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$LORM_ROOT"
lorm_fashion_mnist
lorm_aarch64_tools
if [ "${FORCE_CUDA:-}" = "1" ]; then
  export LORM_EXPECT_BACKEND=cuda  # the CUDA build must load, not fall back to the reference
fi
python -m pytest tests "$@"
