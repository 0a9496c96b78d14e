#!/usr/bin/env bash
# Build a ROS 2 interface package (ament_cmake + rosidl) with plain CMake and install it into
# the virtual environment, so `import <pkg>.msg` works with nothing sourced.
# Usage: tools/build_interfaces.sh VENV PACKAGE_DIR BUILD_DIR
set -euo pipefail
venv=$(cd "$1" && pwd)
pkg=$(cd "$2" && pwd)
build=$3
py="$venv/bin/python"

# The Kilted wheels are built in a manylinux image and bake its Python/NumPy include paths into
# their CMake exports; point them at this venv's (idempotent).
pyinc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
npinc=$("$py" -c 'import numpy; print(numpy.get_include())')
{ grep -rl /opt/python/cp311-cp311 "$venv"/share/*/cmake/ 2>/dev/null || true; } | xargs -r sed -i \
    -e "s#/opt/python/cp311-cp311/include/python3.11#$pyinc#g" \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$npinc#g"

# ament's CMake finds packages through the ament index named by AMENT_PREFIX_PATH.
export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv" PATH="$venv/bin:$PATH"
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE
cmake -S "$pkg" -B "$build" -DCMAKE_INSTALL_PREFIX="$venv" -DCMAKE_PREFIX_PATH="$venv" \
      -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$py" -DCMAKE_BUILD_TYPE=Release > "$build.log" 2>&1 \
    || { tail -40 "$build.log"; echo "cmake configure of $pkg failed (full log: $build.log)"; exit 1; }
cmake --build "$build" -j"$(nproc)" >> "$build.log" 2>&1 \
    || { tail -40 "$build.log"; echo "build of $pkg failed (full log: $build.log)"; exit 1; }
cmake --install "$build" >> "$build.log" 2>&1 \
    || { tail -40 "$build.log"; echo "install of $pkg failed (full log: $build.log)"; exit 1; }
echo "built and installed $(basename "$pkg") into $venv"
