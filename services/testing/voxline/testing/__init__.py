"""Test doubles shared by ``tests/`` and ``bench/`` (never imported by a service).

- ``fake_servers``: fake STT, LLM and TTS gRPC servers (real sockets, scripted behaviour, call logs).
- ``fake_stage``: one of them as a process with fixed costs (``python -m voxline.testing.fake_stage``).
- ``stage_fakes``: ``InMemoryStages``, the orchestrator's ``StageClients`` without any socket.
"""
