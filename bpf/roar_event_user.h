/* roar_event.h for roar's user-space C (roar/record/_cmodel.c, roar/capture/_relay.c):
 * the kernel's fixed-width type names the header uses, then the header itself,
 * so both extensions read the one record layout the probes write. */
#ifndef ROAR_EVENT_USER_H
#define ROAR_EVENT_USER_H

#include <stdint.h>

typedef uint16_t u16;
typedef int16_t s16;
typedef uint32_t u32;
typedef int32_t s32;
typedef uint64_t u64;
typedef int64_t s64;
#undef CLOSE_RANGE_CLOEXEC /* linux/close_range.h's, via unistd.h: the header defines it too */
#include "roar_event.h"

_Static_assert(sizeof(struct roar_event) == 72, "struct roar_event has padding");

#endif
