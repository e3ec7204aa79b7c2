# voxline TTS service: espeak-ng (bundled with espeakng-loader), Piper, MMS/VITS via transformers.
# Built by docker-compose.yml with the build context services/ (only the service packages are sent):
#   docker compose build tts
# GPU: docker-compose.gpu.yml sets TORCH_INDEX_URL to a CUDA wheel index.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch comes from the PyTorch CPU wheel index: PyPI's default Linux wheel bundles the CUDA
# libraries (gigabytes) that a CPU image never uses. Installed first, so the service's own
# "torch==2.13.0" requirement is already met by 2.13.0+cpu.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

WORKDIR /opt/voxline
RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0
COPY common/ common/
COPY tts/ tts/
RUN pip install ./common ./tts \
 && useradd --system --create-home --uid 10001 voxline

USER voxline
ENV VOXLINE_TTS_HOST=0.0.0.0 \
    VOXLINE_TTS_PORT=50053
EXPOSE 50053
CMD ["python", "-m", "voxline.tts"]
