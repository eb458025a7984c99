"""Prompt sources for training and evaluation: the bundled set, HelpSteer2, HH-RLHF and local files.

Every source goes through one filter that drops unusable rows and counts why, so a data set that
quietly shrank shows up in the log line rather than later in the results. `read_jsonl` is the package's one
JSONL reader: prompt files, judge input, run files and the judge's own sets all go through it.

The bundled set (prompts/bundled.jsonl) holds 188 training and 96 held-out ("eval") prompts over ten task categories.
New prompts are only appended, so the first prompts of each split, which earlier runs validated and evaluated on,
stay the same: the eval split's first 48 are the original ones, the 48 after them were added in issue 24.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple

SOURCES = ("bundled", "helpsteer2", "hh_rlhf", "file")
SPLITS = ("train", "eval")
BUNDLED_PATH = Path(__file__).with_name("prompts") / "bundled.jsonl"
HELPSTEER2 = "nvidia/HelpSteer2"
HH_RLHF = "Anthropic/hh-rlhf"
HUMAN = "\n\nHuman: "
ASSISTANT = "\n\nAssistant:"
PLAIN_TEMPLATE = "User: {prompt}\nAssistant:"
# English text averages about four characters per token; without a tokenizer this is the estimate used.
CHARS_PER_TOKEN = 4


class DataError(ValueError):
    """A prompt source that cannot be read or leaves no usable prompts; the message names the source."""


@dataclass
class PromptSet:
    prompts: list[str]
    source: str
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())


@dataclass(frozen=True)
class _Skip:
    """A row that produced no prompt value at all; `reason` becomes a key of PromptSet.skipped."""

    reason: str


def load_prompts(source: str, split: str = "train", path: str | None = None, tokenizer: Any = None,
                 max_prompt_tokens: int | None = None, limit: int | None = None, seed: int = 0,
                 shuffle: bool = False) -> PromptSet:
    """The usable prompts of one source and split, with counts of the rows dropped and why.

    `path` is required for source="file" (the file is the split) and, for "hh_rlhf" and "helpsteer2", replaces
    the hub with a local copy of the split (.jsonl, .jsonl.gz, .json or .parquet, in the hub's columns).
    `max_prompt_tokens` is counted with `tokenizer` when given, else as max_prompt_tokens × 4 characters:
    a rough estimate, not a bound. Shuffling (seeded) happens before `limit`, so a limit takes a sample.
    Skip reasons: empty, not_string, too_long, duplicate, malformed_json, missing_field, malformed_dialogue.
    """
    if split not in SPLITS:
        raise DataError(f"prompt split must be one of {', '.join(SPLITS)}, got {split!r}")
    label, values = _open_source(source, split, path)
    pset = _collect(values, label, _too_long_check(tokenizer, max_prompt_tokens))
    if not pset.prompts:
        raise DataError(f"{label}: no usable prompts (skipped: {pset.skipped or 'nothing, the source is empty'})")
    if shuffle:
        random.Random(seed).shuffle(pset.prompts)
    if limit is not None:
        pset.prompts = pset.prompts[:limit]
    return pset


def first_human_turn(text: str) -> str | None:
    """The first human message of an HH-RLHF dialogue, stripped; None when the text is not in that format."""
    start = text.find(HUMAN)
    if start < 0:
        return None
    start += len(HUMAN)
    end = text.find(ASSISTANT, start)
    if end < 0:
        return None
    return text[start:end].strip()


TURN = "<extra_id_1>"  # HelpSteer2 joins a conversation's turns with it: "q1<extra_id_1>Assistant\na1<extra_id_1>User\nq2"


def chat_turns(prompt: str) -> list[dict[str, str]]:
    """A prompt as chat messages: HelpSteer2's multi-turn prompts become alternating user/assistant turns (each
    turn after the first names its role on its first line); any other prompt is one user message."""
    parts = prompt.split(TURN)
    messages = [{"role": "user", "content": parts[0].strip()}]
    for part in parts[1:]:
        role, _, text = part.partition("\n")
        if role.strip().lower() not in ("user", "assistant"):
            raise DataError(f"a multi-turn prompt's turn starts with {role.strip()[:40]!r}, not User or Assistant")
        messages.append({"role": role.strip().lower(), "content": text.strip()})
    return messages


def format_prompt(tokenizer: Any, prompt: str) -> str:
    """The text the policy continues: the tokenizer's chat template when it has one, else "User: …\\nAssistant:"
    (each turn on its own "User:"/"Assistant:" line for a multi-turn prompt)."""
    messages = chat_turns(prompt)
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        if len(messages) == 1:
            return PLAIN_TEMPLATE.format(prompt=prompt)
        return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages) + "\nAssistant:"
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _open_source(source: str, split: str, path: str | None) -> tuple[str, Iterable[Any]]:
    """A label for messages and the raw prompt values (or _Skip markers) of one source."""
    if source == "bundled":
        rows = (r for r in _records(BUNDLED_PATH) if isinstance(r, _Skip) or r.get("split") == split)
        return f"bundled prompts ({BUNDLED_PATH}, {split})", _column(rows, "prompt")
    if source == "helpsteer2":
        if path:  # a local copy of one split (train.jsonl.gz / validation.jsonl.gz from the hub, or parquet)
            return f"helpsteer2 ({path})", _column(_records(Path(path)), "prompt")
        hub_split = "train" if split == "train" else "validation"
        return f"helpsteer2 ({HELPSTEER2}, {hub_split})", _hub_column(HELPSTEER2, hub_split, "prompt")
    if source == "hh_rlhf":
        if path:
            return f"hh_rlhf ({path})", _human_turns(_column(_records(Path(path)), "chosen"))
        hub_split = "train" if split == "train" else "test"
        return f"hh_rlhf ({HH_RLHF}, {hub_split})", _human_turns(_hub_column(HH_RLHF, hub_split, "chosen"))
    if source == "file":
        if not path:
            raise DataError("prompt source 'file' needs a path (data.path) to a .jsonl, .json or .parquet file")
        return str(path), _column(_records(Path(path)), "prompt")
    raise DataError(f"unknown prompt source {source!r}; expected one of {', '.join(SOURCES)}")


def _records(path: Path) -> Iterator[dict | _Skip]:
    """The rows of a .jsonl, .json (a list of objects) or .parquet file; checks the file before iterating."""
    if not path.is_file():
        raise DataError(f"prompt file not found: {path}")
    readers = {".jsonl": _jsonl_records, ".jsonl.gz": _jsonl_records, ".json": _json_records,
               ".parquet": _parquet_records}
    suffix = "".join(path.suffixes[-2:]).lower() if path.name.lower().endswith(".jsonl.gz") else path.suffix.lower()
    reader = readers.get(suffix)
    if reader is None:
        raise DataError(f"{path}: unsupported prompt file type {path.suffix!r} (use .jsonl, .jsonl.gz, .json or "
                        f".parquet)")
    return reader(path)


def _decode(path: Path) -> str:
    """The file as UTF-8 text; a bad byte is reported with its line, since that is where a person looks."""
    data = path.read_bytes()
    if path.suffix.lower() == ".gz":
        import gzip

        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: not a readable gzip file ({e})") from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}: line {line} is not valid UTF-8 ({e.reason} at byte {e.start})") from e


class JsonlLine(NamedTuple):
    number: int  # from 1
    text: str
    row: dict[str, Any] | None  # None: the line is not a JSON object


def read_jsonl(path: Path, strict: bool = False) -> Iterator[JsonlLine]:
    """Each non-blank line of a .jsonl or .jsonl.gz file. A line that is not a JSON object (a typo, a torn last
    line of a file still being written) has row None, or with `strict` is a DataError naming the line."""
    # split on "\n" only: str.splitlines would also break at U+2028, which JSON strings may hold unescaped
    for number, text in enumerate(_decode(path).split("\n"), 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            row, problem = None, f"is not JSON ({e.msg})"
        else:
            problem = "" if isinstance(row, dict) else "is not a JSON object"
        if problem:
            if strict:
                raise DataError(f"{path}: line {number} {problem}")
            row = None
        yield JsonlLine(number, text, row)


def _jsonl_records(path: Path) -> Iterator[dict | _Skip]:
    for line in read_jsonl(path):
        yield _Skip("malformed_json") if line.row is None else line.row


def _json_records(path: Path) -> Iterator[dict | _Skip]:
    try:
        rows = json.loads(_decode(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of objects, got {type(rows).__name__}")
    for row in rows:
        yield row if isinstance(row, dict) else _Skip("malformed_json")


def _parquet_records(path: Path) -> Iterator[dict | _Skip]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: cannot read as parquet ({e})") from e
    yield from table.to_pylist()


def _column(rows: Iterable[dict | _Skip], name: str) -> Iterator[Any]:
    """Each row's `name` field; a missing or null field becomes a missing_field skip."""
    for row in rows:
        if isinstance(row, _Skip):
            yield row
        elif row.get(name) is None:
            yield _Skip("missing_field")
        else:
            yield row[name]


def _human_turns(values: Iterable[Any]) -> Iterator[Any]:
    """HH-RLHF dialogues to their first human turn; non-strings pass through to be counted by _collect."""
    for value in values:
        if not isinstance(value, str):
            yield value
            continue
        turn = first_human_turn(value)
        yield _Skip("malformed_dialogue") if turn is None else turn


def _hub_column(repo: str, split: str, column: str) -> list[Any]:
    """One column of a Hugging Face hub data set; any load failure becomes a DataError with a way out."""
    import datasets

    try:
        ds = datasets.load_dataset(repo, split=split)
    except Exception as e:  # offline, DNS, auth, missing cache: the user's remedy is the same for all of them
        raise DataError(f"could not load {repo} ({split}) from the Hugging Face hub, which may be unreachable "
                        f"({type(e).__name__}: {e}); use data.source=bundled, or data.source=file with "
                        f"data.path pointing at a local copy") from e
    if column not in ds.column_names:
        raise DataError(f"{repo} ({split}) has no {column!r} column (columns: {', '.join(ds.column_names)})")
    return ds[column]


def _too_long_check(tokenizer: Any, max_tokens: int | None) -> Callable[[str], bool]:
    if max_tokens is None:
        return lambda text: False
    if tokenizer is None:
        return lambda text: len(text) > max_tokens * CHARS_PER_TOKEN
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False)) > max_tokens


def _collect(values: Iterable[Any], source: str, too_long: Callable[[str], bool]) -> PromptSet:
    """Stripped, de-duplicated prompts in source order, with a count for every value dropped."""
    prompts: list[str] = []
    seen: set[str] = set()
    skipped: Counter[str] = Counter()
    for value in values:
        reason = _skip_reason(value, seen, too_long)
        if reason is not None:
            skipped[reason] += 1
            continue
        text = value.strip()
        seen.add(text)
        prompts.append(text)
    return PromptSet(prompts, source, dict(skipped))


def _skip_reason(value: Any, seen: set[str], too_long: Callable[[str], bool]) -> str | None:
    if isinstance(value, _Skip):
        return value.reason
    if not isinstance(value, str):
        return "not_string"
    text = value.strip()
    if not text:
        return "empty"
    if text in seen:
        return "duplicate"
    if too_long(text):
        return "too_long"
    return None
