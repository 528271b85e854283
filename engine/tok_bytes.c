/*
 * tok_bytes.c — the raw bytes one token contributes to the output, for
 * constrained decoding (a grammar matched over token byte strings) and for
 * the `bytes` of OpenAI log-probabilities: byte-level pieces mapped back to
 * bytes, <0xNN> byte-fallback tokens as their byte, Metaspace/Replace
 * decoders applied (the "▁" of SentencePiece becomes a space). A token can
 * hold part of a UTF-8 character; the bytes are returned as they are.
 */
#include "engine/tok_internal.h"

#include <stdlib.h>
#include <string.h>

static int hexv(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int tok_token_bytes(const tok_tokenizer *t, int id, emoe_buf *out)
{
    out->n = 0;
    if (id < 0 || id >= t->n_vocab || !t->piece[id]) return -1;
    const char *s = t->piece[id];
    size_t n = t->piece_len[id];
    int bytelevel = 0, fallback = 0;
    for (int k = 0; k < t->n_decs; k++) {
        if (t->decs[k].type == TOK_DEC_BYTELEVEL) bytelevel = 1;
        if (t->decs[k].type == TOK_DEC_BYTEFALLBACK) fallback = 1;
    }
    if (fallback && n == 6 && !memcmp(s, "<0x", 3) && s[5] == '>' && hexv(s[3]) >= 0 && hexv(s[4]) >= 0) {
        unsigned char b = (unsigned char)(hexv(s[3]) * 16 + hexv(s[4]));
        return emoe_buf_put(out, &b, 1);
    }
    if (bytelevel) {
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            i += (size_t)tok_utf8_decode(s + i, n - i, &cp);
            int b = tok_bytelevel_cp_to_byte(cp);
            if (b < 0) { out->n = 0; return emoe_buf_put(out, s, n); }
            unsigned char c = (unsigned char)b;
            if (emoe_buf_put(out, &c, 1)) return -1;
        }
        return 0;
    }
    /* Replace / Metaspace decoders: pattern -> content, "▁" -> " ". */
    emoe_buf a = {0};
    if (emoe_buf_put(&a, s, n)) return -1;
    for (int k = 0; k < t->n_decs; k++) {
        const tok_dec *d = &t->decs[k];
        const char *pat = NULL, *rep = NULL;
        size_t pl = 0, rl = 0;
        if (d->type == TOK_DEC_REPLACE && d->pat && d->pat_len) { pat = d->pat; pl = d->pat_len; rep = d->content; rl = d->content_len; }
        else if (d->type == TOK_DEC_METASPACE && d->repl_len) { pat = d->repl; pl = d->repl_len; rep = " "; rl = 1; }
        if (!pat) continue;
        emoe_buf b = {0};
        for (size_t i = 0; i < a.n;) {
            if (i + pl <= a.n && !memcmp(a.p + i, pat, pl)) {
                if (rl && emoe_buf_put(&b, rep, rl)) goto oom;
                i += pl;
            } else {
                if (emoe_buf_put(&b, a.p + i, 1)) goto oom;
                i++;
            }
        }
        free(a.p);
        a = b;
        continue;
    oom:
        free(b.p);
        free(a.p);
        return -1;
    }
    int rc = a.n ? emoe_buf_put(out, a.p, a.n) : 0;
    free(a.p);
    return rc;
}
