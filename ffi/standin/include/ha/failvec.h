/* Stand-in for Motr's ha/failvec.h: the failure vector request and reply payloads. */
#ifndef __MOTR_HA_FAILVEC_H__
#define __MOTR_HA_FAILVEC_H__
#include "fid/fid.h"
#include "ha/note.h"
#include "lib/cookie.h"

struct m0_ha_msg_failure_vec_req {
	struct m0_fid mfq_pool;
	struct m0_cookie mfq_cookie;
};

struct m0_ha_msg_failure_vec_rep {
	struct m0_fid mfp_pool;
	struct m0_cookie mfp_cookie;
	uint32_t mfp_nr;
	struct m0_ha_msg_nvec_array mfp_vec;
};
#endif
