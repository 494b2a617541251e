/* Stand-in for Motr's lib/types.h: the few basic types the HA interface uses. */
#ifndef __MOTR_LIB_TYPES_H__
#define __MOTR_LIB_TYPES_H__
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Motr marks its library-internal functions M0_INTERNAL (hidden visibility in its own build);
 * users of libmotr build with -DM0_INTERNAL= to call the few they need. Empty here.
 */
#ifndef M0_INTERNAL
#define M0_INTERNAL
#endif

struct m0_uint128 {
	uint64_t u_hi;
	uint64_t u_lo;
};

typedef uint64_t m0_bcount_t;
typedef uint64_t m0_bindex_t;
typedef uint64_t m0_time_t;
#endif
