"""The guest loop's rate, read every 0.1-0.3 s, around one live save of a
Linux guest (bench section 6's guest, fill and loop): where in the save the
guest loses speed.  Needs a conventional KVM (in the kvm bed on kvm_pvm):

  tests/kvm-bed/run.sh --share GUEST -- python3 bench/loop_timeline.py REPS \
      NAME=BUILD_DIR=ENV:VALUE,ENV:VALUE ...

(SNAPGATE_LINUX_GUEST=GUEST in the environment).  The variants alternate,
repetition by repetition.  Each line: the save's wall time, the rate inside
it, then per interval its start (s from the save's start; S: inside the
save) and the rate in % of the 3 s before; then snapgate-vmm's "wp:" trace
lines (give the variant SNAPGATE_VMM_TRACE:1)."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402
import bench_linux as L  # noqa: E402

guest = os.environ["SNAPGATE_LINUX_GUEST"]
_sh = L.Console.sh
# A lost guest fails its run within a minute, not the console's 600 s.
L.Console.sh = lambda self, line, want, timeout=60: _sh(self, line, want, min(timeout, 60))
cfgs = [c.split("=", 2) for c in sys.argv[2:]]
for i in range(int(sys.argv[1])):
    for name, build, envs in cfgs:
        d = f"/tmp/tl-{name}"; os.makedirs(d, exist_ok=True)
        env0 = dict(os.environ)
        for kv in filter(None, envs.split(",")):
            k, v = kv.split(":"); os.environ[k] = v
        try:
            t0, proc, con, qsock = L.start("snapgate", build, guest, d)
            q = B.QMP(qsock)
            con.wait(lambda b: L.READY in b, 900, "ready"); con.s.sendall(b"\n"); con.prompt(300)
            con.sh(f"mkdir -p /shm && mount -t tmpfs -o size={L.FILL + 32}m tmpfs /shm && "
                   f"dd if=/dev/urandom of=/shm/r bs=1M count={L.FILL} 2>/dev/null; echo fill-done", b"\nfill-done\n")
            con.sh("(i=0; while :; do i=$((i+1)); echo $i > /shm/cnt; done) & sleep 1; echo loop-on", b"\nloop-on\n")
            pts = [L.count(con)]
            while pts[-1][1] - pts[0][1] < 3:
                pts.append(L.count(con))
            res = {}
            th = threading.Thread(target=lambda: res.update(r=q.run_job("snapshot-save", L.SAVE, "s")))
            ts = time.monotonic(); th.start()
            while th.is_alive():
                pts.append(L.count(con))
            te = time.monotonic()
            t1 = pts[-1][1]
            while pts[-1][1] - t1 < 3:
                pts.append(L.count(con))
            base = (pts[0], [p for p in pts if p[1] <= ts][-1])   # the 3 s before
            r0 = (base[1][0] - base[0][0]) / (base[1][1] - base[0][1])
            line = []
            for a, b in zip(pts, pts[1:]):
                tag = "S" if a[1] >= ts and b[1] <= te + 0.5 else " "
                line.append(f"{(a[1]-ts):+.1f}{tag}{(b[0]-a[0])/(b[1]-a[1])/r0*100:.0f}")
            inside = [p for p in pts if ts <= p[1] <= te + 0.6]
            rs = (inside[-1][0] - inside[0][0]) / (inside[-1][1] - inside[0][1]) / r0 * 100 if len(inside) > 1 else 0
            print(f"{i} {name}: save {te-ts:.2f}s rate-in-save {rs:.0f}% | " + " ".join(line), flush=True)
            for l in L.trace_lines(d):
                if "wp:" in l: print("   ", l, flush=True)
            q.close(); proc.kill(); proc.wait(); con.s.close()
        except Exception as e:   # noqa: BLE001  (a run's failure is its line)
            print(name, "failed", e, flush=True)
        finally:
            os.environ.clear(); os.environ.update(env0)
