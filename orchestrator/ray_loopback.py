"""`ray start` for nodes that stay on loopback: `python -m faircalib.orchestrator.ray_loopback start ...`
takes the same arguments as `ray start`.

Plain `ray start --node-ip-address=127.0.0.1` rewrites the address to the host's routable one (Ray's
`resolve_ip_for_localhost`), and a node on a routable address listens on every interface. Ray's only
switch against it, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, also refuses `ray start --address` (no second
node). This entry point keeps the given address as it is; on 127.0.0.1 Ray binds its GCS, raylets,
agents and workers to loopback only (tests/orchestrator/test_cluster.py checks every socket).
"""
from __future__ import annotations

import sys


def main() -> None:
    import ray._private.services as services
    from ray.scripts.scripts import main as ray_main

    services.resolve_ip_for_localhost = lambda host: host  # keep 127.0.0.1 as given
    sys.argv[0] = "ray"
    ray_main()


if __name__ == "__main__":
    main()
