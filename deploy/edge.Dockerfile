# voxline edge: the browser page over WebRTC and the Twilio Media Streams phone line, bridged to the
# orchestrator's Converse. Built by `make images` (scripts/images.sh) from the repository root;
# edge.Dockerfile.dockerignore sends only constraints.txt and the two packages it installs. Every
# wheel comes from the wheelhouse image (see llm.Dockerfile): no network, no CA in the build.
# WebRTC media (UDP) goes to the container's own address: a browser on the Docker host reaches it;
# from elsewhere, give --ice-servers a TURN server (VOXLINE_EDGE_ICE_SERVERS).
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
COPY services/edge/ edge/
RUN --mount=type=bind,from=wheelhouse,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels -c constraints.txt ./common ./edge

FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
RUN useradd --system --create-home --uid 10001 voxline \
 && install -d -o voxline /var/cache/voxline
COPY --from=build /opt/venv /opt/venv
USER voxline
ENV VOXLINE_EDGE_HOST=0.0.0.0 \
    VOXLINE_EDGE_PORT=8780
EXPOSE 8780
CMD ["python", "-m", "voxline.edge"]
