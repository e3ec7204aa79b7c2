"""Language as one switch: a session (or the orchestrator) that names a language gets a voice and a
system prompt for it, unless those are set.

The voice is chosen among the TTS service's voices by name: a natural voice for the language
first (an MMS-TTS VITS model, ``vits:...mms-tts-fra``; a Piper voice named after it), then espeak-ng's
(``espeak:fr``). English keeps the TTS service's own default. No match keeps it too.
"""

from __future__ import annotations

from collections.abc import Sequence

from voxline.orchestrator.config import DEFAULT_SYSTEM_PROMPT

#: ISO 639-1 → ISO 639-3, the code MMS-TTS model names carry (facebook/mms-tts-fra).
_ISO3 = {"fr": "fra", "de": "deu", "es": "spa", "it": "ita", "pt": "por", "nl": "nld", "en": "eng"}

#: The default system prompt in each language it is written in; the reply is spoken in that language.
PROMPTS = {
    "en": DEFAULT_SYSTEM_PROMPT,
    "fr": ("Tu es voxline, un assistant vocal serviable. Tes réponses sont lues à voix haute : "
           "réponds en français, en une à trois phrases courtes de texte simple, sans listes, "
           "markdown ni émojis."),
    "de": ("Du bist voxline, ein hilfreicher Sprachassistent. Deine Antworten werden vorgelesen: "
           "antworte auf Deutsch in ein bis drei kurzen Sätzen in einfachem Text, ohne Listen, "
           "Markdown oder Emojis."),
    "es": ("Eres voxline, un asistente de voz útil. Tus respuestas se leen en voz alta: responde "
           "en español, en una a tres frases cortas de texto sencillo, sin listas, markdown ni "
           "emojis."),
}


def base_language(language: str) -> str:
    """"fr-FR" → "fr"."""
    return language.strip().lower().replace("_", "-").split("-")[0]


def picks_a_voice(language: str) -> bool:
    """Whether ``language`` chooses a voice (any language but English, the TTS default's)."""
    return base_language(language) not in ("", "en")


def default_voice(language: str, voices: Sequence[str]) -> str | None:
    """The voice to speak ``language`` with, among ``voices`` (the TTS service's names); None to
    keep the service's default (English, or no voice for the language)."""
    lang = base_language(language)
    if not picks_a_voice(lang):
        return None
    iso3 = _ISO3.get(lang, "")
    natural = [v for v in voices if v.startswith("vits:") and iso3 and v.endswith(f"mms-tts-{iso3}")]
    natural += [v for v in voices if v.startswith("piper:") and base_language(v.split(":", 1)[1]) == lang]
    espeak = [v for v in voices if v.startswith("espeak:")
              and (v == f"espeak:{lang}" or base_language(v.split(":", 1)[1]) == lang)]
    espeak.sort(key=lambda v: v != f"espeak:{lang}")  # the plain code first
    candidates = natural + espeak
    return candidates[0] if candidates else None


def default_prompt(language: str, configured: str) -> str:
    """The system prompt for a session in ``language`` that gave none: the orchestrator's own when
    it was set to something else than the built-in default, else the built-in one in that
    language (falling back to English)."""
    if configured != DEFAULT_SYSTEM_PROMPT:
        return configured
    return PROMPTS.get(base_language(language), DEFAULT_SYSTEM_PROMPT)
