"""Records to token ids and loss masks. The chat template is applied here and nowhere else.

Which tokens are trained
    Every token of an assistant turn's text as the model's own chat template renders it
    after the turn's header: the content, the end-of-turn marker and whatever separator
    the template writes right after it (ChatML: `Hello!<|im_end|>\\n`). Not trained: the
    header (`<|im_start|>assistant\\n`), system and user turns, and any system prompt the
    template injects by itself (SmolLM2's does when the conversation has none). The
    separator is kept so that `prompt_ids + completion_ids` of `tokenize_completion` is
    exactly the tokenized conversation, with the same tokens trained by SFT and scored by DPO.

How they are found (any template, no `{% generation %}` markers needed)
    For assistant turn i the template renders `messages[:i]` with the generation prompt
    and `messages[:i + 1]` without it; the turn's text is the difference. Both renders
    must be prefixes of the whole conversation's render (true of ChatML, Llama 3, Gemma,
    ...; false of templates that rewrite earlier turns, e.g. ones dropping past reasoning),
    otherwise a ModelError names the template. The whole conversation is tokenized once
    and a token is trained when its character span overlaps a trained turn, so
    `input_ids` always equal `tokenizer.apply_chat_template(messages)`.

Plain text (`Text`) is tokenized with the tokenizer's own special tokens plus eos, and
every token but the first (nothing precedes it) is trained.

Models without a chat template (base models)
    Records given as plain strings (`plain=True`: prompt-completion, prompt, preference and
    ranking rows in TRL's standard format) are concatenated, as TRL does for non-conversational
    data: the prompt tokenized with the tokenizer's special tokens (bos where it adds one), the
    response tokenized alone plus eos, `prompt_ids + response_ids`; only the response is trained
    or scored, and a sampler continues `prompt_ids`. Conversational records (message lists) need a
    template: `--data.chat-template` names one (`use_chat_template`), else a DataError says so.
    A model that has a template renders plain records through it too, as it always did.

Examples longer than max_length (`truncation`)
    "error"    raise `TooLong` (a DataError); `tokenize_dataset` adds where the row is (file:LINE).
    "skip"     return None.
    "truncate" keep the first max_length tokens; None when no trained token is left.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from posttrain.data.load import BUILTIN_PREFIX, SHOWN_ERRORS, row_location, row_locations
from posttrain.data.records import Conversation, Messages, PromptCompletion, Text
from posttrain.errors import ConfigError, DataError, ModelError

if TYPE_CHECKING:
    from posttrain.config import DataConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

TRUNCATION = ("error", "skip", "truncate")

# ChatML (Qwen, SmolLM2-Instruct): the built-in template `--data.chat-template chatml` gives a model without one.
# A system turn is written only when given.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHAT_TEMPLATES = {"chatml": CHATML}


def use_chat_template(tokenizer, name_or_path: str | None) -> None:
    """Set `tokenizer.chat_template` to a built-in template (`CHAT_TEMPLATES`) or a Jinja file's text; None
    leaves the model's own. `save_pretrained` then saves it with the tokenizer."""
    if name_or_path is None:
        return
    if name_or_path in CHAT_TEMPLATES:
        tokenizer.chat_template = CHAT_TEMPLATES[name_or_path]
        return
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"data.chat_template={name_or_path!r}: no such file and not a built-in template "
                          f"({', '.join(CHAT_TEMPLATES)})")
    tokenizer.chat_template = path.read_text()


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


@dataclass(frozen=True)
class Example:
    """One training sequence: token ids and, per token, whether the loss predicts it."""

    input_ids: list[int]
    loss_mask: list[bool]
    truncated: bool = field(default=False, compare=False)
    """Cut to data.max_length by data.truncation=truncate (counted and reported by `tokenize_all`)."""

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.loss_mask):
            raise ValueError(f"input_ids ({len(self.input_ids)}) and loss_mask ({len(self.loss_mask)}) differ in length")

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_target_tokens(self) -> int:
        return sum(self.loss_mask)


class TooLong(DataError):
    """An example has more tokens than max_length (the caller adds where it comes from)."""

    def __init__(self, length: int, max_length: int):
        super().__init__(
            f"{length} tokens, more than data.max_length={max_length} "
            "(raise --data.max-length, or set --data.truncation to skip or truncate)"
        )
        self.length = length
        self.max_length = max_length


def _template_name(tokenizer) -> str:
    return f"the chat template of {tokenizer.name_or_path or type(tokenizer).__name__}"


def _render(tokenizer, messages: Messages, *, add_generation_prompt: bool) -> str:
    if not has_chat_template(tokenizer):
        raise DataError(
            f"model {tokenizer.name_or_path or type(tokenizer).__name__} has no chat template, so conversational "
            "records (message lists) cannot be tokenized; pass --data.chat-template chatml (or a Jinja file), "
            "or give prompt and completion as plain strings"
        )
    return tokenizer.apply_chat_template(
        [m.to_dict() for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
    )


def _check_prefix(prefix: str, whole: str, tokenizer, turn: int) -> None:
    if not whole.startswith(prefix):
        raise ModelError(
            f"{_template_name(tokenizer)} renders the conversation up to turn {turn} differently from the start "
            "of the whole conversation (it rewrites earlier turns), so assistant turns cannot be located; "
            "use a model whose template only appends, or set tokenizer.chat_template to one that does"
        )


def assistant_spans(messages: Messages, tokenizer, *, first_trained: int = 0) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns from `first_trained` on."""
    full = _render(tokenizer, messages, add_generation_prompt=False)
    spans = []
    for i, message in enumerate(messages):
        if message.role != "assistant" or i < first_trained:
            continue
        if i == 0:
            raise DataError("messages[0] is an assistant turn: a conversation must open with a system or user turn")
        before = _render(tokenizer, messages[:i], add_generation_prompt=True)
        if before == _render(tokenizer, messages[:i], add_generation_prompt=False):
            raise ModelError(
                f"{_template_name(tokenizer)} ignores add_generation_prompt, so an assistant turn's header cannot "
                "be told from its content; set tokenizer.chat_template to a chat template"
            )
        after = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        _check_prefix(before, after, tokenizer, i)
        _check_prefix(after, full, tokenizer, i)
        spans.append((len(before), len(after)))
    return full, spans


def _encode_with_spans(tokenizer, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[bool]]:
    """Tokenize `text` once; a token is trained when its characters overlap one of `spans`."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [any(start < end and stop > begin for begin, end in spans) for start, stop in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask


def _fit(input_ids: list[int], loss_mask: list[bool], max_length: int, truncation: str) -> Example | None:
    """Apply the truncation policy (see the module docstring)."""
    if truncation not in TRUNCATION:
        raise ValueError(f"truncation must be one of {TRUNCATION}, got {truncation!r}")
    if len(input_ids) <= max_length:
        return Example(input_ids, loss_mask)
    if truncation == "error":
        raise TooLong(len(input_ids), max_length)
    if truncation == "skip":
        return None
    example = Example(input_ids[:max_length], loss_mask[:max_length], truncated=True)
    return example if example.n_target_tokens else None


def _chat_example(messages: Messages, tokenizer, first_trained: int, max_length: int, truncation: str) -> Example | None:
    text, spans = assistant_spans(messages, tokenizer, first_trained=first_trained)
    if not spans:
        raise DataError("has no assistant turn to train on")
    return _fit(*_encode_with_spans(tokenizer, text, spans), max_length, truncation)


def tokenize_text(text: str, tokenizer, *, max_length: int, truncation: str = "error") -> Example | None:
    """Plain text plus eos, every token but the first trained."""
    input_ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if not input_ids or input_ids[-1] != tokenizer.eos_token_id:
        input_ids.append(tokenizer.eos_token_id)
    return _fit(input_ids, [False] + [True] * (len(input_ids) - 1), max_length, truncation)


def _concatenated(tokenizer, plain: bool) -> bool:
    """Whether a record is tokenized by concatenation: plain strings on a model without a chat template."""
    return plain and not has_chat_template(tokenizer)


def _plain_prompt_ids(prompt: Messages, tokenizer) -> list[int]:
    return list(tokenizer(prompt[0].content, add_special_tokens=True)["input_ids"])


def _plain_response_ids(response: Messages, tokenizer) -> list[int]:
    return list(tokenizer(response[0].content, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]


def tokenize_record(record, tokenizer, *, max_length: int, truncation: str = "error") -> Example | None:
    """An SFT example from a Conversation, a PromptCompletion (only the completion's assistant turns
    are trained; plain strings on a model without a template: the completion's tokens and eos) or a
    Text record."""
    if isinstance(record, Conversation):
        return _chat_example(record.messages, tokenizer, 0, max_length, truncation)
    if isinstance(record, PromptCompletion) and _concatenated(tokenizer, record.plain):
        prompt_ids, completion_ids = tokenize_completion(record.prompt, record.completion, tokenizer, plain=True)
        return _fit(prompt_ids + completion_ids, [False] * len(prompt_ids) + [True] * len(completion_ids),
                    max_length, truncation)
    if isinstance(record, PromptCompletion):
        return _chat_example(record.messages, tokenizer, len(record.prompt), max_length, truncation)
    if isinstance(record, Text):
        return tokenize_text(record.text, tokenizer, max_length=max_length, truncation=truncation)
    raise TypeError(f"cannot make a training example from a {type(record).__name__} record")


def tokenize_all(records: list, make: Callable[[Any, int], Iterable[T | None]], data: DataConfig, *, source: str,
                 unit: str) -> list[T]:
    """Every record through `make(record, row)`, which gives the record's tokenized items (`unit`s: examples,
    pairs, groups), None for each one data.truncation drops. An error names the row's place (file:LINE); rows
    too long for data.truncation=error are all counted and the first few named, as the loader does for bad rows.
    The dropped and the cut (`truncated`) items are counted and reported, and a source that keeps none is
    refused."""
    items: list[T] = []
    total = cut = 0
    dropped: list[int] = []  # the row of each dropped item
    too_long: list[tuple[int, TooLong]] = []
    for row, record in enumerate(records, start=1):
        try:
            made = list(make(record, row))
        except TooLong as e:
            too_long.append((row, e))
            continue
        except DataError as e:
            raise DataError(f"{row_location(source, row)}: {e}") from None
        total += len(made)
        for item in made:
            if item is None:
                dropped.append(row)
            else:
                items.append(item)
                cut += getattr(item, "truncated", False)  # only Example and PreferenceExample can be cut
    if too_long:
        raise DataError(_too_long_message(source, len(records), too_long))
    if cut:
        log.warning("%s: cut %d of %d %s to their first data.max_length=%d tokens (data.truncation=truncate)",
                    source, cut, total, unit, data.max_length)
    if dropped:
        why = ("with nothing left to train on once cut" if data.truncation == "truncate" else
               f"longer than data.max_length={data.max_length}")
        rows = sorted(set(dropped))
        places = ", ".join(row_locations(source, rows[:SHOWN_ERRORS])) + (", ..." if len(rows) > SHOWN_ERRORS else "")
        log.warning("%s: dropped %d of %d %s %s (data.truncation=%s): %s", source, len(dropped), total, unit, why,
                    data.truncation, places)
    if total and not items:
        raise DataError(f"{source}: every {unit.rstrip('s')} was dropped by data.truncation={data.truncation}; "
                        f"raise --data.max-length (now {data.max_length})")
    return items


def _too_long_message(source: str, n_rows: int, too_long: list[tuple[int, TooLong]]) -> str:
    """One row: `file:LINE: N tokens, more than ...`; several: their count, then the first few, each with its length."""
    if len(too_long) == 1:
        row, e = too_long[0]
        return f"{row_location(source, row)}: {e}"
    shown = too_long[:SHOWN_ERRORS]
    head = (f"{source}: {len(too_long)} of {n_rows} rows are longer than data.max_length={shown[0][1].max_length} "
            f"(raise --data.max-length, or set --data.truncation to skip or truncate); first {len(shown)}:")
    places = row_locations(source, [row for row, _ in shown])
    return "\n".join([head, *(f"  {where}: {e.length} tokens" for where, (_, e) in zip(places, shown))])


def tokenize_dataset(records: list, tokenizer, data: DataConfig, *, source: str) -> list[Example]:
    """Tokenize every SFT record under data.max_length / data.truncation (see `tokenize_all`)."""
    def make(record, row: int) -> list[Example | None]:
        return [tokenize_record(record, tokenizer, max_length=data.max_length, truncation=data.truncation)]

    return tokenize_all(records, make, data, source=source, unit="examples")


# What a sampling command (generate, eval, data pairs), which cannot set a template, tells a user whose prompts need one.
NO_TEMPLATE_FIX = ('give the prompt as a plain string ("prompt": "What is 2+3?"), or sample a model trained with '
                   "--data.chat-template chatml (its final/ keeps the template)")


def check_prompt_template(prompts: list, tokenizer, source: str, model: str, fix: str = NO_TEMPLATE_FIX) -> None:
    """A DataError naming the first row of `source` whose prompt is a message list when `model`'s tokenizer has no
    chat template to render it (a base model); `fix` says what to do in the command at hand."""
    if has_chat_template(tokenizer):
        return
    first = next((i for i, p in enumerate(prompts, start=1) if not getattr(p, "plain", True)), None)
    if first is not None:
        if source.startswith(BUILTIN_PREFIX) and fix == NO_TEMPLATE_FIX:  # its rows are not the user's to rewrite
            fix = ("a built-in task's prompts are chat turns: sample a model that has a chat template (an instruct "
                   "model such as smollm2, or one trained with --data.chat-template chatml, whose final/ keeps it)")
        raise DataError(f"{row_location(source, first)}: model {model} has no chat template, so this row's prompt, a "
                        f"message list, cannot be tokenized; {fix}")


def tokenize_prompt(prompt: Messages, tokenizer, *, plain: bool = False) -> list[int]:
    """The prompt rendered with the generation prompt (the assistant header): what a sampler continues.
    A plain prompt on a model without a chat template is its text's tokens."""
    if _concatenated(tokenizer, plain):
        return _plain_prompt_ids(prompt, tokenizer)
    return list(tokenizer(_render(tokenizer, prompt, add_generation_prompt=True), add_special_tokens=False)["input_ids"])


def tokenize_completion(prompt: Messages, completion: Messages, tokenizer, *, plain: bool = False
                        ) -> tuple[list[int], list[int]]:
    """(prompt_ids, completion_ids): the tokenized conversation prompt + completion, split where the
    prompt's render (with generation prompt) ends. A token straddling that point goes to the completion;
    with ChatML-style templates none does, and prompt_ids == tokenize_prompt(prompt). Plain strings on a
    model without a chat template: the two tokenized apart, eos after the completion (module docstring)."""
    if _concatenated(tokenizer, plain):
        return _plain_prompt_ids(prompt, tokenizer), _plain_response_ids(completion, tokenizer)
    before = _render(tokenizer, prompt, add_generation_prompt=True)
    full = _render(tokenizer, prompt + completion, add_generation_prompt=False)
    _check_prefix(before, full, tokenizer, len(prompt))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    split = sum(1 for _, stop in enc["offset_mapping"] if stop <= len(before))
    return ids[:split], ids[split:]


def reward_input_ids(prompt: Messages, response: Messages, tokenizer, *, plain: bool = False) -> list[int]:
    """The tokens a reward model reads for `response` to `prompt`, in training and in scoring alike:
    the conversation through the chat template, as `tokenize_completion` splits it (plain: concatenated)."""
    prompt_ids, completion_ids = tokenize_completion(prompt, response, tokenizer, plain=plain)
    return prompt_ids + completion_ids
