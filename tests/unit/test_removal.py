"""A run's removal and the start-up sweep wait for the engine to let go of what they remove (a
network with endpoints of a container still being removed, a volume in use) and never fail a new
run on what another run left (fake engine objects; the real engine: tests/engine/test_leaks.py)."""

from types import SimpleNamespace

import docker.errors

from meshcert.world import labels


def _busy(status: int, text: str) -> docker.errors.APIError:
    return docker.errors.APIError(text, response=SimpleNamespace(status_code=status, reason="", text=text, url="http+docker://localhost"),
                                    explanation=text)


class Net:
    def __init__(self, busy_times: int, status: int = 403):
        self.left, self.status, self.tries = busy_times, status, 0

    def remove(self):
        self.tries += 1
        if self.left:
            self.left -= 1
            raise _busy(self.status, "error while removing network: network x has active endpoints")


def test_a_busy_network_is_retried_until_the_engine_lets_go(monkeypatch):
    monkeypatch.setattr(labels.time, "sleep", lambda s: None)
    n = Net(busy_times=3)
    assert labels._retry_busy("network x", n.remove) == 1 and n.tries == 4


def test_still_busy_after_the_wait_is_said_once_and_left_for_the_next_sweep(capsys):
    n = Net(busy_times=99, status=409)
    assert labels._retry_busy("volume v", n.remove, patience=0.0) == 0  # no exception: a start-up sweep goes on
    assert n.tries == 1, "no patience: one try (a stale endpoint that no removal just freed)"
    assert "could not remove volume v" in capsys.readouterr().err + capsys.readouterr().out


def test_another_engine_error_is_not_retried(monkeypatch):
    monkeypatch.setattr(labels.time, "sleep", lambda s: (_ for _ in ()).throw(AssertionError("retried")))
    n = Net(busy_times=1, status=500)
    assert labels._retry_busy("network x", n.remove) == 0 and n.tries == 1


def test_gone_already_counts_nothing():
    def remove():
        raise docker.errors.NotFound("gone")
    assert labels._retry_busy("network x", remove) == 0
