"""The per-language catalogs: the same sentences in every language, each in its own.

Two kinds of catalog, one file per language each: ``locales/<language>.toml`` (text
rendered inside files, such as the exercises' TODOs) and the project's
``messages.toml`` (what its programs print). A sentence missing from one language, or a
placeholder that differs, would surface only when a French student hits it; a sentence
left in English in the French catalog is caught by reading its words.
"""

from __future__ import annotations

import string
import tomllib

import pytest

from helpers import FUNCTION_WORDS, TEMPLATE_ROOT, copier_choices, prose_words

LANGUAGES = copier_choices("docs_language")
PACKAGE_DIR = TEMPLATE_ROOT / "template" / "src" / "{{package_name}}"


def catalogs(language: str) -> dict[str, dict]:
    messages = PACKAGE_DIR / f"{{% if docs_language == '{language}' %}}messages.toml{{% endif %}}"
    return {
        "locale": tomllib.loads((TEMPLATE_ROOT / "locales" / f"{language}.toml").read_text()),
        "messages": tomllib.loads(messages.read_text()),
    }


def sentences(section: dict, prefix: str = "") -> dict[str, str]:
    found = {}
    for name, value in section.items():
        if isinstance(value, dict):
            found |= sentences(value, f"{prefix}{name}.")
        else:
            found[f"{prefix}{name}"] = value
    return found


def placeholders(sentence: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(sentence) if name is not None}


@pytest.mark.parametrize("language", [lang for lang in LANGUAGES if lang != "en"])
@pytest.mark.parametrize("kind", ["locale", "messages"])
def test_every_language_has_every_sentence_with_the_same_placeholders(language, kind):
    english, other = sentences(catalogs("en")[kind]), sentences(catalogs(language)[kind])
    assert set(other) == set(english), set(other) ^ set(english)
    differing = [key for key in english if placeholders(english[key]) != placeholders(other[key])]
    assert not differing, f"{language}: placeholders differ in {differing}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_sentence_is_written_in_its_catalogs_language(language):
    """Every sentence of four words or more uses its language's function words and none
    of another's: an English sentence left in the French catalog fails, and so would a
    French one in the English catalog."""
    others = set().union(*(words for lang, words in FUNCTION_WORDS.items() if lang != language))
    others -= FUNCTION_WORDS[language]  # shared spellings ("on", "un"...) prove nothing
    wrong = {}
    for kind, catalog in catalogs(language).items():
        for key, sentence in sentences(catalog).items():
            words = prose_words(sentence)
            if len(words) < 4:
                continue
            foreign = sorted(set(words) & others)
            if foreign or not set(words) & FUNCTION_WORDS[language]:
                wrong[f"{kind}:{key}"] = foreign or "no function word of its language"
    assert not wrong, wrong
