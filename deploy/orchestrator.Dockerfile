# voxline orchestrator: the VoiceAssistant.Converse stream chaining stt, llm and tts.
# Built by docker-compose.yml with the build context services/ (only the service packages are sent):
#   docker compose build orchestrator
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/voxline
COPY common/ common/
COPY orchestrator/ orchestrator/
RUN pip install ./common ./orchestrator \
 && useradd --system --create-home --uid 10001 voxline

USER voxline
ENV VOXLINE_ORCHESTRATOR_HOST=0.0.0.0 \
    VOXLINE_ORCHESTRATOR_PORT=50050
EXPOSE 50050
CMD ["python", "-m", "voxline.orchestrator"]
