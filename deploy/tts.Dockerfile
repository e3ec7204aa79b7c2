# voxline TTS service: espeak-ng (bundled with espeakng-loader), Piper, MMS/VITS via transformers.
# Built by docker-compose.yml from the repository root; tts.Dockerfile.dockerignore sends only
# constraints.txt and the two packages it installs:
#   docker compose build tts
# GPU: docker-compose.gpu.yml sets TORCH_INDEX_URL to a CUDA wheel index.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch comes from the PyTorch CPU wheel index: PyPI's default Linux wheel bundles the CUDA
# libraries (gigabytes) that a CPU image never uses. Installed first and alone (--no-deps), so the
# service's own "torch==2.13.0" requirement is already met by 2.13.0+cpu and torch's dependencies
# come from PyPI within constraints.txt with everything else.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

WORKDIR /opt/voxline
RUN pip install --no-deps --index-url "$TORCH_INDEX_URL" torch==2.13.0
# Every install from here within constraints.txt: the versions the project was tested with.
COPY constraints.txt ./
COPY services/common/ common/
COPY services/tts/ tts/
# /var/cache/voxline/huggingface: VITS voices fetched from the hub (when allowed), kept in the
# compose file's named volume.
RUN pip install -c constraints.txt ./common ./tts \
 && useradd --system --create-home --uid 10001 voxline \
 && install -d -o voxline /var/cache/voxline
USER voxline
ENV VOXLINE_TTS_HOST=0.0.0.0 \
    VOXLINE_TTS_PORT=50053 \
    HF_HOME=/var/cache/voxline/huggingface
EXPOSE 50053
CMD ["python", "-m", "voxline.tts"]
