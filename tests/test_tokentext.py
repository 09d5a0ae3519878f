"""aligntds.tokentext on real tokenizers: what a token shows, and the answer cut into one span per token.

The tokenizers: a byte-level BPE trained here (`tok_multi`: single byte tokens, whole characters, and tokens
whose bytes end one character and start the next) and Mistral-7B's real SentencePiece tokenizer (from
mistral-common, `tokenizer.model.v1`), whose byte-fallback pieces `<0xF0>` split rare emoji and CJK characters.
The oracles: the tokenizer's own decoding of a token (its bytes decoded with U+FFFD for what is not UTF-8), and a
slow, obviously-correct cut of the answer: decode the answer's first t + 1 tokens after the prompt, token t's span
ends where that agrees with the answer text.
"""

from __future__ import annotations

import re
import unicodedata

import pytest
from tokenizers import Tokenizer, decoders, models
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from aligntds.prompts import ChatEncoder
from aligntds.tokentext import (
    EMPTY,
    MARKS,
    answer_spans,
    code_points,
    show_bytes,
    show_token,
    token_bytes,
    token_strings,
    zero_width,
    zero_width_spans,
)
from helpers import MULTILINGUAL_ANSWERS, REPORT_EXAMPLES, chat_input, slow_answer_spans, slow_spans, sp_folder

ANSWERS = [*MULTILINGUAL_ANSWERS, REPORT_EXAMPLES[3][1], "  two spaces, then\ttabs\n\n", ""]
SHOWN_BYTE = re.compile(r"<0x([0-9A-F]{2})>")


@pytest.fixture(scope="module")
def mistral(tmp_path_factory):
    return AutoTokenizer.from_pretrained(sp_folder(tmp_path_factory.mktemp("sp"), "v1", legacy=False))


@pytest.fixture(params=["bpe", "sentencepiece"])
def tok(request, tok_multi, mistral):
    return tok_multi if request.param == "bpe" else mistral


def shown_bytes(shown: str) -> bytes:
    """The bytes a shown string stands for: its text as UTF-8, each `<0xHH>` as its byte."""
    parts = SHOWN_BYTE.split(shown)
    return b"".join(bytes([int(p, 16)]) if n % 2 else p.encode("utf-8") for n, p in enumerate(parts))


def in_context(tok, prompt_ids, ids) -> str:
    """The answer decoded after its prompt, leading space and all."""
    kw = dict(skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return tok.decode(list(prompt_ids) + list(ids), **kw)[len(tok.decode(list(prompt_ids), **kw)):]


def encoded(tok, answer: str, tokenization: str = "chat"):
    enc = ChatEncoder(tok, tokenization)
    prompt = chat_input("Say something in several scripts.")
    prompt_ids = enc.prompt_ids(prompt)
    return enc, prompt, prompt_ids, enc.answer_ids(prompt, answer)


def test_show_bytes_and_show_token():
    assert show_bytes(" 😀".encode()) == " 😀"
    assert show_bytes(b" \xf0\x9f\x98") == " <0xF0><0x9F><0x98>"
    assert show_bytes("👩\u200d".encode()[1:] + b"\xf0\x9f") == "<0x9F><0x91><0xA9>\u200d<0xF0><0x9F>"
    assert show_bytes(b"a\xffb") == "a<0xFF>b" and show_bytes(b"") == ""
    assert show_token(" a\tb\n") == "·a→b↵" and show_token("") == EMPTY


def test_control_characters_show_as_their_code():
    """A token holding \x1b, \x08 or \x03 printed raw colours a terminal or moves its cursor, and shows nothing in a page:
    it shows as its code; the whitespace marks stay, a carriage return gets its own."""
    assert show_token("\x1b[31m") == "<0x1B>[31m" and show_token("a\x08\x03") == "a<0x08><0x03>"
    assert show_token("\x7f\x85\x00") == "<0x7F><U+0085><0x00>"
    assert show_token("a\r\n") == "a␍↵" and show_token(" \t") == "·→"
    controls = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cc"]
    assert set(MARKS) == set(controls) | {" "}  # every control character (tab, line break, CR among them) and the space
    assert not any(c in mark for mark in MARKS.values() for c in controls)


def test_zero_width_texts():
    for text in ("\u0301", "\u093e", "\u094d", "\u200d", "\ufe0f", "\u200d\ufe0f", "\U0001F3FD", "\U000E0067"):
        assert zero_width(text), ascii(text)
    for text in ("", "e\u0301", " ", "a", "\u0928", "😀", "\r", "\x1b"):
        assert not zero_width(text), ascii(text)
    spans = ["cafe", "\u0301", " 👩\u200d", "👩", "\u200d", "👧", "🇫", "🇷", "\r", "\n", "x", "\ufe0f", "\u0301", "ok"]
    assert zero_width_spans(spans) == [False, True, False, True, True, True, False, True, False, False, False, True, True,
                                       False]
    assert code_points("\u200d\u0301") == "U+200D ZERO WIDTH JOINER, U+0301 COMBINING ACUTE ACCENT"


def test_token_bytes_are_what_the_tokenizer_decodes(tok):
    ids = list(range(len(tok)))
    raw = token_bytes(tok, ids)
    anchor = tok.convert_tokens_to_ids("a")  # decoded after a token, so that SentencePiece keeps a leading space
    after = tok.batch_decode([[anchor, i] for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    known = [i for i in ids if raw[i] is not None]
    for i in known:  # the tokenizer's decoding of the token is its bytes, U+FFFD for what is not UTF-8
        assert after[i] == "a" + raw[i].decode("utf-8", "replace"), (i, tok.convert_ids_to_tokens(i), raw[i])
    assert all(raw[i] is None for i in tok.added_tokens_decoder)
    pieces = tok.convert_ids_to_tokens(ids)
    if tok.is_fast and "Ġ" in tok.get_vocab():  # byte-level: every token but the added ones
        assert len(known) == len(tok) - len(tok.added_tokens_decoder)
    else:  # SentencePiece: exactly the 256 byte-fallback pieces
        assert sorted(raw[i] for i in known) == [bytes([b]) for b in range(256)]
        assert all(re.fullmatch(r"<0x[0-9A-F]{2}>", pieces[i]) for i in known)


def test_token_strings_show_parts_of_characters_by_their_bytes(tok):
    strings = token_strings(tok, range(len(tok)))
    raw = token_bytes(tok, range(len(tok)))
    pieces = tok.convert_ids_to_tokens(list(strings))
    # No U+FFFD, but for a token whose text is one (Mistral's vocabulary has the piece "�", id 29137)
    assert not [i for i, p in zip(strings, pieces) if "\ufffd" in strings[i] and "\ufffd" not in p]
    for i, s in strings.items():
        if raw[i] is not None and "\ufffd" in raw[i].decode("utf-8", "replace"):
            assert shown_bytes(s) == raw[i], (i, s)  # a part of a character: its bytes
    for answer in MULTILINGUAL_ANSWERS:  # the shown strings of an answer's tokens stand for its bytes
        _, _, prompt_ids, ids = encoded(tok, answer)
        assert shown_bytes("".join(strings[i] for i in ids)) == in_context(tok, prompt_ids, ids).encode()
    if tok.is_fast and "Ġ" in tok.get_vocab():
        assert strings[tok.convert_tokens_to_ids("ĳ©âĢįðŁ")] == "<0x91><0xA9>\u200d<0xF0><0x9F>"
        assert strings[tok.convert_tokens_to_ids("ĠðŁ")] == " <0xF0><0x9F>"
    else:
        ids = tok("🦩", add_special_tokens=False)["input_ids"]
        assert [strings[i] for i in ids] == [" ", "<0xF0>", "<0x9F>", "<0xA6>", "<0xA9>"]
        assert strings[tok.convert_tokens_to_ids("▁Sm")] == " Sm"  # the leading space kept, as before


@pytest.mark.parametrize("tokenization", ["chat", "reference"])
def test_answer_spans_equal_the_slow_cut(tok, tokenization):
    for answer in ANSWERS:
        enc, prompt, prompt_ids, ids = encoded(tok, answer, tokenization)
        text = enc.decode_answer(prompt, prompt_ids, ids)
        spans = answer_spans(tok, ids, prompt_ids, text)
        assert spans == slow_answer_spans(tok, ids, prompt, prompt_ids, tokenization), answer
        assert "".join(spans) == text and len(spans) == len(ids)
        if tokenization == "chat":
            assert text == answer  # each script exactly, the é as e + U+0301
        if "\ufffd" not in text:
            assert not [s for s in spans if "\ufffd" in s]
        alone = answer_spans(tok, ids)  # no context: the answer decoded as a whole
        assert alone == slow_answer_spans(tok, ids)
    with pytest.raises(ValueError, match="not the end of the decoded answer"):
        answer_spans(tok, ids, prompt_ids, "something else")


def test_a_character_is_on_the_token_that_completes_it(tok):
    """Against the tokens' bytes: each character of the answer is in the span of the token that holds its last byte."""
    for answer in ANSWERS:
        _, _, prompt_ids, ids = encoded(tok, answer)
        strings = token_strings(tok, ids)
        ends, total = [], 0  # byte offset of the end of each token
        for i in ids:
            total += len(shown_bytes(strings[i]))
            ends.append(total)
        text = in_context(tok, prompt_ids, ids)
        expected, at = [""] * len(ids), 0
        for ch in text:
            at += len(ch.encode())
            expected[next(t for t, e in enumerate(ends) if e >= at)] += ch
        assert answer_spans(tok, ids, prompt_ids) == expected, answer


def test_the_join_is_the_text_whatever_the_decoder():
    """A decoder that strips two leading spaces: the last window decodes to less than the text has there."""
    vocab = {"q": 0, "▁": 1, "▁x": 2, "[UNK]": 3}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(" ", 2, 0)])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend)
    ids = [0, 1, 2]
    text = tok.decode(ids)
    assert text == "q  x"
    spans = answer_spans(tok, ids)
    assert spans == ["q", " ", " x"] == slow_spans(lambda n: tok.decode(ids[:n]), 3, text)
