"""cffi build script: compiles csrc/ into emu._core (API mode, never dlopen)."""

import hashlib
import os
import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent


def source_files():
    return sorted(p for p in HERE.iterdir() if p.suffix in (".c", ".h"))


def src_hash():
    """Hash of every C source and header; _ffi.py recomputes it to spot stale builds."""
    h = hashlib.sha256()
    for p in source_files():
        h.update(p.name.encode())
        h.update(b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def compile_args():
    args = ["-std=c11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"]
    if os.environ.get("EMU_DEBUG") == "1":
        args += ["-O0", "-g", "-DEMU_DEBUG=1"]
    else:
        args += ["-O2"]
    link = []
    if os.environ.get("EMU_SANITIZE") == "1":
        args += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
        link += ["-fsanitize=address,undefined"]
    return args, link


ffibuilder = FFI()
ffibuilder.cdef((HERE / "emu_api.h").read_text())
_cflags, _ldflags = compile_args()
ffibuilder.set_source(
    "emu._core",
    '#include "emu.h"',
    sources=[str(p.relative_to(HERE.parent)) for p in source_files() if p.suffix == ".c"],
    depends=[str(p.relative_to(HERE.parent)) for p in source_files()],
    include_dirs=[str(HERE)],
    define_macros=[("EMU_SRC_HASH", '"%s"' % src_hash())],
    extra_compile_args=_cflags,
    extra_link_args=_ldflags,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
