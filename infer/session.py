"""Run an exported file: ONNX Runtime (CPU or CUDA with IO binding) or TorchScript (torch imported lazily).

Both backends expose ``info`` (parsed metadata), ``providers`` (what really runs), ``fallback`` (a
sentence when the requested accelerator silently fell back to CPU, else None), ``streams`` (how many calls
can run at once, each on its own threads) and ``run(image, tags, want) -> {output name: array}``, which any
thread may call.

Streams: on a CPU, ``OrtBackend`` can hold several sessions of the same file, each with its own intra-op
threads, and hands each call a free one. For a segmenter, two one-thread sessions running two batches at
once label small images faster than one two-thread session running them in turn (int8 on MSRC photos: 1.2x,
``benchmarks/RESULTS.md``): a small convolution splits poorly over threads, and a thread that another job
preempts stalls only its own call, not every operator of a shared pool at its barrier. A pseudo-labeller's
call (several scales, up to twice the image's size) fills the cores on its own: a second session only
doubled its memory (1.0 -> 1.6 GB), so its automatic choice is one stream.
"""
from __future__ import annotations

import json
import os
import queue
import warnings
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from aesipe.contract import EXTRA_FILE, MetadataError, ModelInfo, parse_metadata
from aesipe.utils.errors import UserError

ONNX_SUFFIXES = (".onnx",)
TORCHSCRIPT_SUFFIXES = (".pt", ".torchscript")
DEVICES = ("auto", "cpu", "cuda")
"""Also ``cuda:N``: that GPU (ONNX Runtime's CUDA provider ``device_id``; torch's ``cuda:N``)."""
CUDA_EP, CPU_EP = "CUDAExecutionProvider", "CPUExecutionProvider"
AESIPE_OPS = ("aesipe::pamr",)
"""The compiled ops a TorchScript file may call (aesipe's own library holds them)."""


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask: a container's or taskset's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_streams(threads: int | None, streams: int | None, pseudo_labeller: bool = False) -> tuple[int, int | None]:
    """(sessions, intra-op threads per session; None = ONNX Runtime's default) for a CPU run. ``streams`` None:
    two for a segmenter on two cores or more, one for a pseudo-labeller (see the module docstring);
    ``threads`` None with several streams: the cores shared out between them."""
    cores = usable_cores()
    if streams is None:
        streams = 2 if cores >= 2 and not pseudo_labeller else 1
    if threads is None and streams > 1:
        threads = max(1, cores // streams)
    return streams, threads


def read_torchscript_metadata(path: str | Path) -> dict[str, str]:
    """The ``aesipe.json`` extra file of a TorchScript zip, read without torch."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(f"/extra/{EXTRA_FILE}")]
            return json.loads(archive.read(names[0])) if names else {}
    except (zipfile.BadZipFile, json.JSONDecodeError, OSError):
        return {}


def _parse(meta: dict[str, str], path: Path) -> ModelInfo:
    try:
        return parse_metadata(meta, source=str(path))
    except MetadataError as exc:
        raise UserError(str(exc)) from None


class OrtBackend:
    def __init__(self, path: Path, device: str = "auto", providers: Sequence[str] | None = None,
                 threads: int | None = None, streams: int | None = 1):
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError("ONNX models need onnxruntime: pip install 'aesipe[cpu]' (or 'aesipe[gpu]')") from None
        available = ort.get_available_providers()
        kind, gpu = parse_device(device)
        requested = list(providers) if providers else self._providers_for(kind, available)
        if kind == "cuda" and CUDA_EP not in available and not providers:
            raise UserError(f"--device {device}: this onnxruntime has no CUDA provider; pip install 'aesipe[gpu]' "
                            "(and uninstall onnxruntime: the two packages overwrite each other)")
        provider_options = [{"device_id": gpu} if p == CUDA_EP else {} for p in requested]
        if CUDA_EP in requested and hasattr(ort, "preload_dlls"):
            try:  # finds the CUDA/cuDNN libraries torch's wheels installed, when torch is there
                ort.preload_dlls()
            except Exception:
                pass

        def open_session(intra_threads: int | None):
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads = intra_threads or 0  # 0: ORT picks the physical core count
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            try:
                return ort.InferenceSession(str(path), sess_options=options, providers=requested,
                                            provider_options=provider_options)
            except Exception as exc:
                raise UserError(f"cannot load {path} with onnxruntime: {str(exc).splitlines()[0][:200]}") from None

        if CUDA_EP in requested:
            streams = 1  # one GPU runs one call at a time anyway; a second session would only hold memory
        elif streams is not None:
            streams, threads = cpu_streams(threads, streams)
        first_threads = threads
        first = open_session(first_threads)
        self.info = _parse(dict(first.get_modelmeta().custom_metadata_map), path)
        if streams is None:
            # The automatic choice depends on the model's kind, which only a session's metadata tells: the
            # first session was opened with the threads asked for, and is replaced if each stream gets fewer.
            streams, threads = cpu_streams(threads, None, pseudo_labeller=self.info.needs_tags)
        sessions = [first] if threads == first_threads else []
        sessions += [open_session(threads) for _ in range(streams - len(sessions))]
        self.sessions, self.session, self.streams, self.threads = sessions, sessions[0], streams, threads
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for session in self.sessions:
            self._free.put(session)
        self.providers = self.session.get_providers()
        missing = [p for p in requested if p not in self.providers]
        self.fallback = (f"requested {', '.join(missing)} but onnxruntime runs on {', '.join(self.providers)}"
                         if missing else None)
        self.on_gpu = CUDA_EP in self.providers
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.device = "cuda" if self.on_gpu else "cpu"

    def probe(self, image: np.ndarray, tags: np.ndarray | None) -> dict[str, np.ndarray]:
        """One call on the first session, outside the stream pool (``check_graph``)."""
        feeds = {"image": image} | ({"tags": tags} if tags is not None else {})  # a missing or extra input fails
        return dict(zip(("scores", "labels"), self.session.run(["scores", "labels"], feeds)))

    @staticmethod
    def _providers_for(device: str, available: Sequence[str]) -> list[str]:
        if device in ("auto", "cuda") and CUDA_EP in available:
            return [CUDA_EP, CPU_EP]
        return [CPU_EP]

    def run(self, image: np.ndarray, tags: np.ndarray | None, want: Sequence[str]) -> dict[str, np.ndarray]:
        feeds = {"image": np.ascontiguousarray(image, dtype=np.float32)}
        if "tags" in self.input_names:
            feeds["tags"] = np.ascontiguousarray(tags, dtype=np.float32)
        if not self.on_gpu:
            session = self._free.get()  # blocks only when more threads call than there are streams
            try:
                return dict(zip(want, session.run(list(want), feeds)))
            finally:
                self._free.put(session)
        # IO binding: inputs go to the GPU once, and only the requested outputs come back.
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        for name in want:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return dict(zip(want, binding.copy_outputs_to_cpu()))


class TorchScriptBackend:
    def __init__(self, path: Path, device: str = "auto"):
        try:
            import torch
        except ImportError:
            raise UserError("TorchScript models need torch: pip install 'aesipe[train]', or label the ONNX export, "
                            "which needs no torch") from None
        self.info = _parse(read_torchscript_metadata(path), path)
        self._load_custom_ops(torch)
        kind, gpu = parse_device(device)
        if kind == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {device}: torch sees no CUDA GPU")
        if kind == "cuda" and gpu >= torch.cuda.device_count():
            raise UserError(f"--device {device}: torch sees {torch.cuda.device_count()} GPU(s) (cuda:0 ...)")
        self.device = f"cuda:{gpu}" if kind in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        self._torch = torch
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates torch.jit
            self.module = torch.jit.load(str(path), map_location=self.device).eval()
        self.providers = [f"torch.jit ({self.device})"]
        self.fallback = None
        self.streams, self.threads = 1, None  # one module; torch's own intra-op threads
        self.on_gpu = self.device.startswith("cuda")

    def _load_custom_ops(self, torch) -> None:
        """Load aesipe's own op library when the file calls aesipe's ops: only the library aesipe's own loader
        finds in its build cache, never a path the file names (``op_library`` is where the exporting machine had
        it: a record, never opened), so no model file can make this process load code. Never compiles:
        labelling must not start a build as a side effect."""
        if not self.info.custom_ops:
            return
        foreign = [op for op in self.info.custom_ops if op not in AESIPE_OPS]
        if foreign:
            raise UserError(f"the model calls {', '.join(foreign)}, which are not aesipe's ops: only aesipe's own op "
                            "library is ever loaded, so this file cannot be labelled")
        try:
            from aesipe.ops import _build

            library = _build.find_built_library()
        except ImportError:
            library = None
        if library is None:
            raise UserError(f"the model calls {', '.join(self.info.custom_ops)} and no built op library is on this "
                            "machine: build it once with `python -m aesipe.ops build` (--cuda for GPUs), or export to "
                            "ONNX, which needs no custom ops")
        torch.ops.load_library(str(library))

    def probe(self, image: np.ndarray, tags: np.ndarray | None) -> dict[str, np.ndarray]:
        """One call (``check_graph``)."""
        return self.run(image, tags, ("scores", "labels"))

    def run(self, image: np.ndarray, tags: np.ndarray | None, want: Sequence[str]) -> dict[str, np.ndarray]:
        torch = self._torch
        inputs = [torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(self.device)]
        if self.info.needs_tags:
            inputs.append(torch.from_numpy(np.ascontiguousarray(tags, dtype=np.float32)).to(self.device))
        with torch.inference_mode():
            scores, labels, *rest = self.module(*inputs)
        outputs = {"scores": scores, "labels": labels} | ({"fallback": rest[0]} if rest else {})
        return {name: outputs[name].cpu().numpy() for name in want}


def parse_device(device: str) -> tuple[str, int]:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> (kind, GPU index)."""
    kind, _, index = str(device).partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise UserError(f"--device must be one of auto, cpu, cuda, cuda:N (that GPU), got {device!r}")
    return kind, int(index or 0)


def check_model_path(path: str | Path, input_spec: str | Path | None = None) -> Path:
    """The model file, or one line saying why ``path`` cannot be one (``input_spec``: the INPUT given beside it,
    to recognise MODEL and INPUT given the other way round)."""
    path = Path(path)
    swapped = input_spec is not None and Path(str(input_spec)).suffix.lower() in ONNX_SUFFIXES + TORCHSCRIPT_SUFFIXES
    if path.is_dir():
        if swapped:
            raise UserError(f"MODEL {path} is a folder and INPUT {input_spec} looks like a model: the order is "
                            "MODEL INPUT OUTPUT")
        exported = sorted(path.glob("*.onnx")) + sorted((path / "export").glob("*.onnx"))
        hint = f" such as {exported[0]}" if exported else " (aesipe-export writes RUN/export/segmenter.onnx)"
        raise UserError(f"MODEL {path} is a folder: give the exported .onnx or TorchScript .pt file{hint}")
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    if path.suffix.lower() not in ONNX_SUFFIXES + TORCHSCRIPT_SUFFIXES:
        order = " (the order is MODEL INPUT OUTPUT)" if swapped else ""
        raise UserError(f"{path}: expected an .onnx or TorchScript (.pt, .torchscript) file from aesipe-export{order}")
    return path


PROBE_SIDE = 64
"""The side of the blank image every model file is run on once when opened, to hold its metadata to the graph."""


def check_graph(backend, path: Path) -> None:
    """The graph is what its metadata says, before any image is read: a blank 1 x 3 x H x W image (with tags
    for a pseudo-labeller) must give ``scores`` [1, classes, H, W] and ``labels`` [1, H, W]. A file whose
    metadata names 3 classes for a 5-channel graph would otherwise write label values the report cannot name."""
    info = backend.info
    fmt = info.input_format
    height, width = fmt.fixed_size or (PROBE_SIDE, PROBE_SIDE)
    image = np.zeros((1, 3, height, width), dtype=np.float32)
    tags = np.ones((1, info.num_classes), dtype=np.float32) if info.needs_tags else None
    try:
        out = backend.probe(image, tags)
    except Exception as exc:  # noqa: BLE001 - any failure here means the file is not what it says
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"{path} does not run as its metadata describes it (a 1x3x{height}x{width} image"
                        f"{' and tags' if tags is not None else ''}): {reason}") from None
    scores, labels = np.asarray(out["scores"]), np.asarray(out["labels"])
    if scores.shape != (1, len(info.classes), height, width) or labels.shape != (1, height, width):
        raise UserError(f"{path}: its metadata names {len(info.classes)} classes (background included) for a "
                        f"{height}x{width} image, but the graph gives scores of shape {list(scores.shape)} and "
                        f"labels of shape {list(labels.shape)}")
    if "fallback" in info.output.get("names", ()):
        try:
            flags = np.asarray(backend.run(image, tags, ("fallback",))["fallback"])
        except Exception as exc:  # noqa: BLE001 - the metadata names an output the graph does not give
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise UserError(f"{path}: its metadata names a fallback output the graph does not give: {reason}") from None
        if flags.shape != (1, len(info.classes)):
            raise UserError(f"{path}: its fallback output has shape {list(flags.shape)}, not [1, {len(info.classes)}]")


def open_backend(path: str | Path, device: str, providers: Sequence[str] | None, threads: int | None,
                 streams: int | None):
    """``streams`` (ONNX on a CPU): sessions that run calls at once; None: ``cpu_streams``'s choice. The file is
    checked against its metadata (``check_graph``) before it is returned."""
    path = check_model_path(path)
    if path.suffix.lower() in ONNX_SUFFIXES:
        backend = OrtBackend(path, device, providers, threads, streams)
    else:
        backend = TorchScriptBackend(path, device)
    check_graph(backend, path)
    return backend
