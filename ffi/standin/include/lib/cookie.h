/* Stand-in for Motr's lib/cookie.h. */
#ifndef __MOTR_LIB_COOKIE_H__
#define __MOTR_LIB_COOKIE_H__
#include "lib/types.h"

struct m0_cookie {
	uint64_t co_addr;
	uint64_t co_generation;
};
#endif
