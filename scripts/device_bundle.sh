#!/usr/bin/env bash
# Prepares .device_bundle/ for scripts/gpu_check.sh: the GPU machine has CUDA
# but none of HDF5, CLI11, GoogleTest or OpenBLAS, and no network. So build here
# for sm_90 (H100/H200) into build-sm90, and carry the binaries with the shared
# libraries they load that the GPU machine lacks (everything ldd resolves
# outside /usr/local/cuda, except the C library itself and the NVIDIA driver).
#
#   bash scripts/device_bundle.sh          # then carry .device_bundle to the GPU machine
#
# .device_bundle/ (git-ignored):
#   bundle.tar.gz  run (wrapper: run BIN [ARGS...] with LD_LIBRARY_PATH and
#                  ECHO_BIN set), bin/ (echo-lm and every test executable that
#                  has CUDA tests, stripped), lib/ (the shared libraries above);
#                  compressed because OpenBLAS alone is 36 MB
#   COMMIT         the commit (and "dirty" when the tree had changes) it was built from
#   MANIFEST       what is inside and how big
# Environment: ECHO_JOBS (default nproc), ECHO_BUNDLE_BUILD_DIR (default build-sm90).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir="${ECHO_BUNDLE_BUILD_DIR:-build-sm90}"
jobs="${ECHO_JOBS:-$(nproc)}"
bundle=.device_bundle
max_mib=60

if ! command -v nvcc >/dev/null 2>&1 && [ ! -x /usr/local/cuda/bin/nvcc ]; then
  echo "device_bundle: nvcc not found; the bundle needs the CUDA backend" >&2
  exit 1
fi

cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DECHO_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
cmake --build "$build_dir" -j "$jobs"
if [ ! -f "$build_dir/libecho_cuda.a" ]; then
  echo "device_bundle: $build_dir has no CUDA backend (libecho_cuda.a missing)" >&2
  exit 1
fi

stage="$build_dir/device_bundle_stage"
rm -rf "$bundle" "$stage"
mkdir -p "$bundle" "$stage/bin" "$stage/lib"

binaries=("$build_dir/echo-lm")
for exe in "$build_dir"/test_*; do
  [ -f "$exe" ] && [ -x "$exe" ] || continue
  # Listing needs no GPU: keep the executables that have CUDA tests.
  if "$exe" --gtest_list_tests --gtest_filter='*Cuda*' 2>/dev/null | grep -q '^  '; then
    binaries+=("$exe")
  fi
done
for b in "${binaries[@]}"; do
  cp "$b" "$stage/bin/"
  strip --strip-unneeded "$stage/bin/$(basename "$b")"
done

# Shared libraries: what the dynamic loader resolves here, minus the C library
# (the GPU machine's own is newer), the CUDA toolkit (there under
# /usr/local/cuda, same major version) and the driver.
is_system_lib() {
  case "$(basename "$1")" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libresolv.so*|ld-linux*|linux-vdso*) return 0 ;;
    libcuda.so*|libnvidia*) return 0 ;;
  esac
  return 1
}
declare -A copied=()
for b in "${binaries[@]}"; do
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    if [ "$path" = "not" ]; then
      echo "device_bundle: $(basename "$b") needs $name, which is not found here" >&2
      exit 1
    fi
    case "$path" in /usr/local/cuda*) continue ;; esac
    is_system_lib "$name" && continue
    [ -n "${copied[$name]:-}" ] && continue
    cp -L "$path" "$stage/lib/$name"
    copied[$name]=1
  done < <(ldd "$b")
done

cat > "$stage/run" <<'WRAP'
#!/usr/bin/env bash
# run BIN [ARGS...]: one of the bundle's programs, with the bundle's libraries first.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cuda_libs=/usr/local/cuda/lib64:/usr/local/cuda/lib:/usr/local/cuda/targets/x86_64-linux/lib
export LD_LIBRARY_PATH="$here/lib:$cuda_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ECHO_BIN="$here/bin/echo-lm"
prog="$1"
shift
exec "$here/bin/$prog" "$@"
WRAP
chmod +x "$stage/run"
(cd "$stage" && du -b run bin/* lib/* | sort -k2) > "$bundle/MANIFEST"
tar -czf "$bundle/bundle.tar.gz" -C "$stage" .

commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then commit="$commit dirty"; fi
echo "$commit" > "$bundle/COMMIT"

size_mib=$(( $(du -sb "$bundle" | cut -f1) / 1048576 ))
echo "device_bundle: $bundle holds ${#binaries[@]} programs and ${#copied[@]} libraries, ${size_mib} MiB (commit $commit)"
if [ "$size_mib" -ge "$max_mib" ]; then
  echo "device_bundle: $bundle is ${size_mib} MiB, over the ${max_mib} MiB that can travel" >&2
  exit 1
fi
