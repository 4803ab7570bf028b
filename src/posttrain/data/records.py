"""The canonical records every part of posttrain speaks.

A record is a small frozen dataclass that knows how to build itself from a raw
dict (`from_dict`, accepting TRL's standard field names as they are) and how to
check itself (`from_dict` raises `RecordError` naming the field and what was
expected). The loader adds `file:line` to those errors; nothing else in the code
base parses raw rows.

Kinds (TRL names in brackets):
- `Text`            plain text                      [language modeling: "text"]
- `Conversation`    a chat, assistant turns trained [conversational: "messages"]
- `PromptCompletion` a prompt and its completion    [prompt-completion]
- `Prompt`          a prompt plus reference fields  [prompt-only; extra keys such as "answer"]
- `PreferencePair`  prompt, chosen, rejected        [preference, explicit or implicit prompt]
- `Ranking`         prompt, K responses, best-first order
- `Rating`          prompt, one completion, scores on named scales (human rubric ratings; posttrain's own)

Prompts and completions are always stored as message lists, so a plain-string
prompt becomes `[{"role": "user", "content": ...}]` and a plain-string
completion becomes one assistant message. A record made from plain strings
remembers it (`plain=True`, TRL's "standard" rather than "conversational"
format): on a model without a chat template it is tokenized by concatenation
(data/tokenize.py), where a conversational one needs a template. `plain` does
not take part in equality: the two forms hold the same content.

Which kind a row is (`parse_record`): for a command that accepts several kinds,
the first of them, in `PRIORITY` order, whose required keys the row has; so a
row with prompt, chosen, rejected AND messages (UltraFeedback-binarized) is a
preference pair to `dpo` and a conversation to `sft`. Only when none fits are
the kinds detected from the keys (`detect_kind`), which names what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

ROLES = ("system", "user", "assistant", "tool")


class RecordError(ValueError):
    """A raw row does not form a valid record. `field` names the offending key."""

    def __init__(self, field: str, message: str):
        super().__init__(f'field "{field}": {message}')
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


Messages = tuple[Message, ...]


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages about a row: null, boolean, number, string, list, object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _messages(value: Any, field_name: str, *, default_role: str | None = None) -> Messages:
    """Parse a message list (or, when `default_role` is given, a plain string)."""
    if isinstance(value, str):
        if default_role is None:
            raise RecordError(field_name, "expected a list of messages, got a string")
        if not value.strip():
            raise RecordError(field_name, "is empty")
        return (Message(default_role, value),)
    if not isinstance(value, list):
        expected = "a string or a list of messages" if default_role else "a list of messages"
        raise RecordError(field_name, f"expected {expected}, got {json_type(value)}")
    if not value:
        raise RecordError(field_name, "is an empty list (at least one message is needed)")
    out = []
    for i, m in enumerate(value):
        where = f"{field_name}[{i}]"
        if not isinstance(m, dict):
            raise RecordError(where, f"expected a message object with role and content, got {json_type(m)}")
        if "role" not in m:
            raise RecordError(f"{where}.role", "is missing")
        if "content" not in m:
            raise RecordError(f"{where}.content", "is missing")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise RecordError(f"{where}.role", f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
        if m.get("tool_calls"):  # dropped, it would train the turn without its call (an empty answer, often)
            raise RecordError(f"{where}.tool_calls", "tool calls are not trained yet: posttrain keeps a message's "
                              "content only, so the call would be dropped; leave such rows out, or write the call "
                              "into the content as the model should write it")
        if not isinstance(content, str):
            raise RecordError(f"{where}.content", f"expected a string, got {json_type(content)}")
        out.append(Message(role, content))
    return tuple(out)


def _string(d: dict, key: str) -> str:
    if key not in d:
        raise RecordError(key, "is missing")
    v = d[key]
    if not isinstance(v, str):
        raise RecordError(key, f"expected a string, got {json_type(v)}")
    if not v.strip():
        raise RecordError(key, "is empty")
    return v


def _require(d: dict, key: str, needs: str) -> Any:
    if key not in d:
        raise RecordError(key, f"is missing ({needs})")
    return d[key]


def _plain(d: dict, *keys: str) -> bool:
    """Whether the row gives every one of `keys` as a plain string (TRL's standard, non-conversational format)."""
    return all(isinstance(d.get(k), str) for k in keys)


def _text_of(messages: Messages) -> str:
    return "\n".join(m.content for m in messages)


@dataclass(frozen=True)
class Text:
    text: str

    @classmethod
    def from_dict(cls, d: dict) -> "Text":
        return cls(_string(d, "text"))


@dataclass(frozen=True)
class Conversation:
    messages: Messages

    @classmethod
    def from_dict(cls, d: dict) -> "Conversation":
        msgs = _messages(_require(d, "messages", "conversation records need a list of messages"), "messages")
        if not any(m.role == "assistant" for m in msgs):
            raise RecordError("messages", "has no assistant turn (there is nothing to train on)")
        # a conversation's assistant turns are trained: an empty one teaches an empty answer (a scored completion
        # may be empty, as a model's output can be; a demonstration may not)
        empty = next((i for i, m in enumerate(msgs) if m.role == "assistant" and not m.content.strip()), None)
        if empty is not None:
            raise RecordError(f"messages[{empty}].content", "is an empty assistant turn (trained, it teaches an "
                              "empty answer); drop the turn or the row")
        return cls(msgs)


@dataclass(frozen=True)
class PromptCompletion:
    prompt: Messages
    completion: Messages
    plain: bool = field(default=False, compare=False)  # prompt and completion were strings

    @classmethod
    def from_dict(cls, d: dict) -> "PromptCompletion":
        needs = "prompt-completion records need prompt and completion"
        prompt = _messages(_require(d, "prompt", needs), "prompt", default_role="user")
        completion = _messages(_require(d, "completion", needs), "completion", default_role="assistant")
        return cls(prompt, completion, _plain(d, "prompt", "completion"))

    @property
    def messages(self) -> Messages:
        return self.prompt + self.completion


@dataclass(frozen=True)
class Prompt:
    """A prompt with optional reference fields (e.g. `answer`) used by verifiers."""

    prompt: Messages
    reference: dict[str, Any] = field(default_factory=dict)
    plain: bool = field(default=False, compare=False)  # the prompt was a string

    @classmethod
    def from_dict(cls, d: dict) -> "Prompt":
        prompt = _messages(_require(d, "prompt", "prompt records need a prompt"), "prompt", default_role="user")
        return cls(prompt, {k: v for k, v in d.items() if k != "prompt"}, _plain(d, "prompt"))

    @property
    def text(self) -> str:
        """The last user message: what a verifier or a rater reads as the question."""
        users = [m.content for m in self.prompt if m.role == "user"]
        return users[-1] if users else _text_of(self.prompt)


def _split_common_prefix(chosen: Messages, rejected: Messages) -> tuple[Messages, Messages, Messages]:
    """Implicit-prompt preference rows hold two whole conversations; the prompt is their shared prefix."""
    n = 0
    while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
        n += 1
    return chosen[:n], chosen[n:], rejected[n:]


def _strip_repeated_prompt(prompt: Messages, chosen: Messages, rejected: Messages) -> tuple[Messages, Messages]:
    """Rows with an explicit prompt whose chosen and rejected are whole conversations that repeat it
    (UltraFeedback-binarized): the shared leading turns equal to the prompt are the prompt, not the responses."""
    n = len(prompt)
    repeats = [side[:n] == prompt and len(side) > n for side in (chosen, rejected)]
    if all(repeats):
        return chosen[n:], rejected[n:]
    if any(repeats):
        which, other = ("chosen", "rejected") if repeats[0] else ("rejected", "chosen")
        raise RecordError(other, f"does not repeat the prompt's turns but {which} does; "
                                 "give both responses with the prompt's turns or both without")
    return chosen, rejected


@dataclass(frozen=True)
class PreferencePair:
    prompt: Messages
    chosen: Messages
    rejected: Messages
    margin: float | None = None
    plain: bool = field(default=False, compare=False)  # prompt, chosen and rejected were strings

    @classmethod
    def from_dict(cls, d: dict) -> "PreferencePair":
        needs = "preference records need prompt, chosen, rejected (or chosen and rejected as whole conversations)"
        raw_c, raw_r = _require(d, "chosen", needs), _require(d, "rejected", needs)
        if "prompt" in d:
            prompt = _messages(d["prompt"], "prompt", default_role="user")
            chosen = _messages(raw_c, "chosen", default_role="assistant")
            rejected = _messages(raw_r, "rejected", default_role="assistant")
            chosen, rejected = _strip_repeated_prompt(prompt, chosen, rejected)
        else:
            full_c = _messages(raw_c, "chosen")
            full_r = _messages(raw_r, "rejected")
            prompt, chosen, rejected = _split_common_prefix(full_c, full_r)
            if not prompt:
                raise RecordError("prompt", f"is missing and chosen/rejected share no leading turns ({needs})")
        if chosen == rejected:
            raise RecordError("rejected", "is identical to chosen (a preference needs two different responses)")
        margin = d.get("margin")
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))):
            raise RecordError("margin", f"expected a number, got {json_type(margin)}")
        return cls(prompt, chosen, rejected, None if margin is None else float(margin),
                   _plain(d, "prompt", "chosen", "rejected"))


@dataclass(frozen=True)
class Ranking:
    """K responses to one prompt; `order` lists response indices best first."""

    prompt: Messages
    responses: tuple[Messages, ...]
    order: tuple[int, ...]
    plain: bool = field(default=False, compare=False)  # the prompt and every response were strings

    @classmethod
    def from_dict(cls, d: dict) -> "Ranking":
        needs = "ranking records need prompt, responses and order (indices of responses, best first)"
        prompt = _messages(_require(d, "prompt", needs), "prompt", default_role="user")
        raw = _require(d, "responses", needs)
        if not isinstance(raw, list) or len(raw) < 2:
            raise RecordError("responses", "expected a list of at least 2 responses")
        responses = tuple(
            _messages(r, f"responses[{i}]", default_role="assistant") for i, r in enumerate(raw)
        )
        order = _require(d, "order", needs)
        if not isinstance(order, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in order):
            raise RecordError("order", "expected a list of integer response indices, best first")
        k = len(responses)
        if sorted(order) != list(range(k)):
            dupes = sorted({i for i in order if order.count(i) > 1})
            missing = sorted(set(range(k)) - set(order))
            bad = [i for i in order if not 0 <= i < k]
            parts = []
            if dupes:
                parts.append(f"response indices given twice {dupes}")
            if missing:
                parts.append(f"response indices missing {missing}")
            if bad:
                parts.append(f"out-of-range response indices {bad}")
            raise RecordError("order", f"must be a permutation of 0..{k - 1}: " + "; ".join(parts))
        if len(set(responses)) != k:
            raise RecordError("responses", "contains identical responses (each must differ to be ranked)")
        return cls(prompt, responses, tuple(order), _plain(d, "prompt") and all(isinstance(r, str) for r in raw))

    def pairs(self) -> list[PreferencePair]:
        """All C(K,2) (better, worse) pairs (InstructGPT, arXiv:2203.02155 §3.5)."""
        ranked = [self.responses[i] for i in self.order]
        return [
            PreferencePair(self.prompt, ranked[i], ranked[j], plain=self.plain)
            for i in range(len(ranked))
            for j in range(i + 1, len(ranked))
        ]


@dataclass(frozen=True)
class Rating:
    """One response scored on named scales: `{"prompt", "completion", "scores": {"helpful": 4},
    "scales": {"helpful": [1, 5]}}`. TRL has no format for multi-scale ratings (its unpaired format, KTO's,
    has one boolean `label`); this one keeps TRL's prompt/completion names so that any prompt-completion
    consumer can read the row too. `scales` (optional) gives each scale's [min, max]; when given, every score
    must have a scale and lie in it."""

    prompt: Messages
    completion: Messages
    scores: tuple[tuple[str, float], ...]  # (scale, value), in the order given
    scales: tuple[tuple[str, float, float], ...] = ()  # (scale, min, max)
    plain: bool = field(default=False, compare=False)  # the prompt and the completion were strings

    @classmethod
    def from_dict(cls, d: dict) -> "Rating":
        needs = "rating records need prompt, completion and scores ({scale: number})"
        prompt = _messages(_require(d, "prompt", needs), "prompt", default_role="user")
        completion = _messages(_require(d, "completion", needs), "completion", default_role="assistant")
        raw = _require(d, "scores", needs)
        if not isinstance(raw, dict) or not raw:
            raise RecordError("scores", "expected a non-empty object of scale: number, e.g. {\"helpful\": 4}")
        for name, v in raw.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise RecordError(f"scores.{name}", f"expected a number, got {json_type(v)}")
        bounds = d.get("scales") or {}
        if not isinstance(bounds, dict):
            raise RecordError("scales", "expected an object of scale: [min, max]")
        for name, b in bounds.items():
            if not (isinstance(b, list) and len(b) == 2 and all(isinstance(x, (int, float)) and
                                                                not isinstance(x, bool) for x in b) and b[0] < b[1]):
                raise RecordError(f"scales.{name}", f"expected [min, max] with min < max, got {b!r}")
        if bounds:
            for name, v in raw.items():
                if name not in bounds:
                    raise RecordError(f"scores.{name}", f"has no scale in scales ({', '.join(bounds)})")
                lo, hi = bounds[name]
                if not lo <= v <= hi:
                    raise RecordError(f"scores.{name}", f"{v} is outside its scale {lo}..{hi}")
        return cls(prompt, completion, tuple((k, float(v)) for k, v in raw.items()),
                   tuple((k, float(b[0]), float(b[1])) for k, b in bounds.items()),
                   _plain(d, "prompt", "completion"))


Record = Union[Text, Conversation, PromptCompletion, Prompt, PreferencePair, Ranking, Rating]

# Which record kinds each consumer accepts, in the order a row's keys are tried.
KINDS: dict[str, type] = {
    "text": Text,
    "conversation": Conversation,
    "prompt-completion": PromptCompletion,
    "prompt": Prompt,
    "preference": PreferencePair,
    "ranking": Ranking,
    "rating": Rating,
}


# The commands that train on or read each kind, named when a row of it reaches another command.
READ_BY = {"text": "sft", "conversation": "sft", "prompt-completion": "sft", "prompt": "generate, eval and RL",
           "preference": "dpo and rm", "ranking": "rm and dpo"}


# The keys each kind cannot do without, in the order a row that fits several kinds is read as one.
PRIORITY: dict[type, tuple[str, ...]] = {
    Conversation: ("messages",),
    PreferencePair: ("chosen", "rejected"),
    Ranking: ("prompt", "responses", "order"),
    Rating: ("prompt", "completion", "scores"),
    PromptCompletion: ("prompt", "completion"),
    Prompt: ("prompt",),
    Text: ("text",),
}


def detect_kind(d: dict) -> type:
    """Pick the record class a raw row is meant to be, from its keys (TRL's conventions)."""
    if "messages" in d:
        return Conversation
    if "chosen" in d or "rejected" in d:
        return PreferencePair
    if "responses" in d or "order" in d:
        return Ranking
    if "scores" in d:
        return Rating
    if "completion" in d:
        return PromptCompletion
    if "prompt" in d:
        return Prompt
    if "text" in d:
        return Text
    raise RecordError(
        "(row)",
        f"keys {sorted(d)} match no record kind (expected one of: messages | prompt+completion | "
        "text | prompt[+answer] | prompt+chosen+rejected | prompt+responses+order | prompt+completion+scores)",
    )


def _conversation_as_prompt(d: dict, msgs: Messages) -> Prompt:
    """A `messages` row read by a prompt reader (generate, eval, RL): the conversation so far is the prompt when it
    ends in a turn to answer; one ending in an assistant turn is refused (which turn would be answered?)."""
    if msgs and msgs[-1].role == "assistant":
        raise RecordError("messages", "ends with an assistant turn, and this command reads prompts: give the "
                          'conversation up to the turn to answer, as "messages" or "prompt"')
    return Prompt(msgs, {k: v for k, v in d.items() if k != "messages"})


def parse_record(d: Any, accept: tuple[type, ...] | None = None) -> Record:
    """Build the record a raw row describes; `accept` limits the kinds a consumer can use.

    A row that could be several kinds is read as the consumer's: the first accepted kind, in `PRIORITY`
    order, whose required keys it has (a prompt-only consumer, evaluation or RL, so reads any prompt row,
    the other fields becoming its reference, and a `messages` row ending in a user turn as that prompt).
    Else the kind is detected from the keys, and a kind the consumer does not accept is refused."""
    if not isinstance(d, dict):
        raise RecordError("(row)", f"expected a JSON object, got {json_type(d)}")
    from posttrain.data.shapes import as_record_row  # here: shapes.py raises this module's RecordError

    d = as_record_row(d)  # ShareGPT, Alpaca, Anthropic HH rows in the project's fields
    if accept is not None and Prompt in accept and "messages" in d and "prompt" not in d:
        msgs = _messages(d["messages"], "messages")
        # a reader of conversations too (generate) takes one without an assistant turn as a prompt to answer
        if Conversation not in accept or not any(m.role == "assistant" for m in msgs):
            return _conversation_as_prompt(d, msgs)
    fits = [k for k, keys in PRIORITY.items() if accept is not None and k in accept and all(x in d for x in keys)]
    kind = fits[0] if fits else detect_kind(d)
    if accept is not None and kind is Prompt and PromptCompletion in accept and Prompt not in accept:
        return PromptCompletion.from_dict(d)  # a prompt without its completion: say which field is missing
    if accept is not None and kind not in accept:
        names = ", ".join(k for k, v in KINDS.items() if v in accept)
        got = next(k for k, v in KINDS.items() if v is kind)
        readers = f" (read by {READ_BY[got]})" if got in READ_BY else ""
        raise RecordError("(row)", f"is a {got} record{readers}, but this command needs: {names}")
    return kind.from_dict(d)


def to_dict(record: Record) -> dict[str, Any]:
    """The JSON form of a record, in TRL's field names (the inverse of `parse_record`); a plain record's
    prompt and responses are written back as strings."""
    def msgs(m: Messages) -> list[dict[str, str]] | str:
        if getattr(record, "plain", False):
            return m[0].content
        return [x.to_dict() for x in m]

    if isinstance(record, Text):
        return {"text": record.text}
    if isinstance(record, Conversation):
        return {"messages": msgs(record.messages)}
    if isinstance(record, PromptCompletion):
        return {"prompt": msgs(record.prompt), "completion": msgs(record.completion)}
    if isinstance(record, Prompt):
        return {"prompt": msgs(record.prompt), **record.reference}
    if isinstance(record, PreferencePair):
        d = {"prompt": msgs(record.prompt), "chosen": msgs(record.chosen), "rejected": msgs(record.rejected)}
        if record.margin is not None:
            d["margin"] = record.margin
        return d
    if isinstance(record, Ranking):
        return {"prompt": msgs(record.prompt), "responses": [msgs(r) for r in record.responses], "order": list(record.order)}
    if isinstance(record, Rating):
        def number(x: float) -> int | float:
            return int(x) if float(x).is_integer() else x

        d = {"prompt": msgs(record.prompt), "completion": msgs(record.completion),
             "scores": {k: number(v) for k, v in record.scores}}
        if record.scales:
            d["scales"] = {k: [number(lo), number(hi)] for k, lo, hi in record.scales}
        return d
    raise TypeError(f"not a record: {record!r}")
