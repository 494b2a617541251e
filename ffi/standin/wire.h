/*
 * wire.h: the stand-in's TCP frame codec (see PROTOCOL.md).
 *
 * Pure functions over byte buffers: no I/O, no global state, no locks; safe to fuzz.
 * Encoders append one complete frame (u32 len, u8 kind, body) to a growable buffer and leave
 * the buffer unchanged on error. Decoders take the body of one frame (the bytes after the kind
 * byte), must consume it exactly, and report why they failed through `*why` (a static string).
 */
#ifndef HAX_STANDIN_WIRE_H
#define HAX_STANDIN_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ha/msg.h"

enum {
	WIRE_HDR = 4,                /* the u32 length prefix */
	WIRE_MAX_FRAME = 1 << 20,    /* largest `len` (kind byte included) */
	WIRE_MAX_STR = 4096,         /* longest string */
	WIRE_MAX_NR = 1024,          /* most notes / confd entries */
	WIRE_EP_REP_SEQ_OFF = 5,     /* offsets inside an encoded EP_REP frame (header included) */
	WIRE_EP_REP_LINK_OFF = 17,
	WIRE_MSG_TAG_OFF = 5,        /* offset of the tag inside an encoded MSG frame */
};

enum wire_kind {
	/* process -> HA */
	WIRE_EP_REQ = 0x01,
	WIRE_MSG = 0x02,
	WIRE_ACK = 0x03,
	/* HA -> process */
	WIRE_EP_REP = 0x81,
	WIRE_HA_MSG = 0x82,
	WIRE_HA_ACK = 0x83,
	WIRE_DROP = 0x84,
};

enum wire_link_decision {
	WIRE_LINK_CONNECTED = 0,
	WIRE_LINK_REUSED = 1,
	WIRE_LINK_ABSENT = 2,
	WIRE_LINK_NONE = 3,
};

/** A growable byte buffer. Zero-initialised is a valid empty buffer. */
struct wire_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
};

void wire_buf_fini(struct wire_buf *b);
/** Appends n bytes; 0 or -ENOMEM (buffer unchanged). */
int wire_buf_append(struct wire_buf *b, const void *p, size_t n);

struct wire_ep_req {
	uint64_t seq;
	bool first_request;
	uint64_t cookie_expected; /* the HA cookie of the last reply the process got, 0: none */
	uint64_t pid;
	struct m0_fid process;
	char endpoint[WIRE_MAX_STR + 1]; /* NUL-terminated */
	char git_rev[WIRE_MAX_STR + 1];
};

struct wire_ep_rep {
	uint64_t seq;
	int32_t rc;
	uint8_t link;            /* enum wire_link_decision */
	uint64_t cookie_actual;  /* the HA's cookie (per interface instance, never 0) */
	uint32_t confd_nr;
	struct m0_fid *confd_fids; /* confd_nr entries (allocated) */
	char **confd_eps;          /* confd_nr NUL-terminated strings (allocated) */
	uint32_t quorum;
	struct m0_fid rm_fid;
	char *rm_ep;               /* allocated */
};

/* ---- encoders: 0, -EINVAL (value not representable), -EMSGSIZE (frame > 1 MiB), -ENOMEM */

int wire_enc_ep_req(struct wire_buf *b, const struct wire_ep_req *r);
/** NULL fids / strings encode as zero fids / empty strings. */
int wire_enc_ep_rep(struct wire_buf *b, uint64_t seq, int32_t rc, uint8_t link,
		    uint64_t cookie_actual, uint32_t confd_nr, const struct m0_fid *confd_fids,
		    const char *const *confd_eps, uint32_t quorum, const struct m0_fid *rm_fid,
		    const char *rm_ep);
/** kind is WIRE_MSG (process -> HA) or WIRE_HA_MSG (HA -> process). */
int wire_enc_msg(struct wire_buf *b, uint8_t kind, uint64_t tag, const struct m0_ha_msg *msg);
/** kind is WIRE_ACK or WIRE_HA_ACK. */
int wire_enc_ack(struct wire_buf *b, uint8_t kind, uint64_t tag);
int wire_enc_drop(struct wire_buf *b);
/** Only the msg encoding (no frame header); used by wire_enc_msg. */
int wire_enc_msg_body(struct wire_buf *b, const struct m0_ha_msg *msg);
/** 0 when wire_enc_msg_body() would accept msg, else -EINVAL and *why. */
int wire_msg_check(const struct m0_ha_msg *msg, const char **why);

/** Rewrites the seq and link fields of an encoded EP_REP frame (frame points at its header). */
void wire_ep_rep_patch(uint8_t *frame, uint64_t seq, uint8_t link);
/** Rewrites the tag of an encoded MSG frame. */
void wire_msg_patch_tag(uint8_t *frame, uint64_t tag);

/* ---- frame splitting */

/**
 * Looks at the start of a byte stream. Returns 1 when a whole frame is there (*frame_len =
 * WIRE_HDR + len), 0 when more bytes are needed (*frame_len = the full size if the header is
 * complete, else 0), -EPROTO when the length is 0 or over WIRE_MAX_FRAME.
 */
int wire_frame_peek(const uint8_t *buf, size_t avail, size_t *frame_len, const char **why);

/* ---- decoders: body = bytes after the kind byte, n = their count; 0 or -EPROTO and *why */

int wire_dec_ep_req(const uint8_t *body, size_t n, struct wire_ep_req *out, const char **why);
/** Allocates; call wire_ep_rep_free() afterwards whatever it returned. */
int wire_dec_ep_rep(const uint8_t *body, size_t n, struct wire_ep_rep *out, const char **why);
void wire_ep_rep_free(struct wire_ep_rep *r);
/** MSG or HA_MSG body; msg is fully overwritten (zero-filled, hm_tag 0). */
int wire_dec_msg(const uint8_t *body, size_t n, uint64_t *tag, struct m0_ha_msg *msg,
		 const char **why);
/** ACK or HA_ACK body. */
int wire_dec_ack(const uint8_t *body, size_t n, uint64_t *tag, const char **why);
/** DROP body (must be empty). */
int wire_dec_drop(const uint8_t *body, size_t n, const char **why);

#endif /* HAX_STANDIN_WIRE_H */
