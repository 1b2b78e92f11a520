"""Pure-Python reference models: the same semantics as the C core, written plainly.

Never used for speed.  Tests compare the C core with these on random inputs.  Nothing
here imports the compiled extension.
"""

from emu.ref.physmem import PhysMem
from emu.ref.walk import walk

__all__ = ["PhysMem", "walk"]
