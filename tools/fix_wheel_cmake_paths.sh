#!/usr/bin/env bash
# Point the ROS 2 wheels' CMake exports at this venv's Python and NumPy headers.
# Usage: tools/fix_wheel_cmake_paths.sh VENV
#
# The wheels are built in a manylinux image whose Python lives in /opt/python/cp311-cp311; the
# generated `share/*/cmake/export_*__rosidl_generator_pyExport.cmake` files keep those include
# directories, and CMake refuses imported targets with non-existent include paths, so any
# package whose messages depend on std_msgs/sensor_msgs fails to configure. Idempotent: run it
# after every pip install, which may bring back an unpatched file.
set -euo pipefail
venv=$(cd "$1" && pwd)
py="$venv/bin/python"
pyinc=$(env -u _ROS_WHEELS_BOOTSTRAP_COMPLETE "$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
npinc=$(env -u _ROS_WHEELS_BOOTSTRAP_COMPLETE "$py" -c 'import numpy; print(numpy.get_include())')
files=$(grep -rl /opt/python/cp311-cp311 "$venv"/share/*/cmake/ 2>/dev/null || true)
if [ -n "$files" ]; then
    echo "$files" | xargs sed -i \
        -e "s#/opt/python/cp311-cp311/include/python3.11#$pyinc#g" \
        -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$npinc#g"
    echo "patched $(echo "$files" | wc -l) CMake export files of the ROS wheels"
fi
# Anything left would break the build in a way the lines above do not know about.
if grep -rl /opt/python "$venv"/share/*/cmake/ 2>/dev/null; then
    echo "unexpected /opt/python paths left in the files above" >&2
    exit 1
fi
