/* Stand-in for Motr's fid/fid.h. The type of an object is the top byte of f_container. */
#ifndef __MOTR_FID_FID_H__
#define __MOTR_FID_FID_H__
#include "lib/types.h"

struct m0_fid {
	uint64_t f_container;
	uint64_t f_key;
};
#endif
