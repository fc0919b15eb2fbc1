#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages Echo builds against, if any is missing.
# Idempotent and non-interactive: checks each package with dpkg first and runs
# apt-get (update + install) only when something is missing. Works as root, or
# through sudo when run as another user.
#   --fuzz   also clang with its libFuzzer/sanitizer runtimes and OpenMP (scripts/fuzz.sh only)
set -euo pipefail

# Extra package names given as arguments are installed too (e.g. python3-matplotlib
# for the plots of scripts/train_demo.sh); --fuzz adds clang's fuzzing toolchain.
PACKAGES=(cmake g++ libhdf5-dev hdf5-tools libcli11-dev libgtest-dev libopenblas-dev nlohmann-json3-dev
          openmpi-bin libopenmpi-dev)  # OpenMPI: `mpirun` data-parallel training (docs/distributed.md)
for arg in "$@"; do
  if [ "$arg" = "--fuzz" ]; then PACKAGES+=(clang libclang-rt-dev libomp-dev); else PACKAGES+=("$arg"); fi
done

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all packages present (${PACKAGES[*]})"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo -n)
else
  echo "setup: missing packages: ${missing[*]}; run as root (or install sudo) to install them" >&2
  exit 1
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
