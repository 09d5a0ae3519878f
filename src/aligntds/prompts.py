"""Turning prompt and answer text into token ids, as the reference did, minus its double BOS.

- A prompt that already starts with the tokenizer's BOS string (Llama-2 chat prompts start with
  `<s>[INST]`) is encoded as is; any other prompt gets the special tokens the tokenizer puts in
  front of a text (BOS for Llama and Mistral, none for Qwen). A special token the tokenizer would
  put *after* a text (an EOS, for tokenizers configured so) is never added to a prompt: it would
  tell the model the text has ended.
- An answer is encoded with no special tokens added; a literal `</s>` in it is the EOS token.
"""

from __future__ import annotations


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def leading_specials(tokenizer) -> list[int]:
    """The ids the tokenizer puts in front of any text when asked for special tokens (e.g. [BOS])."""
    probe = "a"
    with_specials, plain = _ids(tokenizer, probe, True), _ids(tokenizer, probe, False)
    for start in range(len(with_specials) - len(plain) + 1):
        if with_specials[start : start + len(plain)] == plain:
            return with_specials[:start]
    return []


def encode_prompt(tokenizer, text: str, leading: list[int] | None = None) -> list[int]:
    """Prompt ids with exactly one BOS where the model expects one (see the module docstring)."""
    bos = tokenizer.bos_token
    if bos and text.startswith(bos):
        return _ids(tokenizer, text, False)
    if leading is None:
        leading = leading_specials(tokenizer)
    return leading + _ids(tokenizer, text, False)


def encode_answer(tokenizer, text: str) -> list[int]:
    """Answer ids with no special tokens added (a literal EOS string stays the EOS token)."""
    return _ids(tokenizer, text, False)
