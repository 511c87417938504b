"""A scripted agent for the audit tests: in a loop it runs git, `sh -c` and
`python -c`, talks HTTP to a loopback server of its own, reads a fake secret
under $HOME, writes outside its workspace and spawns a helper that
daemonizes (double fork, setsid) and writes a file after its parent is gone.

usage: audit_agent.py WORKSPACE OUTSIDE_DIR ITERATIONS [GATE_FILE]
Iteration i leaves step_<i>.txt, py_<i>.txt and daemon_<i>.txt in WORKSPACE
and out_<i>.txt in OUTSIDE_DIR. With GATE_FILE, after iteration 0 it writes
WORKSPACE/ready and waits until GATE_FILE exists (an attach happens then).
"""

import http.server
import os
import subprocess
import sys
import threading
import time
import urllib.request

ws, outside, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
gate = sys.argv[4] if len(sys.argv) > 4 else None
os.chdir(ws)

srv = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
srv.RequestHandlerClass.log_message = lambda *a: None
threading.Thread(target=srv.serve_forever, daemon=True).start()
port = srv.server_address[1]

HELPER = """
import os, sys, time
if os.fork(): os._exit(0)
os.setsid()
if os.fork(): os._exit(0)
time.sleep(0.3)
open(sys.argv[1], "w").write("daemon")
"""

for i in range(n):
    subprocess.run(["git", "status", "--short"], check=True, capture_output=True)
    subprocess.run(["sh", "-c", f"echo step {i} > step_{i}.txt"], check=True)
    subprocess.run([sys.executable, "-c", f"open('py_{i}.txt', 'w').write('{i}')"], check=True)
    urllib.request.urlopen(f"http://127.0.0.1:{port}/step_{i}.txt").read()
    with open(os.path.expanduser("~/.ssh/id_rsa")) as f:
        f.read()
    with open(os.path.join(outside, f"out_{i}.txt"), "w") as f:
        f.write("outside")
    subprocess.run([sys.executable, "-c", HELPER, os.path.join(ws, f"daemon_{i}.txt")],
                   check=True)
    time.sleep(0.5)  # the helper is done before the next step
    if i == 0 and gate:
        open("ready", "w").close()
        while not os.path.exists(gate):
            time.sleep(0.05)
srv.shutdown()
