"""`voxline talk` (the real command, a subprocess) against a fake orchestrator served by the shared
bootstrap with a bearer token and TLS switched on."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from common.tls_certs import Certs, make_certs
from test_talk import FakeAssistant, voxline

from voxline.common.config import ServerConfig
from voxline.common.server import RunningServer, ServiceSpec, start_server
from voxline.v1 import voice_pb2_grpc

TOKEN = "talk-t0ken-for-tests"


async def _serve(assistant: FakeAssistant, config: ServerConfig) -> RunningServer:
    async def warm_up() -> None:
        return None

    def register(server: grpc.aio.Server) -> None:
        voice_pb2_grpc.add_VoiceAssistantServicer_to_server(assistant, server)

    spec = ServiceSpec(name="fake-orchestrator", grpc_services=["voxline.v1.VoiceAssistant"],
                       register=register, warm_up=warm_up)
    running = await start_server(spec, config)
    await running.warm_up()
    return running


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


async def test_talk_sends_the_token(token_file: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assistant = FakeAssistant()
    running = await _serve(assistant, ServerConfig(port=0, auth_token_file=str(token_file)))
    address = f"127.0.0.1:{running.port}"
    try:
        monkeypatch.delenv("VOXLINE_AUTH_TOKEN", raising=False)
        code, _, err = await voxline("talk", "--text", "hi", "--address", address,
                                     "-o", str(tmp_path / "r.wav"))
        assert code == 1
        # The server's status, or (when gRPC Python loses it, grpc/grpc#36066) a message saying so.
        assert ("UNAUTHENTICATED: missing or invalid bearer token" in err
                or "gRPC lost its status (grpc/grpc#36066)" in err), err
        assert "--auth-token-file" in err
        assert assistant.texts == []  # the servicer never saw the call

        code, out, err = await voxline("talk", "--text", "hi", "--address", address,
                                       "--auth-token-file", str(token_file), "-o", str(tmp_path / "r.wav"))
        assert code == 0, err
        assert "assistant: Paris is the capital.\n" in out

        monkeypatch.setenv("VOXLINE_AUTH_TOKEN", TOKEN)  # the subprocess inherits it
        code, _, err = await voxline("talk", "--text", "again", "--address", address,
                                     "-o", str(tmp_path / "r2.wav"))
        assert code == 0, err
        assert assistant.texts == ["hi", "again"]
    finally:
        await running.stop(0)


async def test_talk_over_tls(tmp_path: Path, token_file: Path) -> None:
    certs: Certs = make_certs(tmp_path)
    assistant = FakeAssistant()
    running = await _serve(assistant, ServerConfig(
        port=0, tls_cert=str(certs.server_cert), tls_key=str(certs.server_key),
        auth_token_file=str(token_file)))
    address = f"127.0.0.1:{running.port}"
    try:
        code, _, err = await voxline("talk", "--text", "hi", "--address", address,
                                     "--auth-token-file", str(token_file), "-o", str(tmp_path / "r.wav"))
        assert code == 1
        assert f"cannot connect to the orchestrator at {address}" in err
        assert "add --tls or --tls-ca" in err

        code, out, err = await voxline("talk", "--text", "hi", "--address", address, "--tls-ca",
                                       str(certs.ca), "--auth-token-file", str(token_file),
                                       "-o", str(tmp_path / "r.wav"))
        assert code == 0, err
        assert "assistant: Paris is the capital.\n" in out
        assert assistant.texts == ["hi"]
    finally:
        await running.stop(0)


async def test_unreadable_token_file_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = await voxline("talk", "--text", "hi", "--auth-token-file", str(tmp_path / "nope"))
    assert code == 2
    assert "cannot read --auth-token-file file" in err
