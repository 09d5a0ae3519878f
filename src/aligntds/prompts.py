"""Prompt and answer text -> token ids, in the model's own chat format (or the reference's, on request).

The ids a model is scored on must be those it was trained on. Two places get this wrong when text is
passed to a tokenizer as it comes:

- **BOS.** A chat prompt often starts with the BOS string (Llama-2's `<s>[INST]`). Passed through the
  tokenizer, the literal `<s>` becomes BOS and, with a SentencePiece tokenizer in transformers >= 5
  (`legacy=False`), the text after it loses its prefix space: `<s> [ INST ]` instead of Meta's and
  mistral-common's `<s> ▁[ INST ]`. Here the BOS string is taken off, the document-start tokens are put
  in front (`document_start`), and the rest is encoded as the start of a text.
- **The prompt/answer boundary.** SentencePiece tokenizers (Llama, Mistral) put a prefix space before
  a text they encode: the answer `Thank you` encoded alone is `▁Thank ▁you`. A prompt ending in a space
  (`[/INST] `) then leaves a lone `▁` token before it, and the model is scored on `] ▁ ▁Thank` (two
  spaces) where its training format has `] ▁Thank`. For such tokenizers (`adds_prefix_space`) the
  prompt's trailing spaces are dropped and the answer's first word carries the space, exactly as in
  Meta's Llama-2 format (`[BOS] + encode(prompt.rstrip(" ") + " " + answer)`) and mistral-common's
  `encode_chat_completion`, which encodes each turn as a text of its own. An answer text therefore
  starts after the boundary space (`Thank you`, as in the just-eval file), and `decode_answer` leaves
  that space out. A prompt that ends in a line
  break (`<|assistant|>\\n`, Zephyr's format) is continued instead: the answer's ids are those of the
  joined text after the prompt's (lm-evaluation-harness's context/continuation split), since a
  template rendered to text and tokenized whole (HF's `apply_chat_template`) has no space there.
  Tokenizers with no prefix space (byte-level BPE: Qwen2's ChatML, Llama-3, GPT-2) encode the prompt
  and the answer as they are, exactly as before.

`tokenization="reference"` reproduces the reference implementation (AlignTDS `logit_analysis.py`) id
for id: the prompt encoded with the tokenizer's special tokens (a second BOS when it starts with the
BOS string) and the answer encoded alone after the prompt's trailing space.

An answer is encoded with no special tokens added; a literal `</s>` in it is the EOS token.

    enc = ChatEncoder(tokenizer)                       # or ChatEncoder(tokenizer, "reference")
    prompt_ids = enc.prompt_ids("<s>[INST] Hi [/INST] ")
    answer_ids = enc.answer_ids("<s>[INST] Hi [/INST] ", "Hello!</s>")
"""

from __future__ import annotations

TOKENIZATIONS = ("chat", "reference")


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def leading_specials(tokenizer) -> list[int]:
    """The ids the tokenizer puts in front of any text when asked for special tokens (e.g. [BOS])."""
    text = "a"
    with_specials, plain = _ids(tokenizer, text, True), _ids(tokenizer, text, False)
    for start in range(len(with_specials) - len(plain) + 1):
        if with_specials[start : start + len(plain)] == plain:
            return with_specials[:start]
    return []


def document_start(tokenizer) -> list[int]:
    """The special tokens a document starts with, put in front of every prompt: list of ids.

    Those the tokenizer itself puts in front of a text (Llama, Mistral, Gemma, Llama-3: their BOS);
    else the BOS it names but does not add (OLMo-2's `<|endoftext|>`, which its pretraining put between
    documents and its chat template writes first); else none (Qwen2.5 names no BOS).
    """
    leading = leading_specials(tokenizer)
    if leading:
        return leading
    bos = tokenizer.bos_token_id
    return [bos] if bos is not None else []


def adds_prefix_space(tokenizer) -> bool:
    """True when the tokenizer puts a space before a text it encodes (SentencePiece's dummy prefix).

    Then a text and the same text after one space encode alike (`a` and ` a` are both `▁a`).
    """
    return _ids(tokenizer, "a", False) == _ids(tokenizer, " a", False)


class ChatEncoder:
    """Token ids of prompts and answers for one tokenizer, in the chat format or the reference's.

    tokenizer: a Hugging Face tokenizer. tokenization: "chat" (default; see the module docstring) or
    "reference". Raises ValueError for another tokenization.
    """

    def __init__(self, tokenizer, tokenization: str = "chat"):
        if tokenization not in TOKENIZATIONS:
            raise ValueError(f"tokenization must be one of {TOKENIZATIONS}, got {tokenization!r}")
        self.tokenizer = tokenizer
        self.tokenization = tokenization
        self.start = document_start(tokenizer)
        self.prefix_space = adds_prefix_space(tokenizer)
        self.bos = tokenizer.bos_token or None

    def _body(self, prompt: str) -> str:
        """The prompt's text without a leading BOS string, and (prefix-space tokenizers) without trailing spaces."""
        body = prompt[len(self.bos):] if self.bos and prompt.startswith(self.bos) else prompt
        return body.rstrip(" ") if self.prefix_space else body

    def prompt_ids(self, prompt: str) -> list[int]:
        """The prompt's ids: [P] ints, the document-start tokens first (see the module docstring)."""
        if self.tokenization == "reference":
            return _ids(self.tokenizer, prompt, True)
        return self.start + _ids(self.tokenizer, self._body(prompt), False)

    def answer_ids(self, prompt: str, answer: str) -> list[int]:
        """The answer's ids after `prompt`: [T] ints, no special tokens added (a literal EOS string is EOS).

        Chat format with a prefix-space tokenizer: the answer text follows one space (the boundary
        space, whatever spaces the prompt ended with), `encode(" " + answer)`, which is `▁Thank` for
        `Thank`, as in Meta's format; a prompt ending in a line break is continued instead: the ids of
        the joined text that follow the prompt's ids.
        """
        if self.tokenization == "chat" and self.prefix_space:
            body = self._body(prompt)
            if not body[-1:].isspace():
                return _ids(self.tokenizer, " " + answer, False)
            context = _ids(self.tokenizer, body, False)
            joined = _ids(self.tokenizer, body + prompt[len(prompt.rstrip(" ")):] + answer, False)
            if joined[: len(context)] == context:
                return joined[len(context):]
        return _ids(self.tokenizer, answer, False)

    def decode_answer(self, prompt: str, prompt_ids: list[int], answer_ids: list[int]) -> str:
        """The answer text of `answer_ids` after `prompt` (its ids `prompt_ids`), special tokens kept.

        Decoded in context (decoding the answer alone would drop a SentencePiece token's leading space and
        split a character whose bytes straddle the boundary); with a prefix-space tokenizer the boundary
        space is left out, as `answer_ids` puts it back. `answer_ids(prompt, text)` gives `answer_ids` back
        whenever any text can (a model may generate ids its tokenizer would not produce, like `ĊĊ` where
        the text encodes to `Ċ Ċ`).
        """
        kw = dict(skip_special_tokens=False, clean_up_tokenization_spaces=False)
        full = self.tokenizer.decode(list(prompt_ids) + list(answer_ids), **kw)
        head = self.tokenizer.decode(list(prompt_ids), **kw)
        text = full[len(head):] if full.startswith(head) else self.tokenizer.decode(list(answer_ids), **kw)
        if self.tokenization == "chat" and self.prefix_space and not self._body(prompt)[-1:].isspace():
            text = text[1:] if text.startswith(" ") else text
        return text
