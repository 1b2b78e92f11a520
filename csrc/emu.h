/* C-side umbrella header: the system headers the contract needs, then the contract. */
#ifndef EMU_H
#define EMU_H
#include <stddef.h>
#include <stdint.h>

#include "emu_api.h"

#ifndef EMU_SRC_HASH
#define EMU_SRC_HASH "unknown"
#endif

#if defined(EMU_DEBUG) && EMU_DEBUG
#include <assert.h>
#define EMU_DEBUG_ASSERT(x) assert(x)
#else
#define EMU_DEBUG_ASSERT(x) ((void)0)
#endif

#endif
