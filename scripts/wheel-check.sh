#!/usr/bin/env bash
# One build, several torches. Builds a wheel once with plain `pip wheel .` (pip's
# isolated build env, as a new user gets it), then installs that same file into fresh
# virtualenvs with torch 2.13.0 (CPU) and torch 2.14.1 (CUDA 13) and runs the op tests
# against the installed package, from outside the source tree.
#
# Knobs (environment): LORM_WHEEL_DIR (work folder, default build/wheel-check),
# LORM_WHEEL_TORCHES (default "2.13.0 2.14.1"), FORCE_CUDA/CUDA_HOME as for env.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$LORM_ROOT"

work=${LORM_WHEEL_DIR:-$LORM_ROOT/build/wheel-check}
op_tests=(tests/test_gram_update.py tests/test_lowrank_gram_update.py tests/test_spd_solve.py tests/test_add_terms.py
          tests/test_inspect_terms.py tests/test_opcheck.py tests/test_bad_input.py tests/test_build.py)

rm -rf "$work/dist" && mkdir -p "$work/dist"
lorm_log "building the wheel once: pip wheel . (isolated build env)"
start=$SECONDS
pip wheel -q --no-deps -w "$work/dist" .
wheel=$(ls "$work"/dist/lorm-*.whl)
lorm_log "built $(basename "$wheel") in $((SECONDS - start)) s"

# A fresh venv with torch==$1 and the test tools, then the wheel itself (no deps: the op
# tests need only torch, pytest and hypothesis). The project venv's own torch is borrowed
# through a .pth file instead of installing its 5 GB again.
make_torch_venv() {
  local version=$1 venv=$2
  "${LORM_PYTHON:-$(command -v python3.11 || command -v python3)}" -m venv "$venv"
  if [ "$(python -c 'import torch; print(torch.__version__.split("+")[0])')" = "$version" ]; then
    python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
      > "$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/project-venv.pth"
  else
    "$venv/bin/pip" install -q "torch==$version" pytest hypothesis numpy
  fi
}

check_under_torch() {
  local version=$1 venv="$work/torch-$1"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, pytest, hypothesis" 2>/dev/null; then
    rm -rf "$venv"
    make_torch_venv "$version" "$venv"
  fi
  "$venv/bin/pip" install -q --no-deps --force-reinstall "$wheel"
  local expect=cpu
  "$venv/bin/python" -c "import sys, torch; sys.exit(torch.version.cuda is None)" && expect=cuda
  lorm_log "torch $version: op tests against the installed wheel (backend $expect)"
  (cd "$work" && "$venv/bin/python" - "$expect" <<'PY'
import sys, torch, lorm_ext
assert "site-packages" in lorm_ext.__file__, f"imported {lorm_ext.__file__}, not the wheel"
assert lorm_ext.backend() == sys.argv[1], (lorm_ext.backend(), lorm_ext.load_message())
print(f"[lorm] torch {torch.__version__}: lorm_ext from {lorm_ext.__file__}, backend {lorm_ext.backend()}")
PY
  )
  (cd "$work" && LORM_EXPECT_BACKEND=$expect "$venv/bin/python" -m pytest -q -p no:cacheprovider \
      "${op_tests[@]/#/$LORM_ROOT/}")
}

for version in ${LORM_WHEEL_TORCHES:-2.13.0 2.14.1}; do
  check_under_torch "$version"
done
