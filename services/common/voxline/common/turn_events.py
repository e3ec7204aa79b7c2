"""Names of the span events that mark a turn's milestones (written by the orchestrator, read by
``voxline report``'s waterfall and visible in any trace viewer). Kept free of imports so the CLI
can read them without loading OpenTelemetry."""

from __future__ import annotations

#: On the ``llm`` span: the first text of the reply arrived from the gateway.
FIRST_TOKEN = "first_token"
#: On the ``llm`` span: the reply's first clause was complete and handed to TTS.
FIRST_CLAUSE_TO_TTS = "first_clause_to_tts"
#: On the ``llm`` span: the reply degenerated into a loop and was stopped (``voxline.chars`` kept).
REPETITION_STOPPED = "repetition_stopped"
#: On the ``voxline.turn`` span: the first reply audio was sent to the client.
FIRST_AUDIO_SENT = "first_audio_sent"
