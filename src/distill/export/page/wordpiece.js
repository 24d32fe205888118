// A WordPiece tokenizer that reads a Hugging Face tokenizer.json and gives the ids the `tokenizers`
// library gives (checked against it in tests/export/test_text_export.py). Implemented:
//   added tokens (matched whole, before normalization unless `normalized`),
//   normalizers BertNormalizer (clean text, CJK spacing, accent stripping, lowercase), Lowercase,
//     NFD, StripAccents, Sequence;
//   pre-tokenizers BertPreTokenizer (split on whitespace, punctuation isolated), WhitespaceSplit, Sequence;
//   the WordPiece model (greedy longest match, `##` continuation, [UNK] for a word with no split or
//     longer than max_input_chars_per_word);
//   post-processors BertProcessing and TemplateProcessing (single sequence): [CLS] ... [SEP];
//   truncation at maxLength (special tokens included) and right padding to the longest row.
// distill.export.text.check_web_tokenizer refuses, at export time, a tokenizer.json using anything else.
// Runs in the browser (global `WordPiece`) and in node (module.exports).
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.WordPiece = factory();
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";
  const OTHER = /\p{C}/u; // Cc, Cf, Cs, Co, Cn: what the BERT normalizer removes
  const WHITE_SPACE = /\p{White_Space}/u; // Rust's char::is_whitespace
  const NONSPACING_MARK = /\p{Mn}/u; // removed after NFD when stripping accents
  const PUNCTUATION = /\p{P}/u; // Pc Pd Pe Pf Pi Po Ps

  const isWhitespace = (c) => c === "\t" || c === "\n" || c === "\r" || WHITE_SPACE.test(c);
  const isControl = (c) => c !== "\t" && c !== "\n" && c !== "\r" && OTHER.test(c);
  function isChinese(cp) {
    return (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf) || (cp >= 0x20000 && cp <= 0x2a6df) ||
      (cp >= 0x2a700 && cp <= 0x2b73f) || (cp >= 0x2b740 && cp <= 0x2b81f) || (cp >= 0x2b920 && cp <= 0x2ceaf) ||
      (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0x2f800 && cp <= 0x2fa1f);
  }
  function isPunctuation(c) {
    const cp = c.codePointAt(0);
    const ascii = (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126);
    return ascii || PUNCTUATION.test(c);
  }
  // per character, as the Rust side lowercases (no final-sigma context)
  const lowercase = (text) => Array.from(text, (c) => c.toLowerCase()).join("");
  const stripAccents = (text) => Array.from(text).filter((c) => !NONSPACING_MARK.test(c)).join("");

  function normalizer(spec) {
    if (!spec) return (text) => text;
    switch (spec.type) {
      case "BertNormalizer": {
        const lower = spec.lowercase !== false;
        const strip = spec.strip_accents === null || spec.strip_accents === undefined ? lower : spec.strip_accents;
        return (text) => {
          let chars = Array.from(text);
          if (spec.clean_text !== false) {
            chars = chars.filter((c) => !(c === "\0" || c === "\ufffd" || isControl(c)))
              .map((c) => (isWhitespace(c) ? " " : c));
          }
          if (spec.handle_chinese_chars !== false) {
            chars = chars.flatMap((c) => (isChinese(c.codePointAt(0)) ? [" ", c, " "] : [c]));
          }
          let out = chars.join("");
          if (strip) out = stripAccents(out.normalize("NFD"));
          if (lower) out = lowercase(out);
          return out;
        };
      }
      case "Lowercase": return lowercase;
      case "NFD": return (text) => text.normalize("NFD");
      case "StripAccents": return stripAccents;
      case "Sequence": {
        const steps = spec.normalizers.map(normalizer);
        return (text) => steps.reduce((value, step) => step(value), text);
      }
      default: throw new Error(`tokenizer.json: normalizer ${spec.type} is not implemented`);
    }
  }

  // words -> words: split each on whitespace (removed), then optionally isolate punctuation
  function splitWords(words, punctuation) {
    const out = [];
    for (const word of words) {
      let current = "";
      for (const c of word) {
        if (WHITE_SPACE.test(c)) {
          if (current) out.push(current);
          current = "";
        } else if (punctuation && isPunctuation(c)) {
          if (current) out.push(current);
          out.push(c);
          current = "";
        } else {
          current += c;
        }
      }
      if (current) out.push(current);
    }
    return out;
  }

  function preTokenizer(spec) {
    if (!spec) return (text) => [text];
    switch (spec.type) {
      case "BertPreTokenizer": return (text) => splitWords([text], true);
      case "WhitespaceSplit": return (text) => splitWords([text], false);
      case "Sequence": {
        const steps = spec.pretokenizers.map(preTokenizer);
        return (text) => steps.reduce((words, step) => words.flatMap(step), [text]);
      }
      default: throw new Error(`tokenizer.json: pre-tokenizer ${spec.type} is not implemented`);
    }
  }

  class WordPiece {
    constructor(json) {
      const model = json.model || {};
      if (model.type !== "WordPiece") throw new Error(`tokenizer.json: model ${model.type} is not WordPiece`);
      this.vocab = new Map(Object.entries(model.vocab));
      this.unkToken = model.unk_token || "[UNK]";
      this.prefix = model.continuing_subword_prefix === undefined ? "##" : model.continuing_subword_prefix;
      this.maxChars = model.max_input_chars_per_word || 100;
      this.normalize = normalizer(json.normalizer);
      this.preTokenize = preTokenizer(json.pre_tokenizer);
      const added = (json.added_tokens || []).slice().sort((a, b) => b.content.length - a.content.length);
      this.rawAdded = added.filter((t) => !t.normalized); // matched in the raw text
      this.normalizedAdded = added.filter((t) => t.normalized); // matched after normalization
      [this.prefixIds, this.suffixIds] = this.specials(json.post_processor);
    }

    specials(post) {
      if (!post) return [[], []];
      if (post.type === "BertProcessing") return [[post.cls[1]], [post.sep[1]]];
      if (post.type === "TemplateProcessing") {
        const before = [], after = [];
        let seen = false;
        for (const item of post.single) {
          if (item.Sequence) { seen = true; continue; }
          const ids = post.special_tokens[item.SpecialToken.id].ids;
          (seen ? after : before).push(...ids);
        }
        return [before, after];
      }
      throw new Error(`tokenizer.json: post-processor ${post.type} is not implemented`);
    }

    idOf(token) {
      const id = this.vocab.get(token);
      return id === undefined ? this.vocab.get(this.unkToken) : id;
    }

    // [{text} | {id}] of `text`, the added tokens (leftmost, longest first) taken out whole
    splitAdded(text, tokens) {
      const pieces = [];
      let rest = text;
      while (rest.length) {
        let best = null;
        for (const token of tokens) {
          const at = rest.indexOf(token.content);
          if (at >= 0 && (best === null || at < best.at)) best = { at, token };
        }
        if (best === null) { pieces.push({ text: rest }); break; }
        if (best.at > 0) pieces.push({ text: rest.slice(0, best.at) });
        pieces.push({ id: best.token.id });
        rest = rest.slice(best.at + best.token.content.length);
      }
      return pieces;
    }

    word(word) {
      const chars = Array.from(word);
      if (chars.length > this.maxChars) return [this.idOf(this.unkToken)];
      const ids = [];
      let start = 0;
      while (start < chars.length) {
        let end = chars.length, found;
        while (start < end) {
          const piece = (start > 0 ? this.prefix : "") + chars.slice(start, end).join("");
          found = this.vocab.get(piece);
          if (found !== undefined) break;
          end -= 1;
        }
        if (found === undefined) return [this.idOf(this.unkToken)];
        ids.push(found);
        start = end;
      }
      return ids;
    }

    // the ids of one text, without special tokens
    tokens(text) {
      const ids = [];
      for (const piece of this.splitAdded(text, this.rawAdded)) {
        if (piece.id !== undefined) { ids.push(piece.id); continue; }
        for (const part of this.splitAdded(this.normalize(piece.text), this.normalizedAdded)) {
          if (part.id !== undefined) { ids.push(part.id); continue; }
          for (const word of this.preTokenize(part.text)) ids.push(...this.word(word));
        }
      }
      return ids;
    }

    // the ids of one text as the model takes them: truncated so that, with [CLS]/[SEP], at most maxLength
    encode(text, maxLength) {
      const room = Math.max(0, maxLength - this.prefixIds.length - this.suffixIds.length);
      return [...this.prefixIds, ...this.tokens(text).slice(0, room), ...this.suffixIds];
    }

    // {ids, mask}: one row per text, right-padded with padId to the longest
    batch(texts, maxLength, padId = 0) {
      const rows = texts.map((text) => this.encode(text, maxLength));
      const length = Math.max(1, ...rows.map((row) => row.length));
      const ids = rows.map((row) => [...row, ...new Array(length - row.length).fill(padId)]);
      const mask = rows.map((row) => [...new Array(row.length).fill(1), ...new Array(length - row.length).fill(0)]);
      return { ids, mask, length };
    }
  }
  return WordPiece;
});
