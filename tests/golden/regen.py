"""Compare (and, with --write, overwrite) the golden files with the model's output.

Run on purpose only, from the repository root::

    python tests/golden/regen.py            # show a diff per file; writes nothing
    python tests/golden/regen.py --write    # overwrite the files that differ

The golden files were derived by hand from reference/linux-mm.md (see README.md); the
model is what they check.  Overwrite one only after the new text has been re-derived
by hand and agrees with the reference (STYLE.md 2.6, ChampSim#592), and say so in the
commit.  pytest never collects this script.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
DATA = TESTS / "data" / "machine"


def _producers() -> dict[str, Callable[[], str]]:
    sys.path.insert(0, str(TESTS / "unit"))
    from test_ptdump_format import MARKERS_4, MARKERS_5, build_handbuilt

    from kernel_model import Machine

    def boot(**kw: object) -> Machine:
        return Machine(rodata=False, **kw)

    def summary_head() -> str:
        text = Machine(ram="64G").boot_summary()
        return "".join(
            ln
            for ln in text.splitlines(keepends=True)
            if not ln.startswith("page tables:")
        )

    return {
        "meminfo_captured_boot.txt": lambda: boot(dmesg=DATA / "dmesg").meminfo(),
        "vmstat_boot.txt": lambda: boot(dmesg=DATA / "dmesg").vmstat(),
        "boot_summary_64g_head.txt": summary_head,
        "ptdump_8g_low_kernel_mapping.txt": lambda: boot(ram="8G").ptdump(
            "Low Kernel Mapping"
        ),
        "ptdump_captured_low_kernel_mapping.txt": lambda: boot(
            dmesg=DATA / "dmesg"
        ).ptdump("Low Kernel Mapping"),
        "ptdump_handbuilt_4level.txt": lambda: build_handbuilt(False).dump(MARKERS_4),
        "ptdump_handbuilt_la57.txt": lambda: build_handbuilt(True).dump(MARKERS_5),
    }


def main(argv: list[str] | None = None) -> int:
    """Diff every golden file against the model; overwrite with --write."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="overwrite differing files")
    args = p.parse_args(argv)
    differing = 0
    for name, produce in _producers().items():
        path = HERE / name
        want = path.read_text() if path.exists() else ""
        got = produce()
        if got == want:
            print(f"same      {name}")
            continue
        differing += 1
        print(f"DIFFERENT {name}")
        sys.stdout.writelines(
            difflib.unified_diff(
                want.splitlines(keepends=True),
                got.splitlines(keepends=True),
                f"golden/{name}",
                "model",
            )
        )
        if args.write:
            path.write_text(got)
            print(f"  wrote {path}")
    return 1 if differing and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
