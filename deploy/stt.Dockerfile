# voxline STT service: faster-whisper on CTranslate2, no torch.
# Built by docker-compose.yml with the build context services/ (only the service packages are sent):
#   docker compose build stt
# GPU: docker-compose.gpu.yml sets CUDA_LIBS so CTranslate2 finds cuBLAS and cuDNN.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Extra pip packages for a GPU image, e.g. "nvidia-cublas-cu12 nvidia-cudnn-cu12==9.*" (empty: CPU).
ARG CUDA_LIBS=""

WORKDIR /opt/voxline
COPY common/ common/
COPY stt/ stt/
# pipecat-ai only for the Smart Turn v3 ONNX file inside it (never imported): no dependencies.
RUN pip install ./common ./stt \
 && pip install --no-deps pipecat-ai==1.14.0 \
 && if [ -n "$CUDA_LIBS" ]; then pip install $CUDA_LIBS; fi \
 && useradd --system --create-home --uid 10001 voxline
# Where the pip-installed CUDA libraries land (absent, and ignored, in the CPU image).
ENV LD_LIBRARY_PATH=/usr/local/lib/python3.11/site-packages/nvidia/cublas/lib:/usr/local/lib/python3.11/site-packages/nvidia/cudnn/lib

USER voxline
ENV VOXLINE_STT_HOST=0.0.0.0 \
    VOXLINE_STT_PORT=50051
EXPOSE 50051
CMD ["python", "-m", "voxline.stt"]
