"""Post-processing on real code: modes, block truncation, suffix overlap, repetition, brackets."""

from server.postprocess import CursorContext, open_brackets, postprocess, remove_repetition, truncate_block

STOPS = ("<|endoftext|>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<file_sep>")


def ctx(line_prefix: str, line_suffix: str = "", rest: str = "") -> CursorContext:
    return CursorContext(line_prefix=line_prefix, line_suffix=line_suffix, suffix=line_suffix + rest)


def test_mid_line_is_one_line() -> None:
    c = ctx("    result = compute(", ")\n    return result")
    assert c.mode == "line"
    assert postprocess("a, b)\n    other()", c, STOPS) == "a, b"


def test_block_after_def_keeps_body_and_stops_at_dedent() -> None:
    raw = "\n    total = 0\n    for x in xs:\n        total += x\n    return total\n\ndef other():\n    pass"
    out = postprocess(raw, ctx("def sum_all(xs):"), STOPS)
    assert out == "\n    total = 0\n    for x in xs:\n        total += x\n    return total"


def test_block_statement_stops_at_next_def_and_dedent() -> None:
    raw = "return a + b\n\ndef f():\n    pass"
    assert postprocess(raw, ctx("    "), STOPS) == "return a + b"
    raw2 = "x = 1\n    y = 2\nz = 3"
    assert truncate_block(raw2, ctx("    ")) == "x = 1\n    y = 2"


def test_closing_brace_of_js_block_kept() -> None:
    raw = "\n  return a + b;\n}\nfunction g() {}"
    assert postprocess(raw, ctx("function f(a, b) {"), STOPS) == "\n  return a + b;\n}"


def test_stop_tokens_cut() -> None:
    assert postprocess("foo()<|endoftext|>bar", ctx("x = "), STOPS) == "foo()"
    assert postprocess("<fim_middle>", ctx("x = "), STOPS) == ""


def test_suffix_overlap_removed_mid_line_and_next_line() -> None:
    assert postprocess('open(path, "r"))', ctx("    f = ", ")"), STOPS) == 'open(path, "r")'
    rest = "\n    return value\n"
    raw = "\n    value = load()\n    return value"
    assert postprocess(raw, ctx("def get():", "", rest), STOPS) == "\n    value = load()"


def test_repetition_removed() -> None:
    assert remove_repetition("a\nb\nb\nb\nb") == "a\nb"
    assert remove_repetition("self.self.self.self.self.x") == "self."


def test_unmatched_closer_dropped_but_open_bracket_closed() -> None:
    assert postprocess("a, b)]", ctx("    f("), STOPS) == "a, b)"
    assert postprocess("x)", ctx("y = "), STOPS) == "x"


def test_empty_and_whitespace_dropped() -> None:
    assert postprocess("   \n  \n", ctx("    "), STOPS) == ""


def test_closing_bracket_kept_when_it_closes_an_inner_call() -> None:
    # print(len(|)) : the model closes len( itself; the document's ")" closes print(.
    assert postprocess("path)", ctx("print(len(", ")"), STOPS) == "path)"
    assert postprocess('path, "r")', ctx("    f = open(", ")"), STOPS) == 'path, "r"'


def test_brackets_inside_string_literals_are_text() -> None:
    # The "[" is part of an ANSI escape in an f-string; the ")" really closes append(.
    assert postprocess('2}m")', ctx('        bits.append(f"\\033[{2 if dim else 2'), STOPS) == '2}m")'
    assert postprocess('"(", sep)) + 1', ctx("    parts = join("), STOPS) == '"(", sep)'
    assert postprocess('0]}" + b)', ctx('s = f"{a['), STOPS) == '0]}" + b'  # f-string expressions are code
    assert postprocess('x)}` + y)', ctx("s = `${f("), STOPS) == "x)}` + y"  # template-literal expressions too
    assert postprocess(' ) """)', ctx('s = """('), STOPS) == ' ) """'  # inside a triple-quoted string
    assert postprocess('"a\\")", 1))', ctx("print("), STOPS) == '"a\\")", 1)'  # an escaped quote


def test_apostrophes_in_prose_start_no_string() -> None:
    # "don't" is a word, not a string: the ")" still closes the comment's "(", the next one closes nothing.
    assert postprocess("ok) and more)", ctx("    # don't (see"), STOPS) == "ok) and more"


def test_brackets_opened_on_earlier_lines() -> None:
    signature = "    def send(\n        self,\n        request: Request,  # the request (sent as is\n"
    # The line that closes a signature spread over lines keeps its ")"; the comment's "(" is not code.
    assert open_brackets(signature) == "("
    at_indent = CursorContext.at(signature + "    ", "\n        return self._send(request)\n")
    assert postprocess(") -> Response:\n        return", at_indent, STOPS) == ") -> Response:\n        return"
    # After an argument the list goes on below (formatted code closes a hanging bracket on its own line).
    mid = CursorContext.at(signature + '        help="the', "\n    )\n")
    assert postprocess(' url.")', mid, STOPS) == ' url."'
    # A bracket opened on this line still closes after its arguments; one that closes nothing is dropped.
    inner = CursorContext.at("x = call(\n    a,\n    b(", "\n")
    assert postprocess("c))", inner, STOPS) == "c)"
    assert open_brackets('x = "("\ny = [\n') == "["
    assert open_brackets("def f():\n    return g(a)\n") == ""
    assert open_brackets("x = )\ny = (\n") == "("  # the scan starts at the last top-level statement
