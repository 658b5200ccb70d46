"""What jettag's compiled kernels share: the on-disk cache of the numba kernels' machine code,
torch's thread count, and the C++ kernels built at first use (``cpp_library``)."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import torch

from jettag.files import atomic_path, cache_root

_UNCACHED_WARNED = False
#: set to 0 to use torch's own operators where a C++ kernel would run
CPP_KERNELS_ENV = "JETTAG_CPP_KERNELS"


def njit(**options: Any) -> Callable[[Callable], Callable]:
    """``numba.njit(cache=True, **options)``, or without the cache where numba has nowhere to write
    it (neither ``__pycache__`` beside jettag's sources nor the user's cache directory is writable,
    e.g. a read-only install run without a home directory): the kernels are then compiled again in
    every process, after one warning, instead of jettag failing at import."""

    def decorate(fn: Callable) -> Callable:
        global _UNCACHED_WARNED
        try:
            return numba.njit(cache=True, **options)(fn)
        except RuntimeError as err:
            if "no locator available" not in str(err):
                raise
        if not _UNCACHED_WARNED:
            _UNCACHED_WARNED = True
            warnings.warn("numba finds no writable cache directory, so jettag's kernels are compiled in "
                          "every process; set NUMBA_CACHE_DIR to a writable directory to keep them",
                          RuntimeWarning, stacklevel=2)
        return numba.njit(**options)(fn)

    return decorate


def numba_threads() -> int:
    """Set numba's thread count to torch's intra-op count (at most numba's pool) and return it, so a
    numba kernel run between torch operations uses the same cores and no more."""
    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


def kernel_cache_dir() -> Path:
    """Where built C++ kernels are kept: ``kernels`` in jettag's cache (``$JETTAG_CACHE``, by default
    ``~/.cache/jettag``)."""
    return cache_root() / "kernels"


def _cpu_id() -> str:
    """The CPU model and its flags (the kernels are built with -march=native), so that a cache shared
    between machines (a home directory on a cluster) never hands one CPU another's machine code."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    keep = [line for line in lines if line.split(":")[0].strip() in ("model name", "flags", "Features")]
    return "\n".join(dict.fromkeys(keep))


@functools.cache
def cpp_library(source: Path) -> ctypes.CDLL | None:
    """The C++ file ``source`` compiled (g++ -O3 -march=native) against torch's headers and OpenMP
    runtime, so that its ``at::parallel_for`` runs on torch's own threads, and loaded with ctypes.

    The shared library is cached under ``kernel_cache_dir()`` by a hash of the source, compiler, torch
    version and CPU; the first use compiles it (about a second) and later processes load it. Returns
    None, after one warning, where it cannot be built (no g++, torch not on OpenMP, a compile error):
    callers then use torch's operators. ``JETTAG_CPP_KERNELS=0`` returns None without a warning."""
    if os.environ.get(CPP_KERNELS_ENV, "1") == "0":
        return None
    reason = _unbuildable()
    if reason is None:
        try:
            return ctypes.CDLL(str(_build(source)))
        except (OSError, subprocess.SubprocessError) as err:
            reason = f"it could not be built or loaded: {str(err).strip()[-2000:]}"
    warnings.warn(f"jettag's C++ kernel {source.name} is not used ({reason}); torch's operators run instead "
                  f"(set {CPP_KERNELS_ENV}=0 to silence this)", RuntimeWarning, stacklevel=3)
    return None


def _unbuildable() -> str | None:
    if platform.system() != "Linux":
        return f"it is built on Linux only, not {platform.system()}"
    if shutil.which("g++") is None:
        return "no g++ on PATH"
    if "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return "torch's CPU threads are not OpenMP's"
    return None


def _build(source: Path) -> Path:
    torch_dir = Path(torch.__file__).parent
    flags = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-std=c++17", "-shared", "-fPIC",
             f"-I{torch_dir / 'include'}", f"-L{torch_dir / 'lib'}", "-ltorch_cpu", "-lc10",
             f"-Wl,-rpath,{torch_dir / 'lib'}"]
    compiler = subprocess.run(["g++", "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256("\0".join([source.read_text(), compiler, torch.__version__, str(torch_dir),
                                     " ".join(flags), _cpu_id()]).encode()).hexdigest()[:20]
    target = kernel_cache_dir() / f"{source.stem}-{key}.so"
    if target.is_file():
        _check_owner(target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # built under a name of this process's own and renamed, so that processes building at once never
    # load half a file
    with atomic_path(target, target.with_name(f"{target.name}.{os.getpid()}.tmp")) as built:
        proc = subprocess.run(["g++", str(source), "-o", str(built), *flags], capture_output=True, text=True)
        if proc.returncode != 0:
            raise subprocess.SubprocessError(proc.stderr)
        built.chmod(0o755)  # whatever the umask: _check_owner refuses files others can write
    return target


def _check_owner(path: Path) -> None:
    """Loading a shared library runs its code: only one that this user owns and nobody else can write
    (a cache folder shared with others could otherwise hand us anyone's code)."""
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise OSError(f"{path} is not owned by this user or is writable by others; remove it")
