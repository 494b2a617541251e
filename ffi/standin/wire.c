/*
 * wire.c: the stand-in's TCP frame codec (see PROTOCOL.md and wire.h).
 * Pure functions over byte buffers; all integers little-endian.
 */
#include "wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ buffers */

void wire_buf_fini(struct wire_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

int wire_buf_append(struct wire_buf *b, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	if (b->cap - b->len < n) {
		size_t cap = b->cap == 0 ? 256 : b->cap;
		uint8_t *d;

		while (cap - b->len < n) {
			if (cap > SIZE_MAX / 2)
				return -ENOMEM;
			cap *= 2;
		}
		d = realloc(b->data, cap);
		if (d == NULL)
			return -ENOMEM;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

/* Writer: appends to a buffer, remembers the first error. */
struct wr {
	struct wire_buf *b;
	size_t start;
	int rc;
};

static void put(struct wr *w, const void *p, size_t n)
{
	if (w->rc == 0)
		w->rc = wire_buf_append(w->b, p, n);
}

static void put_u8(struct wr *w, uint8_t v)
{
	put(w, &v, 1);
}

static void put_u16(struct wr *w, uint16_t v)
{
	uint8_t x[2] = { (uint8_t)v, (uint8_t)(v >> 8) };

	put(w, x, 2);
}

static void put_u32(struct wr *w, uint32_t v)
{
	uint8_t x[4];

	for (int i = 0; i < 4; i++)
		x[i] = (uint8_t)(v >> (8 * i));
	put(w, x, 4);
}

static void put_u64(struct wr *w, uint64_t v)
{
	uint8_t x[8];

	for (int i = 0; i < 8; i++)
		x[i] = (uint8_t)(v >> (8 * i));
	put(w, x, 8);
}

static void put_fid(struct wr *w, const struct m0_fid *f)
{
	static const struct m0_fid zero;

	if (f == NULL)
		f = &zero;
	put_u64(w, f->f_container);
	put_u64(w, f->f_key);
}

static void put_str(struct wr *w, const char *s)
{
	size_t n = s == NULL ? 0 : strlen(s);

	if (n > WIRE_MAX_STR) {
		if (w->rc == 0)
			w->rc = -EINVAL;
		return;
	}
	put_u16(w, (uint16_t)n);
	put(w, s, n);
}

static void put_note(struct wr *w, const struct m0_ha_note *n)
{
	put_fid(w, &n->no_id);
	put_u32(w, n->no_state);
}

static void frame_begin(struct wr *w, struct wire_buf *b, uint8_t kind)
{
	w->b = b;
	w->start = b->len;
	w->rc = 0;
	put_u32(w, 0);
	put_u8(w, kind);
}

static void le32_store(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void le64_store(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static int frame_end(struct wr *w)
{
	size_t len;

	if (w->rc == 0) {
		len = w->b->len - w->start - WIRE_HDR;
		if (len > WIRE_MAX_FRAME)
			w->rc = -EMSGSIZE;
		else
			le32_store(w->b->data + w->start, (uint32_t)len);
	}
	if (w->rc != 0)
		w->b->len = w->start; /* leave the buffer as it was */
	return w->rc;
}

/* ------------------------------------------------------------------ messages */

static int notes_check(uint64_t nr, const char **why)
{
	if (nr > WIRE_MAX_NR) {
		*why = "more than 1024 notes";
		return -EINVAL;
	}
	return 0;
}

int wire_msg_check(const struct m0_ha_msg *msg, const char **why)
{
	const struct m0_ha_msg_data *d = &msg->hm_data;

	switch (d->hed_type) {
	case M0_HA_MSG_STOB_IOQ:
		/* Motr's fields are 64-bit; the wire carries u32 opcode and i32 rc */
		if (d->u.hed_stob_ioq.sie_opcode < 0 || d->u.hed_stob_ioq.sie_opcode > UINT32_MAX) {
			*why = "stob ioq opcode does not fit in 32 bits";
			return -EINVAL;
		}
		if (d->u.hed_stob_ioq.sie_rc < INT32_MIN || d->u.hed_stob_ioq.sie_rc > INT32_MAX) {
			*why = "stob ioq rc does not fit in 32 bits";
			return -EINVAL;
		}
		return 0;
	case M0_HA_MSG_FAILURE_VEC_REQ:
	case M0_HA_MSG_EVENT_PROCESS:
	case M0_HA_MSG_EVENT_SERVICE:
	case M0_HA_MSG_EVENT_RPC:
	case M0_HA_MSG_BE_IO_ERR:
	case M0_HA_MSG_SNS_ERR:
		return 0;
	case M0_HA_MSG_NVEC:
		if (d->u.hed_nvec.hmnv_type != M0_HA_NVEC_SET &&
		    d->u.hed_nvec.hmnv_type != M0_HA_NVEC_GET) {
			*why = "nvec type is neither SET nor GET";
			return -EINVAL;
		}
		return notes_check(d->u.hed_nvec.hmnv_nr, why);
	case M0_HA_MSG_FAILURE_VEC_REP:
		return notes_check(d->u.hed_fvec_rep.mfp_nr, why);
	default:
		*why = "message type cannot cross the wire";
		return -EINVAL;
	}
}

int wire_enc_msg_body(struct wire_buf *b, const struct m0_ha_msg *msg)
{
	const struct m0_ha_msg_data *d = &msg->hm_data;
	const char *why = NULL;
	struct wr w = { .b = b, .start = b->len, .rc = 0 };

	if (wire_msg_check(msg, &why) != 0)
		return -EINVAL;
	put_fid(&w, &msg->hm_fid);
	put_fid(&w, &msg->hm_source_process);
	put_fid(&w, &msg->hm_source_service);
	put_u64(&w, msg->hm_time);
	put_u64(&w, msg->hm_epoch);
	put_u64(&w, d->hed_type);
	switch (d->hed_type) {
	case M0_HA_MSG_STOB_IOQ: {
		const struct m0_stob_ioq_error *e = &d->u.hed_stob_ioq;

		put_fid(&w, &e->sie_conf_sdev);
		put_fid(&w, &e->sie_stob_id.si_domain_fid);
		put_fid(&w, &e->sie_stob_id.si_fid);
		put_u64(&w, (uint64_t)e->sie_fd);
		put_u32(&w, (uint32_t)e->sie_opcode);
		put_u32(&w, (uint32_t)e->sie_rc);
		put_u64(&w, e->sie_offset);
		put_u64(&w, e->sie_size);
		put_u32(&w, e->sie_bshift);
		break;
	}
	case M0_HA_MSG_NVEC: {
		const struct m0_ha_msg_nvec *v = &d->u.hed_nvec;

		put_u64(&w, v->hmnv_type);
		put_u64(&w, v->hmnv_id_of_get);
		put_u64(&w, v->hmnv_ignore_same_state);
		put_u32(&w, (uint32_t)v->hmnv_nr);
		for (uint64_t i = 0; i < v->hmnv_nr; i++)
			put_note(&w, &v->hmnv_arr.hmna_arr[i]);
		break;
	}
	case M0_HA_MSG_FAILURE_VEC_REQ: {
		const struct m0_ha_msg_failure_vec_req *q = &d->u.hed_fvec_req;

		put_fid(&w, &q->mfq_pool);
		put_u64(&w, q->mfq_cookie.co_addr);
		put_u64(&w, q->mfq_cookie.co_generation);
		break;
	}
	case M0_HA_MSG_FAILURE_VEC_REP: {
		const struct m0_ha_msg_failure_vec_rep *p = &d->u.hed_fvec_rep;

		put_fid(&w, &p->mfp_pool);
		put_u64(&w, p->mfp_cookie.co_addr);
		put_u64(&w, p->mfp_cookie.co_generation);
		put_u32(&w, p->mfp_nr);
		for (uint32_t i = 0; i < p->mfp_nr; i++)
			put_note(&w, &p->mfp_vec.hmna_arr[i]);
		break;
	}
	case M0_HA_MSG_EVENT_PROCESS:
		put_u64(&w, d->u.hed_event_process.chp_event);
		put_u64(&w, d->u.hed_event_process.chp_type);
		put_u64(&w, d->u.hed_event_process.chp_pid);
		break;
	case M0_HA_MSG_EVENT_SERVICE:
		put_u64(&w, d->u.hed_event_service.chs_event);
		put_u64(&w, d->u.hed_event_service.chs_type);
		put_u64(&w, d->u.hed_event_service.chs_pid);
		break;
	case M0_HA_MSG_EVENT_RPC:
		put_u64(&w, d->u.hed_event_rpc.hmr_attempts);
		put_u64(&w, d->u.hed_event_rpc.hmr_state);
		break;
	case M0_HA_MSG_BE_IO_ERR:
		put_u32(&w, d->u.hed_be_io_err.ber_errcode);
		put_u32(&w, d->u.hed_be_io_err.ber_location);
		put_u32(&w, d->u.hed_be_io_err.ber_io_opcode);
		break;
	case M0_HA_MSG_SNS_ERR:
		put_u32(&w, d->u.hed_ha_sns_err.hse_errcode);
		put_u32(&w, d->u.hed_ha_sns_err.hse_opcode);
		break;
	}
	if (w.rc != 0)
		b->len = w.start;
	return w.rc;
}

/* ------------------------------------------------------------------ frame encoders */

int wire_enc_ep_req(struct wire_buf *b, const struct wire_ep_req *r)
{
	struct wr w;

	frame_begin(&w, b, WIRE_EP_REQ);
	put_u64(&w, r->seq);
	put_u8(&w, r->first_request ? 1 : 0);
	put_u64(&w, r->cookie_expected);
	put_u64(&w, r->pid);
	put_fid(&w, &r->process);
	put_str(&w, r->endpoint);
	put_str(&w, r->git_rev);
	return frame_end(&w);
}

int wire_enc_ep_rep(struct wire_buf *b, uint64_t seq, int32_t rc, uint8_t link,
		    uint64_t cookie_actual, uint32_t confd_nr, const struct m0_fid *confd_fids,
		    const char *const *confd_eps, uint32_t quorum, const struct m0_fid *rm_fid,
		    const char *rm_ep)
{
	struct wr w;

	if (confd_nr > WIRE_MAX_NR)
		return -EINVAL;
	frame_begin(&w, b, WIRE_EP_REP);
	put_u64(&w, seq);
	put_u32(&w, (uint32_t)rc);
	put_u8(&w, link);
	put_u64(&w, cookie_actual);
	put_u32(&w, confd_nr);
	for (uint32_t i = 0; i < confd_nr; i++) {
		put_fid(&w, confd_fids == NULL ? NULL : &confd_fids[i]);
		put_str(&w, confd_eps == NULL ? NULL : confd_eps[i]);
		/* A huge reply fails as soon as it is too big, not after 4 MiB of copying. */
		if (w.rc == 0 && b->len - w.start > WIRE_HDR + (size_t)WIRE_MAX_FRAME)
			w.rc = -EMSGSIZE;
	}
	put_u32(&w, quorum);
	put_fid(&w, rm_fid);
	put_str(&w, rm_ep);
	return frame_end(&w);
}

int wire_enc_msg(struct wire_buf *b, uint8_t kind, uint64_t tag, const struct m0_ha_msg *msg)
{
	struct wr w;

	frame_begin(&w, b, kind);
	put_u64(&w, tag);
	if (w.rc == 0)
		w.rc = wire_enc_msg_body(b, msg);
	return frame_end(&w);
}

int wire_enc_ack(struct wire_buf *b, uint8_t kind, uint64_t tag)
{
	struct wr w;

	frame_begin(&w, b, kind);
	put_u64(&w, tag);
	return frame_end(&w);
}

int wire_enc_drop(struct wire_buf *b)
{
	struct wr w;

	frame_begin(&w, b, WIRE_DROP);
	return frame_end(&w);
}

void wire_ep_rep_patch(uint8_t *frame, uint64_t seq, uint8_t link)
{
	le64_store(frame + WIRE_EP_REP_SEQ_OFF, seq);
	frame[WIRE_EP_REP_LINK_OFF] = link;
}

void wire_msg_patch_tag(uint8_t *frame, uint64_t tag)
{
	le64_store(frame + WIRE_MSG_TAG_OFF, tag);
}

/* ------------------------------------------------------------------ reader */

struct rd {
	const uint8_t *p;
	size_t n;
	size_t off;
	const char *why; /* first error, NULL while all is well */
};

static void rd_fail(struct rd *r, const char *why)
{
	if (r->why == NULL)
		r->why = why;
}

static const uint8_t *take(struct rd *r, size_t k)
{
	const uint8_t *p;

	if (r->why != NULL)
		return NULL;
	if (r->n - r->off < k) {
		rd_fail(r, "truncated body");
		return NULL;
	}
	p = r->p + r->off;
	r->off += k;
	return p;
}

static uint64_t get_le(struct rd *r, size_t k)
{
	const uint8_t *p = take(r, k);
	uint64_t v = 0;

	if (p == NULL)
		return 0;
	for (size_t i = 0; i < k; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static uint8_t get_u8(struct rd *r)
{
	return (uint8_t)get_le(r, 1);
}

static uint32_t get_u32(struct rd *r)
{
	return (uint32_t)get_le(r, 4);
}

static uint64_t get_u64(struct rd *r)
{
	return get_le(r, 8);
}

static uint8_t get_u32_as_u8(struct rd *r)
{
	uint32_t v = get_u32(r);

	if (v > 255)
		rd_fail(r, "value does not fit its 8-bit field");
	return (uint8_t)v;
}

static void get_fid(struct rd *r, struct m0_fid *f)
{
	f->f_container = get_u64(r);
	f->f_key = get_u64(r);
}

/* Copies a string into dst (room for WIRE_MAX_STR + 1 bytes). */
static void get_str(struct rd *r, char *dst)
{
	size_t n = (size_t)get_le(r, 2);
	const uint8_t *p;

	dst[0] = '\0';
	if (r->why != NULL)
		return;
	if (n > WIRE_MAX_STR) {
		rd_fail(r, "string longer than 4096 bytes");
		return;
	}
	p = take(r, n);
	if (p == NULL)
		return;
	if (memchr(p, '\0', n) != NULL) {
		rd_fail(r, "string contains a NUL byte");
		return;
	}
	memcpy(dst, p, n);
	dst[n] = '\0';
}

static char *get_str_dup(struct rd *r)
{
	char tmp[WIRE_MAX_STR + 1];

	get_str(r, tmp);
	if (r->why != NULL)
		return NULL;
	return strdup(tmp);
}

static uint32_t get_nr(struct rd *r)
{
	uint32_t nr = get_u32(r);

	if (nr > WIRE_MAX_NR) {
		rd_fail(r, "more than 1024 entries");
		return 0;
	}
	return nr;
}

static void get_notes(struct rd *r, uint32_t nr, struct m0_ha_note *arr)
{
	for (uint32_t i = 0; i < nr && r->why == NULL; i++) {
		get_fid(r, &arr[i].no_id);
		arr[i].no_state = get_u32(r);
	}
}

static int rd_end(struct rd *r, const char **why)
{
	if (r->why == NULL && r->off != r->n)
		rd_fail(r, "trailing bytes after the body");
	if (r->why != NULL) {
		if (why != NULL)
			*why = r->why;
		return -EPROTO;
	}
	return 0;
}

static void get_msg(struct rd *r, struct m0_ha_msg *msg)
{
	struct m0_ha_msg_data *d = &msg->hm_data;

	memset(msg, 0, sizeof *msg);
	get_fid(r, &msg->hm_fid);
	get_fid(r, &msg->hm_source_process);
	get_fid(r, &msg->hm_source_service);
	msg->hm_time = get_u64(r);
	msg->hm_epoch = get_u64(r);
	d->hed_type = get_u64(r);
	if (r->why != NULL)
		return;
	switch (d->hed_type) {
	case M0_HA_MSG_STOB_IOQ: {
		struct m0_stob_ioq_error *e = &d->u.hed_stob_ioq;

		get_fid(r, &e->sie_conf_sdev);
		get_fid(r, &e->sie_stob_id.si_domain_fid);
		get_fid(r, &e->sie_stob_id.si_fid);
		e->sie_fd = (int64_t)get_u64(r);
		e->sie_opcode = get_u32(r);
		e->sie_rc = (int32_t)get_u32(r); /* sign-extended to Motr's int64_t */
		e->sie_offset = get_u64(r);
		e->sie_size = get_u64(r);
		e->sie_bshift = get_u32(r);
		break;
	}
	case M0_HA_MSG_NVEC: {
		struct m0_ha_msg_nvec *v = &d->u.hed_nvec;

		v->hmnv_type = get_u64(r);
		if (r->why == NULL && v->hmnv_type != M0_HA_NVEC_SET &&
		    v->hmnv_type != M0_HA_NVEC_GET)
			rd_fail(r, "nvec type is neither SET nor GET");
		v->hmnv_id_of_get = get_u64(r);
		v->hmnv_ignore_same_state = get_u64(r);
		v->hmnv_nr = get_nr(r);
		get_notes(r, (uint32_t)v->hmnv_nr, v->hmnv_arr.hmna_arr);
		break;
	}
	case M0_HA_MSG_FAILURE_VEC_REQ: {
		struct m0_ha_msg_failure_vec_req *q = &d->u.hed_fvec_req;

		get_fid(r, &q->mfq_pool);
		q->mfq_cookie.co_addr = get_u64(r);
		q->mfq_cookie.co_generation = get_u64(r);
		break;
	}
	case M0_HA_MSG_FAILURE_VEC_REP: {
		struct m0_ha_msg_failure_vec_rep *p = &d->u.hed_fvec_rep;

		get_fid(r, &p->mfp_pool);
		p->mfp_cookie.co_addr = get_u64(r);
		p->mfp_cookie.co_generation = get_u64(r);
		p->mfp_nr = get_nr(r);
		get_notes(r, p->mfp_nr, p->mfp_vec.hmna_arr);
		break;
	}
	case M0_HA_MSG_EVENT_PROCESS:
		d->u.hed_event_process.chp_event = get_u64(r);
		d->u.hed_event_process.chp_type = get_u64(r);
		d->u.hed_event_process.chp_pid = get_u64(r);
		break;
	case M0_HA_MSG_EVENT_SERVICE:
		d->u.hed_event_service.chs_event = get_u64(r);
		d->u.hed_event_service.chs_type = get_u64(r);
		d->u.hed_event_service.chs_pid = get_u64(r);
		break;
	case M0_HA_MSG_EVENT_RPC:
		d->u.hed_event_rpc.hmr_attempts = get_u64(r);
		d->u.hed_event_rpc.hmr_state = get_u64(r);
		break;
	case M0_HA_MSG_BE_IO_ERR:
		d->u.hed_be_io_err.ber_errcode = get_u32(r);
		d->u.hed_be_io_err.ber_location = get_u32_as_u8(r);
		d->u.hed_be_io_err.ber_io_opcode = get_u32_as_u8(r);
		break;
	case M0_HA_MSG_SNS_ERR:
		d->u.hed_ha_sns_err.hse_errcode = get_u32(r);
		d->u.hed_ha_sns_err.hse_opcode = get_u32_as_u8(r);
		break;
	default:
		rd_fail(r, "unknown message type");
		break;
	}
}

/* ------------------------------------------------------------------ frame decoders */

int wire_frame_peek(const uint8_t *buf, size_t avail, size_t *frame_len, const char **why)
{
	uint32_t len;

	*frame_len = 0;
	if (avail < WIRE_HDR)
		return 0;
	len = (uint32_t)buf[0] | (uint32_t)buf[1] << 8 | (uint32_t)buf[2] << 16 |
	      (uint32_t)buf[3] << 24;
	if (len == 0 || len > WIRE_MAX_FRAME) {
		if (why != NULL)
			*why = len == 0 ? "frame length 0" : "frame length over 1 MiB";
		return -EPROTO;
	}
	*frame_len = WIRE_HDR + (size_t)len;
	return avail >= *frame_len ? 1 : 0;
}

int wire_dec_ep_req(const uint8_t *body, size_t n, struct wire_ep_req *out, const char **why)
{
	struct rd r = { .p = body, .n = n };
	uint8_t first;

	out->seq = get_u64(&r);
	first = get_u8(&r);
	if (r.why == NULL && first > 1)
		rd_fail(&r, "first_request is neither 0 nor 1");
	out->first_request = first == 1;
	out->cookie_expected = get_u64(&r);
	out->pid = get_u64(&r);
	get_fid(&r, &out->process);
	get_str(&r, out->endpoint);
	get_str(&r, out->git_rev);
	return rd_end(&r, why);
}

int wire_dec_ep_rep(const uint8_t *body, size_t n, struct wire_ep_rep *out, const char **why)
{
	struct rd r = { .p = body, .n = n };

	memset(out, 0, sizeof *out);
	out->seq = get_u64(&r);
	out->rc = (int32_t)get_u32(&r);
	out->link = get_u8(&r);
	if (r.why == NULL && out->link > WIRE_LINK_NONE)
		rd_fail(&r, "unknown link decision");
	out->cookie_actual = get_u64(&r);
	out->confd_nr = get_nr(&r);
	if (r.why == NULL && out->confd_nr > 0) {
		out->confd_fids = calloc(out->confd_nr, sizeof out->confd_fids[0]);
		out->confd_eps = calloc(out->confd_nr, sizeof out->confd_eps[0]);
		if (out->confd_fids == NULL || out->confd_eps == NULL)
			rd_fail(&r, "out of memory");
	}
	for (uint32_t i = 0; i < out->confd_nr && r.why == NULL; i++) {
		get_fid(&r, &out->confd_fids[i]);
		out->confd_eps[i] = get_str_dup(&r);
		if (r.why == NULL && out->confd_eps[i] == NULL)
			rd_fail(&r, "out of memory");
	}
	out->quorum = get_u32(&r);
	get_fid(&r, &out->rm_fid);
	out->rm_ep = get_str_dup(&r);
	if (r.why == NULL && out->rm_ep == NULL)
		rd_fail(&r, "out of memory");
	return rd_end(&r, why);
}

void wire_ep_rep_free(struct wire_ep_rep *r)
{
	if (r->confd_eps != NULL) {
		for (uint32_t i = 0; i < r->confd_nr; i++)
			free(r->confd_eps[i]);
	}
	free(r->confd_eps);
	free(r->confd_fids);
	free(r->rm_ep);
	r->confd_eps = NULL;
	r->confd_fids = NULL;
	r->rm_ep = NULL;
	r->confd_nr = 0;
}

int wire_dec_msg(const uint8_t *body, size_t n, uint64_t *tag, struct m0_ha_msg *msg,
		 const char **why)
{
	struct rd r = { .p = body, .n = n };

	*tag = get_u64(&r);
	get_msg(&r, msg);
	return rd_end(&r, why);
}

int wire_dec_ack(const uint8_t *body, size_t n, uint64_t *tag, const char **why)
{
	struct rd r = { .p = body, .n = n };

	*tag = get_u64(&r);
	return rd_end(&r, why);
}

int wire_dec_drop(const uint8_t *body, size_t n, const char **why)
{
	struct rd r = { .p = body, .n = n };

	return rd_end(&r, why);
}
