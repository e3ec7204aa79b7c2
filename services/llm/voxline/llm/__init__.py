"""voxline LLM gateway: Groq, Cerebras and a local model behind one streamed gRPC service."""
