"""What the benchmark scripts share: where the binaries are, free loopback ports, p2pctl.

The binaries are target/release's, or $P2PD_BIN_DIR's (a copy, so that rebuilding during a
long run changes nothing).
"""

import os
import socket
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("P2PD_BIN_DIR") or os.path.join(ROOT, "target", "release")


def free_port():
    """A loopback port free for both TCP and UDP (p2pd listens on both)."""
    while True:
        t = socket.socket()
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()


def ctl(cfg, *args, check=True):
    """Runs p2pctl against the daemon of config dir `cfg`."""
    return subprocess.run([os.path.join(BIN, "p2pctl"), "--config-dir", cfg, *args], capture_output=True, text=True, check=check)
