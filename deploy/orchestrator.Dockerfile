# voxline orchestrator: the VoiceAssistant.Converse stream chaining stt, llm and tts.
# Built by `make images` (scripts/images.sh) from the repository root;
# orchestrator.Dockerfile.dockerignore sends only constraints.txt and the two packages it installs.
# Every wheel comes from the wheelhouse image (see llm.Dockerfile): no network, no CA in the build.
ARG BASE_IMAGE=python:3.11-slim
ARG WHEELHOUSE=voxline-wheelhouse:latest
FROM ${WHEELHOUSE} AS wheelhouse

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/voxline
# Every install within constraints.txt: the versions the project was tested with.
COPY constraints.txt ./
COPY services/common/ common/
COPY services/orchestrator/ orchestrator/
RUN --mount=type=bind,from=wheelhouse,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels -c constraints.txt ./common ./orchestrator

FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
RUN useradd --system --create-home --uid 10001 voxline \
 && install -d -o voxline /var/cache/voxline
COPY --from=build /opt/venv /opt/venv
USER voxline
ENV VOXLINE_ORCHESTRATOR_HOST=0.0.0.0 \
    VOXLINE_ORCHESTRATOR_PORT=50050
EXPOSE 50050
CMD ["python", "-m", "voxline.orchestrator"]
