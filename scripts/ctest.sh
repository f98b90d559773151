#!/usr/bin/env bash
# Builds csrc/ with CMake (CPU kernels, no Python) in cmake-build/ and runs ctest.
# Extra CMake options: LORM_CMAKE_ARGS (e.g. -DLORM_WITH_CUDA=ON on a GPU machine).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$LORM_ROOT"
prefix=$(python -c "import torch.utils; print(torch.utils.cmake_prefix_path)")
args=(-DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release)
# A CUDA torch's CMake config insists on finding CUDA, even for a CPU-only library:
# point it at the toolkit and at nvrtc, which ships in torch's nvidia-* wheels here.
if python -c "import sys, torch; sys.exit(torch.version.cuda is None)"; then
  nvrtc=$(python -c "import glob, nvidia; print(min((f for p in nvidia.__path__ for f in glob.glob(p + '/cu*/lib/libnvrtc.so.[0-9]*')), default=''))")
  args+=(-DCUDA_TOOLKIT_ROOT_DIR="${CUDA_HOME:?set CUDA_HOME to the CUDA toolkit folder}")
  [ -n "$nvrtc" ] && args+=(-DCUDA_nvrtc_LIBRARY="$nvrtc")
fi
cmake -S . -B cmake-build "${args[@]}" ${LORM_CMAKE_ARGS:-} >cmake-build.log 2>&1 \
  || { cat cmake-build.log; exit 1; }
cmake --build cmake-build -j "$MAX_JOBS"
ctest --test-dir cmake-build --output-on-failure
