"""A client of hive's HTTP API, using only the Python standard library (3.8+).

    from hive_client import Client, HiveError
    c = Client("http://127.0.0.1:8080", token=open("hive-data/admin.key").read().strip())
    c.spawn("acme/c1", "counter")
    c.tell("acme/c1", {"op": "add", "by": 2})
    print(c.ask("acme/c1", {"op": "get"}))      # {'value': 2}

Every method raises `HiveError` when the node answers an error: `.status` (the HTTP status),
`.code` (the errc name, e.g. "agent_not_found", "rate_limited"), `.message`, `.retry_after`
(seconds, from Retry-After, or None) and `.correlation_id`. Network failures raise
`HiveError` with status 0 and code "unavailable". Keep-alive: one connection per `Client`,
reopened when the node closed it. Not thread-safe: use one `Client` per thread.
"""

import http.client
import json
import urllib.parse

__all__ = ["Client", "HiveError"]


class HiveError(Exception):
    """An error answer of the node (or a failure to reach it)."""

    def __init__(self, status, code, message, retry_after=None, correlation_id=None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.correlation_id = correlation_id


class Client:
    """One keep-alive connection to a node's gateway."""

    def __init__(self, url="http://127.0.0.1:8080", token=None, timeout_s=10.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http://HOST:PORT or https://HOST:PORT, got {url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._token = token
        self._timeout_s = timeout_s
        self._conn = None

    # -- agents --------------------------------------------------------------------------------

    def spawn(self, agent_id, kind, config=None, breaker=False, restart=None, node=None):
        """Creates an agent; returns {"id", "kind", "node"}."""
        body = {"id": agent_id, "kind": kind}
        if config is not None:
            body["config"] = config
        if breaker:
            body["breaker"] = True
        if restart is not None:
            body["restart"] = restart
        if node is not None:
            body["node"] = node
        return self._call("POST", "/v1/agents", body)

    def tell(self, agent_id, message, idempotency_key=None):
        """Sends `message` (any JSON value) without waiting for the agent."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", self._agent(agent_id) + "/tell", message, headers)

    def ask(self, agent_id, message, timeout_ms=None, idempotency_key=None):
        """Sends `message` and returns the agent's reply (decoded JSON)."""
        path = self._agent(agent_id) + "/ask"
        if timeout_ms is not None:
            path += f"?timeout_ms={int(timeout_ms)}"
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", path, message, headers)

    def inspect(self, agent_id):
        """The agent's inspection document."""
        return self._call("GET", self._agent(agent_id))

    def stop(self, agent_id):
        """Stops the agent for good."""
        self._call("DELETE", self._agent(agent_id))

    def agents(self, tenant=None, limit=None):
        """Every agent the caller may see (follows the pages)."""
        out, after = [], None
        while True:
            q = {}
            if tenant:
                q["tenant"] = tenant
            if limit:
                q["limit"] = str(limit)
            if after:
                q["after"] = after
            page = self._call("GET", "/v1/agents" + ("?" + urllib.parse.urlencode(q) if q else ""))
            out.extend(page["agents"])
            after = page.get("next")
            if not after:
                return out

    def migrate(self, agent_id, to_node):
        """Moves the agent live to `to_node` (admin)."""
        return self._call("POST", self._agent(agent_id) + "/migrate", {"to": to_node})

    # -- cluster, keys, probes -----------------------------------------------------------------

    def nodes(self):
        return self._call("GET", "/v1/cluster/nodes")["nodes"]

    def create_key(self, role, name, tenant=None):
        """Creates an API key; the answer holds the key itself, shown this once."""
        body = {"role": role, "name": name}
        if tenant is not None:
            body["tenant"] = tenant
        return self._call("POST", "/v1/keys", body)

    def keys(self, tenant=None):
        path = "/v1/keys" + (f"?tenant={urllib.parse.quote(tenant)}" if tenant else "")
        return self._call("GET", path)["keys"]

    def revoke_key(self, key_id):
        self._call("DELETE", "/v1/keys/" + urllib.parse.quote(key_id, safe=""))

    def healthy(self):
        """True when /healthz answers 200 (no credentials needed)."""
        try:
            self._call("GET", "/healthz")
            return True
        except HiveError:
            return False

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- plumbing ------------------------------------------------------------------------------

    @staticmethod
    def _agent(agent_id):
        tenant, sep, name = agent_id.partition("/")
        if not sep or not tenant or not name:
            raise ValueError(f"agent id must be 'tenant/name', got {agent_id!r}")
        q = urllib.parse.quote
        return f"/v1/agents/{q(tenant, safe='')}/{q(name, safe='')}"

    def _connection(self):
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout_s)
        return self._conn

    def _call(self, method, path, body=None, headers=None):
        h = {"Accept": "application/json"}
        if self._token:
            h["Authorization"] = "Bearer " + self._token
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        # One retry on a connection the node closed between keep-alive requests.
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, path, body=data, headers=h)
                res = conn.getresponse()
                raw = res.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if attempt == 1:
                    raise HiveError(0, "unavailable", f"{self._host}:{self._port}: {e}") from e
            except OSError as e:
                self.close()
                raise HiveError(0, "unavailable", f"{self._host}:{self._port}: {e}") from e
        if res.getheader("Connection", "").lower() == "close":
            self.close()
        cid = res.getheader("X-Correlation-Id")
        doc = json.loads(raw) if raw else None
        if 200 <= res.status < 300:
            return doc
        err = (doc or {}).get("error", {}) if isinstance(doc, dict) else {}
        retry = res.getheader("Retry-After")
        raise HiveError(res.status, err.get("code", "unknown"),
                        err.get("message", raw.decode(errors="replace")),
                        int(retry) if retry and retry.isdigit() else None, cid)
