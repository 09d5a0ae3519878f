"""What the pages and the summary show for tokens and answers: token strings, answer spans, whitespace marks.

A byte-level tokenizer can split one character over several tokens (GPT-2-style byte-level BPE: the emoji
😀 is four byte tokens in a small vocabulary; SentencePiece with byte fallback: `<0xF0> <0x9F> <0xA6> <0xA9>`
for 🦩). Decoded alone, such a token is U+FFFD, so nothing here decodes a token alone to show it:

- `token_strings`: each id's text as it reads after other text (its leading space kept); a token whose bytes
  are not valid UTF-8 is shown by its bytes instead, `<0xF0><0x9F>` (with its valid part as text:
  ` <0xF0><0x9F><0x98>` for SmolLM2's `ĠðŁĺ`). Used by the top-k tables and every token list.
- `answer_spans`: each answer token's part of the answer text, cut from the answer decoded as a whole (in
  context after its prompt), so that the spans put together are exactly the text; a character split over
  several tokens is on the token that completes it, the tokens before it hold only what precedes it (a
  space, often nothing).
- `WHITESPACE`, `MARKS`, `show_token`: the marks that make spaces, line breaks, tabs and carriage returns visible
  (· ↵ → ␍), control characters as their code (`<0x1B>`, `<U+0085>`), and ∅ for an empty token; the example page's
  script gets them as data.
- `zero_width_spans`, `code_points`: the answer spans a browser draws with no width (only combining marks, a ZWJ,
  variation selectors, or the rest of a character cluster an earlier span started: the second 👩 of 👩‍👩), and what
  they hold (`U+0301 COMBINING ACUTE ACCENT`), for the page's stubs.

    from aligntds.tokentext import answer_spans, token_strings
    token_strings(tok, [40303])                                  # {40303: " <0xF0><0x9F><0x98>"} (SmolLM2)
    answer_spans(tok, answer_ids, context=prompt_ids)            # ["Sm", "ile", " ", "😀", " ok", ...]
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

WHITESPACE = {" ": "·", "\n": "↵", "\t": "→", "\r": "␍"}
# Control characters (C0 but the whitespace above, DEL, C1) as their code: printed raw they move a terminal's cursor or
# colour it (\x1b, \x08), and a page shows nothing. C0 and DEL are one byte, `<0x1B>`; C1 as code points, `<U+0085>`
# (its bytes are two).
CONTROLS = {chr(c): f"<0x{c:02X}>" if c < 0x80 else f"<U+{c:04X}>" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))
            if chr(c) not in WHITESPACE}
MARKS = {**WHITESPACE, **CONTROLS}
EMPTY = "∅"
# Characters that show nothing by themselves (after the previous character, or nowhere): combining marks (U+0301,
# Devanagari vowel signs and virama; variation selectors are Mn), format characters (ZWJ, ZWNJ, soft hyphen, tags),
# and emoji skin-tone modifiers, which merge into the emoji before them.
ZERO_WIDTH_CATEGORIES = ("Mn", "Mc", "Me", "Cf")
EMOJI_MODIFIERS = range(0x1F3FB, 0x1F400)
BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
CONTEXT_TOKENS = 4  # prompt tokens decoded before the answer's first token, so that it reads as after its prompt
DECODE = dict(skip_special_tokens=False, clean_up_tokenization_spaces=False)


def show_token(text: str) -> str:
    """A token for a terminal or a table: whitespace and control characters made visible (MARKS: `·`, `↵`, `→`, `␍`,
    `<0x1B>`), ∅ if empty."""
    return "".join(MARKS.get(c, c) for c in text) or EMPTY


def zero_width(text: str) -> bool:
    """True when `text` is not empty and shows nothing of its own: only combining marks, format characters (ZWJ, ...),
    variation selectors or emoji modifiers (`ZERO_WIDTH_CATEGORIES`); such a token of an answer gets a visible stub."""
    return bool(text) and all(unicodedata.category(c) in ZERO_WIDTH_CATEGORIES or ord(c) in EMOJI_MODIFIERS for c in text)


def zero_width_spans(spans: Sequence[str]) -> list[bool]:
    """bool [T]: the answer spans that show nothing of their own in a page, so that a stub must make them visible: a span
    of only `zero_width` characters, or one in which no grapheme cluster starts (Unicode's extended grapheme clusters,
    the `regex` module's \\X, as browsers draw them: every character continues a cluster an earlier span started, as the
    second 👩 of a ZWJ sequence 👩‍👩 split after the ZWJ does). Spans holding whitespace or control characters show
    their marks (`MARKS`) and are never zero-width."""
    import regex  # a dependency of transformers

    text = "".join(spans)
    starts = [m.start() for m in regex.finditer(r"\X", text)]
    out, at, k = [], 0, 0
    for span in spans:
        end = at + len(span)
        while k < len(starts) and starts[k] < at:
            k += 1
        starts_here = k < len(starts) and starts[k] < end
        out.append(bool(span) and not any(c in MARKS for c in span) and (zero_width(span) or not starts_here))
        at = end
    return out


def code_points(text: str) -> str:
    """Each character's code point and name: "U+200D ZERO WIDTH JOINER, U+1F469 WOMAN"."""
    return ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, '')}".rstrip() for c in text)


def show_bytes(data: bytes) -> str:
    """Bytes as text where they are valid UTF-8, every other byte as `<0xHH>`: b" \\xf0\\x9f" -> " <0xF0><0x9F>"."""
    out = []
    while data:
        try:
            out.append(data.decode("utf-8"))
            break
        except UnicodeDecodeError as e:
            out.append(data[: e.start].decode("utf-8"))
            out.append("".join(f"<0x{b:02X}>" for b in data[e.start: e.end]))
            data = data[e.end:]
    return "".join(out)


@lru_cache(maxsize=1)
def _byte_alphabet() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2's `bytes_to_unicode`, as transformers' converter has it), character -> byte."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def _is_byte_level(tokenizer) -> bool:
    """True when the tokenizer's decoder is (or holds) a ByteLevel decoder: its token strings spell bytes."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    if decoder is None:
        return False

    def byte_level(d: dict) -> bool:
        return d.get("type") == "ByteLevel" or any(byte_level(x) for x in d.get("decoders") or [])

    return byte_level(json.loads(decoder.__getstate__()))


def token_bytes(tokenizer, ids: Sequence[int]) -> dict[int, bytes | None]:
    """The bytes each token stands for, where the tokenizer says: {id: bytes, or None when it does not}.

    - byte-level BPE (GPT-2, Llama-3, Qwen2, SmolLM2: a ByteLevel decoder): the token string mapped through the
      byte alphabet (`Ġ` is the byte 0x20, `ð` 0xF0);
    - SentencePiece byte fallback (Llama-2, Mistral, Gemma): a piece `<0xE3>` is the byte 0xE3.

    None for added and special tokens, for ordinary SentencePiece pieces (whole characters: their text is
    their bytes) and for ids the tokenizer has no string for.
    """
    ids = [int(i) for i in ids]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    added = set(tokenizer.added_tokens_decoder)
    alphabet = _byte_alphabet() if _is_byte_level(tokenizer) else None
    out: dict[int, bytes | None] = {}
    for i, piece in zip(ids, pieces):
        found = None
        if i in added or piece is None:
            pass
        elif alphabet is not None:
            found = bytes(alphabet[c] for c in piece) if all(c in alphabet for c in piece) else None
        elif m := BYTE_PIECE.fullmatch(piece):
            found = bytes([int(m.group(1), 16)])
        out[i] = found
    return out


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def token_strings(tokenizer, ids) -> dict[int, str]:
    """What each token shows, {id: text}: its text as it reads after other text (leading spaces kept, as in the
    answer), or, for a token that is only part of a character, its bytes (`show_bytes`: `<0xF0><0x9F>`).

    Decoding a lone token drops the leading space of SentencePiece pieces, so each id is decoded after an
    anchor token and the anchor's text is removed. Which tokens are parts of characters comes from their bytes
    (`token_bytes`), never from a U+FFFD in their decoded text.
    """
    ids = sorted({int(i) for i in ids})
    anchor = list(tokenizer("a", add_special_tokens=False)["input_ids"])[:1]
    prefix = tokenizer.decode(anchor) if anchor else ""
    texts = tokenizer.batch_decode([anchor + [i] for i in ids])
    lone = tokenizer.batch_decode([[i] for i in ids])
    raw = token_bytes(tokenizer, ids)
    out = {}
    for i, t, s in zip(ids, texts, lone):
        b = raw[i]
        if b is not None and not _valid_utf8(b):
            out[i] = show_bytes(b)
        else:
            out[i] = t[len(prefix):] if prefix and t.startswith(prefix) else s
    return out


def answer_spans(tokenizer, ids: Sequence[int], context: Sequence[int] = (), text: str | None = None) -> list[str]:
    """Each answer token's part of the answer text: T strings that put together are exactly the text.

    ids: the answer's token ids, [T]. context: the ids before them (the prompt's), so that the answer decodes
    as it reads after its prompt (a SentencePiece answer's first space kept, bytes of a character that straddles
    the boundary joined). The text is the answer decoded in that context (`decode(context + ids)` after
    `decode(context)`, or `decode(ids)` when the first does not begin with the second, as in
    `ChatEncoder.decode_answer`); `text`, when given, is that decoding without some leading characters (the
    boundary space that `decode_answer` leaves out), and the spans are those of `text`.

    Cut by incremental detokenization (Hugging Face TGI's, also vLLM's): token t's text is what decoding a short
    window of tokens up to t adds to the same window without it, taken when it is what the text has there. A token
    that is only part of a character adds U+FFFD, which the text does not have there: it keeps what comes before
    the U+FFFD (a leading space), and the character goes to the token that completes it; the window grows until
    one does. Linear in T (two short decodes per token); any text no window accounts for goes to the last token,
    so the join is the text whatever the tokenizer does.

    Raises ValueError when `text` is not the end of the decoded answer (a bug of the caller).
    """
    ids, context = [int(i) for i in ids], [int(i) for i in context]
    full, head = tokenizer.decode(context + ids, **DECODE), tokenizer.decode(context, **DECODE)
    if context and full.startswith(head):
        decoded = full[len(head):]
    else:
        decoded, context = tokenizer.decode(ids, **DECODE), []
    if text is not None and not decoded.endswith(text):
        raise ValueError(f"{text!r} is not the end of the decoded answer {decoded!r}")
    seq = context[-CONTEXT_TOKENS:] + ids
    first = len(seq) - len(ids)
    start, read = 0, first  # the window is seq[start:end]; its tokens before `read` are decoded, as `before`
    at, done = 0, 0  # where `before` ends in the decoded text; how much of the text the spans hold
    before = tokenizer.decode(seq[start:read], **DECODE)
    spans = []
    for end in range(first + 1, len(seq) + 1):
        now = tokenizer.decode(seq[start:end], **DECODE)
        stable = now.startswith(before)
        added = now[len(before):] if stable else ""
        complete = stable and decoded.startswith(added, at)
        # else part of a character: the text this token adds agrees with the answer up to its U+FFFD at most
        stop = at + len(added if complete else os.path.commonprefix([added, decoded[at: at + len(added)]]))
        spans.append(decoded[done:stop])
        done = max(done, stop)
        if complete:
            start, read, at = read, end, stop
            before = tokenizer.decode(seq[start:read], **DECODE)
    lead = len(decoded) - len(text) if text is not None else 0
    if spans and done < len(decoded):
        spans[-1] += decoded[done:]
    for t in range(len(spans)):  # leave out the leading characters that `text` does not have
        cut = min(lead, len(spans[t]))
        spans[t], lead = spans[t][cut:], lead - cut
    return spans
