"""`roar sync`: push this node's outbox to the shared store now and report
{pushed, pending, failed, last_error}.

Registered into the main command group by roar.cli.main at import.
"""

from __future__ import annotations

import sys

import click

from roar.cli.output import fail, print_json
from roar.record.store import Store, StoreError


@click.command()
@click.option("--all", "everything", is_flag=True,
              help="Queue every run of this store again first (e.g. a store recorded before "
                   "a shared store was configured, or a shared store that was rebuilt).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def sync(everything, as_json):
    """Push this node's runs to the shared store (ROAR_SHARED, or `shared` in
    $ROAR_HOME/config.toml or /etc/roar/config.toml) now."""
    from roar.shared import outbox
    from roar.shared.config import shared_url

    try:
        store = Store()
        url = shared_url(store.home)
        if not url:
            fail("no shared store configured: set ROAR_SHARED=postgresql://... or "
                 f"shared = \"postgresql://...\" in {store.home / 'config.toml'}")
        if everything:
            outbox.requeue_all(store)
        with outbox.push_lock(store.home, wait=True):
            doc = outbox.push(store, url)
    except StoreError as e:
        fail(str(e))
    if as_json:
        print_json(doc)
    else:
        click.echo(f"pushed {doc['pushed']} run(s); {doc['pending']} pending; "
                   f"{doc['failed']} failed", err=True)
        if doc["last_error"]:
            click.echo(f"roar: {doc['last_error']}", err=True)
    if doc["last_error"]:
        sys.exit(1)


def register(cli: click.Group) -> None:
    cli.add_command(sync)
