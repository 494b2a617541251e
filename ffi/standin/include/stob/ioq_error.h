/* Stand-in for Motr's stob/ioq_error.h: a storage I/O error report. */
#ifndef __MOTR_STOB_IOQ_ERROR_H__
#define __MOTR_STOB_IOQ_ERROR_H__
#include "fid/fid.h"

/* In Motr: stob/stob.h. */
struct m0_stob_id {
	struct m0_fid si_domain_fid;
	struct m0_fid si_fid;
};

struct m0_stob_ioq_error {
	struct m0_fid sie_conf_sdev;
	struct m0_stob_id sie_stob_id;
	int64_t sie_fd;
	int64_t sie_opcode; /* enum m0_stob_io_opcode */
	int64_t sie_rc;
	m0_bindex_t sie_offset;
	m0_bcount_t sie_size;
	uint32_t sie_bshift;
};
#endif
