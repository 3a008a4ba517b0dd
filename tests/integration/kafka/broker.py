"""The Kafka broker the integration tests talk to, and small producer / consumer helpers.

Under ``make test`` ci/services.sh has started one broker for the whole run
(``HELIOSDB_KAFKA_BOOTSTRAP``, ``HELIOSDB_KAFKA_DIR``).  Run any other way, the session fixture
starts one itself with ``ci/kafka.sh`` (Java 17+ and mvn needed).  When no broker can be had,
the tests fail with the broker's log tail when ``CI`` is set, and skip elsewhere.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import pytest

from heliosdb.testing import kafka_new_topic, kafka_produce, kafka_read

ROOT = Path(__file__).resolve().parents[3]
KAFKA_SH = ROOT / "ci" / "kafka.sh"


def _read_env(path: Path) -> Dict[str, str]:
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            k, _, v = line.partition("=")
            out[k] = v
    return out


def log_tail(folder: Optional[str], lines: int = 40) -> str:
    if not folder:
        return "(no broker folder)"
    log = Path(folder) / "log"
    if not log.exists():
        return f"(no log at {log})"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _unavailable(msg: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


class Broker:
    """A running single-node KRaft broker."""

    def __init__(self, bootstrap: str, folder: str):
        self.bootstrap = bootstrap
        self.folder = folder

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.folder, lines)

    def check(self, timeout: float = 20.0) -> None:
        """Fail (CI) / skip with the log tail unless the broker answers a metadata request."""
        from confluent_kafka.admin import AdminClient

        try:
            AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=timeout)
        except Exception as exc:  # noqa: BLE001
            _unavailable(f"Kafka broker at {self.bootstrap} does not answer ({exc}); broker log tail:\n"
                         f"{self.log_tail()}")

    def _run(self, action: str) -> None:
        out = subprocess.run(["bash", str(KAFKA_SH), action, self.folder], capture_output=True, text=True,
                             timeout=180)
        assert out.returncode == 0, f"ci/kafka.sh {action} failed:\n{out.stderr}\n{self.log_tail()}"

    def stop(self) -> None:
        self._run("stop")

    def start(self) -> None:
        self._run("start")


def broker_session():
    """Yield the session's :class:`Broker`: the one ``make test`` started, or our own."""
    bootstrap, folder = os.environ.get("HELIOSDB_KAFKA_BOOTSTRAP"), os.environ.get("HELIOSDB_KAFKA_DIR")
    error = os.environ.get("HELIOSDB_KAFKA_ERROR")
    if error:
        _unavailable(f"the test services could not start Kafka: {error}\nbroker log tail:\n{log_tail(folder)}")
    if bootstrap and folder:
        broker = Broker(bootstrap, folder)
        broker.check()
        yield broker
        return
    if shutil.which("java") is None:
        _unavailable("no Kafka broker: java is not installed (`make test` runs ci/services.sh, which "
                     "installs Java 17 and fetches Kafka with mvn)")
    folder = tempfile.mkdtemp(prefix="heliosdb-kafka-")
    try:
        inst = subprocess.run(["bash", str(KAFKA_SH), "install"], capture_output=True, text=True, timeout=600)
        start = subprocess.run(["bash", str(KAFKA_SH), "start", folder], capture_output=True, text=True,
                               timeout=300)
        found = _read_env(Path(folder) / "env")
        if start.returncode != 0 or "HELIOSDB_KAFKA_BOOTSTRAP" not in found:
            _unavailable(f"ci/kafka.sh could not start a broker:\n{inst.stderr}\n{start.stderr}\n"
                         f"broker log tail:\n{log_tail(folder)}")
        broker = Broker(found["HELIOSDB_KAFKA_BOOTSTRAP"], folder)
        broker.check()
        yield broker
    finally:
        subprocess.run(["bash", str(KAFKA_SH), "stop", folder], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


# -- helpers ---------------------------------------------------------------------------------------
def new_topic(broker: Broker, partitions: int = 1, prefix: str = "t") -> str:
    """A fresh topic with a unique name (with the broker's log tail if it cannot be made)."""
    try:
        return kafka_new_topic(broker.bootstrap, partitions, prefix)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{broker.log_tail()}") from None


def produce(broker: Broker, topic: str, values: Sequence[Optional[bytes]],
            keys: Optional[Sequence[Optional[bytes]]] = None,
            partitions: Optional[Sequence[int]] = None, timestamps: Optional[Sequence[int]] = None) -> None:
    kafka_produce(broker.bootstrap, topic, values, keys, partitions, timestamps)


def read_all(broker: Broker, topic: str, committed: bool = True, timeout: float = 30.0) -> List:
    """Every message of ``topic`` (``read_committed`` by default), up to the end offsets it
    has now: Message objects in (partition, offset) order."""
    return kafka_read(broker.bootstrap, topic, committed, timeout)


def values(messages: Iterable) -> List[bytes]:
    return [m.value() for m in messages]
