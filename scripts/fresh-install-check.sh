#!/usr/bin/env bash
# The new user's path, not ours: a fresh virtualenv with torch 2.13.0 (CPU), then plain
# `pip install .` of this checkout (pip's isolated build env, as a user gets it) in an
# environment scrubbed of everything scripts/env.sh sets, then the op tests against the
# installed package from outside the source tree. No constraint holds torch: after every
# install the venv's torch must still be the one it had (issue 27: an unpinned torchvision
# dependency made pip swap torch 2.13.0 for 2.14.1 and the CUDA 13 stack). Twice:
#   1. the machine as it is: the CUDA kernels are built when a toolkit is usable (here:
#      found through the nvcc wrapper on PATH), and the CPU kernels always. Then the
#      demo's path: `lorm demo` must stop with one line naming the 'vision' extra and the
#      command that keeps torch; that command must keep torch; then the demo runs (one
#      seed) when the torchvision it got loads, else it must stop with the line naming
#      both versions (the local mirror has only CUDA builds of torchvision 0.28.0, which
#      do not load under torch 2.13.0+cpu);
#   2. the toolkit made unusable (CUDA_HOME an empty folder, no nvcc on PATH): the
#      install must still succeed, CPU-only, and pip's output must show the warning.
# This script does not source scripts/env.sh, and strips its exports from the build.
# It installs from a copy of the checkout (tracked and untracked, not ignored, files),
# as a new user's clone has no build/ folder and no _build_info.py of ours.
#
# Knobs (environment): LORM_FRESH_DIR (work folder, default build/fresh-install),
# LORM_FRESH_TORCH (default 2.13.0), LORM_PYTHON (the interpreter for the venv),
# LORM_FRESH_CASES (default "as-is no-toolkit": which of the two installs to check).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=${LORM_FRESH_DIR:-$ROOT/build/fresh-install}
torch_version=${LORM_FRESH_TORCH:-2.13.0}
venv=$work/venv
log() { printf '[fresh-install] %s\n' "$*" >&2; }

# What scripts/env.sh exports (or a developer may have): none of it reaches the build.
scrubbed=(env -u CUDA_HOME -u CUDA_PATH -u FORCE_CUDA -u FORCE_ONLY_CPU -u MAX_JOBS
          -u TORCH_CUDA_ARCH_LIST -u LORM_CPU_BASELINE -u LORM_EXPECT_BACKEND)
op_tests=(tests/test_gram_update.py tests/test_lowrank_gram_update.py tests/test_spd_solve.py
          tests/test_add_terms.py tests/test_inspect_terms.py tests/test_opcheck.py tests/test_bad_input.py
          tests/test_build.py)
fallback_warning="WARNING: lorm_ext is built WITHOUT its CUDA kernels"

# The venv's torch as it imports (torch.__version__, e.g. 2.13.0+cpu).
torch_now() {
  (cd "$work/outside" && "$venv/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null)
}

# The torch distribution's version, as pip sees it: what a pin must name (2.14.1 for the
# wheel whose torch.__version__ is 2.14.1+cu130).
torch_dist() {
  "$venv/bin/python" -c 'from importlib.metadata import version; print(version("torch"))'
}

# $1: label, $2: pip's output. Fails, naming both versions, when pip changed the torch
# the venv had before (another version, or the same one reinstalled).
assert_torch_kept() {
  local label=$1 pip_log=$2 now
  now=$(torch_now) || now="(torch does not import)"
  if [ "$now" != "$torch_before" ]; then
    grep -E "^(Successfully installed|Would install|  Attempting uninstall: torch)" "$pip_log" | tail -n 3 >&2
    log "FAILED: $label replaced the venv's torch: $torch_before before, $now after"
    exit 1
  fi
  if grep -Eq '^Successfully installed.* torch-[0-9]' "$pip_log"; then
    grep -E '^Successfully installed' "$pip_log" >&2
    log "FAILED: $label reinstalled torch (torch $torch_before before, $now after)"
    exit 1
  fi
  log "$label: torch $now before and after"
}

rm -rf "$work" && mkdir -p "$work/outside" "$work/src"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - --) \
  | tar -xf - -C "$work/src"
log "fresh venv with torch $torch_version"
"${LORM_PYTHON:-$(command -v python3.11 || command -v python3)}" -m venv "$venv"
"$venv/bin/pip" install -q "torch==$torch_version" pytest hypothesis
torch_before=$(torch_now)
case $torch_before in
  "$torch_version"|"$torch_version"+*) log "the venv's torch: $torch_before" ;;
  *) log "asked for torch==$torch_version, the venv has ${torch_before:-no torch}"; exit 1 ;;
esac

# pip install . in the scrubbed environment ($1: label; the rest: env assignments),
# output (pip -v shows the build's) in $work/<label>.log.
install() {
  local label=$1; shift
  log "$label: pip install -v . (isolated build, scrubbed environment${*:+, $*})"
  local start=$SECONDS
  rm -rf "$work/src/build" "$work/src/lorm_ext/_build_info.py"  # as in a fresh clone
  (cd "$work/src" && "${scrubbed[@]}" "$@" "$venv/bin/pip" install -v .) \
      > "$work/$label.log" 2>&1 || { tail -n 60 "$work/$label.log"; log "$label: pip install failed"; exit 1; }
  log "$label: installed in $((SECONDS - start)) s"
  assert_torch_kept "$label: pip install ." "$work/$label.log"
}

# The installed package, imported from outside the source tree: what it says about
# itself and whether it has CUDA kernels ($1: yes/no); then the op tests on each build
# of the CPU vector loops named in $2.. (default, baseline: LORM_CPU_BASELINE=1). The
# backend is "cpu" under a CPU-only torch (the default 2.13.0), "cuda" when both the
# build and the torch (LORM_FRESH_TORCH=2.14.1) have CUDA.
check_installed() {
  local expect_cuda=$1; shift
  local backend=cpu
  if [ "$expect_cuda" = yes ] \
      && "$venv/bin/python" -c 'import sys, torch; sys.exit(torch.version.cuda is None)' 2>/dev/null; then
    backend=cuda
  fi
  (cd "$work/outside" && "${scrubbed[@]}" "$venv/bin/python" - "$expect_cuda" "$backend" <<'PY'
import sys
import torch, lorm_ext
from lorm_ext import _build_info, info
assert "site-packages" in lorm_ext.__file__, f"imported {lorm_ext.__file__}, not the installed package"
assert lorm_ext.backend() == sys.argv[2], (lorm_ext.backend(), lorm_ext.load_message())
assert _build_info.WITH_CUDA == (sys.argv[1] == "yes"), _build_info.CUDA_REASON
print("\n".join(info.lines()))
PY
  )
  local isa extra
  for isa in "$@"; do
    extra=()
    [ "$isa" = baseline ] && extra=(LORM_CPU_BASELINE=1)
    log "op tests against the installed package, CPU loops: $isa"
    (cd "$work/outside" && "${scrubbed[@]}" LORM_EXPECT_BACKEND=$backend "${extra[@]}" \
        "$venv/bin/python" -m pytest -q -p no:cacheprovider "${op_tests[@]/#/$work/src/}")
  done
}

# `lorm demo` (in $work/outside) with its arguments; its exit status in $demo_rc, its
# stdout and stderr in $work/demo-$1.{out,err}.
run_demo() {
  local label=$1; shift
  demo_rc=0
  (cd "$work/outside" && "${scrubbed[@]}" "$venv/bin/lorm" demo "$@") \
      > "$work/demo-$label.out" 2> "$work/demo-$label.err" || demo_rc=$?
}

# The demo's path after the plain install: the message without the 'vision' extra, the
# command it names (which must keep torch), then the demo itself where torchvision loads.
check_demo_path() {
  local demo_args=(--seeds 0 --jobs 1 --quiet --output "$work/demo-runs")
  local pin
  pin="torch==$(torch_dist)"
  run_demo without-vision "${demo_args[@]}"
  local err
  err=$(cat "$work/demo-without-vision.err")
  if [ "$demo_rc" != 2 ] || [[ "$err" != *"error: lorm demo"*"pip install 'lorm[vision]' '$pin'"* ]] \
      || [[ "$err" == *Traceback* ]]; then
    printf '%s\n' "$err" | tail -n 20 >&2
    log "FAILED: without timm, lorm demo must exit 2 with one line naming pip install 'lorm[vision]' '$pin' (exit $demo_rc)"
    exit 1
  fi
  log "lorm demo without the vision extra: $err"
  log "adding the extra as the message says: pip install 'lorm[vision]' '$pin'"
  (cd "$work/outside" && "${scrubbed[@]}" "$venv/bin/pip" install "lorm[vision]" "$pin") \
      > "$work/vision.log" 2>&1 || { tail -n 40 "$work/vision.log"; log "pip install 'lorm[vision]' failed"; exit 1; }
  assert_torch_kept "pip install 'lorm[vision]' $pin" "$work/vision.log"
  local torchvision
  torchvision=$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("torchvision"))')
  log "pip chose torchvision $torchvision"
  local start=$SECONDS
  run_demo with-vision "${demo_args[@]}"
  if (cd "$work/outside" && "$venv/bin/python" -c 'import timm' >/dev/null 2>&1); then
    if [ "$demo_rc" != 0 ] || ! grep -q "final avg acc" "$work/demo-with-vision.out"; then
      tail -n 30 "$work/demo-with-vision.out" "$work/demo-with-vision.err" >&2
      log "FAILED: lorm demo (one seed) under torch $torch_before, torchvision $torchvision (exit $demo_rc)"
      exit 1
    fi
    log "lorm demo ran (one seed, $((SECONDS - start)) s):"
    grep -A4 "final avg acc" "$work/demo-with-vision.out" >&2
  else
    err=$(cat "$work/demo-with-vision.err")
    if [ "$demo_rc" != 2 ] || [[ "$err" != *"failed under torch $torch_before"*"torchvision $torchvision"* ]] \
        || [[ "$err" != *"must be the build made for the installed torch"* ]]; then
      printf '%s\n' "$err" | tail -n 20 >&2
      log "FAILED: with a torchvision that does not load, lorm demo must exit 2 naming both versions (exit $demo_rc)"
      exit 1
    fi
    log "NOT RUN: lorm demo: torchvision $torchvision (what this index has for torch $torch_before) does not load under it; lorm says: $err"
  fi
}

# 1. As the machine is. A toolkit counts as usable when an nvcc is on PATH.
check_as_is() {
  local expect_cuda=no
  command -v nvcc >/dev/null 2>&1 && expect_cuda=yes
  install as-is
  if grep -q "$fallback_warning" "$work/as-is.log"; then
    [ "$expect_cuda" = no ] || { grep -A2 "$fallback_warning" "$work/as-is.log"; log "unexpected fallback"; exit 1; }
  fi
  check_installed "$expect_cuda" default baseline
  check_demo_path
}

# 2. The toolkit unusable: CUDA_HOME an empty folder, and no folder with nvcc on PATH.
check_no_toolkit() {
  mkdir -p "$work/empty-cuda"
  local path_without_nvcc
  path_without_nvcc=$(printf '%s' "$PATH" | tr ':' '\n' | while read -r dir; do
    [ -n "$dir" ] && [ ! -e "$dir/nvcc" ] && printf '%s:' "$dir"; done)
  "$venv/bin/pip" uninstall -q -y lorm 2>/dev/null || true
  install no-toolkit CUDA_HOME="$work/empty-cuda" PATH="${path_without_nvcc%:}"
  grep -q "$fallback_warning" "$work/no-toolkit.log" \
    || { tail -n 40 "$work/no-toolkit.log"; log "no fallback warning in pip's output"; exit 1; }
  log "the warning pip showed: $(grep -m1 "$fallback_warning" "$work/no-toolkit.log")"
  check_installed no default
}

for case in ${LORM_FRESH_CASES:-as-is no-toolkit}; do
  case $case in
    as-is) check_as_is ;;
    no-toolkit) check_no_toolkit ;;
    *) log "LORM_FRESH_CASES: unknown case $case (as-is, no-toolkit)"; exit 2 ;;
  esac
done
log "passed: ${LORM_FRESH_CASES:-as-is no-toolkit}"
