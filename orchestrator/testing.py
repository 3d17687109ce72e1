"""Real local components for the service's tests and benchmarks (not used by the service itself):
a private PostgreSQL cluster and a local Ray session configured for tests.

    with PrivatePostgres() as pg:                 # initdb -A trust + pg_ctl on 127.0.0.1, ~2 s
        url = pg.create_database("t1")            # postgresql+psycopg://fc@127.0.0.1:PORT/t1
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from faircalib.service.seaweed import _port_free


def postgres_bin_dir() -> Path | None:
    """Directory holding initdb/pg_ctl (PATH first, then Debian's /usr/lib/postgresql/*/bin), or None."""
    exe = shutil.which("initdb")
    if exe:
        return Path(os.path.realpath(exe)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PrivatePostgres:
    """A throwaway PostgreSQL cluster owned by this process: trust auth, loopback TCP, a private socket
    dir. Run as root it runs the server as the `postgres` system user (PostgreSQL refuses root)."""

    def __init__(self, port: int | None = None, user: str = "fc"):
        bindir = postgres_bin_dir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.bindir, self.user = bindir, user
        self.port = port or self._free_port()
        self.root = Path(tempfile.mkdtemp(prefix="fc-pg-", dir="/tmp"))
        self.data, self.sock = self.root / "data", self.root / "sock"
        self.sock.mkdir()
        self._as = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sock, "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]

    @staticmethod
    def _free_port() -> int:
        import random

        for _ in range(200):
            p = random.randrange(40000, 50000)
            if _port_free(p):
                return p
        raise RuntimeError("no free port for PostgreSQL")

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       cwd=self.root)

    def start(self) -> PrivatePostgres:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user,
                  "--no-sync", "-E", "UTF8")
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sock} -c fsync=off -c max_connections=100"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.root / "pg.log"),
                  "-w", "-t", "60", "start")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run([*self._as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                            "-w", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.root,
                           check=False)  # best effort: the directory is removed next
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


TEST_S3_KEY, TEST_S3_SECRET = "fc-test-key", "fc-test-secret-123456"
_S3_PORT: list[int] = []


def session_s3_port() -> int:
    """The S3 port of the test session's SeaweedFS server (chosen once per process)."""
    if not _S3_PORT:
        from faircalib.service.seaweed import free_port_pair

        _S3_PORT.append(free_port_pair())
    return _S3_PORT[0]


def session_s3_env() -> dict[str, str]:
    """Client settings for the test session's S3 server (SigV4 with the test credentials)."""
    return {"FAIRCALIB_S3_ENDPOINT": f"http://127.0.0.1:{session_s3_port()}", "AWS_ACCESS_KEY_ID": TEST_S3_KEY,
            "AWS_SECRET_ACCESS_KEY": TEST_S3_SECRET}


_TEST_RAY_ADDRESS: str | None = None  # the GCS address of the Ray start_test_ray started


def start_test_ray(num_cpus: int = 2) -> None:
    """One local Ray instance for a test session (no auth token, no usage stats, temp dir). Ray worker
    processes inherit the environment of the moment Ray starts, so the test S3 settings are in it:
    actors reach the session's S3 server the way cluster workers reach a bucket (their own env)."""
    import ray

    global _TEST_RAY_ADDRESS
    if ray.is_initialized():
        if ray.get_runtime_context().gcs_address == _TEST_RAY_ADDRESS:
            return
        # a Ray another test (or an in-process Scheduler) started without the session's S3 settings: its
        # workers could not reach the test bucket, so replace it
        ray.shutdown()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="fc-ray-", dir="/tmp")
    saved = {k: os.environ.get(k) for k in session_s3_env()}
    os.environ.update(session_s3_env())
    try:
        from faircalib.workers.pool import init_ray_with_retry

        init_ray_with_retry(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                            _temp_dir=os.environ["RAY_TMPDIR"])
        _TEST_RAY_ADDRESS = ray.get_runtime_context().gcs_address
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def stop_test_ray() -> None:
    """Shut Ray down and remove the temp dir start_test_ray made."""
    import ray

    global _TEST_RAY_ADDRESS
    ray.shutdown()
    _TEST_RAY_ADDRESS = None
    tmp = os.environ.get("RAY_TMPDIR", "")
    if os.path.basename(tmp).startswith("fc-ray-"):
        shutil.rmtree(tmp, ignore_errors=True)


def standin_zoo_model(dest: str | Path, name: str = "tiny-llada", seed: int = 0) -> Path:
    """An UNTRAINED stand-in for zoo model `name`: the zoo recipe's architecture and tokenizer (BPE trained
    on the same offline text) with random weights, plus a model_card.json holding only the recipe's
    decoding defaults. Same compute cost as the zoo model, meaningless scores: for benchmarks and
    development while the zoo model is not installed. Reused when `dest` already holds one."""
    import json

    dest = Path(dest)
    if (dest / "config.json").is_file() and (dest / "model_card.json").is_file():
        return dest
    from faircalib.models import build_model, save_model_dir
    from faircalib.training.recipes import build_tokenizer, get_recipe

    recipe = get_recipe(name)
    tok = build_tokenizer(recipe.vocab_size)
    model = build_model(recipe.model_config(tok)).init_weights(seed)
    save_model_dir(model, dest, tok)
    (dest / "model_card.json").write_text(json.dumps(
        {"name": f"standin-{recipe.name}", "trained": False, "decoding": dict(recipe.decoding),
         "note": f"untrained stand-in for zoo:{recipe.name} (random weights, seed {seed})"}, indent=1))
    return dest


def processes_with_env(prefix: str) -> list[int]:
    """Pids of this user's processes whose initial environment has an entry starting with `prefix`
    (e.g. "FAIRCALIB_RAY_OWNER=1234-": every process of scheduler 1234's local Ray). Linux (/proc)."""
    want = prefix.encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if any(e.startswith(want) for e in fh.read().split(b"\0")):
                    out.append(int(entry))
        except OSError:
            continue
    return out


def listening_sockets(pids) -> dict[int, list[tuple[str, int]]]:
    """{pid: [(ip, port), ...]} of the TCP sockets in LISTEN state that each process holds, read from
    /proc/<pid>/fd and /proc/net/tcp{,6} (what `ss -ltnp` shows). IPv4-mapped IPv6 addresses are shown
    as ::ffff:a.b.c.d."""
    import ipaddress
    import socket
    import struct

    def parse(path: str, v6: bool) -> dict[str, tuple[str, int]]:
        table = {}
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except OSError:
            return table
        for line in lines:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state != "0A":  # TCP_LISTEN
                continue
            hexip, hexport = local.split(":")
            raw = bytes.fromhex(hexip)
            if v6:  # four little-endian 32-bit words
                raw = b"".join(struct.pack(">I", w) for w in struct.unpack("<4I", raw))
                ip = str(ipaddress.IPv6Address(raw))
            else:
                ip = socket.inet_ntoa(struct.pack("<I", int(hexip, 16)))
            table[inode] = (ip, int(hexport, 16))
        return table

    out: dict[int, list[tuple[str, int]]] = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        inodes = set()
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        table = {**parse(f"/proc/{pid}/net/tcp", False), **parse(f"/proc/{pid}/net/tcp6", True)}
        out[pid] = sorted(table[i] for i in inodes if i in table)
    return out


def is_loopback(ip: str) -> bool:
    import ipaddress

    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _free_port() -> int:
    import random

    return next(p for p in (random.randrange(41000, 49000) for _ in range(200)) if _port_free(p))


CLUSTER_VAR = "FAIRCALIB_TEST_CLUSTER"  # marks the processes of one LocalRayCluster


class LocalRayCluster:
    """A real multi-node Ray cluster on this machine: a head (`ray start --head`) and more nodes
    (`ray start --address`), each a separate set of processes on 127.0.0.1 with its own temp dir, CPU
    count and custom resource `node_<i>` (node 0 is the head). The commands are the ones in
    infra/README.md ("A multi-node Ray cluster on one machine").

    Loopback only: plain `ray start` rewrites --node-ip-address=127.0.0.1 to the host's routable address
    (Ray's resolve_ip_for_localhost, unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, with which a node
    cannot join), and its servers then listen on every interface. The nodes are started through
    faircalib.orchestrator.ray_loopback, which keeps 127.0.0.1 as given; there Ray binds loopback only.
    Every process the nodes start is found by `processes` (CLUSTER_VAR in its environment, or a file
    open under the temp root), which is how `stop` stops them all and only them.
    """

    def __init__(self, nodes: int = 2, cpus_per_node: int = 1, env: dict | None = None):
        self.nodes, self.cpus = nodes, cpus_per_node
        self.root = Path(tempfile.mkdtemp(prefix="fc-rc-", dir="/tmp"))
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.id = uuid.uuid4().hex[:12]
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {}), CLUSTER_VAR: self.id}
        self.env.setdefault("RAY_AUTH_MODE", "disabled")
        # start_test_ray's "0" makes `ray start --address` refuse to join ("not supported on Windows and
        # OSX") on Linux too: leave Ray's own default
        self.env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        self.started: list[Path] = []

    def ray_cli(self) -> list[str]:
        import sys

        return [sys.executable, "-m", "faircalib.orchestrator.ray_loopback"]

    def node_command(self, i: int) -> list[str]:
        import json

        temp = self.root / f"node{i}"
        common = [f"--num-cpus={self.cpus}", "--num-gpus=0", f"--resources={json.dumps({f'node_{i}': 1})}",
                  "--node-ip-address=127.0.0.1", f"--temp-dir={temp}", "--disable-usage-stats"]
        if i == 0:
            return [*self.ray_cli(), "start", "--head", f"--port={self.port}", "--include-dashboard=false", *common]
        return [*self.ray_cli(), "start", f"--address={self.address}", *common]

    def start(self, timeout_s: float = 180.0, attempts: int = 3) -> LocalRayCluster:
        """Start every node. `ray start` gives a raylet a fixed 30 s to register with the GCS; on a loaded
        machine that can run out, so a start that timed out is retried from scratch (fresh temp dirs and
        port), up to `attempts` times; any other failure is raised at once."""
        for attempt in range(attempts):
            err = self._start_once(timeout_s)
            if err is None:
                return self
            self.stop()
            if "timed out during startup" not in err or attempt == attempts - 1:
                raise RuntimeError(err)
            self.root = Path(tempfile.mkdtemp(prefix="fc-rc-", dir="/tmp"))
            self.port, self.started = _free_port(), []
            self.address = f"127.0.0.1:{self.port}"
        return self

    def _start_once(self, timeout_s: float) -> str | None:
        for i in range(self.nodes):
            (self.root / f"node{i}").mkdir(parents=True, exist_ok=True)
            res = subprocess.run(self.node_command(i), env=self.env, capture_output=True, text=True,
                                 timeout=timeout_s)
            self.started.append(self.root / f"node{i}")
            if res.returncode != 0:
                return f"ray start (node {i}) failed: {(res.stderr or res.stdout)[-2000:]}"
        return None

    def node_ids(self) -> dict[str, str]:
        """{node id: "node_<i>"} from the cluster's own view (a short-lived driver process)."""
        import json
        import sys

        code = ("import json, ray; ray.init(address=%r, log_to_driver=False); "
                "print(json.dumps({n['NodeID']: [k for k in n['Resources'] if k.startswith('node_')][0] "
                "for n in ray.nodes() if n['Alive']}))" % self.address)
        env = {**self.env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # a driver on 127.0.0.1 (loopback_only)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             timeout=120, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    def stop(self) -> None:
        """Stop every process of this cluster's nodes, then remove its temp dirs."""
        import signal
        import time

        # `ray stop` would stop every Ray on the machine (other sessions' included): stop only ours, by
        # the ids of the processes whose command line names our temp root or our GCS port.
        # the ids of the processes that carry this cluster's id in their environment (or, for any started
        # before it was set, name our temp root or GCS port on their command line).
        mine = (str(self.root), f"--gcs-address={self.address}", f"--gcs_server_port={self.port}",
                f"--address={self.address}", f"--port={self.port}")
        for attempt in range(2):
            pids = set(self.processes())
            for proc in Path("/proc").iterdir():
                try:
                    cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if proc.name.isdigit() and any(m in cmd for m in mine):
                    pids.add(int(proc.name))
            for pid in pids - {os.getpid()}:
                try:
                    os.kill(pid, signal.SIGTERM if attempt == 0 else signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(1.5)
        shutil.rmtree(self.root, ignore_errors=True)

    def processes(self) -> list[int]:
        """Pids of every live process of this cluster's nodes: CLUSTER_VAR in their environment, or a file
        open under the cluster's temp root (Ray's agents overwrite their environment block with their new
        process title, but keep their node's log files open)."""
        root = str(self.root)
        pids = set(processes_with_env(f"{CLUSTER_VAR}={self.id}"))
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if any(os.readlink(fd).startswith(root) for fd in (proc / "fd").iterdir()):
                    pids.add(int(proc.name))
            except OSError:
                continue
        return sorted(pids - {os.getpid()})

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
