"""Where an exported file spends its time in ONNX Runtime: per operator type and per node.

    python benchmarks/profile_onnx.py MODEL.onnx [--image PHOTO] [--size 213x320] [--tags 0,3]
                                      [--threads 2] [--repeats 5] [--top 12]

Runs ``InferenceSession.run`` (CPU provider, default session options, ``labels`` fetched as aesipe-label
does) on one image -- ``--image`` (decoded as aesipe-label decodes it), else a random one of ``--size`` --
once to warm up and ``--repeats`` times timed, with ONNX Runtime's profiler on. Prints the median wall time
per run, then the kernel time per run of each operator type and of the slowest nodes (their share of the
summed kernel time). A pseudo-labeller gets the multi-hot tags of ``--tags`` (class indices without the
background, default the first class).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def _image(args) -> np.ndarray:
    if args.image:
        from aesipe.imaging import read_image

        rgb = read_image(args.image, None).rgb
    else:
        height, width = (int(v) for v in args.size.split("x"))
        rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return np.ascontiguousarray(rgb.astype(np.float32).transpose(2, 0, 1)[None] / 255.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--image", type=Path)
    parser.add_argument("--size", default="213x320", help="HxW of the random image (without --image)")
    parser.add_argument("--tags", default="0", help="pseudo-labellers: comma-separated class indices")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ONNX Runtime's default)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "profile")
    if args.threads:
        options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
    feeds = {"image": _image(args)}
    inputs = {i.name: i for i in session.get_inputs()}
    if "tags" in inputs:
        tags = np.zeros((1, inputs["tags"].shape[1]), np.float32)
        tags[0, [int(t) for t in args.tags.split(",")]] = 1.0
        feeds["tags"] = tags
    session.run(["labels"], feeds)
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        session.run(["labels"], feeds)
        times.append(time.perf_counter() - started)
    events = json.loads(Path(session.end_profiling()).read_text())

    runs = args.repeats + 1
    by_node: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_node[(event["args"]["op_name"], event["name"][: -len("_kernel_time")])] += event["dur"]
    by_type: collections.Counter = collections.Counter()
    for (op, _), duration in by_node.items():
        by_type[op] += duration
    total = sum(by_node.values()) or 1
    print(f"{args.model.name}: image {tuple(feeds['image'].shape)}, threads {args.threads or 'default'}, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"median wall per run: {statistics.median(times) * 1000:.1f} ms; kernel time per run: "
          f"{total / runs / 1000:.1f} ms")
    print("\n| operator | ms per run | share |\n|---|---|---|")
    for op, duration in by_type.most_common(args.top):
        print(f"| {op} | {duration / runs / 1000:.1f} | {duration / total:.0%} |")
    print("\n| node | operator | ms per run | share |\n|---|---|---|---|")
    for (op, name), duration in by_node.most_common(args.top):
        print(f"| {name[:60]} | {op} | {duration / runs / 1000:.1f} | {duration / total:.0%} |")


if __name__ == "__main__":
    main()
