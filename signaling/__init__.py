"""HTTP signaling: WHEP endpoint, static web client, health and stats."""

from signaling.app import create_app

__all__ = ["create_app"]
