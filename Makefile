# Two commands for a fresh machine:
#   make up     install into .venv and run the whole service on embedded defaults
#   make test   install into .venv and run the whole test suite
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed-stamp

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

.PHONY: up test install lint clean video-deps browser-deps

$(STAMP): pyproject.toml Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	@$(MAKE) --no-print-directory video-deps
	if $(HAVE_VIDEO_DEPS); then extras=test,embedded,video; else extras=test,embedded; fi; \
	$(VENV)/bin/pip install --quiet -e ".[$$extras]"
	touch $(STAMP)

install: $(STAMP)

# Installs VIDEO_APT_PACKAGES with apt-get when they are missing and we are root;
# elsewhere (no apt, not root) it only says so. Never fails the build.
video-deps:
	@if $(HAVE_VIDEO_DEPS); then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "apt-get install $(VIDEO_APT_PACKAGES)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $(VIDEO_APT_PACKAGES) >/dev/null; } \
	  || echo "warning: apt-get failed; videos will be hashed without vpdq"; \
	else \
	  echo "note: FFmpeg development files missing (Debian: $(VIDEO_APT_PACKAGES));"; \
	  echo "      without root/apt-get vpdq is not built; videos are hashed by the OpenCV path"; \
	fi

# Installs BROWSER_APT_PACKAGES like video-deps (root and apt-get only). Without
# them the browser tests are skipped, and fail under CI=true. Never fails the build.
browser-deps:
	@if $(HAVE_BROWSER_DEPS); then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "apt-get install $(BROWSER_APT_PACKAGES)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $(BROWSER_APT_PACKAGES) >/dev/null; } \
	  || echo "warning: apt-get failed; the browser tests will be skipped (and fail under CI=true)"; \
	else \
	  echo "note: Chromium or chromedriver missing (Debian: $(BROWSER_APT_PACKAGES));"; \
	  echo "      without root/apt-get the browser tests are skipped (and fail under CI=true)"; \
	fi

up: $(STAMP)
	$(VENV)/bin/moderation up

# browser-deps first: on a fresh machine `make test` installs Chromium itself (as root).
test: $(STAMP)
	@$(MAKE) --no-print-directory browser-deps
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) var .pytest_cache test-artifacts tests/browser/artifacts
