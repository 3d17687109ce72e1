"""`faircalib storage up | down | status`: the embedded SeaweedFS S3 server (127.0.0.1 only, data under
$FAIRCALIB_HOME/seaweedfs). Jobs with `storage: s3://faircalib/...` use it when no other endpoint is
configured (FAIRCALIB_S3_ENDPOINT / AWS_ENDPOINT_URL)."""
from __future__ import annotations

import json

import click


@click.group("storage")
def storage_group() -> None:
    """The local S3 server for the embedded default (SeaweedFS)."""


@storage_group.command("up")
@click.option("--port", type=int, default=8333, show_default=True, help="S3 port on 127.0.0.1.")
@click.option("--bucket", default="faircalib", show_default=True, help="Bucket to create.")
def up_cmd(port: int, bucket: str) -> None:
    """Start the server in the background (idempotent) and create the default bucket."""
    from faircalib.service.storage import storage_up

    state = storage_up(port=port, bucket=bucket)
    auth = "SigV4 with the AWS_* credentials it was started with" if state.get("sigv4") else "anonymous (loopback)"
    click.echo(f"SeaweedFS S3 at {state['endpoint']} (pid {state['pid']}, {auth}); bucket {bucket!r} ready; "
               f"data in {state['data_dir']}")


@storage_group.command("down")
def down_cmd() -> None:
    """Stop the server (its data stays on disk)."""
    from faircalib.service.seaweed import storage_down

    click.echo("stopped" if storage_down() else "not running")


@storage_group.command("status")
@click.option("--json", "as_json", is_flag=True)
def status_cmd(as_json: bool) -> None:
    """Show whether the server runs, and which S3 endpoint jobs will use."""
    from faircalib.service.seaweed import local_state
    from faircalib.service.storage import resolve_endpoint

    state = local_state()
    endpoint, source = resolve_endpoint()
    info = {"local_server": state, "endpoint": endpoint or "AWS S3", "endpoint_source": source}
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    click.echo(f"local server: {'running at ' + state['endpoint'] + ' (pid ' + str(state['pid']) + ')' if state else 'not running'}")
    click.echo(f"jobs use: {info['endpoint']} ({source})")


def register(root: click.Group) -> None:
    root.add_command(storage_group)
