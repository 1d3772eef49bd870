"""TensorRT: engine builder and runtime. The ONLY module that imports tensorrt.

Build (``afrd-export trt``): the bundle's ONNX (or its fp16 / int8-QDQ variant) is parsed into a
strongly typed network, so the precision is whatever the ONNX graph says: no builder precision
flags, which keeps one code path for TensorRT 10.x (JetPack 6) and 11.x (where strong typing is
always on and the flag is ignored). One optimization profile covers batch 1..max_batch; a timing
cache next to the bundle makes rebuilds fast. The engine is written as
``model.<gpu-slug>.engine`` with a sidecar ``model.<gpu-slug>.engine.json`` recording the
TensorRT version, the GPU and its compute capability; both are hashed into bundle.json.

Run: deserialize, check the sidecar against the running TensorRT and GPU (a mismatch is a
BundleError, not a crash deep in TensorRT), bind device buffers with ``set_tensor_address`` and
run ``execute_async_v3`` on a CUDA stream. CUDA memory goes through cuda-python, not torch.
Written against the documented TensorRT 10/11 Python API; TensorRT cannot be installed on the
development machines, so this module is exercised only where TensorRT exists.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from afrd.errors import BundleError, DeviceError
from afrd.runtime.bundle import Bundle, gpu_slug, utc_now
from afrd.runtime.engines.base import Engine

try:  # pragma: no cover - only where TensorRT is installed
    import tensorrt as trt
except ImportError:  # pragma: no cover
    trt = None

NOT_INSTALLED = "TensorRT not installed"


def _require_trt() -> Any:
    if trt is None:
        raise DeviceError(
            f"{NOT_INSTALLED}: `pip install tensorrt cuda-python` (or use JetPack) on the GPU machine"
        )
    return trt


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:  # pragma: no cover
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise DeviceError("cuda-python not installed: `pip install cuda-python`") from exc
    return cudart


def _check(result: Any, what: str) -> Any:
    """cuda-python returns (err, *values); raise DeviceError on a non-zero error code."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise DeviceError(f"CUDA {what} failed: {err}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)


def gpu_info(device: int = 0) -> dict[str, Any]:
    cudart = _cudart()
    props = _check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    name = name.rstrip("\x00").strip()
    return {
        "name": name,
        "compute_capability": f"{props.major}.{props.minor}",
        "slug": gpu_slug(name),
    }


def engine_file_name(gpu_name: str) -> str:
    return f"model.{gpu_slug(gpu_name)}.engine"


class _Logger:
    """A TensorRT logger at WARNING level (created lazily, after the import check)."""

    _logger = None

    @classmethod
    def get(cls) -> Any:
        if cls._logger is None:
            cls._logger = _require_trt().Logger(_require_trt().Logger.WARNING)
        return cls._logger


# ---- builder ----------------------------------------------------------------------------------
def build_engine(
    bundle: Bundle,
    onnx_file: str = "model.onnx",
    precision: str = "fp32",
    max_batch: int = 8,
    opt_batch: int = 1,
    workspace_mb: int = 4096,
    device: int = 0,
) -> Path:
    """Build ``model.<gpu>.engine`` from ``onnx_file`` (a bundle file) and record it in the bundle."""
    t = _require_trt()
    logger = _Logger.get()
    info = gpu_info(device)
    builder = t.Builder(logger)
    flags = 0
    if hasattr(t.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(t.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = t.OnnxParser(network, logger)
    onnx_path = bundle.file(onnx_file)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BundleError(f"TensorRT could not parse {onnx_path}: " + "; ".join(errors))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(t.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    n, (h, w) = len(bundle.lights), bundle.input_size
    profile = builder.create_optimization_profile()
    inp = network.get_input(0)
    profile.set_shape(
        inp.name,
        (1, n, h, w, 3),
        (max(1, min(opt_batch, max_batch)), n, h, w, 3),
        (max_batch, n, h, w, 3),
    )
    config.add_optimization_profile(profile)

    cache_path = bundle.path / f"timing.{info['slug']}.cache"
    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, False)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BundleError(f"TensorRT build of {onnx_path} failed (see the TensorRT log above)")
    build_s = time.perf_counter() - t0
    cache_path.write_bytes(memoryview(config.get_timing_cache().serialize()))

    name = engine_file_name(info["name"])
    (bundle.path / name).write_bytes(memoryview(serialized))
    sidecar = {
        "tensorrt_version": t.__version__,
        "gpu": info["name"],
        "compute_capability": info["compute_capability"],
        "precision": precision,
        "onnx_file": onnx_file,
        "onnx_sha256": bundle.meta["files"][onnx_file]["sha256"],
        "batch_profile": {"min": 1, "opt": opt_batch, "max": max_batch},
        "workspace_mb": workspace_mb,
        "build_s": round(build_s, 1),
        "built": utc_now(),
    }
    (bundle.path / f"{name}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    bundle.add_file(f"{name}.json", role="tensorrt-sidecar")
    bundle.add_file(name, role="tensorrt-engine", precision=precision)
    return bundle.path / name


# ---- runtime ----------------------------------------------------------------------------------
class TensorRTEngine(Engine):
    """Options: ``device`` (CUDA ordinal, default 0), ``engine_file`` (default: the one built for
    this GPU, model.<gpu-slug>.engine)."""

    kind = "tensorrt"

    def __init__(
        self, bundle: Bundle, device: int = 0, engine_file: str | None = None, **opts: Any
    ) -> None:
        super().__init__(bundle, **opts)
        t = _require_trt()
        self._cudart = cudart = _cudart()
        _check(cudart.cudaSetDevice(device), "cudaSetDevice")
        info = gpu_info(device)
        engine_file = engine_file or engine_file_name(info["name"])
        if engine_file not in bundle.meta["files"]:
            built = [f for f in bundle.meta["files"] if f.endswith(".engine")]
            raise BundleError(
                f"bundle {bundle.path}: no TensorRT engine for this GPU ({info['name']}): "
                f"expected {engine_file}, bundle has {built or 'none'}; run `afrd-export trt "
                f"{bundle.path}` on this machine"
            )
        sidecar = json.loads(bundle.file(f"{engine_file}.json").read_text())
        found = {
            "tensorrt_version": t.__version__,
            "gpu": info["name"],
            "compute_capability": info["compute_capability"],
        }
        for key, value in found.items():
            if sidecar.get(key) != value:
                raise BundleError(
                    f"bundle {bundle.path}: {engine_file} was built for {key}="
                    f"{sidecar.get(key)!r}, this machine has {value!r}; rebuild with "
                    f"`afrd-export trt {bundle.path}`"
                )
        self.sidecar = sidecar
        self.engine_file = engine_file
        self.max_batch = int(sidecar["batch_profile"]["max"])
        runtime = t.Runtime(_Logger.get())
        self._engine = runtime.deserialize_cuda_engine(bundle.file(engine_file).read_bytes())
        if self._engine is None:
            raise BundleError(f"bundle {bundle.path}: TensorRT could not deserialize {engine_file}")
        self._context = self._engine.create_execution_context()
        self._stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._inputs = [n for n in names if self._engine.get_tensor_mode(n) == t.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in self._inputs]
        if len(self._inputs) != 1 or len(self._outputs) != 2:
            raise BundleError(
                f"bundle {bundle.path}: {engine_file} has inputs {self._inputs} and outputs "
                f"{self._outputs}; expected 1 input and 2 outputs (anomaly_map, score)"
            )
        self._dtypes = {n: np.dtype(t.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        # device buffers sized for max_batch, allocated once
        n_l, (h, w) = self.n_lights, self.input_size
        self._buffers: dict[str, int] = {}
        for n in names:
            if n == self._inputs[0]:
                shape: tuple[int, ...] = (self.max_batch, n_l, h, w, 3)
            elif len(self._engine.get_tensor_shape(n)) == 3:
                shape = (self.max_batch, h, w)
            else:
                shape = (self.max_batch,)
            nbytes = int(np.prod(shape)) * self._dtypes[n].itemsize
            self._buffers[n] = _check(cudart.cudaMalloc(nbytes), "cudaMalloc")
            self._context.set_tensor_address(n, int(self._buffers[n]))

    @property
    def name(self) -> str:
        return f"tensorrt[{self.sidecar.get('precision')},{self.sidecar.get('gpu')}]"

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if batch.shape[0] > self.max_batch:  # split into profile-sized chunks
            parts = [
                self._run(batch[i : i + self.max_batch])
                for i in range(0, batch.shape[0], self.max_batch)
            ]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        cudart, ctx, stream = self._cudart, self._context, self._stream
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        name_in = self._inputs[0]
        ctx.set_input_shape(name_in, tuple(batch.shape))
        x = np.ascontiguousarray(batch, dtype=self._dtypes[name_in])
        _check(
            cudart.cudaMemcpyAsync(self._buffers[name_in], x.ctypes.data, x.nbytes, h2d, stream),
            "cudaMemcpyAsync H2D",
        )
        if not ctx.execute_async_v3(stream):
            raise DeviceError(f"TensorRT execute_async_v3 failed on {self.engine_file}")
        outs = {}
        for n in self._outputs:
            out = np.empty(tuple(ctx.get_tensor_shape(n)), dtype=self._dtypes[n])
            _check(
                cudart.cudaMemcpyAsync(out.ctypes.data, self._buffers[n], out.nbytes, d2h, stream),
                "cudaMemcpyAsync D2H",
            )
            outs[n] = out
        _check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        by_rank = sorted(outs.values(), key=lambda a: -a.ndim)  # map [B,H,W] first, score [B]
        return by_rank[0].astype(np.float32), by_rank[1].astype(np.float32)

    def close(self) -> None:
        cudart = getattr(self, "_cudart", None)
        for ptr in getattr(self, "_buffers", {}).values():
            cudart.cudaFree(ptr)
        self._buffers = {}
        if getattr(self, "_stream", None) is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self._context = None
        self._engine = None
