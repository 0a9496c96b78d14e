#!/usr/bin/env bash
# Build a ROS 2 interface package (ament_cmake + rosidl) with plain CMake + make and install it
# into the venv, so `import <pkg>.msg` works with nothing sourced.
# Usage: tools/build_interfaces.sh VENV PACKAGE_DIR BUILD_DIR
# Expects tools/fix_wheel_cmake_paths.sh to have run on VENV (make does it after pip).
set -euo pipefail
venv=$(cd "$1" && pwd)
pkg=$(cd "$2" && pwd)
build=$3
name=$(basename "$pkg")
log="$build.log"

# ament's CMake finds the message packages, generators and typesupports through the ament index
# (share/ament_index) of the prefixes in AMENT_PREFIX_PATH, not through CMAKE_PREFIX_PATH alone;
# with it unset the build stops at "No 'rosidl_typesupport_c' found". The generators are Python
# scripts run by the venv's interpreter, which must re-exec itself with the wheels' library path.
export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv" PATH="$venv/bin:$PATH"
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE

# A fresh build directory: this runs only when the sources or the venv changed, and a CMake cache
# from an earlier venv (or checkout path) would keep stale absolute paths.
rm -rf "$build"
mkdir -p "$build"

step() {  # step NAME COMMAND...: run quietly into the log, show its tail on failure
    local what=$1; shift
    "$@" >> "$log" 2>&1 || { tail -40 "$log"; echo "$what of $name failed (full log: $log)" >&2; exit 1; }
}
: > "$log"
step "CMake configure" cmake -S "$pkg" -B "$build" -G "Unix Makefiles" \
    -DCMAKE_INSTALL_PREFIX="$venv" -DCMAKE_PREFIX_PATH="$venv" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$venv/bin/python"
step "build" make -C "$build" -j"$(nproc)"
step "install" make -C "$build" install
echo "built $name and installed it into $venv (log: $log)"
