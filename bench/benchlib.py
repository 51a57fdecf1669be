"""What the benchmark scripts share: where the binaries are, free loopback ports, p2pctl, and the
header every result file opens with.

The binaries are target/release's, or $P2PD_BIN_DIR's (a copy, so that rebuilding during a
long run changes nothing).

A result file is its script's output and nothing else: commentary on a result goes to
bench/results/RESULTS.md, dated and with the commit it is about.
"""

import glob
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("P2PD_BIN_DIR") or os.path.join(ROOT, "target", "release")

# Filesystems that live in memory: an fsync there costs nothing, so a figure that includes
# fsyncs must not be measured on one without saying so.
MEMORY_FILESYSTEMS = ("tmpfs", "ramfs")


def free_port(host="127.0.0.1"):
    """A port of `host` (a loopback address) free for both TCP and UDP (p2pd listens on both)."""
    while True:
        t = socket.socket()
        t.bind((host, 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()


def ctl(cfg, *args, check=True):
    """Runs p2pctl against the daemon of config dir `cfg`."""
    return subprocess.run([os.path.join(BIN, "p2pctl"), "--config-dir", cfg, *args], capture_output=True, text=True, check=check)


def build(*cargo_args):
    """`cargo build --release -q` with these arguments (default: the whole workspace), unless the
    binaries come from $P2PD_BIN_DIR."""
    if os.environ.get("P2PD_BIN_DIR"):
        return
    subprocess.run(["cargo", "build", "--release", "-q", *(cargo_args or ("--workspace",))], cwd=ROOT, check=True)


def fs_type(path):
    """The type of the filesystem holding `path`, as findmnt names it (e.g. ext4, tmpfs)."""
    r = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", path], capture_output=True, text=True)
    if r.returncode == 0 and r.stdout.strip():
        return r.stdout.strip().splitlines()[0]
    r = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True, check=True)
    return r.stdout.strip()


def disk_workdir(prefix):
    """A new private directory on a filesystem backed by a disk: under $TMPDIR (or the system
    temporary directory) if that is not in memory, else under the repository's target/. Returns
    (path, filesystem type)."""
    base = tempfile.gettempdir()
    if fs_type(base) in MEMORY_FILESYSTEMS:
        base = os.path.join(ROOT, "target", "bench-tmp")
        os.makedirs(base, exist_ok=True)
    work = tempfile.mkdtemp(prefix=prefix, dir=base)
    kind = fs_type(work)
    if kind in MEMORY_FILESYSTEMS:
        sys.exit(f"{work} is on {kind}; set TMPDIR to a directory on a disk")
    return work, kind


def _git(*args):
    r = subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def commit():
    """`git rev-parse --short HEAD`, with "+ uncommitted changes" when the tree differs from it."""
    head = _git("rev-parse", "--short", "HEAD")
    if head is None:
        return "unknown (not a git checkout)"
    return head + (" + uncommitted changes" if _git("status", "--porcelain") else "")


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        return ""


class Run:
    """The facts about one benchmark run that head its result file, taken when the run starts
    (the tree may change during a long run): the exact command line, the UTC date, the commit,
    the machine and the build."""

    def __init__(self):
        script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
        self.command = shlex.join(["python3", script, *sys.argv[1:]])
        self.date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        self.commit = commit()
        model = _cpu_model()
        load = os.getloadavg()[0]
        self.machine = (f"{os.cpu_count()} CPUs{f' ({model})' if model else ''}, Linux {platform.release()}, "
                        f"load average {load:.2f} at the start")
        if os.environ.get("P2PD_BIN_DIR"):
            self.build = f"release binaries from $P2PD_BIN_DIR ({BIN}; their commit is not checked)"
        else:
            self.build = "release (`cargo build --release`, target/release)"

    def header(self, title, *facts):
        """The opening lines of a result file: the title, then one line per fact (the run's, then
        the script's own `facts`, e.g. which filesystem held the data)."""
        lines = [
            f"# {title}",
            "",
            f"Command: `{self.command}`  ",
            f"Date: {self.date}  ",
            f"Commit: {self.commit}  ",
            f"Machine: {self.machine}  ",
            f"Build: {self.build}" + ("  " if facts else ""),
        ]
        lines += [f"{fact}  " for fact in facts[:-1]] + list(facts[-1:])
        return lines + [""]


def load_results(run_dir, pattern="scenario-*.json"):
    """The testbed results in `run_dir` matching `pattern`, sorted by file name (scenario 6
    writes two); exits with a one-line error when there are none."""
    files = sorted(glob.glob(os.path.join(run_dir, pattern)))
    if not files:
        sys.exit(f"{run_dir}: no {pattern}")
    results = []
    for path in files:
        with open(path) as f:
            results.append(json.load(f))
    return results


def write_result(path, text):
    """Prints the result and writes it to `path`."""
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
