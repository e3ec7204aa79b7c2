# voxline orchestrator: the VoiceAssistant.Converse stream chaining stt, llm and tts.
# Built by docker-compose.yml from the repository root; orchestrator.Dockerfile.dockerignore sends
# only constraints.txt and the two packages it installs:
#   docker compose build orchestrator
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/voxline
# Every install within constraints.txt: the versions the project was tested with.
COPY constraints.txt ./
COPY services/common/ common/
COPY services/orchestrator/ orchestrator/
RUN pip install -c constraints.txt ./common ./orchestrator \
 && useradd --system --create-home --uid 10001 voxline

USER voxline
ENV VOXLINE_ORCHESTRATOR_HOST=0.0.0.0 \
    VOXLINE_ORCHESTRATOR_PORT=50050
EXPOSE 50050
CMD ["python", "-m", "voxline.orchestrator"]
