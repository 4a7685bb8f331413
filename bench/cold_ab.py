#!/usr/bin/env python3
"""Cold starts in the user's sequence, alternating several `strata` binaries in one session,
to compare a change with the binary before it (copy each build's target/release/strata).

python3 bench/cold_ab.py --cart target/release/shopping-cart --trials N \
    [--log RUST_LOG] [--root DIR] NAME=STRATA_BINARY [NAME=STRATA_BINARY ...]

Each binary runs its own `strata dev` (own data dir and ports); the cart is deployed with
`--min-scale 0 --scale-to-zero-grace 5s --stable-window 6s`. Each round waits until every
dev is at zero, then times `curl http://127.0.0.1:PORT/carts/z1` on each in turn (the order
alternates by round), one at a time. Each dev's log, its instances' logs (data/logs/) and
trials.txt (curl's start and end as Unix time, its time_total, the status) stay in
ROOT/NAME (default /tmp/coldab) for a timeline.
"""
import json, os, socket, statistics, subprocess, sys, time, urllib.request

TOKEN = "coldab-token"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} never opened")


class Dev:
    def __init__(self, name, binary, root, cart, log_level):
        self.name, self.binary = name, binary
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        self.gateway, self.api = free_port(), free_port()
        env = dict(os.environ)
        if log_level:
            env["RUST_LOG"] = log_level
        self.log = open(os.path.join(self.dir, "dev.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "dev", "--data-dir", os.path.join(self.dir, "data"),
             "--listen", f"127.0.0.1:{self.gateway}", "--api-listen", f"127.0.0.1:{self.api}",
             "--token", TOKEN],
            cwd=self.dir, env=env, stdout=self.log, stderr=self.log)
        wait_port(self.gateway)
        subprocess.run(
            [binary, "deploy", "cart", "--command", cart, "--min-scale", "0",
             "--scale-to-zero-grace", "5s", "--stable-window", "6s",
             "--api", f"http://127.0.0.1:{self.api}"],
            env={**os.environ, "STRATA_TOKEN": TOKEN}, check=True, stdout=subprocess.DEVNULL)

    def service(self):
        req = urllib.request.Request(f"http://127.0.0.1:{self.api}/api/v1/services/cart",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req) as r:
            return json.load(r)

    def at_zero(self):
        s = self.service()
        return s["ready_replicas"] == 0 and s["desired_replicas"] == 0

    def curl(self):
        out = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
             f"http://127.0.0.1:{self.gateway}/carts/z1"], capture_output=True, text=True)
        code, took = out.stdout.split()
        return code, float(took) * 1000

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main():
    args = sys.argv[1:]
    cart, trials, log_level, root = None, 10, None, "/tmp/coldab"
    bins = []
    while args:
        a = args.pop(0)
        if a == "--cart":
            cart = args.pop(0)
        elif a == "--trials":
            trials = int(args.pop(0))
        elif a == "--log":
            log_level = args.pop(0)
        elif a == "--root":
            root = args.pop(0)
        else:
            name, binary = a.split("=", 1)
            bins.append((name, os.path.abspath(binary)))
    if cart is None or not bins:
        raise SystemExit(__doc__)
    # Each dev runs in its own folder: the function's command must not be relative.
    cart = os.path.abspath(cart)
    devs = [Dev(n, b, root, cart, log_level) for n, b in bins]
    results = {d.name: [] for d in devs}
    refused = {d.name: 0 for d in devs}
    try:
        for d in devs:
            while d.service()["ready_replicas"] != 1:
                time.sleep(0.05)
            d.curl()
        for trial in range(trials):
            order = devs if trial % 2 == 0 else list(reversed(devs))
            for d in order:
                while not all(x.at_zero() for x in devs):
                    time.sleep(0.05)
                time.sleep(0.2)
                t0 = time.time()
                code, ms = d.curl()
                t1 = time.time()
                with open(os.path.join(d.dir, "trials.txt"), "a") as f:
                    f.write(f"{t0:.6f} {t1:.6f} {ms:.3f} {code}\n")
                if code != "200":
                    refused[d.name] += 1
                results[d.name].append(ms)
                print(f"trial {trial} {d.name}: {code} {ms:.1f} ms", flush=True)
    finally:
        for d in devs:
            d.stop()
    for name, values in results.items():
        v = sorted(values)
        p99 = v[min(len(v) - 1, int(round(0.99 * (len(v) - 1))))]
        print(f"{name}: n={len(v)} p50 {statistics.median(v):.1f} ms  p99 {p99:.1f} ms  min {v[0]:.1f}  max {v[-1]:.1f}  refused {refused[name]}")


main()
