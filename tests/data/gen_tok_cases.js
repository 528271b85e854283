#!/usr/bin/env node
// Generates tests/data/tok_synth_cases.json: small tokenizer.json files that
// exercise the components the real fixtures do not (Metaspace, Digits,
// Whitespace, Split behaviours and invert, NFKC/Lowercase/Strip/Regex Replace,
// lstrip/rstrip and normalized added tokens, unk without byte fallback,
// ignore_merges, Strip with start 2, post-processors; Strip with stop > 0 is
// left out: the Rust library 0.23.2 panics on short tokens with it), run through the official
// Hugging Face tokenizers library (the `tokenizers` npm package, Node bindings
// of the Rust crate). test_tokenizer.c loads each JSON and must reproduce every
// encode and decode exactly.
// Run: (cd /tmp/x && npm install tokenizers@0.23.2) then
//      NODE_PATH=/tmp/x/node_modules node tests/data/gen_tok_cases.js > tests/data/tok_synth_cases.json
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require('tokenizers');
const seeds = path.join(__dirname, '..', 'fuzz', 'seeds');
const load = (n) => JSON.parse(fs.readFileSync(path.join(seeds, n + '.json'), 'utf8'));

// The Rust library wants every field of every component; the fuzz seeds are
// terser (emoe fills the same defaults), so complete them here.
function complete(t) {
  const fill = (o, d) => { for (const k of Object.keys(d)) if (!(k in o)) o[k] = d[k]; };
  const pre = (p) => {
    if (!p) return;
    if (p.type === 'Sequence') return p.pretokenizers.forEach(pre);
    if (p.type === 'ByteLevel') fill(p, { add_prefix_space: true, trim_offsets: true, use_regex: true });
    if (p.type === 'Split') fill(p, { invert: false });
    if (p.type === 'Metaspace') fill(p, { replacement: '\u2581', prepend_scheme: 'always', split: true });
    if (p.type === 'Digits') fill(p, { individual_digits: false });
  };
  const dec = (d) => {
    if (!d) return;
    if (d.type === 'Sequence') return d.decoders.forEach(dec);
    if (d.type === 'ByteLevel') fill(d, { add_prefix_space: true, trim_offsets: true, use_regex: true });
    if (d.type === 'Metaspace') fill(d, { replacement: '\u2581', prepend_scheme: 'always', split: true });
  };
  fill(t, { version: '1.0', truncation: null, padding: null, added_tokens: [], normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null });
  fill(t.model, { dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false });
  for (const a of t.added_tokens) fill(a, { single_word: false, lstrip: false, rstrip: false, normalized: !a.special, special: false });
  pre(t.pre_tokenizer);
  dec(t.decoder);
  if (t.post_processor && t.post_processor.type === 'TemplateProcessing')
    fill(t.post_processor, { pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }] });
  return t;
}

const toks = {};
toks.bytelevel = load('bytelevel');
toks.sentencepiece = load('sentencepiece');
toks.metaspace_first = load('metaspace');
toks.others = load('others');
// a normalized added token whose normalized form differs (NFKC + Lowercase):
// it matches, and decodes, as "fix"
toks.others.added_tokens.push({ id: 400, content: '\ufb01X', special: false, normalized: true, lstrip: false, rstrip: false, single_word: false });
{
  const t = load('metaspace');
  t.pre_tokenizer = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: false };
  t.decoder = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: false };
  toks.metaspace_always_nosplit = t;
}
{
  const t = load('metaspace');
  t.pre_tokenizer = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'never', split: true };
  t.decoder = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'never', split: true };
  toks.metaspace_never = t;
}
{
  const t = load('bytelevel');
  t.normalizer = null;
  t.pre_tokenizer = { type: 'Sequence', pretokenizers: [
    { type: 'Split', pattern: { Regex: '[0-9]+' }, behavior: 'Removed', invert: false },
    { type: 'Split', pattern: { String: ',' }, behavior: 'MergedWithPrevious', invert: false },
    { type: 'WhitespaceSplit' },
    { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] };
  t.model.ignore_merges = true;
  t.post_processor = { type: 'RobertaProcessing', sep: ['<|end|>', 300], cls: ['<|end|>', 300], trim_offsets: true, add_prefix_space: false };
  toks.split_removed_prev = t;
}
{
  const t = load('sentencepiece');
  t.model.byte_fallback = false;
  t.model.fuse_unk = false;
  t.decoder = { type: 'Sequence', decoders: [
    { type: 'Replace', pattern: { String: '\u2581' }, content: ' ' }, { type: 'Fuse' },
    { type: 'Strip', content: ' ', start: 2, stop: 0 }] };
  t.added_tokens.push({ id: 300, content: 'wor', single_word: false, lstrip: false, rstrip: false, normalized: true, special: false });
  t.model.vocab['wor'] = 300;
  toks.unk_nofallback = t;
}
{
  const t = load('sentencepiece');
  t.decoder = null;
  t.post_processor = { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }],
    pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] }, '</s>': { id: '</s>', ids: [2], tokens: ['</s>'] } } };
  toks.no_decoder = t;
}

const texts = [
  'Hello world', 'hello world', ' hello  world ', 'hello-world x-ray', 'abc123def4567', '1,2,3 4,5',
  'caf\u00e9 cafe\u0301', '\uff21\uff22\uff23 \ufb01', '<|end|>hello<|end|>', 'a <x> b', 'a<x>b', 'a   <x>   b',
  '  leading', 'trailing  ', 'tab\tnew\nline\r\n', '\u4e2d\u6587 \ud83d\ude00', '\u00a0nbsp', 'xx-yy--zz', 'x',
  'unknown \u2603 \u2713 chars', 'MiXeD CaSe', 'a fix \ufb01x FIX b', 'hellohello worldworld', 'h e l l o', '\u2581already\u2581', '',
];

(async () => {
  const out = { tokenizers_version: require('tokenizers/package.json').version, tokenizers: [] };
  for (const [name, json] of Object.entries(toks)) {
    const s = JSON.stringify(complete(json));
    const t = Tokenizer.fromString(s);
    const cases = [];
    for (const text of texts) {
      const c = { text };
      try {
        const e0 = await t.encode(text, null, { addSpecialTokens: false });
        const e1 = await t.encode(text, null, { addSpecialTokens: true });
        c.ids = e0.getIds();
        c.ids_special = e1.getIds();
        c.decoded = await t.decode(c.ids_special, false);
        c.decoded_skip = await t.decode(c.ids_special, true);
      } catch (err) {
        c.error = String(err);
      }
      cases.push(c);
    }
    // id sequences: runs of byte-fallback tokens (valid and invalid UTF-8), specials, merges
    const n = t.getVocabSize(true);
    const seqs = [[3 + 0xe4, 3 + 0xb8, 3 + 0xad, 5, 3 + 0xe4, 3 + 0xb8], [3 + 0xf0, 3 + 0x9f, 3 + 0x98, 3 + 0x80], [1, 2, 0, 270, 271], [3 + 0x20, 3 + 0x41]];
    let x = 12345;
    for (let k = 0; k < 12; k++) {
      const q = [];
      for (let i = 0; i < 8; i++) { x = (x * 1103515245 + 12345) % 2147483648; q.push(x % n); }
      seqs.push(q);
    }
    const decodes = [];
    for (const q of seqs) {
      const ids = q.filter((i) => t.idToToken(i) !== null && t.idToToken(i) !== undefined);
      decodes.push({ ids, decoded: await t.decode(ids, false), decoded_skip: await t.decode(ids, true) });
    }
    out.tokenizers.push({ name, json: s, cases, decodes });
  }
  process.stdout.write(JSON.stringify(out, null, 1) + '\n');
})();
