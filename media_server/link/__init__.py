"""How each listener's network is doing, and what the audio sent to it does about it."""
