import hashlib
import json
from collections import Counter

import pytest

from xrlhf import data
from xrlhf.data import DataError, PromptSet, first_human_turn, format_prompt, load_prompts


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _tokenizer(chat: bool):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    words = "<unk> <eos> user assistant one two three four five six".split()
    core = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="<eos>")
    if chat:
        tok.chat_template = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<eos>{% endfor %}"
                             "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    return tok


def test_bundled_set_is_large_split_and_varied():
    rows = [json.loads(line) for line in data.BUNDLED_PATH.read_text(encoding="utf-8").splitlines()]
    train = load_prompts("bundled", "train").prompts
    held_out = load_prompts("bundled", "eval").prompts
    assert len(set(train)) == len(train) and len(set(held_out)) == len(held_out)
    assert len(train) + len(held_out) >= 200
    assert len(held_out) >= 90
    assert not set(train) & set(held_out)
    assert len(train) + len(held_out) == len(rows)
    categories = Counter(r["category"] for r in rows)
    assert len(categories) >= 8
    assert len({r["id"] for r in rows}) == len(rows)
    for category in categories:
        evals = sum(r["category"] == category and r["split"] == "eval" for r in rows)
        assert 0.25 <= evals / categories[category] <= 0.4, category  # about a third held out since issue 24


# Runs before issue 24 validated and evaluated on the first prompts of what was then a 48-prompt eval split; held-out
# prompts are only ever appended, so those runs stay reproducible. This is the digest of those 48 prompts, in order.
FIRST_48_EVAL_SHA256 = "96007c32c6ba41d4ae4b3adf4e60d0bae0ea641b34092a1a89526179b5928910"


def test_bundled_eval_split_grows_only_at_the_end():
    rows = [json.loads(line) for line in data.BUNDLED_PATH.read_text(encoding="utf-8").splitlines()]
    held_out = load_prompts("bundled", "eval").prompts
    assert len(held_out) == 96
    assert hashlib.sha256("\n".join(held_out[:48]).encode("utf-8")).hexdigest() == FIRST_48_EVAL_SHA256
    added = rows[-48:]  # issue 24's prompts: the file's last lines, all held out, spread over every category
    assert [r["prompt"] for r in added] == held_out[48:]
    assert Counter(r["category"] for r in added) == {c: 4 if c in ("creative", "extraction") else 5
                                                     for c in {r["category"] for r in rows}}


def test_bundled_shuffle_and_limit_are_seeded():
    first = load_prompts("bundled", "eval", shuffle=True, seed=3, limit=10).prompts
    again = load_prompts("bundled", "eval", shuffle=True, seed=3, limit=10).prompts
    other = load_prompts("bundled", "eval", shuffle=True, seed=4, limit=10).prompts
    assert first == again and len(first) == 10
    assert first != other


def test_jsonl_skips_bad_rows_and_counts_each_reason(tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "What is a prime number?"},
        "{not json",
        {"text": "no prompt field"},
        {"prompt": "   "},
        {"prompt": 42},
        {"prompt": "What is a prime number?"},
        {"prompt": "x" * 41},
        "",
        {"prompt": "  Name three rivers.  "},
    ])
    pset = load_prompts("file", path=str(path), max_prompt_tokens=10)
    assert isinstance(pset, PromptSet)
    assert pset.prompts == ["What is a prime number?", "Name three rivers."]
    assert pset.skipped == {"malformed_json": 1, "missing_field": 1, "empty": 1, "not_string": 1,
                            "duplicate": 1, "too_long": 1}
    assert pset.total_skipped == 6
    assert pset.source == str(path)


def test_character_estimate_allows_four_characters_per_token(tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": "y" * 40}])
    assert load_prompts("file", path=str(path), max_prompt_tokens=10).prompts == ["y" * 40]


def test_max_prompt_tokens_counts_with_the_tokenizer(tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": "one two three"}, {"prompt": "one two three four five"},
                                               {"prompt": "a" * 200}])
    pset = load_prompts("file", path=str(path), tokenizer=_tokenizer(chat=False), max_prompt_tokens=3)
    # the 200-character word is one token to this tokenizer, far over the character estimate
    assert pset.prompts == ["one two three", "a" * 200]
    assert pset.skipped == {"too_long": 1}


def test_parquet_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": ["Explain tides.", None, "Explain tides.", "List two metals."]}), path)
    pset = load_prompts("file", path=str(path))
    assert pset.prompts == ["Explain tides.", "List two metals."]
    assert pset.skipped == {"missing_field": 1, "duplicate": 1}


def test_json_list_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"prompt": "Why is ice slippery?"}, ["not", "an", "object"]]), encoding="utf-8")
    pset = load_prompts("file", path=str(path))
    assert pset.prompts == ["Why is ice slippery?"]
    assert pset.skipped == {"malformed_json": 1}


def test_non_utf8_file_names_file_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "fine"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl: line 2 is not valid UTF-8"):
        load_prompts("file", path=str(path))


def test_file_with_only_bad_rows_names_file_and_counts(tmp_path):
    path = _write_jsonl(tmp_path / "bad.jsonl", ["{oops", {"prompt": ""}, {"question": "?"}])
    with pytest.raises(DataError, match=r"bad\.jsonl: no usable prompts") as err:
        load_prompts("file", path=str(path))
    assert "malformed_json" in str(err.value) and "missing_field" in str(err.value)


def test_missing_file_names_path(tmp_path):
    with pytest.raises(DataError, match="not found: .*nowhere.jsonl"):
        load_prompts("file", path=str(tmp_path / "nowhere.jsonl"))


def test_bad_source_split_and_suffix(tmp_path):
    with pytest.raises(DataError, match="unknown prompt source"):
        load_prompts("reddit")
    with pytest.raises(DataError, match="split"):
        load_prompts("bundled", "test")
    with pytest.raises(DataError, match="needs a path"):
        load_prompts("file")
    (tmp_path / "p.csv").write_text("prompt\nhi\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"p\.csv: unsupported"):
        load_prompts("file", path=str(tmp_path / "p.csv"))


@pytest.mark.parametrize("text, expected", [
    ("\n\nHuman: How do I boil an egg?\n\nAssistant: Put it in boiling water for seven minutes.",
     "How do I boil an egg?"),
    ("\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke.\n\nAssistant: No.", "Hi"),
    ("\n\nHuman:   What is two plus two?  \nPlease be brief.\n\nAssistant: Four.",
     "What is two plus two?  \nPlease be brief."),
    ("\n\nHuman: \n\nAssistant: Did you mean to say something?", ""),
    ("Human: no leading blank line\n\nAssistant: hm", None),
    ("\n\nHuman: a question with no answer marker", None),
    ("", None),
])
def test_first_human_turn(text, expected):
    assert first_human_turn(text) == expected


def test_hh_rlhf_from_local_jsonl(tmp_path):
    path = _write_jsonl(tmp_path / "hh.jsonl", [
        {"chosen": "\n\nHuman: What should I pack for a hike?\n\nAssistant: Water and a map.",
         "rejected": "\n\nHuman: What should I pack for a hike?\n\nAssistant: Nothing."},
        {"chosen": "no dialogue markers here"},
        {"chosen": "\n\nHuman: \n\nAssistant: ?"},
        {"rejected": "only rejected"},
        {"chosen": "\n\nHuman: What should I pack for a hike?\n\nAssistant: Snacks."},
    ])
    pset = load_prompts("hh_rlhf", "eval", path=str(path))
    assert pset.prompts == ["What should I pack for a hike?"]
    assert pset.skipped == {"malformed_dialogue": 1, "empty": 1, "missing_field": 1, "duplicate": 1}


def test_helpsteer2_dedupes_in_order_and_maps_eval_to_validation(monkeypatch):
    import datasets

    calls = []

    def fake_load(repo, split):
        calls.append((repo, split))
        return datasets.Dataset.from_dict({"prompt": ["b", "a", "b", "c", "a"], "response": list("vwxyz")})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    pset = load_prompts("helpsteer2", "eval")
    assert calls == [("nvidia/HelpSteer2", "validation")]
    assert pset.prompts == ["b", "a", "c"]
    assert pset.skipped == {"duplicate": 2}


def test_unreachable_hub_suggests_a_local_source(monkeypatch):
    import datasets

    def offline(repo, split):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="unreachable") as err:
        load_prompts("hh_rlhf", "train")
    assert "Anthropic/hh-rlhf" in str(err.value) and "data.source=bundled" in str(err.value)


def test_format_prompt_uses_the_chat_template():
    text = format_prompt(_tokenizer(chat=True), "one two")
    assert text == "<|user|>one two<eos><|assistant|>"


def test_format_prompt_plain_without_a_template():
    assert format_prompt(_tokenizer(chat=False), "one two") == "User: one two\nAssistant:"
    assert format_prompt(None, "Hi?") == "User: Hi?\nAssistant:"


def test_helpsteer2_multi_turn_prompts_become_chat_turns():
    from xrlhf.data import chat_turns

    prompt = "What is a prime?<extra_id_1>Assistant\nA number with two divisors.<extra_id_1>User\nGive an example."
    assert chat_turns(prompt) == [{"role": "user", "content": "What is a prime?"},
                                  {"role": "assistant", "content": "A number with two divisors."},
                                  {"role": "user", "content": "Give an example."}]
    assert format_prompt(_tokenizer(chat=False), prompt) == ("User: What is a prime?\nAssistant: A number with two "
                                                             "divisors.\nUser: Give an example.\nAssistant:")
    text = format_prompt(_tokenizer(chat=True), prompt)
    assert text.count("What is a prime?") == 1 and "A number with two divisors." in text and "<extra_id_1>" not in text
    with pytest.raises(DataError, match="not User or Assistant"):
        chat_turns("Hi<extra_id_1>Narrator\nOnce upon a time")


HS2_ROWS = [  # HelpSteer2's columns: several rated responses per prompt, multi-turn prompts joined by <extra_id_1>
    {"prompt": "one two<extra_id_1>Assistant\nthree<extra_id_1>User\nfour five", "response": "six",
     "helpfulness": 3, "correctness": 3, "coherence": 4, "complexity": 1, "verbosity": 1},
    {"prompt": "one two<extra_id_1>Assistant\nthree<extra_id_1>User\nfour five", "response": "five",
     "helpfulness": 1, "correctness": 2, "coherence": 3, "complexity": 1, "verbosity": 2},
    {"prompt": "six", "response": "one", "helpfulness": 2, "correctness": 2, "coherence": 2, "complexity": 0,
     "verbosity": 1},
]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".parquet"])
def test_helpsteer2_local_copy_in_the_hubs_format_gives_chat_turns(tmp_path, suffix, monkeypatch):
    """data.source=helpsteer2 with data.path: the local split, deduplicated, no hub call; a multi-turn prompt
    reaches the chat template as alternating turns, not one user message."""
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("the hub was called"))
    path = tmp_path / f"validation{suffix}"
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(HS2_ROWS), path)
    else:
        text = "".join(json.dumps(r) + "\n" for r in HS2_ROWS).encode()
        if suffix.endswith(".gz"):
            import gzip

            text = gzip.compress(text)
        path.write_bytes(text)
    pset = load_prompts("helpsteer2", "eval", path=str(path))
    assert pset.prompts == [HS2_ROWS[0]["prompt"], "six"] and pset.skipped == {"duplicate": 1}
    assert format_prompt(_tokenizer(chat=True), pset.prompts[0]) == (
        "<|user|>one two<eos><|assistant|>three<eos><|user|>four five<eos><|assistant|>")
    assert format_prompt(_tokenizer(chat=True), pset.prompts[1]) == "<|user|>six<eos><|assistant|>"


def test_helpsteer2_config_reads_the_local_copy(tmp_path):
    from xrlhf.config import load_config

    path = _write_jsonl(tmp_path / "train.jsonl", HS2_ROWS)
    cfg = load_config(None, ["data.source=helpsteer2", f"data.path={path}"])
    assert load_prompts(cfg.data.source, "train", cfg.data.path).prompts[1] == "six"


def test_bad_gzip_names_the_file(tmp_path):
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="train.jsonl.gz: not a readable gzip file"):
        load_prompts("helpsteer2", "train", path=str(path))
