#!/usr/bin/env bash
# Make sure the system tools the set-up needs are present; install only what is missing, via apt.
# Usage: tools/system_deps.sh PYTHON
#   cmake, make, g++  build ocdit_msgs (rosidl generates C/C++ and a CPython extension)
#   Python.h          that extension compiles against the venv's base interpreter
#   venv/ensurepip    Debian splits them out of its own python3 (python3-venv)
#   sweethome3d-furniture  the CC0/CC-BY household objects `ocdit data objects` builds its library from
set -euo pipefail
python=${1:-python3}
need=()
ls /usr/share/sweethome3d/furniture/*.sh3f >/dev/null 2>&1 || need+=(sweethome3d-furniture)
command -v cmake >/dev/null || need+=(cmake)
command -v make >/dev/null || need+=(make)
command -v g++ >/dev/null || need+=(g++)
"$python" -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
"$python" -c 'import os, sysconfig, sys; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || need+=(python3-dev)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
echo "system packages missing: ${need[*]}"
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "install them (Debian: sudo apt-get install ${need[*]}) and run make again" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
