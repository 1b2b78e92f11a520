/* Build identity and error texts. */
#include "emu.h"

const char *emu_src_hash(void)
{
    return EMU_SRC_HASH;
}

const char *emu_strerror(int code)
{
    switch (code) {
    case EMU_OK:
        return "success";
    case EMU_E_INVAL:
        return "invalid argument";
    case EMU_E_NOMEM:
        return "out of host memory";
    case EMU_E_RANGE:
        return "physical address beyond 2^52";
    case EMU_E_ALIGN:
        return "misaligned address";
    case EMU_E_SHORT:
        return "output array too small";
    default:
        return "unknown error";
    }
}
