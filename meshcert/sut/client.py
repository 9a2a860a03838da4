"""Client of the SUT contract (JSON over HTTP inside the agent pod; README "The SUT contract").

Every answer is validated: a SUT that answers garbage ends in one InputError naming the SUT,
the call and what was wrong -- never a traceback from deep inside.
"""

from __future__ import annotations

from typing import Any

import requests

from ..errors import InputError
from ..secrets import redact

PRERUN_KEYS = {"type": str, "ready": bool, "message": str, "endpoints": dict, "logs": list, "agent_context": list}
ENDPOINT_KEYS = {"reachable": bool}


class SutClient:
    def __init__(self, base_url: str, name: str = "SUT", timeout: float = 60.0):
        self.base = base_url.rstrip("/")
        self.name = name
        self.timeout = timeout
        self.s = requests.Session()
        self.s.trust_env = False  # stay on this machine, whatever proxy the environment names

    def _call(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        try:
            r = self.s.request(method, self.base + path, json=body, timeout=self.timeout)
        except requests.RequestException as e:
            raise InputError(f"{self.name} {method} {path}", f"no answer: {type(e).__name__}",
                             "check the SUT container's logs; it must listen on --sut-port") from None
        try:
            data = r.json()
        except ValueError:
            raise InputError(f"{self.name} {method} {path}",
                             f"answered HTTP {r.status_code} with non-JSON: {redact(r.text[:120])!r}",
                             "the SUT must answer JSON (README: The SUT contract)") from None
        return r.status_code, data

    def healthy(self) -> bool:
        try:
            return self.s.get(self.base + "/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def prerun(self, connectivity: dict | None, endpoints: dict, deadline_s: float | None = None,
               omit_connectivity: bool = False) -> tuple[int, dict]:
        body: dict[str, Any] = {"endpoints": endpoints}
        if not omit_connectivity:
            body["connectivity"] = connectivity
        if deadline_s is not None:
            body["deadline_s"] = deadline_s
        code, data = self._call("POST", "/prerun", body)
        if code == 200 or code == 503:
            self._validate_prerun(data, endpoints)
        elif not isinstance(data, dict) or not isinstance(data.get("error"), str):
            raise InputError(f"{self.name} POST /prerun", f"HTTP {code} without an \"error\" string",
                             "a rejected spec must answer {\"error\": \"...\"}")
        return code, data

    def _validate_prerun(self, data: Any, endpoints: dict) -> None:
        what = f"{self.name} POST /prerun answer"
        if not isinstance(data, dict):
            raise InputError(what, f"not a JSON object: {redact(str(data)[:80])!r}", "see README: The SUT contract")
        for k, t in PRERUN_KEYS.items():
            if not isinstance(data.get(k), t):
                raise InputError(what, f"field {k!r} missing or not {t.__name__}", "see README: The SUT contract")
        for name, ep in data["endpoints"].items():
            if not isinstance(ep, dict) or not isinstance(ep.get("reachable"), bool):
                raise InputError(what, f"endpoints.{name}.reachable missing or not bool", "")
        for i, line in enumerate(data["logs"]):
            if not isinstance(line, dict) or not isinstance(line.get("level"), str) or not isinstance(line.get("msg"), str):
                raise InputError(what, f"logs[{i}] must be an object with string level and msg", "")

    def connect(self, host: str, port: int, timeout_s: float = 3.0, credential: dict | None = None) -> dict:
        body = {"host": host, "port": port, "timeout_s": timeout_s}
        if credential is not None:
            body["credential"] = credential  # what the tool layer injects (Vault-issued, per run)
        code, data = self._call("POST", "/connect", body)
        if code != 200 or not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
            raise InputError(f"{self.name} POST /connect", f"HTTP {code}, answer without boolean \"ok\"",
                             "see README: The SUT contract")
        return data

    def transcript(self) -> list:
        code, data = self._call("GET", "/transcript")
        if code != 200 or not isinstance(data, dict) or not isinstance(data.get("entries"), list):
            raise InputError(f"{self.name} GET /transcript", f"HTTP {code}, no \"entries\" list", "")
        return data["entries"]
