#!/usr/bin/env bash
# Give an editable (pip -e) install of the ament_python package the ROS install layout in the venv.
# Usage: tools/link_ros_layout.sh VENV PACKAGE_DIR
#
# pip's editable install puts the console scripts in VENV/bin but installs none of setup.py's
# data_files. Lay them out the way `colcon build --symlink-install` does: real directories with
# one symlink per file, pointing at the live sources, so that with AMENT_PREFIX_PATH=VENV the ament
# index finds the package, its share/ directory (package.xml, launch/*, config/*) and, in
# lib/<package>/, the executables `ros2 run` looks for. Never a link to a whole folder:
# `ros2 launch <package> <file>` walks share/<package> with os.walk, which does not follow folder
# links, so a linked launch/ folder hides the launch file.
# The list of files is setup.py's own data_files, so this layout and colcon's cannot drift apart.
set -euo pipefail
venv=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
name=$(basename "$src")
py() { env -u _ROS_WHEELS_BOOTSTRAP_COMPLETE "$venv/bin/python" "$@"; }

# share/<name> holds nothing but this layout: start it afresh, so files removed from setup.py
# disappear and an older layout (folder links) cannot leave anything behind.
rm -rf "${venv:?}/share/$name"
# "DEST<TAB>SOURCE" for every data file: setup.py runs with setup() replaced by a function that
# only records its arguments, so no setup command runs.
entries=$(cd "$src" && py -c "
import runpy, setuptools
args = {}
setuptools.setup = lambda **kw: args.update(kw)
runpy.run_path('setup.py')
for dest, files in args.get('data_files', []):
    for f in files:
        print(dest, f, sep='\t')")
linked=0
while IFS=$'\t' read -r dest file; do
    [ -n "$dest" ] || continue
    mkdir -p "$venv/$dest"
    ln -sfn "$src/$file" "$venv/$dest/$(basename "$file")"
    linked=$((linked + 1))
done <<< "$entries"

mkdir -p "$venv/lib/$name"
scripts=$(py -c "
import importlib.metadata as md
print(*sorted(e.name for e in md.distribution('$name').entry_points if e.group == 'console_scripts'))")
for script in $scripts; do
    ln -sfn "../../bin/$script" "$venv/lib/$name/$script"
done
echo "linked $name's ROS layout into $venv ($linked data files; executables: ${scripts:-none})"
