/* gram_internal.h — the grammar's node tree and automaton state, shared by
 * gram_schema.c, gram_match.c and gram_vocab.c. See grammar.h. */
#ifndef EMOE_GRAM_INTERNAL_H
#define EMOE_GRAM_INTERNAL_H

#include "engine/grammar.h"

#include <stdatomic.h>

typedef enum gn_kind {
    GN_ANY = 0,    /* any JSON value */
    GN_OBJECT,     /* props in order; free: any members (keys any string, values any) */
    GN_ARRAY,
    GN_STRING,
    GN_INTEGER,
    GN_NUMBER,
    GN_LITERALS,   /* one of several exact byte strings (enum, const, true/false/null) */
    GN_CHOICE,     /* alternatives: literal prefix, node, literal suffix (tool calls) */
    GN_UNION,      /* anyOf / several types: alternatives told apart by their first byte */
} gn_kind;

typedef struct gnode gnode;
struct gnode {
    gn_kind k;
    /* object */
    int n_props;
    char **names;           /* property names (plain, no escapes needed) */
    gnode **props;
    uint64_t required;      /* bit i: props[i] is required */
    int free_members;       /* 1: any members */
    /* array */
    gnode *items;
    int min_items, max_items;
    /* string */
    int min_len, max_len;
    /* integer / number (inclusive bounds; integer bounds are integral) */
    int has_lo, has_hi;
    double lo, hi;
    /* literals / choice prefixes */
    int n_lit;
    char **lit;
    size_t *lit_len;
    /* choice (n_lit alternatives) / union (n_alt) */
    int n_alt;
    gnode **alt;
    char **suffix;
    gnode *next_alloc;      /* every node of a gram, for freeing */
};

struct gram {
    atomic_int refs;
    gnode *root;
    gnode *nodes;           /* allocation list */
};

/* Static nodes (gram_match.c). */
gnode *gram_any_object_node(void);
gnode *gram_any_node(void);
void gram_scratch_free(void *scratch);
/* 1 if a value of n can start with byte b. */
int gram_node_first_byte(const gnode *n, unsigned char b);

/* Allocates a node on g's list. */
gnode *gram_node_new(gram *g, gn_kind k);
gram *gram_new(void);

typedef struct gframe {
    const gnode *n;
    uint8_t kind;           /* gn_kind, resolved (GN_ANY becomes a concrete kind) */
    uint8_t ph;             /* phase */
    uint8_t neg;            /* number: '-' seen */
    uint8_t ulo, uhi;       /* string: range of the next UTF-8 continuation byte */
    uint8_t need;           /* string: continuation bytes still needed */
    uint8_t sp;             /* the one optional space here was used */
    uint16_t cnt;           /* items / characters / property index / members / alternative */
    uint32_t pos;           /* literal or key position */
    uint64_t mask;          /* candidate literals / properties */
    double ip, fr;          /* number: integer part, fraction so far */
    int16_t nd, fd;         /* number: integer digits, fraction digits */
} gframe;

struct gram_state {
    gram *g;
    const gram_vocab *v;
    int depth;
    int started;
    gframe f[GRAM_MAX_DEPTH];
    /* gram_vocab.c scratch */
    void *scratch;
};

/* Feeds one byte to a state: 0 or -1 (state may be partly changed: callers
 * copy first). */
int gram_feed_byte(gram_state *s, unsigned char b);
/* Copies the live part of a state. */
void gram_state_copy(gram_state *dst, const gram_state *src);

#endif
