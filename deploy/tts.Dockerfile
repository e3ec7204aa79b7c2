# voxline TTS service: espeak-ng (bundled with espeakng-loader), Piper, MMS/VITS via transformers.
# Built by `make images` (scripts/images.sh) from the repository root; tts.Dockerfile.dockerignore
# sends only constraints.txt and the two packages it installs. Every wheel comes from the
# wheelhouse image (see llm.Dockerfile): no network, no CA in the build.
# GPU: docker-compose.gpu.yml sets TORCH_INDEX_URL to a CUDA wheel index (torch fetched from it).
ARG BASE_IMAGE=python:3.11-slim
ARG WHEELHOUSE=voxline-wheelhouse:latest
FROM ${WHEELHOUSE} AS wheelhouse

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
ARG TORCH_INDEX_URL=""
WORKDIR /opt/voxline
# Every install within constraints.txt: the versions the project was tested with.
COPY constraints.txt ./
COPY services/common/ common/
COPY services/tts/ tts/
# torch's C++ headers and test binaries (~150 MB) only serve building extensions and testing torch.
RUN --mount=type=bind,from=wheelhouse,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
 && if [ -n "$TORCH_INDEX_URL" ]; then \
      /opt/venv/bin/pip install --no-deps --index-url "$TORCH_INDEX_URL" torch==2.13.0; fi \
 && /opt/venv/bin/pip install --no-index --find-links /wheels -c constraints.txt ./common ./tts \
 && cd /opt/venv/lib/python3.11/site-packages/torch \
 && rm -rf include test && find bin -type f ! -name torch_shm_manager -delete

FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
# /var/cache/voxline/huggingface: VITS voices fetched from the hub (when allowed), kept in the
# compose file's named volume.
RUN useradd --system --create-home --uid 10001 voxline \
 && install -d -o voxline /var/cache/voxline
COPY --from=build /opt/venv /opt/venv
USER voxline
ENV VOXLINE_TTS_HOST=0.0.0.0 \
    VOXLINE_TTS_PORT=50053 \
    HF_HOME=/var/cache/voxline/huggingface
EXPOSE 50053
CMD ["python", "-m", "voxline.tts"]
