# syntax=docker/dockerfile:1
#
# One image for every role of the NCII moderation service. The role is picked
# by the command passed to the `moderation` entrypoint:
#
#   docker run moderation:latest                 # -> moderation worker (default)
#   docker run moderation:latest web             # -> moderation web
#   docker run moderation:latest db upgrade      # -> moderation db upgrade
#
# Build:  docker build -t moderation:latest .

ARG PYTHON_IMAGE=python:3.11-slim

###############################################################################
# Builder: install the locked dependencies and the project into a
# self-contained virtualenv at /opt/venv.
###############################################################################
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Toolchain only for dependencies that ship no manylinux wheel; it never
# reaches the final image. vpdq (video hashing) is one: PyPI has only its
# source, built with cmake against FFmpeg's development files.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config cmake \
       libavcodec-dev libavdevice-dev libavfilter-dev libavformat-dev libavutil-dev \
       libswresample-dev libswscale-dev \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"

WORKDIR /src
# The locked runtime (requirements/base.txt: every dependency pinned with its
# hashes, pip and the build backends included) and vpdq built from source with
# the locked backend; a new release upstream never changes the image.
COPY requirements/ requirements/
RUN pip install --require-hashes --no-deps -r requirements/base.txt \
    && pip install --require-hashes --no-deps --no-build-isolation -r requirements/video.txt
COPY . .
# The project itself, with no dependency resolution of its own.
RUN pip install --no-deps --no-build-isolation . \
    && pip check

# The Debian packages holding the shared libraries that compiled extensions in
# the virtualenv link against (vpdq: libavformat, libavcodec, libswscale,
# libavutil), named as this base image's Debian release names them; the
# runtime stage installs exactly these.
RUN find /opt/venv -name '*.so*' -type f -exec readelf -d {} + 2>/dev/null \
    | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u \
    | while read -r lib; do \
        path=$(ldconfig -p | awk -v l="$lib" '$1 == l {print $NF; exit}'); \
        [ -z "$path" ] || dpkg -S "$path" "$(realpath "$path")" 2>/dev/null || true; \
      done | cut -d: -f1 | sort -u > /opt/runtime-apt-packages.txt \
    && cat /opt/runtime-apt-packages.txt

###############################################################################
# Runtime
###############################################################################
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="moderation" \
      org.opencontainers.image.description="NCII moderation service (worker, web, db migrations)"

# libglib2.0-0: needed by opencv-python-headless (cv2) at import time; the
# rest: the shared libraries of compiled extensions (FFmpeg's for vpdq).
COPY --from=builder /opt/runtime-apt-packages.txt /tmp/
RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 $(cat /tmp/runtime-apt-packages.txt) \
    && rm -rf /var/lib/apt/lists/* /tmp/runtime-apt-packages.txt

RUN groupadd --system --gid 10001 moderation \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /app --shell /usr/sbin/nologin moderation

COPY --from=builder /opt/venv /opt/venv
# Model cards and ONNX files (CLASSIFIER_MODEL names them; nothing is downloaded).
COPY --from=builder /src/models/*.toml /src/models/*.onnx /src/models/*.md /src/models/LICENSE.* /opt/models/

ENV PATH="/opt/venv/bin:${PATH}" \
    VIRTUAL_ENV=/opt/venv \
    MODELS_DIR=/opt/models \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    METRICS_HOST=0.0.0.0 \
    METRICS_PORT=9100 \
    WEB_METRICS_PORT=9101 \
    WEB_HOST=0.0.0.0 \
    WEB_PORT=8080

WORKDIR /app
RUN chown 10001:10001 /app

USER 10001

# 8080: `moderation web` HTTP; 9100: worker /metrics, /healthz, /readyz;
# 9101: `moderation web` /metrics (for Prometheus only, never routed to users).
EXPOSE 8080 9100 9101

ENTRYPOINT ["moderation"]
CMD ["worker"]
