"""The `no_network` fixture: tests import it to prove that a code path asks nothing of the Hub (or anything else)."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture
def no_network(monkeypatch):
    """Every connection this process tries is recorded and refused: a test asserts the list stays empty. (The local
    test Hub runs in a process of its own, so its server is not affected; its clients here are.)"""
    attempts = []

    def refuse(sock, address, *args):
        attempts.append(address)
        raise ConnectionRefusedError(f"test: no network ({address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts
