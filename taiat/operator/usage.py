"""The `taiat` command's usage text read for what docopt does not say: the help of one
command (`taiat jobs create --help` shows that command's usage and options, not the whole
help), and what is wrong with a command line that matches no usage (`jobs create: --name is
required`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

#: The options that ask for help, wherever they stand.
HELP = ("-h", "--help")
_COMMAND_WORD = re.compile(r"^[a-z][a-z-]*$")
_ARGUMENT = re.compile(r"^[A-Z][A-Z_]*$")
_TOKEN = re.compile(r"\.\.\.|[\[\]()|]|[^\s\[\]()|]+")


@dataclass(frozen=True)
class Option:
    """An entry of the options section: its names (`-o`, `--output`), the argument it takes
    (None for a switch), and its lines as written."""

    names: tuple[str, ...]
    argument: str | None
    text: str


@dataclass(frozen=True)
class Pattern:
    """A usage line (with its continuation lines): the command words it begins with, and its
    tokens after them, each with how deep in brackets it stands (0: required)."""

    command: tuple[str, ...]
    text: str
    tokens: tuple[tuple[str, int], ...]

    def options(self, required: bool = False) -> list[str]:
        return [t for t, depth in self.tokens if t.startswith("-") and (depth == 0 or not required)]

    def positionals(self) -> list[tuple[str, bool]]:
        """The required positional arguments: (name, repeatable)."""
        found = []
        for i, (token, depth) in enumerate(self.tokens):
            before = self.tokens[i - 1][0] if i else ""
            if depth == 0 and _ARGUMENT.match(token) and not before.startswith("-"):
                after = self.tokens[i + 1][0] if i + 1 < len(self.tokens) else ""
                found.append((token, after == "..."))
        return found

    def repeatable(self, option: str) -> bool:
        """Whether `option` may be given more than once (`[--depends-on ID]...`)."""
        tokens = [t for t, _ in self.tokens]
        if option not in tokens:
            return False
        rest = tokens[tokens.index(option) + 1 :]
        if rest and _ARGUMENT.match(rest[0]):
            rest = rest[1:]  # its argument
        if rest[:1] in (["]"], [")"]):
            rest = rest[1:]
        return rest[:1] == ["..."]


@dataclass(frozen=True)
class Usage:
    patterns: tuple[Pattern, ...]
    options: tuple[Option, ...]
    #: Paragraphs of the help that explain an argument (`ID is ...`), by the argument.
    notes: dict[str, str]

    def option(self, typed: str) -> Option | None:
        """The option `typed` names: exactly, or a long option by a beginning only it has."""
        for option in self.options:
            if typed in option.names:
                return option
        if typed.startswith("--"):
            found = [o for o in self.options if any(n.startswith(typed) for n in o.names)]
            if len(found) == 1:
                return found[0]
        return None

    def same(self, a: str, b: str) -> bool:
        """Whether two names are one option's (`-o` and `--output`)."""
        option = self.option(a)
        return a == b or (option is not None and b in option.names)


@cache
def read(doc: str) -> Usage:
    lines = doc.splitlines()
    patterns: list[list[str]] = []
    options: list[list[str]] = []
    notes: dict[str, str] = {}
    section = None
    for index, line in enumerate(lines):
        if not line.strip():
            section = None
            continue
        if line.startswith("Usage:"):
            section = "usage"
            continue
        if line.startswith("Options:"):
            section = "options"
            continue
        if section == "usage":
            if line.strip().startswith("taiat "):
                patterns.append([line])
            elif patterns:
                patterns[-1].append(line)
        elif section == "options":
            if line.startswith("  -"):
                options.append([line])
            elif options:
                options[-1].append(line)
        elif (index == 0 or not lines[index - 1].strip()) and (word := line.split()[0]):
            if _ARGUMENT.match(word):
                paragraph = []
                for more in lines[index:]:
                    if not more.strip():
                        break
                    paragraph.append(more)
                notes[word] = "\n".join(paragraph)
    return Usage(tuple(_pattern(p) for p in patterns), tuple(_option(o) for o in options), notes)


def _pattern(lines: list[str]) -> Pattern:
    words = " ".join(lines).split(None, 1)[1]  # after "taiat"
    depth = 0
    tokens: list[tuple[str, int]] = []
    for token in _TOKEN.findall(words.replace("...", " ... ")):
        if token in ("[", "("):
            depth += 1
        tokens.append((token, depth))
        if token in ("]", ")"):
            depth -= 1
    command: list[str] = []
    for token, level in tokens:
        if level or not _COMMAND_WORD.match(token):
            break
        command.append(token)
    rest = tuple(tokens[len(command) :])
    return Pattern(tuple(command), "\n".join(lines), rest)


def _option(lines: list[str]) -> Option:
    head = re.split(r"\s{2,}", lines[0].strip(), maxsplit=1)[0].split()
    names = tuple(word for word in head if word.startswith("-"))
    arguments = [word for word in head if not word.startswith("-")]
    return Option(names, arguments[0] if arguments else None, "\n".join(lines))


@dataclass
class Given:
    """A command line read with the usage's options: the options named (as typed), the
    positional words, options no entry has, an option left without its value."""

    options: list[str]
    positionals: list[str]
    unknown: list[str]
    no_value: str | None = None


def scan(usage: Usage, words: list[str]) -> Given:
    given = Given([], [], [])
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            given.positionals += words[i:]
            break
        if not word.startswith("-") or word == "-":
            given.positionals.append(word)
            continue
        name, equals, _ = word.partition("=") if word.startswith("--") else (word[:2], "", "")
        option = usage.option(name)
        if option is None:
            given.unknown.append(name)
            continue
        given.options.append(name)
        inline = bool(equals) or (not word.startswith("--") and len(word) > 2)
        if option.argument is not None and not inline:
            if i >= len(words):
                given.no_value = name
            i += 1
    return given


def _command(usage: Usage, positionals: list[str]) -> tuple[str, ...]:
    """The longest run of the first positional words that begins some usage's command."""
    best: tuple[str, ...] = ()
    for pattern in usage.patterns:
        n = 0
        while n < min(len(pattern.command), len(positionals)):
            if pattern.command[n] != positionals[n]:
                break
            n += 1
        if n > len(best):
            best = pattern.command[:n]
    return best


def command_of(doc: str, words: list[str]) -> str:
    """The command that `words` name, as far as they name one (`jobs`), or ''."""
    usage = read(doc)
    return " ".join(_command(usage, scan(usage, words).positionals))


def help_for(doc: str, words: list[str]) -> str | None:
    """The help of the command that `words` name, when they ask for help (-h, --help) and
    name one; None to leave it to docopt (the whole help)."""
    usage = read(doc)
    given = scan(usage, words)
    if not any(name in HELP for name in given.options):
        return None
    command = _command(usage, given.positionals)
    if not command:
        return None
    chosen = [p for p in usage.patterns if p.command[: len(command)] == command]
    named = {t for p in chosen for t, _ in p.tokens}
    entries = [o.text for o in usage.options if set(o.names) & named or "--help" in o.names]
    notes = [text for name, text in usage.notes.items() if name in named]
    parts = ["Usage:\n" + "\n".join(p.text for p in chosen)]
    parts += notes
    parts.append("Options:\n" + "\n".join(entries))
    return "\n\n".join(parts) + "\n"


def problem(doc: str, words: list[str]) -> str | None:
    """What is wrong with `words`, which match no usage, in one line (`jobs create: --name is
    required`); None when that cannot be told."""
    usage = read(doc)
    given = scan(usage, words)
    command = _command(usage, given.positionals)
    patterns = [p for p in usage.patterns if p.command == command]
    if not command or not patterns:
        return None
    name = " ".join(command)
    if given.unknown:
        return f"{name}: unknown option {given.unknown[0]}: see `taiat {name} --help`"
    if given.no_value is not None:
        option = usage.option(given.no_value)
        return f"{name}: {given.no_value} needs a value ({option.argument if option else ''})"
    claims = [p for p in patterns if _present(usage, p.options(required=True), given)]
    if len(claims) > 1:
        first = _present(usage, claims[0].options(required=True), given)[0]
        other = _present(usage, claims[1].options(required=True), given)[0]
        return f"{name}: {other} cannot be used with {first}"
    chosen = claims[0] if claims else patterns[0]
    missing = [o for o in chosen.options(required=True) if not _present(usage, [o], given)]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        return f"{name}: {' and '.join(missing)} {verb} required"
    allowed = chosen.options()
    for typed in given.options:
        if typed in HELP or any(usage.same(typed, o) for o in allowed):
            continue
        required = _present(usage, chosen.options(required=True), given)
        if required and any(any(usage.same(typed, o) for o in p.options()) for p in patterns):
            return f"{name}: {typed} cannot be used with {required[0]}"
        return f"{name}: {typed} is not an option of `taiat {name}`: see `taiat {name} --help`"
    for typed in dict.fromkeys(given.options):
        twice = sum(usage.same(typed, other) for other in given.options) > 1
        if twice and not any(chosen.repeatable(o) for o in allowed if usage.same(typed, o)):
            return f"{name}: {typed} is given twice"
    wanted = chosen.positionals()
    extra = given.positionals[len(command) :]
    if len(extra) < len(wanted):
        argument = wanted[len(extra)][0]
        return f"{name}: {'a job ID' if argument == 'ID' else argument} is required"
    if len(extra) > len(wanted) and not (wanted and wanted[-1][1]):
        return f"{name}: unexpected argument {extra[len(wanted)]!r}"
    return None


def _present(usage: Usage, options: list[str], given: Given) -> list[str]:
    """Those of `options` that the command line gives."""
    return [o for o in options if any(usage.same(typed, o) for typed in given.options)]
