/* Stand-in for Motr's be/ha.h: the payload of M0_HA_MSG_BE_IO_ERR. */
#ifndef __MOTR_BE_HA_H__
#define __MOTR_BE_HA_H__
#include "lib/types.h"

enum m0_be_location {
	M0_BE_LOC_NONE,
	M0_BE_LOC_LOG,
	M0_BE_LOC_SEGMENT_1,
	M0_BE_LOC_SEGMENT_2
};

struct m0_be_io_err {
	uint32_t ber_errcode;
	uint8_t ber_location;  /* enum m0_be_location */
	uint8_t ber_io_opcode; /* enum m0_stob_io_opcode */
};
#endif
