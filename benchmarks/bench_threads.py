"""CPU time under load: libgomp's default spinning vs aesipe's thread policy (``aesipe/utils/threads.py``).

    python benchmarks/bench_threads.py [--workload step|demo-small|demo] [--steps 20] [--busy 0,2] [--rounds 1]
                                       [--variants spin,policy,one-thread]

Each contender runs in its own process, one after the other, in this one invocation; with ``--busy N`` the
same contenders run again beside N busy-loop processes at normal priority (one per core: the "loaded"
rows). Columns: wall time, user and system CPU seconds of the process and its children (``getrusage``),
their sum relative to the policy's row of the same load, and the load average before and after each row.
Contenders:
- spin: libgomp's own default (``GOMP_SPINCOUNT=300000``, what any torch program gets when nothing is set);
- policy: nothing set; the child calls ``apply_thread_policy()`` first, as ``aesipe-train``'s main does
  (``OMP_WAIT_POLICY=PASSIVE``);
- one-thread: the policy and ``OMP_NUM_THREADS=1`` (a reference: half the threads, other rounding).
Workloads:
- step: ``--steps`` training steps of the demo's network (torchvision MobileNetV2, batch 16, 96 px), CPU;
- demo-small: ``run_demo`` at a tenth of the demo's training steps on 80 + 20 images (every stage, export,
  labelling), with the CPU time of each stage;
- demo: the whole ``aesipe-train demo`` (the command ``make demo`` runs), minutes to an hour.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "spin": {"GOMP_SPINCOUNT": "300000"},
    "policy": {},
    "one-thread": {"OMP_NUM_THREADS": "1"},
}
SMALL_DEMO = {
    "synth": {"num_train": 80, "num_val": 20},
    "init_steps": 20,
    "overrides": ["train.max_steps=50", "irn.max_steps=10", "seg.max_steps=20", "train.checkpoint_every=25",
                  "irn.checkpoint_every=5", "seg.checkpoint_every=10"],
}


def _usage() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + children.ru_utime, own.ru_stime + children.ru_stime


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def child(workload: str, steps: int) -> None:
    from aesipe.utils.threads import apply_thread_policy

    apply_thread_policy()  # before torch is imported, as aesipe-train's main
    stages: list[dict] = []
    started = time.perf_counter()
    if workload == "step":
        import torch
        import torchvision

        torch.manual_seed(0)
        net = torchvision.models.mobilenet_v2(weights=None, num_classes=4)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
        images, labels = torch.randn(16, 3, 96, 96), torch.rand(16, 4).round()
        for _ in range(steps):
            loss = torch.nn.functional.multilabel_soft_margin_loss(net(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    else:
        from aesipe.train.demo import run_demo

        last = {"name": "start", "t": time.perf_counter(), "cpu": _usage()}

        def echo(message: str) -> None:
            now, cpu = time.perf_counter(), _usage()
            if message.startswith("[") and ("running" in message or message.split("]")[0] in ("[data", "[init", "[export", "[label")):
                stages.append({"stage": last["name"], "wall": now - last["t"], "cpu": sum(cpu) - sum(last["cpu"])})
                last.update(name=message.split("]")[0][1:], t=now, cpu=cpu)

        with tempfile.TemporaryDirectory() as tmp:
            if workload == "demo":
                run_demo(Path(tmp) / "demo", echo=echo, progress=False)
            else:
                run_demo(Path(tmp) / "demo", overrides=SMALL_DEMO["overrides"], synth=SMALL_DEMO["synth"], echo=echo,
                         init_steps=SMALL_DEMO["init_steps"], progress=False)
        now, cpu = time.perf_counter(), _usage()
        stages.append({"stage": last["name"], "wall": now - last["t"], "cpu": sum(cpu) - sum(last["cpu"])})
    user, system = _usage()
    print("RESULT " + json.dumps({"wall": time.perf_counter() - started, "user": user, "sys": system,
                                  "policy": os.environ.get("OMP_WAIT_POLICY"), "stages": stages}))


def run_one(variant: str, workload: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env.update(VARIANTS[variant])
    load_before = _load()
    out = subprocess.run([sys.executable, __file__, "--child", workload, "--steps", str(steps)], env=env,
                         capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        sys.exit(f"{variant} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return {**json.loads(lines[-1][len("RESULT "):]), "load": f"{load_before} -> {_load()}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=("step", "demo-small", "demo"), default="step")
    parser.add_argument("--steps", type=int, default=20, help="training steps of the 'step' workload")
    parser.add_argument("--busy", default=f"0,{os.cpu_count()}", help="busy-loop processes beside each row, e.g. 0,2")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=1, help="run every contender this many times, alternating")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps)
        return 0
    variants = [v for v in args.variants.split(",") if v]
    print(f"workload {args.workload}" + (f" ({args.steps} steps)" if args.workload == "step" else "")
          + f", {os.cpu_count()} cores, load {_load()}")
    print(f"{'busy':>4} {'contender':<10} {'wall s':>8} {'user s':>8} {'sys s':>6} {'CPU vs policy':>13}  load before -> after")
    for busy in [int(b) for b in args.busy.split(",") if b.strip()]:
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
        try:
            time.sleep(2 if busy else 0)
            rows = [(v, run_one(v, args.workload, args.steps)) for _ in range(args.rounds) for v in variants]
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
        base = [r["user"] + r["sys"] for v, r in rows if v == "policy"]
        for variant, r in rows:
            ratio = f"{(r['user'] + r['sys']) / (sum(base) / len(base)):.2f}x" if base else "-"
            print(f"{busy:>4} {variant:<10} {r['wall']:8.1f} {r['user']:8.1f} {r['sys']:6.1f} {ratio:>13}  {r['load']}")
            for stage in r["stages"]:
                print(f"{'':>16} {stage['stage']:<18} wall {stage['wall']:7.1f} s  CPU {stage['cpu']:7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
