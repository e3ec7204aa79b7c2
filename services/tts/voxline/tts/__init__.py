"""voxline text-to-speech service: espeak-ng, VITS (MMS-TTS) and Piper voices, sentence-streamed."""
