"""Peers, sessions and the audio path: PCM -> 48 kHz -> 20 ms Opus frames -> paced RTP."""
