"""TLS, mutual TLS and bearer-token auth in the shared bootstrap (real servers on 127.0.0.1:0),
and the orchestrator's stage client reaching a server that has both on."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tls_certs import Certs, make_certs

from voxline.common.config import (
    ConfigError,
    ServerConfig,
    add_server_options,
    describe,
    server_config_from_args,
)
from voxline.common.server import RunningServer, ServiceSpec, start_server
from voxline.orchestrator.config import OrchestratorConfig
from voxline.orchestrator.domain import StageError
from voxline.orchestrator.grpc_stages import GrpcStages
from voxline.v1 import tts_pb2, tts_pb2_grpc

SERVICE = "voxline.test.Echo"
TOKEN = "s3cr3t-t0ken-value"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("token") / "token"
    path.write_text(TOKEN + "\n")  # a trailing newline, as editors and `echo` leave it
    return path


async def _unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b"ok:" + request


async def _stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"first"
    yield b"ok:" + request


async def _chat(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for request in requests:
        yield b"ok:" + request


class Voices(tts_pb2_grpc.TextToSpeechServicer):
    async def ListVoices(self, request: tts_pb2.ListVoicesRequest,
                         context: grpc.aio.ServicerContext) -> tts_pb2.ListVoicesResponse:
        return tts_pb2.ListVoicesResponse(voices=[tts_pb2.Voice(name="piper:joe")])


def _register(server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream),
        "Chat": grpc.stream_stream_rpc_method_handler(_chat),
    })])
    tts_pb2_grpc.add_TextToSpeechServicer_to_server(Voices(), server)


async def _start(config: ServerConfig) -> RunningServer:
    async def warm_up() -> None:
        return None

    spec = ServiceSpec(name="voxline-test", grpc_services=[SERVICE, "voxline.v1.TextToSpeech"],
                       register=_register, warm_up=warm_up)
    running = await start_server(spec, config)
    await running.warm_up()
    return running


@pytest.fixture
async def tls_server(certs: Certs) -> AsyncIterator[RunningServer]:
    running = await _start(ServerConfig(port=0, tls_cert=str(certs.server_cert),
                                        tls_key=str(certs.server_key)))
    yield running
    await running.stop(0)


@pytest.fixture
async def auth_server(token_file: Path) -> AsyncIterator[RunningServer]:
    running = await _start(ServerConfig(port=0, auth_token_file=str(token_file)))
    yield running
    await running.stop(0)


def _secure(port: int, certs: Certs, *, client_cert: bool = False) -> grpc.aio.Channel:
    pair = ({"private_key": certs.client_key.read_bytes(),
             "certificate_chain": certs.client_cert.read_bytes()} if client_cert else {})
    credentials = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes(), **pair)
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def test_tls_secure_channel_with_the_ca_succeeds(tls_server: RunningServer, certs: Certs) -> None:
    async with _secure(tls_server.port, certs) as channel:
        assert await channel.unary_unary(f"/{SERVICE}/Unary")(b"hi", timeout=5) == b"ok:hi"


async def test_tls_server_refuses_a_plaintext_channel(tls_server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{tls_server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary(f"/{SERVICE}/Unary")(b"hi", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_requires_a_client_certificate(certs: Certs) -> None:
    running = await _start(ServerConfig(port=0, tls_cert=str(certs.server_cert),
                                        tls_key=str(certs.server_key), tls_client_ca=str(certs.ca)))
    try:
        async with _secure(running.port, certs) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await channel.unary_unary(f"/{SERVICE}/Unary")(b"hi", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        async with _secure(running.port, certs, client_cert=True) as channel:
            assert await channel.unary_unary(f"/{SERVICE}/Unary")(b"hi", timeout=5) == b"ok:hi"
    finally:
        await running.stop(0)


@pytest.mark.parametrize("metadata", [(), _bearer("wrong"), (("authorization", TOKEN),),
                                      _bearer(TOKEN + "x"), _bearer(TOKEN[:-1])],
                         ids=["none", "wrong", "no-scheme", "longer", "shorter"])
async def test_calls_without_the_right_token_are_unauthenticated(
        auth_server: RunningServer, metadata: tuple[tuple[str, str], ...]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{auth_server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary(f"/{SERVICE}/Unary")(b"hi", timeout=5, metadata=metadata)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == "missing or invalid bearer token"


async def test_streaming_methods_are_protected_too(auth_server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{auth_server.port}") as channel:
        stream = channel.unary_stream(f"/{SERVICE}/Stream")
        chat = channel.stream_stream(f"/{SERVICE}/Chat")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stream(b"hi", timeout=5).read()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        call = chat(timeout=5, metadata=_bearer("wrong"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()  # rejected before the client sends anything
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # With the token: both work.
        assert [r async for r in stream(b"hi", timeout=5, metadata=_bearer(TOKEN))] == [b"first", b"ok:hi"]
        call = chat(timeout=5, metadata=_bearer(TOKEN))
        await call.write(b"a")
        assert await call.read() == b"ok:a"
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF


async def test_right_token_ok_and_health_and_reflection_need_none(auth_server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{auth_server.port}") as channel:
        assert await channel.unary_unary(f"/{SERVICE}/Unary")(
            b"hi", timeout=5, metadata=_bearer(TOKEN)) == b"ok:hi"
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names: list[str] = []
        async for answer in reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([request]), timeout=5):
            names = [s.name for s in answer.list_services_response.service]
        assert SERVICE in names


async def test_tls_and_token_with_standard_call_credentials(certs: Certs, token_file: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="voxline.common.server")
    running = await _start(ServerConfig(port=0, tls_cert=str(certs.server_cert),
                                        tls_key=str(certs.server_key), auth_token_file=str(token_file)))
    try:
        # grpc's own access-token call credentials send "authorization: Bearer <token>".
        credentials = grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes()),
            grpc.access_token_call_credentials(TOKEN))
        async with grpc.aio.secure_channel(f"127.0.0.1:{running.port}", credentials) as channel:
            assert await channel.unary_unary(f"/{SERVICE}/Unary")(b"hi", timeout=5) == b"ok:hi"
    finally:
        await running.stop(0)
    listening = [r for r in caplog.records if r.getMessage() == "listening"]
    assert [(r.__dict__["tls"], r.__dict__["auth"]) for r in listening] == [("on", "token")]
    assert TOKEN not in caplog.text


async def test_stage_client_uses_tls_and_token(certs: Certs, token_file: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    running = await _start(ServerConfig(port=0, tls_cert=str(certs.server_cert),
                                        tls_key=str(certs.server_key), auth_token_file=str(token_file)))
    address = f"127.0.0.1:{running.port}"
    secured = GrpcStages(OrchestratorConfig(tts_address=address, stage_tls_ca=str(certs.ca),
                                        stage_auth_token_file=str(token_file)))
    no_token = GrpcStages(OrchestratorConfig(tts_address=address, stage_tls_ca=str(certs.ca)))
    try:
        assert await secured.list_voices() == ["piper:joe"]
        with pytest.raises(StageError) as err:
            await no_token.list_voices()
        # The Converse client did nothing wrong: UNAVAILABLE naming the stage; the cause is logged.
        assert err.value.code_name == "UNAVAILABLE" and err.value.stage == "tts"
        assert str(err.value) == ("UNAVAILABLE: tts stage unavailable: it refused the "
                                  "orchestrator (UNAUTHENTICATED); see the orchestrator log")
        (refused,) = [r for r in caplog.records if r.getMessage() == "stage refused the orchestrator"]
        assert refused.__dict__["code"] == "UNAUTHENTICATED"
        assert refused.__dict__["reason"] == "missing or invalid bearer token"
    finally:
        await secured.close()
        await no_token.close()
        await running.stop(0)


def _parse(*argv: str) -> ServerConfig:
    import argparse

    parser = argparse.ArgumentParser()
    add_server_options(parser, "stt")
    return server_config_from_args(parser.parse_args(list(argv)))


def test_security_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for env in ("VOXLINE_TLS_CERT", "VOXLINE_TLS_KEY", "VOXLINE_TLS_CLIENT_CA", "VOXLINE_AUTH_TOKEN_FILE"):
        monkeypatch.delenv(env, raising=False)
    config = _parse()
    assert (config.tls_cert, config.tls_key, config.tls_client_ca, config.auth_token_file) == ("",) * 4


def test_config_errors(certs: Certs, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key go together"):
        _parse("--tls-cert", str(certs.server_cert))
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key go together"):
        _parse("--tls-key", str(certs.server_key))
    with pytest.raises(ConfigError, match="--tls-client-ca needs --tls-cert"):
        _parse("--tls-client-ca", str(certs.ca))
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match=r"cannot read --tls-key file .*nope\.pem"):
        _parse("--tls-cert", str(certs.server_cert), "--tls-key", missing)
    with pytest.raises(ConfigError, match="cannot read --auth-token-file"):
        _parse("--auth-token-file", missing)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match=r"--auth-token-file file .* is empty"):
        _parse("--auth-token-file", str(empty))
    two = tmp_path / "two"
    two.write_text("one two\n")
    with pytest.raises(ConfigError, match="one token") as err:
        _parse("--auth-token-file", str(two))
    assert "one two" not in str(err.value)


def test_env_vars_and_describe_never_shows_the_token(certs: Certs, token_file: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXLINE_TLS_CERT", str(certs.server_cert))
    monkeypatch.setenv("VOXLINE_TLS_KEY", str(certs.server_key))
    monkeypatch.setenv("VOXLINE_AUTH_TOKEN_FILE", str(token_file))
    config = _parse()
    assert config.tls_cert == str(certs.server_cert)
    assert config.auth_token_file == str(token_file)
    shown = describe(config)
    assert "auth_token_file=***" in shown
    assert TOKEN not in shown
