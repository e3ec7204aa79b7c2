"""voxline edge: people's audio in and the reply out, from a browser (WebRTC) or a phone (Twilio
Media Streams), each bridged to one Converse stream of the orchestrator."""
