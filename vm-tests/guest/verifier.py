"""Load every program of roar's kernel side one by one on this kernel and say
which ones its verifier refuses, each with the verifier's last lines: the whole
list at once, where roard stops at the first. Run in a vm-tests guest
(run.sh --verifier) or by hand:  python3 vm-tests/guest/verifier.py

Prints `OK name seconds [verifier statistics]` or `FAIL name: reason` and the
log's last lines, then `N of M programs load`; exits 1 if any is refused.
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from roar.capture import features  # noqa: E402
from roar.capture.events import program_text  # noqa: E402
from roar.capture.probes import RINGBUF_PAGES, import_bcc  # noqa: E402

bcc = import_bcc()


class _BPF(bcc.BPF):
    def _trace_autoload(self):  # load one by one below; attach nothing
        pass


def main() -> int:
    flags = [f"-DRINGBUF_PAGES={RINGBUF_PAGES}", *features.compile_flags(),
             "-Wno-macro-redefined", "-Wno-unused-value"]
    print(f"compile flags: {' '.join(flags)}", flush=True)
    t0 = time.monotonic()
    b = _BPF(text=program_text(), cflags=flags)
    print(f"compiled in {time.monotonic() - t0:.1f}s", flush=True)
    names = [bcc.lib.bpf_function_name(b.module, i)
             for i in range(bcc.lib.bpf_num_functions(b.module))]
    refused = 0
    for name in names:
        kind = bcc.BPF.TRACEPOINT if name.startswith(b"tracepoint__") else bcc.BPF.KPROBE
        log = tempfile.TemporaryFile()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)  # BCC prints the verifier's log on stderr
        t1 = time.monotonic()
        try:
            b.load_func(name, kind)
            err = ""
        except Exception as e:  # noqa: BLE001 - BCC raises bare Exception
            err = str(e).splitlines()[0] if str(e) else type(e).__name__
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        took = time.monotonic() - t1
        log.seek(0)
        lines = [ln for ln in log.read().decode(errors="replace").splitlines() if ln.strip()]
        stats = next((ln for ln in reversed(lines) if ln.startswith("processed ")), "")
        if not err:
            print(f"OK   {name.decode()} {took:.1f}s {stats}", flush=True)
            continue
        refused += 1
        print(f"FAIL {name.decode()}: {err}", flush=True)
        for ln in lines[-8:]:
            print(f"     {ln[:300]}", flush=True)
    print(f"{len(names) - refused} of {len(names)} programs load", flush=True)
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
