# Shared helpers for the scripts in this folder. Source it; do not run it.
# Sets REPO (the repository root) and puts the CUDA toolkit on PATH if the
# machine has one (it is never installed by these scripts).

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO

if [[ -d /usr/local/cuda/bin && ":$PATH:" != *":/usr/local/cuda/bin:"* ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

# Number of cores to build with.
colossus_jobs() {
  nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2
}

log() { printf '==> %s\n' "$*" >&2; }
