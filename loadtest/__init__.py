"""Load tests of the TTS APIs with Locust (``locustfile.py``) and their CI runner (``ci.py``)."""
