"""The CPA self-test (arch/x86/mm/pat/cpa-test.c, ``CONFIG_CPA_DEBUG``, Linux 7.0).

A port of ``pageattr_test()`` (reference/linux-mm.md section 4): ``NTEST`` random,
non-overlapping ranges of up to ``NPAGES`` pages over the direct map get the software
bit ``_PAGE_CPA_TEST`` set, in one of three address modes chosen by ``i % 3`` (range,
``CPA_ARRAY``, ``CPA_PAGES_ARRAY``); each must then be mapped by a 4K PTE carrying the
bit; the split summary is printed before, after, and after reverting (in range mode);
the structural invariant of ``print_split()`` must hold each time.  The messages are
Linux's.  The kernel thread's 30 s sleep and its repetition are not modelled: one pass
runs, and it prints (as the first pass does).

After the pass the :class:`~kernel_model.validate.Validator` checks the whole machine
(TLB coherence included), and two checks the kernel does not make are added: the
DirectMap counters move exactly as the splits did, and there was at least one global
flush per split (2.7 step 9).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from kernel_model import pgtable as pt
from kernel_model.pgtable import PG_LEVEL_1G, PG_LEVEL_2M, PG_LEVEL_4K, PTRS_PER_TABLE
from kernel_model.validate import Validator, Violation

if TYPE_CHECKING:
    from kernel_model.machine import Machine

NTEST = 300
NPAGES = 100
LPS_PAGES = 1 << (21 - 12)  # LPS / PAGE_SIZE
GPS_PAGES = 1 << (30 - 12)  # GPS / PAGE_SIZE
PAGE_CPA_TEST = pt._PAGE_CPA_TEST


@dataclass
class SplitState:
    """struct split_state: what print_split() counted.

    Attributes:
        spg: 4K entries (none PTEs included, as lookup_address returns them).
        lpg: 2M entries.
        gpg: 1G entries.
        exec: entries without NX.
        min_exec / max_exec: lowest and highest address of such an entry.
        missed: pages with no entry at all.
    """

    spg: int = 0
    lpg: int = 0
    gpg: int = 0
    exec: int = 0
    min_exec: int = (1 << 64) - 1
    max_exec: int = 0
    missed: int = 0

    def line(self) -> str:
        """print_split()'s summary line."""
        lo = self.min_exec if self.min_exec != (1 << 64) - 1 else 0
        return (
            f" 4k {self.spg} large {self.lpg} gb {self.gpg} x {self.exec}"
            f"[{lo:x}-{self.max_exec:x}] miss {self.missed}"
        )


@dataclass
class CpaTestResult:
    """What one pass printed and found.

    Attributes:
        lines: the printed lines, in Linux's words.
        passed: no failure in the kernel's checks, the model's extra checks or the
            validator.
        failed: the kernel's failure count.
        tests: tests applied (ranges not dropped), per mode (range, array, pages).
        states: print_split() before, after setting, after reverting.
        violations: what the validator found afterwards.
        extra: failures of the model's own extra checks.
    """

    lines: list[str] = field(default_factory=list)
    passed: bool = False
    failed: int = 0
    tests: tuple[int, int, int] = (0, 0, 0)
    states: list[SplitState] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The printed lines, newline-terminated."""
        return "".join(f"{line}\n" for line in self.lines)


def print_split(m: Machine, out: list[str]) -> tuple[SplitState, int]:
    """print_split(): walk the direct map by PFN up to max_pfn_mapped.

    Runs of none entries and whole PTE tables are counted at once; the counts equal
    those of Linux's page-by-page loop.

    Args:
        m: the machine.
        out: receives the printed lines.

    Returns:
        The counts and the error count (0 or 1).
    """
    s = SplitState()
    err = 0
    max_pfn = m.direct.max_pfn_mapped
    i = 0
    t = m.pt
    while i < max_pfn:
        addr = m.va(i << 12)
        look = t.lookup_address(addr)
        if look.entry is None:
            span = pt.page_level_size(look.level) >> 12
            n = min((i // span + 1) * span, max_pfn) - i
            s.missed += n
            i += n
            continue
        e = look.entry
        if look.level == PG_LEVEL_1G:
            s.gpg += 1
            i += GPS_PAGES
        elif look.level == PG_LEVEL_2M:
            if e & pt._PAGE_PRESENT and not e & pt._PAGE_PSE:
                out.append(f"{addr:x} level {look.level} but not PSE {e:x}")
                err = 1
            s.lpg += 1
            i += LPS_PAGES
        else:
            # every PTE of this table up to max_pfn_mapped, as the loop would visit
            epa = look.entry_pa if look.entry_pa is not None else 0
            table = epa & ~0xFFF
            first = (epa & 0xFFF) // 8
            n = min(PTRS_PER_TABLE - first, max_pfn - i)
            ents = t.read_table(table)[first : first + n]
            s.spg += n
            x = np.flatnonzero((ents & np.uint64(pt._PAGE_NX)) == 0)
            if x.size:
                s.exec += int(x.size)
                s.min_exec = min(s.min_exec, addr + int(x[0]) * 4096)
                s.max_exec = max(s.max_exec, addr + int(x[-1]) * 4096)
            i += n
            continue
        if not e & pt._PAGE_NX:
            s.exec += 1
            s.min_exec = min(s.min_exec, addr)
            s.max_exec = max(s.max_exec, addr)
    out.append(s.line())
    expected = s.gpg * GPS_PAGES + s.lpg * LPS_PAGES + s.spg + s.missed
    if expected != i:
        out.append(f"CPA max_pfn_mapped {max_pfn} but expected {expected}")
        return s, 1
    return s, err


def run(
    target: Machine | Validator,
    seed: int = 0,
    *,
    ntest: int = NTEST,
    npages: int = NPAGES,
    validate: bool = True,
) -> CpaTestResult:
    """pageattr_test(): one pass of the CPA self-test.

    Args:
        target: a machine right after boot, or a :class:`Validator` wrapping one (its
            flat model then follows the test's calls; a bare machine gets a new
            validator).
        seed: seed of the random ranges (Linux uses get_random_u32_below()).
        ntest: NTEST.
        npages: NPAGES.
        validate: run the validator afterwards.

    Returns:
        The result; ``lines`` ends with ``"ok."`` or ``"NOT PASSED. Please report."``.
    """
    v = target if isinstance(target, Validator) else Validator(target)
    m = v.m
    rng = np.random.default_rng(seed)
    res = CpaTestResult()
    out = res.lines
    failed = 0
    max_pfn = m.direct.max_pfn_mapped
    out.append("CPA self-test:")
    counts0 = list(m.direct.direct_pages_count)
    splits0 = sum(m.cpa.stats.splits.values())
    flushes0 = m.cpa.stats.split_flushes
    bm_area = v.vmalloc((max_pfn + 7) // 8)  # vzalloc() of the bitmap
    bm = np.zeros(max_pfn, dtype=np.bool_)
    sa, err = print_split(m, out)
    failed += err
    addr = [0] * ntest
    length = [0] * ntest
    modes = [0, 0, 0]
    for i in range(ntest):
        pfn = int(rng.integers(0, max_pfn))
        addr[i] = m.va(pfn << 12)
        length[i] = int(rng.integers(0, npages))
        length[i] = min(length[i], max_pfn - pfn - 1)
        if length[i] == 0:
            length[i] = 1
        addrs: list[int] = []
        pages: list[int] = []
        pte0 = 0
        found = False
        k = 0
        while k < length[i]:
            look = m.pt.lookup_address(addr[i] + k * 4096)
            e = look.entry
            found = e is not None
            if e is None or pt.pte_flags(e) == 0 or not e & pt._PAGE_PRESENT:
                addr[i] = 0
                break
            if k == 0:
                pte0 = e
            elif pt.pte_flags(e) != pt.pte_flags(pte0):
                length[i] = k
                break
            if bm[pfn + k]:
                length[i] = k
                break
            bm[pfn + k] = True
            addrs.append(addr[i] + k * 4096)
            pages.append(pfn + k)
            k += 1
        if not addr[i] or not found or not k:
            addr[i] = 0
            continue
        mode = i % 3
        modes[mode] += 1
        if mode == 0:
            rc = v.change_page_attr_set(addr[i], length[i], PAGE_CPA_TEST)
        elif mode == 1:
            rc = v.change_page_attr_set(addrs, length[i], PAGE_CPA_TEST, array=True)
        else:
            rc = v.change_page_attr_set_pages(pages[: length[i]], PAGE_CPA_TEST)
        if rc < 0:
            out.append(f"CPA {i} failed {rc}")
            failed += 1
        look = m.pt.lookup_address(addr[i])
        e = look.entry
        if e is None or not e & PAGE_CPA_TEST or e & pt._PAGE_PSE:
            out.append(f"CPA {addr[i]:x}: bad pte {e or 0:x}")
            failed += 1
        if look.level != PG_LEVEL_4K:
            out.append(f"CPA {addr[i]:x}: unexpected level {look.level}")
            failed += 1
    v.vfree(bm_area.addr)
    sb, err = print_split(m, out)
    failed += err
    for i in range(ntest):
        if not addr[i]:
            continue
        if m.pt.lookup_address(addr[i]).entry is None:
            out.append(f"CPA lookup of {addr[i]:x} failed")
            failed += 1
            continue
        rc = v.change_page_attr_clear(addr[i], length[i], PAGE_CPA_TEST)
        if rc < 0:
            out.append(f"CPA reverting failed: {rc}")
            failed += 1
        e = m.pt.lookup_address(addr[i]).entry
        if e is None or e & PAGE_CPA_TEST:
            out.append(f"CPA {addr[i]:x}: bad pte after revert {e or 0:x}")
            failed += 1
    sc, err = print_split(m, out)
    failed += err
    res.states = [sa, sb, sc]
    res.tests = (modes[0], modes[1], modes[2])
    res.failed = failed
    if failed:
        out.append("NOT PASSED. Please report.")
    else:
        out.append("ok.")

    # the model's extra checks (linux-mm.md 4, "Extra checks to add")
    splits = sum(m.cpa.stats.splits.values()) - splits0
    flushes = m.cpa.stats.split_flushes - flushes0
    if flushes < splits:
        res.extra.append(f"{splits} splits but only {flushes} split flushes")
    if sb.spg < sa.spg or (
        sb.lpg * LPS_PAGES + sb.gpg * GPS_PAGES
        > sa.lpg * LPS_PAGES + sa.gpg * GPS_PAGES
    ):
        res.extra.append("the split summary did not move towards 4K")
    if (sc.spg, sc.lpg, sc.gpg) != (sb.spg, sb.lpg, sb.gpg):
        res.extra.append("reverting changed the page sizes (only rox collapses)")
    moved = [
        m.direct.direct_pages_count[lv] - counts0[lv]
        for lv in (PG_LEVEL_4K, PG_LEVEL_2M, PG_LEVEL_1G)
    ]
    if sum(moved[j] << (9 * j) for j in range(3)) != 0:
        res.extra.append(
            f"DirectMap counters moved by {moved} (4K, 2M, 1G pages): not a pure split"
        )
    if validate:
        res.violations = v.check(tlb=True)
    res.passed = not failed and not res.extra and not res.violations
    return res
