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
# Builder: build a wheel of the project (and of every dependency) and install
# them into a self-contained virtualenv at /opt/venv.
###############################################################################
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Toolchain only for dependencies that ship no manylinux wheel; it never
# reaches the final image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"
RUN pip install --upgrade pip wheel

WORKDIR /src
COPY . .

# Wheels for the project and all of its runtime dependencies ...
RUN pip wheel . -w /wheels
# ... installed offline from that directory only.
RUN pip install --no-index --find-links=/wheels /wheels/*.whl \
    && pip check

###############################################################################
# Runtime
###############################################################################
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="moderation" \
      org.opencontainers.image.description="NCII moderation service (worker, web, db migrations)"

# libglib2.0-0: needed by opencv-python-headless (cv2) at import time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 moderation \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /app --shell /usr/sbin/nologin moderation

COPY --from=builder /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:${PATH}" \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    METRICS_PORT=9100 \
    WEB_HOST=0.0.0.0 \
    WEB_PORT=8080

WORKDIR /app
RUN chown 10001:10001 /app

USER 10001

# 8080: `moderation web` HTTP; 9100: worker /metrics, /healthz, /readyz.
EXPOSE 8080 9100

ENTRYPOINT ["moderation"]
CMD ["worker"]
