# The stack's trace viewer: Arize Phoenix from PyPI (as `voxline up --viewer` runs it), within
# constraints.txt, every wheel from the wheelhouse image (see llm.Dockerfile). OTLP/gRPC in on
# 4317, UI (and OTLP/HTTP) on 6006; its SQLite data in /var/lib/phoenix (a named volume).
# phoenix.Dockerfile.dockerignore sends only constraints.txt.
ARG BASE_IMAGE=python:3.11-slim
ARG WHEELHOUSE=voxline-wheelhouse:latest
FROM ${WHEELHOUSE} AS wheelhouse

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/voxline
COPY constraints.txt ./
RUN --mount=type=bind,from=wheelhouse,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels -c constraints.txt arize-phoenix

FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
RUN useradd --system --create-home --uid 10001 voxline \
 && install -d -o voxline /var/cache/voxline /var/lib/phoenix
COPY --from=build /opt/venv /opt/venv
USER voxline
# Quiet and offline, as `voxline up --viewer` runs it (voxline/cli/viewer.py QUIET_ENV): no SQL echo
# of its migrations, no downloads or telemetry of its own. Override any of them at `docker run`.
ENV PHOENIX_HOST=0.0.0.0 \
    PHOENIX_PORT=6006 \
    PHOENIX_GRPC_PORT=4317 \
    PHOENIX_WORKING_DIR=/var/lib/phoenix \
    PHOENIX_LOG_MIGRATIONS=false \
    PHOENIX_DB_LOGGING_LEVEL=warning \
    PHOENIX_LOGGING_LEVEL=warning \
    PHOENIX_ALLOW_EXTERNAL_RESOURCES=false \
    PHOENIX_TELEMETRY_ENABLED=false \
    PYTHONWARNINGS=ignore
EXPOSE 6006 4317
HEALTHCHECK --interval=10s --timeout=5s --retries=3 --start-period=120s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:6006/healthz', timeout=4)"]
CMD ["python", "-m", "phoenix.server.main", "serve"]
