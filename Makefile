# ocdit_ros: `make test` and `make demo` set everything up on a fresh Debian 12 machine.
# Details and the reasons for the workarounds: docs/setup.md.
#
# Set-up steps, each recorded by a stamp file and redone only when its inputs change, so a second
# `make test` goes straight to pytest. The venv's stamps live in .venv/.stamps, so a deleted .venv
# takes them with it:
#   system  cmake, make, g++, Python headers and venv present (apt-get only for what is missing);
#           stamp in build/, as it is about the machine, not the venv
#   deps    .venv with the pinned Python packages and ROS 2 Kilted wheels (requirements/)
#   msgs    ocdit_msgs built with CMake in build/venv/ (not build/ocdit_msgs, which a colcon build
#           in the repository root would use) and installed into .venv
#   pkg     ocdit_ros installed editable into .venv

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMPS := $(VENV)/.stamps

REQ_LISTS    := requirements/core.txt requirements/ros.txt requirements/dev.txt
REQ_LOCK     := requirements/lock.txt
MSG_SOURCES  := $(shell find ocdit_msgs -type f 2>/dev/null)
# Test-only copy of vision_msgs' layout (no vision_msgs wheel exists), so Detection2DArray
# publishing is tested; nested under test/ so colcon never builds it into a real workspace.
TEST_MSGS    := ocdit_ros/test/interfaces/vision_msgs
TEST_MSG_SOURCES := $(shell find $(TEST_MSGS) -type f 2>/dev/null)
PKG_SOURCES  := ocdit_ros/setup.py ocdit_ros/setup.cfg ocdit_ros/package.xml
# The files setup.py installs to share/ocdit_ros: a new one has to be linked into the venv too.
PKG_DATA     := $(wildcard ocdit_ros/launch/* ocdit_ros/config/*)
PIP          := $(PY) -m pip --disable-pip-version-check

# DDS must never send discovery traffic off this machine, and each run gets its own domain (from
# make's PID) so concurrent runs don't see each other. Set ROS_DOMAIN_ID to override. Only 1..101:
# higher domains use UDP ports inside Linux's ephemeral range (32768+), where they can collide.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
ifeq ($(origin ROS_DOMAIN_ID),undefined)
ROS_DOMAIN_ID := $(shell echo $$(( $$PPID % 101 + 1 )))
endif
export ROS_DOMAIN_ID

# The venv is self-contained; keep other ROS environments out of it. The wheels' start-up hook
# re-execs Python with the venv's library path unless _ROS_WHEELS_BOOTSTRAP_COMPLETE is already
# set, so an inherited guard (from another venv) would leave rclpy without its libraries. A sourced
# ROS install's paths would mix in packages built for another Python.
unexport _ROS_WHEELS_BOOTSTRAP_COMPLETE LD_LIBRARY_PATH PYTHONPATH AMENT_PREFIX_PATH CMAKE_PREFIX_PATH RMW_IMPLEMENTATION

.PHONY: help test demo bench venv msgs lock clean

help:
	@echo "make test   set up .venv if missing or stale, then ruff check . and run all tests (ocdit_ros/test)"
	@echo "make demo   set up, then run the demo into demo_out/"
	@echo "make bench  set up, then run benchmarks/model.py and benchmarks/pipeline.py"
	@echo "make venv   only the set-up (pinned deps, ROS 2 wheels, ocdit_msgs, ocdit_ros)"
	@echo "make msgs   only up to building and installing ocdit_msgs into .venv"
	@echo "make lock   regenerate requirements/lock.txt from core.txt, ros.txt and dev.txt"
	@echo "make clean  remove .venv, build/ and demo_out/"

# ruff first, so a lint finding fails `make test` before the (long) pytest run.
test: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest ocdit_ros/test -ra

demo: venv
	$(PY) -m ocdit_ros.demo --out demo_out

bench: venv
	$(PY) benchmarks/model.py
	$(PY) benchmarks/pipeline.py

venv: $(STAMPS)/pkg

msgs: $(STAMPS)/msgs

# Asks pip what it would install for the lists alone (nothing is installed), so it also works when
# the lists and the old lock disagree.
lock:
	$(PYTHON) tools/lock_requirements.py $(REQ_LISTS)

build/.system-ok: tools/system_deps.sh
	tools/system_deps.sh $(PYTHON)
	@mkdir -p $(@D) && touch $@

# Pinned lists plus the full lock as constraints. A venv whose interpreter no longer runs (Python
# moved or upgraded) is recreated. The wheels' CMake files are patched after every pip install.
$(STAMPS)/deps: $(REQ_LISTS) $(REQ_LOCK) Makefile tools/fix_wheel_cmake_paths.sh | build/.system-ok
	@$(PY) -c '' 2>/dev/null || { echo "creating $(VENV) with $(PYTHON)"; rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(PIP) install -q -c $(REQ_LOCK) $(addprefix -r ,$(REQ_LISTS)) \
	  || { echo "pip install failed; after editing requirements/*.txt run 'make lock' first" >&2; exit 1; }
	tools/fix_wheel_cmake_paths.sh $(VENV)
	@mkdir -p $(@D) && touch $@

$(STAMPS)/msgs: $(STAMPS)/deps $(MSG_SOURCES) $(TEST_MSG_SOURCES) tools/build_interfaces.sh
	tools/build_interfaces.sh $(VENV) ocdit_msgs build/venv/ocdit_msgs
	tools/build_interfaces.sh $(VENV) $(TEST_MSGS) build/venv/vision_msgs
	@touch $@

# Editable install against the venv's pinned setuptools (no isolated build env to download).
# pip's editable install puts the console scripts in .venv/bin but skips data_files, so the ROS
# layout (ament index marker, share/ocdit_ros, lib/ocdit_ros/<scripts>) is linked into the venv
# the way colcon's --symlink-install would: real folders, one link per file.
$(STAMPS)/pkg: $(STAMPS)/msgs $(PKG_SOURCES) $(PKG_DATA) tools/link_ros_layout.sh
	$(PIP) install -q --no-deps --no-build-isolation -e ocdit_ros
	tools/link_ros_layout.sh $(VENV) ocdit_ros
	@touch $@

clean:
	rm -rf $(VENV) build demo_out ocdit_ros/*.egg-info ocdit_ros/.pytest_cache
