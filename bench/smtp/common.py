"""Pieces both SMTP benchmarks use (run.py: synthetic mail against Postfix; mail.py: real mail with
the real-size signature set): ports, waiting for a listener, percentiles, stopping what they started."""
import signal
import socket
import subprocess
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, seconds=300):
    """Until something accepts on `port`; gives up when `proc` (if given) exits or `seconds` pass."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"process for port {port} exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port}")


def pct(values, p):
    """The p-th percentile of sorted `values` (nan when empty)."""
    return values[min(len(values) - 1, int(p * (len(values) - 1)))] if values else float("nan")


def stop_all(procs, timeout=60):
    """SIGTERM to each process still running, last started first; SIGKILL after `timeout` seconds."""
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
