"""The background job `roar run` starts when some hashes were still pending at
the end of a run (roar/record/pending.py): fill them in, then push the
completed run to the shared store, if one is configured. It lives here, at
the top, because it joins the record layer (hashing) and the shared layer
(the push); `python -m roar.cli.fill RUN_ID`."""

from __future__ import annotations

import sys

from roar.record.pending import fill
from roar.record.store import Store
from roar.shared.outbox import kick


def main() -> None:
    run_id = sys.argv[1]
    with Store() as store:
        fill(store, run_id)
        kick(store.home)  # the late hashes re-queued the run


if __name__ == "__main__":
    main()
