"""``python -m voxline.llm`` as a real process: flags, env keys, logs, health, SIGTERM."""

from __future__ import annotations

import subprocess
import sys

import grpc
from fakes.chat_server import DEFAULT_TOKENS, FakeChatServer
from llm_harness import CEREBRAS_KEY, GROQ_KEY
from support import start_service

from voxline.v1 import llm_pb2, llm_pb2_grpc


def test_help_lists_flags_without_loading_anything() -> None:
    done = subprocess.run([sys.executable, "-m", "voxline.llm", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0
    for flag in ("--providers", "--hedge-delay-ms", "--cache-file", "--local-model",
                 "--first-token-timeout-ms", "VOXLINE_LLM_PROVIDERS"):
        assert flag in done.stdout


def test_bad_configuration_exits_2_with_a_clear_message() -> None:
    done = subprocess.run([sys.executable, "-m", "voxline.llm", "--groq-base-url",
                           "https://api.groq.com/openai/v1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "appends /openai/v1/chat/completions itself" in done.stderr
    done = subprocess.run([sys.executable, "-m", "voxline.llm", "--providers", "groq,openai"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown provider(s) ['openai']" in done.stderr


def test_service_process_streams_logs_availability_and_stops(fake_servers: tuple[FakeChatServer,
                                                                                 FakeChatServer]
                                                              ) -> None:
    groq, cerebras = fake_servers
    groq.reset()
    env = {"GROQ_API_KEY": GROQ_KEY, "CEREBRAS_API_KEY": "", "VOXLINE_LLM_LOCAL_MODEL": "none"}
    args = ["--providers", "cerebras,groq", "--groq-base-url", groq.url,
            "--cerebras-base-url", cerebras.url]
    with start_service("llm", args, env) as service:
        service.wait_serving(60)
        with grpc.insecure_channel(service.address) as channel:
            stub = llm_pb2_grpc.LanguageModelStub(channel)
            replies = list(stub.Generate(llm_pb2.GenerateRequest(
                messages=[llm_pb2.ChatMessage(role="user", content="Bonjour")]), timeout=30))
        assert "".join(r.text_delta for r in replies[:-1]) == "".join(DEFAULT_TOKENS)
        assert replies[-1].summary.provider == "groq"
        assert service.stop() == 0
    logs = service.logs
    assert "provider available provider=groq model=llama-3.1-8b-instant" in logs
    assert "provider unavailable provider=cerebras reason=no API key: set CEREBRAS_API_KEY" in logs
    assert "groq_api_key=***" in logs  # the configuration line masks it
    assert GROQ_KEY not in logs and CEREBRAS_KEY not in logs
