#!/usr/bin/env bash
# Give an editable (pip -e) install of the ament_python package the ROS install layout in the venv.
# Usage: tools/link_ros_layout.sh VENV PACKAGE_DIR
#
# pip's editable install puts the console scripts in VENV/bin but installs none of setup.py's
# data_files. Link them the way `colcon build --symlink-install` would, pointing at the live
# sources, so that with AMENT_PREFIX_PATH=VENV the ament index finds the package, its share/
# directory (package.xml, launch/, config/) and, in lib/<package>/, the executables `ros2 run`
# looks for.
set -euo pipefail
venv=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
name=$(basename "$src")

mkdir -p "$venv/share/ament_index/resource_index/packages" "$venv/share/$name" "$venv/lib/$name"
touch "$venv/share/ament_index/resource_index/packages/$name"
for item in package.xml launch config; do
    if [ -e "$src/$item" ]; then ln -sfn "$src/$item" "$venv/share/$name/$item"; fi
done
scripts=$(env -u _ROS_WHEELS_BOOTSTRAP_COMPLETE "$venv/bin/python" -c "
import importlib.metadata as md
print(*sorted(e.name for e in md.distribution('$name').entry_points if e.group == 'console_scripts'))")
for script in $scripts; do
    ln -sfn "../../bin/$script" "$venv/lib/$name/$script"
done
echo "linked $name's ROS layout into $venv (executables: ${scripts:-none})"
