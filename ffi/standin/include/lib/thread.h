/* Stand-in for Motr's lib/thread.h: a thread descriptor the caller allocates for adoption. */
#ifndef __MOTR_LIB_THREAD_H__
#define __MOTR_LIB_THREAD_H__
#include "lib/types.h"

struct m0_thread {
	uint64_t t_opaque[16];
};
#endif
